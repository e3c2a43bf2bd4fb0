"""The files a sampling writes: every file holds a fixed range of image indices, named by it, in
one of the `FORMATS` (png, npz, tfrecord), written whole or not at all (components.sampler)."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.artifacts import _publish_mode, temporary_prefix
from components.grid import encode_png

CHUNK_SIZE = 1000  # images per .npz / .tfrecord file
DISK_BLOCK = 4096  # every file takes whole blocks of the file system


@dataclass(frozen=True)
class OutputFormat:
    """How images become files: `unit` images per file, named by the index range they hold."""

    name: str
    unit: int
    write: Callable[[Path, np.ndarray, np.ndarray, int], None]  # (path, indices, images, seed)
    overhead: int = 0  # bytes a file holds per image beyond its pixels, at most

    def file_name(self, start: int, stop: int) -> str:
        if self.unit == 1:
            return f"{start:06d}.{self.name}"
        return f"{start:06d}-{stop - 1:06d}.{self.name}"

    def units(self, num: int) -> Iterator[tuple[int, int]]:
        """The (start, stop) index range of every file of a folder of `num` images, in order."""
        for start in range(0, num, self.unit):
            yield start, min(start + self.unit, num)

    def holds(self, name: str, num: int) -> bool:
        """True if `name` is one of the files of a folder of `num` images in this format.

        A name of this format that is not is left by an earlier run with another --num (a PNG past
        the end, a last chunk cut at another point), or is not ours at all.
        """
        start = self.file_start(name)
        return (
            start is not None
            and start < num
            and start % self.unit == 0
            and name == self.file_name(start, min(start + self.unit, num))
        )

    def file_start(self, name: str) -> int | None:
        """The first index of the file `name` if it is named as this format names files, else None."""
        match = re.fullmatch(rf"(\d{{6,}})(?:-(\d{{6,}}))?\.{self.name}", name)
        if not match or (match.group(2) is None) != (self.unit == 1):
            return None
        return int(match.group(1))

    def images_in(self, names: Iterable[str], num: int) -> int:
        """How many of the images of a folder of `num` the regular files `names` already hold: counted
        from the names on disk, so a huge --num costs nothing before the first image."""
        starts = (self.file_start(name) for name in names if self.holds(name, num))
        return sum(min(start + self.unit, num) - start for start in starts)

    def estimated_bytes(self, count: int, image_shape: Sequence[int]) -> int:
        """The disk space `count` images take in this format, at most: their raw pixels (generated
        images compress little) and overhead, every file rounded up to whole blocks."""
        per_file = self.unit * (math.prod(image_shape) + self.overhead)
        return -(-count // self.unit) * -(-per_file // DISK_BLOCK) * DISK_BLOCK


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
        _publish_mode(Path(tmp), directory=False)  # mkstemp makes it private; samples are shared like any file
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
    from components.shards import serialize_example, write_shard

    records = (
        serialize_example(image, f"seed-{seed}/{index:06d}.png", hashlib.sha256(image.tobytes()).hexdigest())
        for index, image in zip(indices, images)
    )
    _replace_into(path, lambda tmp: write_shard(tmp, records))


FORMATS = {
    "png": OutputFormat("png", 1, _write_png, overhead=100),  # PNG signature and chunks, a deflate block per row
    "npz": OutputFormat("npz", CHUNK_SIZE, _write_npz, overhead=8),  # its int64 index
    "tfrecord": OutputFormat("tfrecord", CHUNK_SIZE, _write_tfrecord, overhead=200),  # source, sha256, framing
}
