"""Batch sampling from an exported generator SavedModel alone (components.saved_generator loads
and checks it): which images go to which files, streamed, in bounded memory and disk.

Image `i` of a seed always has the same latent (components.latents), so files are named by index: two
runs with one seed write byte-identical files, whatever the batch size, and a re-run only
generates the files that are missing.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components import guard, locks
from components.artifacts import atomic_write_bytes, atomic_write_json, read_json, remove_stale_temporaries
from components.config import MAX_SEED
from components.errors import PipelineError
from components.grid import encode_png, make_grid
from components.latents import RECALIBRATION_FIRST_INDEX
from components.latents import RECIPE as LATENTS_RECIPE
from components.sample_formats import FORMATS, OutputFormat
from components.saved_generator import (
    MAX_BATCH_SIZE,
    SERVING_SIGNATURE,  # noqa: F401 (imported from here by the exporter)
    SavedModelGenerator,
)
from components.settings import check_settings, setting

MARKER = "samples.json"
# Limits of the sampling flags. Indices stay below the latents kept for BatchNorm statistics
# (components.latents), so no sample is an image the statistics were measured on.
MAX_NUM = RECALIBRATION_FIRST_INDEX
DEFAULT_BATCH_SIZE = 256
MAX_GRID_COUNT = 1024  # a 32x32 contact sheet: 4,000 pixels a side at 128x128
MAX_TRUNCATION = 100.0  # latents are N(0, 1): beyond 6 a clip changes fewer than one value in 10^8
MAX_WORKERS = 64


def generate_batch_setting():
    """Images per generator call: one setting of the sampling and of the evaluate stage."""
    return setting(
        DEFAULT_BATCH_SIZE,
        "images per generator call (memory, not results: the images are the same whatever it is)",
        kind=int,
        low=1,
        high=MAX_BATCH_SIZE,
        metavar="N",
    )


@dataclass(frozen=True)
class SampleOptions:
    """Which images a sampling makes and how (`sample_to_folder`, `save_first_grid`); `pipeline.sample`
    builds its flags from these fields."""

    num: int = setting(
        64, "number of images (indices 0..N-1); refused when the disk has not room for them", kind=int, low=1, high=MAX_NUM
    )
    format: str = setting(
        "png",
        "png: one file per image; npz: arrays 'images' uint8[n,H,W,3] and 'indices'; tfrecord: Examples in the ingest schema",
        kind=str,
        choices=tuple(sorted(FORMATS)),
    )
    seed: int = setting(0, "the seed: same seed, same images", kind=int, low=0, high=MAX_SEED)
    generate_batch: int = generate_batch_setting()
    truncation: float | None = setting(
        None,
        "clip every latent value to [-T, T] (smaller: more typical, less varied faces); unset: no clipping",
        kind=float,
        low=0,
        high=MAX_TRUNCATION,
        low_included=False,
    )
    grid_count: int = setting(64, "images on the --grid contact sheet", kind=int, low=1, high=MAX_GRID_COUNT)
    workers: int = setting(2, "threads encoding and writing files", kind=int, low=1, high=MAX_WORKERS)

    def __post_init__(self) -> None:
        check_settings(self)


# --- the output folder -------------------------------------------------------------------------------


def claim_output_folder(out_dir: Path, settings: dict, files: set[str]) -> None:
    """Make `out_dir` ours (a marker file records what it holds), or refuse with a clear reason.

    A folder holds the images of one model, seed, truncation and format; only --num may change
    between runs. The folder shrinks to match: of the regular `files` in it, those the marker says
    an earlier run wrote that a folder of the new --num does not hold are deleted, before the
    marker is replaced (a killed run leaves them known), and nothing else is.
    """
    marker = out_dir / MARKER
    guard.check_layout("`output`", files=[marker])  # a linked marker would be read through, then replaced
    previous = None
    if marker.is_file():
        try:
            previous = read_json(marker)
            problem = None if isinstance(previous, dict) else f"it holds a {type(previous).__name__}, not an object"
        except (OSError, ValueError) as err:
            problem = str(err)
        if problem:
            raise PipelineError(
                f"{marker} is damaged ({problem}), so what {out_dir} holds is unknown; delete that folder to sample again, "
                "or pick another `output`."
            )
        changed = [key for key in ("model", "seed", "truncation", "format") if previous.get(key) != settings[key]]
        if changed:
            details = ", ".join(f"{key} {previous.get(key)!r} -> {settings[key]!r}" for key in changed)
            raise PipelineError(
                f"{out_dir} holds samples made with other settings ({details}; see {marker}). "
                "Pick another `output`, or delete that folder to start over."
            )
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        raise PipelineError(
            f"`output` {out_dir} exists and was not written by pipeline.sample (no {MARKER} in it); "
            "refusing to write into it. Pick a new or empty folder."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if previous is not None:
        _remove_stale_files(out_dir, files, FORMATS[settings["format"]], settings["num"], previous.get("num"))
    atomic_write_json(marker, settings)


def _remove_stale_files(out_dir: Path, files: set[str], output_format: OutputFormat, num: int, written: object) -> None:
    """Delete the `files` a folder of `written` images holds and one of `num` does not."""
    if type(written) is not int:  # a marker without a count: no file is known to be ours
        return
    for name in sorted(files):
        if output_format.holds(name, written) and not output_format.holds(name, num):
            (out_dir / name).unlink()
            files.discard(name)


def _files_in(out_dir: Path, output_format: OutputFormat, num: int) -> set[str]:
    """The names of the regular files in `out_dir`; anything else where an image of a folder of `num`
    goes is refused, before anything is written (a folder or a link is never replaced nor counted)."""
    if not out_dir.is_dir():
        return set()
    files = set()
    with os.scandir(out_dir) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                files.add(entry.name)
            elif output_format.holds(entry.name, num):
                kind = "a symbolic link" if entry.is_symlink() else "a folder" if entry.is_dir() else "not a regular file"
                raise PipelineError(
                    f"`output`: {entry.path} is {kind}, but an image file of ours goes there; "
                    "move it away, or pick another `output` (nothing was written)."
                )
    return files


# --- the sampling loop -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSummary:
    out_dir: Path
    written: int  # images generated by this run
    skipped: int  # images already on disk from an earlier run
    files: int  # image files the folder holds for this --num


def sample_to_folder(
    generator: SavedModelGenerator, out_dir: str | os.PathLike, options: SampleOptions, *, progress: bool = True
) -> SampleSummary:
    """Write images 0..num-1 of the options' seed to `out_dir` as files named by index, skipping existing ones.

    Generation runs on this thread while a pool of `options.workers` threads encodes and writes
    finished files; at most a few batches wait for the writers, so memory stays flat however large
    `num` is. Every file is written atomically: a killed run leaves whole files, and re-running resumes.
    """
    fmt = FORMATS[options.format]
    out_dir = Path(out_dir)
    settings = {
        "model": generator.fingerprint(),
        "model_path": str(generator.path.resolve()),
        "seed": options.seed,
        "truncation": options.truncation,
        "format": options.format,
        "num": options.num,
        "images_per_file": fmt.unit,
        "image_shape": list(generator.image_shape),
        "latents": LATENTS_RECIPE,
    }
    check_outputs(generator.path, out_dir, None)
    # One sampling per folder at a time: two with other settings could both claim it before either marked it.
    with locks.writing(out_dir, "`output`"):
        return _sample_into(generator, out_dir, fmt, settings, options, progress=progress)


def _sample_into(generator, out_dir: Path, fmt, settings: dict, options: SampleOptions, *, progress) -> SampleSummary:
    from tqdm import tqdm

    num, seed, workers = options.num, options.seed, options.workers

    existing = _files_in(out_dir, fmt, num)
    skipped = fmt.images_in(existing, num)
    check_free_space(
        out_dir, fmt.estimated_bytes(num - skipped, generator.image_shape), f"{num - skipped:,} {settings['format']} images"
    )
    claim_output_folder(out_dir, settings, existing)
    remove_stale_temporaries(out_dir)  # files a killed run was writing
    todo = ((start, stop) for start, stop in fmt.units(num) if fmt.file_name(start, stop) not in existing)

    bar = tqdm(total=num, initial=skipped, unit="img", desc="sampling", disable=not progress, smoothing=0.1)
    with bar, concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque = collections.deque()
        for files in _generate_files(generator, todo, num, fmt, seed, options.generate_batch, options.truncation, bar):
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


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Refuse to start writing `needed` bytes into `folder` (or the disk it would be made on) when
    the disk has less free: a full disk midway is a long run lost."""
    disk = folder
    while not disk.exists() and disk != disk.parent:
        disk = disk.parent
    free = shutil.disk_usage(disk).free
    if needed > free:
        raise PipelineError(
            f"{what} need about {_human_bytes(needed)} but the disk of {disk.resolve()} has {_human_bytes(free)} free; "
            "lower `num`, or free space, or pick an `output` on a larger disk."
        )


def _human_bytes(count: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if count < 1000:
            return f"{count:.3g} {unit}"
        count /= 1000
    return f"{count:,.1f} PB"


def save_first_grid(generator: SavedModelGenerator, path: str | os.PathLike, options: SampleOptions) -> None:
    """A contact sheet of images 0..grid_count-1 of the options' seed: the same images as the first sampled files."""
    check_outputs(generator.path, None, Path(path))
    images = generator.images(np.arange(options.grid_count), options.seed, options.truncation, options.generate_batch)
    atomic_write_bytes(path, guard.mark_png(encode_png(make_grid(images))))  # marked: a later run may replace it, and only it


def check_outputs(model: Path, out_dir: Path | None, grid: Path | None) -> None:
    """Refuse an --output folder or a --grid file that may not be written (components.guard), before any
    image is made: neither may be or lie inside the SavedModel, and an existing --grid is replaced
    only if it is a contact sheet of ours. A --grid inside --output is refused: a later sampling into
    that folder would count it as one of its images, or replace it with one."""
    if out_dir is not None:
        guard.output_folder("`output`", out_dir, inputs=[("`model`", model)])
    if out_dir is not None and grid is not None and out_dir.resolve() in (grid.resolve(), *grid.resolve().parents):
        raise PipelineError(
            f"`grid` {grid} lies inside `output` {out_dir}, which holds only sample files (nothing was written). "
            "Choose a `grid` path outside that folder."
        )
    if grid is not None:
        what = "a contact sheet written by pipeline.sample"
        guard.output_file("`grid`", grid, ours=guard.is_marked_png, what=what, inputs=[("`model`", model)])
