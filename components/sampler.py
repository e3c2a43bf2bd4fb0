"""Batch sampling from an exported generator SavedModel alone: latents, loading, writing files.

Nothing here imports the Keras model code: the SavedModel's `serving_default` signature turns
latents into uint8 images, so a model exported today samples the same way after the project's
model code has changed.

Image `i` of a seed always has the same latent (components.latents), so files are named by index: two
runs with one seed write byte-identical files, whatever the batch size, and a re-run only
generates the files that are missing.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.artifacts import (
    atomic_write_json,
    check_apart,
    read_json,
    remove_stale_temporaries,
    resolve_saved_model,
    temporary_prefix,
)
from components.errors import PipelineError
from components.grid import encode_png, save_grid
from components.latents import RECIPE as LATENTS_RECIPE
from components.latents import latent_array

SERVING_SIGNATURE = "serving_default"
MARKER = "samples.json"
CHUNK_SIZE = 1000  # images per .npz / .tfrecord file


class SavedModelGenerator:
    """An exported generator loaded with `tf.saved_model.load`, checked once, ready to sample.

    `path` may be a SavedModel folder, its parent (newest version) or a run folder.
    """

    def __init__(self, path: str | os.PathLike):
        import tensorflow as tf

        self.path = resolve_saved_model(path)
        try:
            module = tf.saved_model.load(str(self.path))
        except Exception as err:  # TF raises many types for a corrupt or foreign folder
            raise PipelineError(f"{self.path} is not a loadable SavedModel: {str(err).splitlines()[0]}") from err
        self._serve, self.latent_dim, self.image_shape = _check_serving_signature(module, self.path)
        self._module = module  # keeps the signature's variables alive

    def images(self, indices: np.ndarray, seed: int, truncation: float | None = None) -> np.ndarray:
        """uint8 [n, H, W, 3] images for `indices`; `truncation` clips every latent to +-truncation."""
        import tensorflow as tf

        z = latent_array(indices, self.latent_dim, seed)
        if truncation is not None:
            z = np.clip(z, -truncation, truncation)
        return self._serve(z=tf.constant(z))["images"].numpy()

    def describe(self) -> str:
        """What was loaded, for the user to check: a SavedModel is a program (its graph can read and
        write files through TensorFlow ops when run), so its path, signature and fingerprint are shown."""
        shape = "x".join(map(str, self.image_shape))
        return (
            f"{self.path} (signature {SERVING_SIGNATURE}: z float32[None, {self.latent_dim}] -> images uint8[None, {shape}]; "
            f"fingerprint {self.fingerprint()})"
        )

    def fingerprint(self) -> str:
        """Identifies the exported graph and weights (weights via the checksums in variables.index)."""
        digest = hashlib.sha256()
        for name in ("saved_model.pb", "variables/variables.index"):
            with contextlib.suppress(FileNotFoundError):
                digest.update((self.path / name).read_bytes())
        return digest.hexdigest()[:16]


def _check_serving_signature(module, path: Path):
    """Return the serving function, latent size and image shape, or say what the model lacks."""
    import tensorflow as tf

    signature = module.signatures.get(SERVING_SIGNATURE)
    if signature is None:
        raise PipelineError(
            f"{path} has no '{SERVING_SIGNATURE}' signature (it has: {', '.join(module.signatures) or 'none'}); "
            "it was not exported by `python -m pipeline.export`."
        )
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    z, images = inputs.get("z"), outputs.get("images") if isinstance(outputs, dict) else None
    if (
        z is None
        or z.dtype != tf.float32
        or z.shape.rank != 2
        or z.shape[1] is None
        or images is None
        or images.dtype != tf.uint8
        or images.shape.rank != 4
    ):
        raise PipelineError(
            f"{path}: signature '{SERVING_SIGNATURE}' maps {inputs} to {outputs}; a generator export maps "
            "z: float32[None, latent_dim] to images: uint8[None, H, W, 3]. Export it with `python -m pipeline.export`."
        )
    return signature, int(z.shape[1]), tuple(int(d) for d in images.shape[1:])


# --- output formats: every file holds a fixed range of image indices ---------------------------------


@dataclass(frozen=True)
class OutputFormat:
    """How images become files: `unit` images per file, named by the index range they hold."""

    name: str
    unit: int
    write: Callable[[Path, np.ndarray, np.ndarray, int], None]  # (path, indices, images, seed)

    def file_name(self, start: int, stop: int) -> str:
        if self.unit == 1:
            return f"{start:06d}.{self.name}"
        return f"{start:06d}-{stop - 1:06d}.{self.name}"

    def units(self, num: int) -> Iterator[tuple[int, int]]:
        """The (start, stop) index range of every file of a folder of `num` images, in order."""
        for start in range(0, num, self.unit):
            yield start, min(start + self.unit, num)

    def is_stale(self, name: str, num: int) -> bool:
        """True for a file this format wrote that does not belong to a folder of `num` images.

        Such files are left by an earlier run with another --num: a PNG past the end, or a last
        chunk cut at another point.
        """
        match = re.fullmatch(rf"(\d{{6,}})(?:-(\d{{6,}}))?\.{self.name}", name)
        if not match or (match.group(2) is None) != (self.unit == 1):
            return False
        start = int(match.group(1))
        return start >= num or start % self.unit != 0 or name != self.file_name(start, min(start + self.unit, num))


def _replace_into(path: Path, write: Callable[[str], None]) -> None:
    """`write(temp_path)` beside `path`, then rename: a killed run leaves whole files only.

    Unlike artifacts.atomic_write_bytes this does not fsync each file: at tens of thousands of
    small, reproducible files the fsyncs cost more CPU than encoding them (a power cut, not a
    kill, can leave an empty file; delete the folder and sample again).
    """
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_png(path: Path, indices: np.ndarray, images: np.ndarray, seed: int) -> None:
    data = encode_png(images[0])
    _replace_into(path, lambda tmp: Path(tmp).write_bytes(data))


def _write_npz(path: Path, indices: np.ndarray, images: np.ndarray, seed: int) -> None:
    """An .npz with `images` and `indices`, byte-identical for identical arrays.

    `np.savez` stamps the current time into the zip entries; a fixed stamp keeps reruns identical.
    """

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for key, array in (("images", images), ("indices", indices.astype(np.int64))):
                entry = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with archive.open(entry, "w", force_zip64=True) as handle:
                    np.lib.format.write_array(handle, np.ascontiguousarray(array))

    _replace_into(path, write)


def _write_tfrecord(path: Path, indices: np.ndarray, images: np.ndarray, seed: int) -> None:
    """Examples in the ingest schema (components.records): `source` is the image's would-be
    PNG name and `sha256` hashes its raw pixels, as there is no source file."""
    from components.records import serialize_example, write_shard

    records = (
        serialize_example(image, f"seed-{seed}/{index:06d}.png", hashlib.sha256(image.tobytes()).hexdigest())
        for index, image in zip(indices, images)
    )
    _replace_into(path, lambda tmp: write_shard(tmp, records))


FORMATS = {
    "png": OutputFormat("png", 1, _write_png),
    "npz": OutputFormat("npz", CHUNK_SIZE, _write_npz),
    "tfrecord": OutputFormat("tfrecord", CHUNK_SIZE, _write_tfrecord),
}


# --- the output folder -------------------------------------------------------------------------------


def claim_output_folder(out_dir: Path, settings: dict) -> None:
    """Make `out_dir` ours (a marker file records what it holds), or refuse with a clear reason.

    A folder holds the images of one model, seed, truncation and format; only --num may change
    between runs (the folder grows or shrinks to match).
    """
    marker = out_dir / MARKER
    if out_dir.exists() and not out_dir.is_dir():
        raise PipelineError(f"--out {out_dir} is a file, not a folder.")
    if marker.is_file():
        try:
            previous = read_json(marker)
            problem = None if isinstance(previous, dict) else f"it holds a {type(previous).__name__}, not an object"
        except (OSError, ValueError) as err:
            problem = str(err)
        if problem:
            raise PipelineError(
                f"{marker} is damaged ({problem}), so what {out_dir} holds is unknown; delete that folder to sample again, "
                "or pick another --out."
            )
        changed = [key for key in ("model", "seed", "truncation", "format") if previous.get(key) != settings[key]]
        if changed:
            details = ", ".join(f"{key} {previous.get(key)!r} -> {settings[key]!r}" for key in changed)
            raise PipelineError(
                f"{out_dir} holds samples made with other settings ({details}; see {marker}). "
                "Pick another --out, or delete that folder to start over."
            )
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        raise PipelineError(
            f"--out {out_dir} exists and was not written by pipeline.sample (no {MARKER} in it); "
            "refusing to write into it. Pick a new or empty folder."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, settings)


def _remove_stale_files(out_dir: Path, names: set[str], output_format: OutputFormat, num: int) -> None:
    for name in sorted(names):
        if output_format.is_stale(name, num):
            (out_dir / name).unlink()
            names.discard(name)


# --- the sampling loop -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSummary:
    out_dir: Path
    written: int  # images generated by this run
    skipped: int  # images already on disk from an earlier run
    files: int  # image files the folder holds for this --num


def sample_to_folder(
    generator: SavedModelGenerator,
    out_dir: str | os.PathLike,
    num: int,
    *,
    seed: int = 0,
    batch_size: int = 256,
    output_format: str = "png",
    truncation: float | None = None,
    workers: int = 2,
    progress: bool = True,
) -> SampleSummary:
    """Write images 0..num-1 of `seed` to `out_dir` as files named by index, skipping existing ones.

    Generation runs on this thread while a pool of `workers` threads encodes and writes finished
    files; at most a few batches wait for the writers, so memory stays flat however large `num`
    is. Every file is written atomically: a killed run leaves whole files, and re-running resumes.
    """
    from tqdm import tqdm

    if num <= 0:
        raise PipelineError(f"--num must be at least 1, got {num}.")
    if batch_size <= 0:
        raise PipelineError(f"--batch-size must be at least 1, got {batch_size}.")
    fmt = FORMATS[output_format]
    out_dir = Path(out_dir)
    settings = {
        "model": generator.fingerprint(),
        "model_path": str(generator.path.resolve()),
        "seed": seed,
        "truncation": truncation,
        "format": output_format,
        "num": num,
        "images_per_file": fmt.unit,
        "image_shape": list(generator.image_shape),
        "latents": LATENTS_RECIPE,
    }
    check_apart("--model", generator.path, "--out", out_dir)
    claim_output_folder(out_dir, settings)
    remove_stale_temporaries(out_dir)  # files a killed run was writing
    existing = {entry.name for entry in out_dir.iterdir()}
    _remove_stale_files(out_dir, existing, fmt, num)
    skipped = sum(stop - start for start, stop in fmt.units(num) if fmt.file_name(start, stop) in existing)
    todo = ((start, stop) for start, stop in fmt.units(num) if fmt.file_name(start, stop) not in existing)

    bar = tqdm(total=num, initial=skipped, unit="img", desc="sampling", disable=not progress, smoothing=0.1)
    with bar, concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque = collections.deque()
        for files in _generate_files(generator, todo, num, fmt, seed, batch_size, truncation, bar):
            pending.append(pool.submit(_write_files, out_dir, fmt, files, seed))
            while len(pending) > 2 * workers:  # back-pressure: bounded memory, generator waits for writers
                pending.popleft().result()
        for future in pending:
            future.result()
    return SampleSummary(out_dir, written=num - skipped, skipped=skipped, files=-(-num // fmt.unit))


def _generate_files(generator, todo, num, fmt, seed, batch_size, truncation, bar) -> Iterator[list]:
    """Yield, batch after batch, the files completed so far: [(start, stop, indices, images)].

    A file may span batches (1,000-image chunks) or a batch many files (PNGs); a file is yielded
    once all its images exist.
    """
    partial: dict[int, list[np.ndarray]] = {}
    for indices in _batches(todo, batch_size):
        images = generator.images(indices, seed, truncation)
        bar.update(len(indices))
        starts = indices - indices % fmt.unit
        cuts = np.flatnonzero(np.diff(starts)) + 1
        finished = []
        for part_indices, part_images in zip(np.split(indices, cuts), np.split(images, cuts)):
            start = int(part_indices[0] - part_indices[0] % fmt.unit)
            stop = min(start + fmt.unit, num)
            partial.setdefault(start, []).append(part_images)
            if part_indices[-1] + 1 == stop:
                finished.append((start, stop, np.arange(start, stop), np.concatenate(partial.pop(start))))
        yield finished


def _batches(todo: Iterable[tuple[int, int]], batch_size: int) -> Iterator[np.ndarray]:
    """The indices of the files still to write, in order, `batch_size` at a time."""
    batch: list[np.ndarray] = []
    size = 0
    for start, stop in todo:
        while start < stop:
            take = min(stop - start, batch_size - size)
            batch.append(np.arange(start, start + take, dtype=np.int64))
            size += take
            start += take
            if size == batch_size:
                yield np.concatenate(batch)
                batch, size = [], 0
    if batch:
        yield np.concatenate(batch)


def _write_files(out_dir: Path, fmt: OutputFormat, files: list, seed: int) -> None:
    for start, stop, indices, images in files:
        fmt.write(out_dir / fmt.file_name(start, stop), indices, images, seed)


def save_first_grid(
    generator: SavedModelGenerator, path: str | os.PathLike, count: int, seed: int, truncation: float | None = None
) -> None:
    """A contact sheet of images 0..count-1 of `seed`: the same images as the first sampled files."""
    save_grid(path, generator.images(np.arange(count), seed, truncation))

