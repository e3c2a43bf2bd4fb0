"""The Example schema, shard writing, and the training input pipeline over TFRecords.

One `tf.train.Example` per image: `image` holds raw uint8 HWC pixels already at the
training size, so training never decodes a JPEG; `height`, `width`, `channels`, `source` (path
relative to the input root) and `sha256` (of the source file) travel with it.

The reader is built for throughput: it interleaves shards, shuffles *serialized* records, batches
them and parses a whole batch at once (parsing record by record is about 2x slower here).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import google_crc32c
import numpy as np

from components.artifacts import MANIFEST, read_json
from components.errors import PipelineError


def shard_name(split: str, index: int, total: int) -> str:
    """`train-00003-of-00008.tfrecord`: the name of shard 3 of 8 of the train split."""
    return f"{split}-{index:05d}-of-{total:05d}.tfrecord"


def serialize_example(pixels: np.ndarray, source: str, sha256: str) -> bytes:
    """Serialize one HWC uint8 image and its provenance as a `tf.train.Example`.

    The protobuf wire format is written by hand: ingest workers then never import TensorFlow
    (about 2 s per Beam worker process), and it is several times faster than building a
    `tf.train.Example`. The bytes parse with `tf.io.parse_example` and `tf.train.Example`.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3:
        raise ValueError(f"expected HWC uint8 pixels, got {pixels.dtype} {pixels.shape}")
    height, width, channels = pixels.shape
    features = [
        _feature_entry("image", _bytes_feature(np.ascontiguousarray(pixels).tobytes())),
        _feature_entry("height", _int64_feature(height)),
        _feature_entry("width", _int64_feature(width)),
        _feature_entry("channels", _int64_feature(channels)),
        _feature_entry("source", _bytes_feature(source.encode("utf-8", "surrogateescape"))),  # a name's own bytes
        _feature_entry("sha256", _bytes_feature(sha256.encode("ascii"))),
    ]
    return _length_delimited(1, b"".join(features))  # Example.features


# Protobuf wire format, just the parts an Example needs: field numbers from
# tensorflow/core/example/{example,feature}.proto.
def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return b"".join((_varint(field << 3 | 2), _varint(len(payload)), payload))


def _feature_entry(key: str, feature: bytes) -> bytes:
    """One entry of the `Features.feature` map (field 1): a key (1) and a `Feature` value (2)."""
    return _length_delimited(1, _length_delimited(1, key.encode("utf-8")) + _length_delimited(2, feature))


def _bytes_feature(value: bytes) -> bytes:
    return _length_delimited(1, _length_delimited(1, value))  # Feature.bytes_list -> BytesList.value


def _int64_feature(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"only non-negative int64 features are encoded here, got {value}")
    return _length_delimited(3, _length_delimited(1, _varint(value)))  # Feature.int64_list -> packed value


# TFRecord framing: length (uint64 LE), masked CRC32C of the length, data, masked CRC32C of the data.
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return _CRC.pack((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def frame_records(serialized: Iterable[bytes]) -> bytes:
    """Serialized Examples as the bytes of one TFRecord file, byte-identical to `TFRecordWriter`'s.

    Plain Python over `google-crc32c`: ingest workers never import TensorFlow.
    """
    parts = []
    for record in serialized:
        length = _LENGTH.pack(len(record))
        parts.append(b"".join((length, _masked_crc(length), record, _masked_crc(record))))
    return b"".join(parts)


def write_shard(path: str | os.PathLike, serialized: Iterable[bytes]) -> dict:
    """Write serialized Examples to one local TFRecord file; return its manifest entry."""
    records = list(serialized)
    Path(path).write_bytes(frame_records(records))
    return {"file": Path(path).name, "count": len(records), "bytes": os.path.getsize(path)}


def framed_size(length: int) -> int:
    """Bytes a record of `length` bytes takes in a TFRecord file: length, its CRC, data, data CRC."""
    return _LENGTH.size + 2 * _CRC.size + length


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
        raise PipelineError(f"{path} is not a valid manifest: {problem}. Re-run the ingest with --overwrite.")
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
            return f"the shards of split '{name}' hold {sum(s['count'] for s in split['shards'])} records, its count says {split['count']}"
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
        raise PipelineError(f"split '{split}' of {data_dir} is empty; ingest again with more images or {more} --eval-fraction.")
    if limit is not None:
        needed = 1 + sum(1 for total in itertools.accumulate(entry["count"] for entry in entries) if total < limit)
        entries = entries[:needed]
    paths = []
    for entry in entries:
        path = Path(data_dir) / entry["file"]
        if not path.is_file():
            raise PipelineError(f"shard {path} is listed in the manifest but missing; re-run the ingest with --overwrite.")
        if path.stat().st_size != entry["bytes"]:
            raise PipelineError(
                f"shard {path} is corrupt: {path.stat().st_size} bytes on disk, {entry['bytes']} in the manifest. "
                "Re-run the ingest with --overwrite."
            )
        paths.append(str(path))
    if verify:
        for entry in entries:
            verify_shard(Path(data_dir) / entry["file"], entry["count"], image_size=manifest["image_size"],
                         channels=manifest.get("channels", 3))  # fmt: skip
    return paths


class DamagedData(PipelineError):
    """A shard whose bytes are not what the ingest wrote (or not what the manifest says): the
    data's fault, not the run's, so the tuner stops its search instead of failing trial after trial."""


def verify_shard(
    path: Path, expected_count: int, shown_as: str | None = None, *, image_size: int | None = None, channels: int = 3,
    every_record: bool = False,
) -> None:  # fmt: skip
    """Read a shard through, checking the CRCs the TFRecord framing carries for every record's length
    and bytes, count its records, and check that its first record (with `every_record`: each one)
    holds an `image_size` image; a `DamagedData` naming the file (`shown_as`, e.g. its remote URI) if not.

    Every reader does this at start, so it must stay cheap: 10,000 64x64 images are about 125 MB,
    read once sequentially (the training that follows reads the same pages), CRC32C computed in C
    (google-crc32c, several GB/s) and a Python loop of 10,000 turns: a fraction of a second, less
    than TensorFlow's own read-through took, and nothing beside the bytes themselves is trusted.
    """
    name = shown_as or path
    count, problem = 0, None
    with open(path, "rb", buffering=1 << 20) as handle:
        left = os.fstat(handle.fileno()).st_size
        while left and problem is None:
            header = handle.read(_LENGTH.size + _CRC.size)
            length_bytes, length_crc = header[: _LENGTH.size], header[_LENGTH.size :]
            if len(header) < _LENGTH.size + _CRC.size or _masked_crc(length_bytes) != length_crc:
                problem = f"the length of record {count} is damaged"
                continue
            (length,) = _LENGTH.unpack(length_bytes)
            if framed_size(length) > left:
                problem = f"record {count} is cut short"
            else:
                record, crc = handle.read(length), handle.read(_CRC.size)
                if _masked_crc(record) != crc:
                    problem = f"record {count} fails its CRC check"
                elif image_size is not None and (every_record or count == 0):
                    problem = _image_problem(record, image_size, channels, count)
                left -= framed_size(length)
                count += 1
    if problem is not None:
        raise DamagedData(f"shard {name} is damaged: {problem}. Re-run the ingest with --overwrite.")
    if count != expected_count:
        raise DamagedData(f"shard {name} holds {count} records, the manifest says {expected_count}; re-run the ingest with --overwrite.")


def _image_problem(record: bytes, image_size: int, channels: int, index: int) -> str | None:
    """What makes one serialized record not an Example of an `image_size` x `image_size` x `channels`
    image (the manifest's), or None."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.example.example_pb2 import Example

    try:
        features = Example.FromString(record).features.feature
    except DecodeError:
        return f"record {index} is not a tf.train.Example"
    dims = [list(features[key].int64_list.value) if key in features else [] for key in ("height", "width", "channels")]
    image = list(features["image"].bytes_list.value) if "image" in features else []
    if any(len(dim) != 1 for dim in dims) or len(image) != 1:
        return f"record {index} lacks the image, height, width or channels feature"
    height, width, depth = (dim[0] for dim in dims)
    if (height, width, depth) != (image_size, image_size, channels):
        return f"record {index} holds a {height}x{width}x{depth} image, the manifest says {image_size}x{image_size}x{channels}"
    if len(image[0]) != height * width * depth:
        return f"record {index} holds {len(image[0])} pixel bytes, not {height}x{width}x{depth}"
    return None


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
                raise DamagedData(f"shard {path} disappeared while it was read; re-run the ingest with --overwrite.") from err
            verify_shard(path, entry["count"], image_size=manifest["image_size"], channels=manifest.get("channels", 3), every_record=True)
        if isinstance(err, tf.errors.InvalidArgumentError):
            raise
        raise DamagedData(
            f"reading split '{split}' of {data_dir} failed ({err.message.splitlines()[0]}) though its shards check out now; "
            "re-run the ingest with --overwrite if it happens again."
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


def load_images(data_dir: str | os.PathLike, split: str = "eval", limit: int | None = None, image_size: int | None = None) -> np.ndarray:
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
