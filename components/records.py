"""The Example schema, the manifest, and the training input pipeline over TFRecords.

One `tf.train.Example` per image: `image` holds raw uint8 HWC pixels already at the
training size, so training never decodes a JPEG; `height`, `width`, `channels`, `source` (path
relative to the input root) and `sha256` (of the source file) travel with it (written by
components.shards, which every reader here uses to check a shard before it trusts it).

The reader is built for throughput: it interleaves shards, shuffles *serialized* records, batches
them and parses a whole batch at once (parsing record by record is about 2x slower here).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from components.artifacts import MANIFEST, read_json
from components.errors import PipelineError
from components.shards import DamagedData, verify_shard


def _feature_spec() -> dict:
    import tensorflow as tf

    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "channels": tf.io.FixedLenFeature([], tf.int64),
        "source": tf.io.FixedLenFeature([], tf.string),
        "sha256": tf.io.FixedLenFeature([], tf.string),
    }


def parse_examples(serialized, image_size: int, channels: int = 3, *, images_only: bool = False) -> dict:
    """Parse a batch (or one) of serialized Examples into `uint8` images and their metadata.

    `images_only` skips the metadata features: training needs only pixels, and parsing five
    fewer features per record is a measurable share of the reader's time.
    """
    import tensorflow as tf

    spec = _feature_spec()
    parsed = tf.io.parse_example(serialized, {"image": spec["image"]} if images_only else spec)
    pixels = tf.io.decode_raw(parsed["image"], tf.uint8)
    shape = tf.concat([tf.shape(serialized), [image_size, image_size, channels]], axis=0)
    parsed["image"] = tf.reshape(pixels, shape)
    return parsed


def read_manifest(data_dir: str | os.PathLike) -> dict:
    """Load a data folder's manifest, checked: a missing, torn or foreign manifest is an error naming it."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise PipelineError(
            f"{data_dir} is not an ingested data folder: {path} does not exist. "
            "Create one with `python -m pipeline.ingest --input <image folder>` "
            "(or `python -m pipeline.ingest --synthetic 2000` for built-in faces)."
        )
    try:
        manifest = read_json(path)
        problem = manifest_problem(manifest)
    except (OSError, ValueError) as err:
        problem = f"it cannot be read as JSON ({err})"
    if problem:
        raise PipelineError(f"{path} is not a valid manifest: {problem}. Re-run the ingest with `overwrite`.")
    return manifest


_SHARD_FILE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\.tfrecord")


def manifest_problem(manifest) -> str | None:
    """What makes `manifest` unusable, or None: every field a reader relies on, with its type, and
    shard names that stay inside the data folder (a plain file name, no path)."""

    def count(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not isinstance(manifest, dict):
        return f"it holds a {type(manifest).__name__}, not an object"
    size = manifest.get("image_size")
    if not count(size) or not 1 <= size <= 4096:
        return f"image_size is {size!r}, not a size in pixels"
    if manifest.get("channels", 3) != 3:
        return f"channels is {manifest.get('channels')!r}; only RGB (3) is supported"
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or not {"train", "eval"} <= set(splits):
        return "splits must hold 'train' and 'eval'"
    for name in ("train", "eval"):
        split = splits[name]
        if not isinstance(split, dict) or not count(split.get("count")) or not isinstance(split.get("shards"), list):
            return f"split '{name}' needs a count and a list of shards"
        for shard in split["shards"]:
            if not isinstance(shard, dict) or not all(count(shard.get(key)) for key in ("count", "bytes")):
                return f"a shard of split '{name}' needs a count and a size in bytes: {shard!r}"
            if not isinstance(shard.get("file"), str) or not _SHARD_FILE.fullmatch(shard["file"]):
                return f"shard file {shard.get('file')!r} of split '{name}' is not a file name inside the data folder"
        if sum(shard["count"] for shard in split["shards"]) != split["count"]:
            return (
                f"the shards of split '{name}' hold {sum(s['count'] for s in split['shards'])} records, "
                f"its count says {split['count']}"
            )
    files = [shard["file"] for name in ("train", "eval") for shard in splits[name]["shards"]]
    twice = sorted({file for file in files if files.count(file) > 1})
    if twice:  # a shard in both splits would score a model on the images it trained on
        return f"shard {twice[0]} is listed more than once"
    if not isinstance(manifest.get("fingerprint", ""), str):
        return f"fingerprint is {manifest.get('fingerprint')!r}, not a string"
    return None


def shard_paths(data_dir: str | os.PathLike, split: str, verify: bool = True, limit: int | None = None) -> list[str]:
    """The shard files of one split (enough of them for `limit` records), checked against the manifest.

    With `verify`, every shard is read through by `verify_shard` each time: its size and record
    count must match the manifest, every record's CRCs must hold and its first record must hold
    an image of the manifest's size. A damaged shard is then an error naming the file before
    training starts, instead of a `DataLossError` or a reshape error deep inside it. Nothing is
    remembered between reads: a record of "verified" keyed on size and modification time would
    trust a shard damaged since, and one keyed on content costs the very read it would save.
    """
    manifest = read_manifest(data_dir)
    entries = manifest["splits"][split]["shards"] if split in manifest["splits"] else None
    if entries is None:
        raise PipelineError(f"{data_dir} has no '{split}' split (it has: {', '.join(manifest['splits'])}).")
    if not entries:
        more = "a larger" if split == "eval" else "a smaller"
        raise PipelineError(f"split '{split}' of {data_dir} is empty; ingest again with more images or {more} `eval_fraction`.")
    if limit is not None:
        needed = 1 + sum(1 for total in itertools.accumulate(entry["count"] for entry in entries) if total < limit)
        entries = entries[:needed]
    paths = []
    for entry in entries:
        path = Path(data_dir) / entry["file"]
        if not path.is_file():
            raise PipelineError(f"shard {path} is listed in the manifest but missing; re-run the ingest with `overwrite`.")
        if path.stat().st_size != entry["bytes"]:
            raise PipelineError(
                f"shard {path} is corrupt: {path.stat().st_size} bytes on disk, {entry['bytes']} in the manifest. "
                "Re-run the ingest with `overwrite`."
            )
        paths.append(str(path))
    if verify:
        for entry in entries:
            verify_shard(
                Path(data_dir) / entry["file"],
                entry["count"],
                image_size=manifest["image_size"],
                channels=manifest.get("channels", 3),
            )
    return paths


@contextlib.contextmanager
def read_errors_named(data_dir: str | os.PathLike, split: str) -> Iterator[None]:
    """Turn an error TensorFlow raises while reading `split` (a record damaged after the reader's
    start-up check, a shard gone) into a `DamagedData` naming the shard.

    TensorFlow's message names a byte offset, not a file: the split's shards are checked again,
    every record this time, to find the one. An InvalidArgumentError with every shard intact is
    not the data's: it is raised unchanged.
    """
    import tensorflow as tf

    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as err:
        manifest = read_manifest(data_dir)
        for entry in manifest["splits"][split]["shards"]:
            path = Path(data_dir) / entry["file"]
            if not path.is_file():
                raise DamagedData(f"shard {path} disappeared while it was read; re-run the ingest with `overwrite`.") from err
            verify_shard(
                path, entry["count"], image_size=manifest["image_size"], channels=manifest.get("channels", 3), every_record=True
            )
        if isinstance(err, tf.errors.InvalidArgumentError):
            raise
        raise DamagedData(
            f"reading split '{split}' of {data_dir} failed ({err.message.splitlines()[0]}) though its shards check out now; "
            "re-run the ingest with `overwrite` if it happens again."
        ) from err


def make_dataset(
    data_dir: str | os.PathLike,
    split: str = "train",
    batch_size: int = 128,
    *,
    image_size: int | None = None,
    shuffle: bool = True,
    repeat: bool = True,
    seed: int | None = None,
    start: int = 0,
    drop_remainder: bool = True,
    shuffle_buffer: int = 10_000,
    verify: bool = True,
):
    """A `tf.data.Dataset` of float32 NHWC batches in [-1, 1] from one split of ingested shards.

    `image_size`, when given, is the manifest's size or a divisor of it: a smaller size is read by
    `downscale_batch` (exact area averaging, the tuner's cheaper trials); a model built for 64x64
    cannot train on 32x32 shards. Shards are read in parallel; serialized records are shuffled,
    batched and then parsed a batch at a time.

    With a `seed`, the shuffled stream is one fixed sequence (each pass reshuffled by it) and
    `start` skips its first records, so a resumed training run sees exactly the batches an
    uninterrupted one would have. Skipping reads the records without parsing them (about a
    second per GB of shards). Without a seed the order is free (and a little faster).
    """
    import tensorflow as tf

    manifest = read_manifest(data_dir)
    size, channels = int(manifest["image_size"]), int(manifest.get("channels", 3))
    factor = downscale_factor(data_dir, size, image_size or size)
    paths = shard_paths(data_dir, split, verify=verify)

    files = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    records = files.interleave(
        tf.data.TFRecordDataset,
        # Unshuffled reads keep shard order (cycle 1) so evaluation sets are reproducible.
        cycle_length=min(len(paths), 8) if shuffle else 1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not shuffle or seed is not None,
    )
    if shuffle:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        records = records.repeat()
    if start:
        records = records.skip(start)
    batches = records.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE)

    def to_float(serialized):
        images = downscale_batch(parse_examples(serialized, size, channels, images_only=True)["image"], factor)
        return tf.cast(images, tf.float32) / 127.5 - 1.0

    return batches.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def load_images(
    data_dir: str | os.PathLike, split: str = "eval", limit: int | None = None, image_size: int | None = None
) -> np.ndarray:
    """All (or the first `limit`) images of a split as a uint8 NHWC array, in shard order, at
    `image_size` (None: the data's; a divisor of it: `downscale_images`, as training reads them).

    For evaluation and tests, where a fixed, deterministic set matters more than throughput.
    """
    import tensorflow as tf

    manifest = read_manifest(data_dir)
    size, channels = int(manifest["image_size"]), int(manifest.get("channels", 3))
    factor = downscale_factor(data_dir, size, image_size or size)
    records = tf.data.TFRecordDataset(shard_paths(data_dir, split, limit=limit))
    if limit is not None:
        records = records.take(limit)
    batches = records.batch(1024).map(lambda s: parse_examples(s, size, channels, images_only=True)["image"])
    with read_errors_named(data_dir, split):
        arrays = [downscale_images(batch.numpy(), factor) for batch in batches]
    if not arrays:
        return np.zeros((0, size // factor, size // factor, channels), np.uint8)
    return np.concatenate(arrays)


# -- smaller images: one downscale per side, the same integer math -------------------------------
#
# Both average each `factor` x `factor` block of uint8 pixels and round half up, in integers:
# (sum + factor**2 // 2) // factor**2. Training (`make_dataset`, TensorFlow) and the evaluator's
# real images (`load_images`, NumPy) therefore see byte-identical downscaled images.


def downscale_factor(data_dir: str | os.PathLike, size: int, image_size: int) -> int:
    """size / image_size, which must be a whole number (1: no downscale)."""
    if not isinstance(image_size, int) or image_size < 1 or size % image_size:
        raise PipelineError(
            f"{data_dir} holds {size}x{size} images, but {image_size}x{image_size} was asked for "
            f"(a smaller size must divide {size})."
        )
    return size // image_size


def downscale_batch(images, factor: int):
    """uint8 NHWC tensor -> uint8 NHWC tensor `factor` times smaller by area averaging (TensorFlow)."""
    import tensorflow as tf

    if factor == 1:
        return images
    shape = tf.shape(images)
    blocks = tf.reshape(tf.cast(images, tf.int32), [shape[0], shape[1] // factor, factor, shape[2] // factor, factor, shape[3]])
    return tf.cast((tf.reduce_sum(blocks, axis=[2, 4]) + factor * factor // 2) // (factor * factor), tf.uint8)


def downscale_images(images: np.ndarray, factor: int) -> np.ndarray:
    """uint8 NHWC array -> uint8 NHWC array `factor` times smaller by area averaging (NumPy)."""
    if factor == 1:
        return images
    n, height, width, channels = images.shape
    blocks = images.reshape(n, height // factor, factor, width // factor, factor, channels).astype(np.int32)
    return ((blocks.sum(axis=(2, 4)) + factor * factor // 2) // (factor * factor)).astype(np.uint8)
