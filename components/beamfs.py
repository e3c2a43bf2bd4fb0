"""Files through Apache Beam's `FileSystems`: local paths, gs://, s3://, hdfs://, azfs:// alike.

The ingest reads its inputs and writes its shards, manifest and rejects through here, on the
driver and inside Beam's workers, so input and output may both be object-store URIs and nothing
assumes a file system shared with the driver. A file system that needs options (S3's endpoint
and keys) gets them from the same Beam flags the pipeline runs with: `configure(flags)` must be
called in every process that touches files (the driver, and each worker: see
`components.example_gen`), because some runners (Dask) do not hand pipeline options to workers.

Object stores have no atomic rename and no empty objects; `write_bytes` therefore never writes
an empty file (it is an error), and atomicity comes from the protocol of the caller (the
manifest is written last, components.ingester).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

_RAW = CompressionTypes.UNCOMPRESSED  # never guess compression from a file's extension
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def configure(flags: Sequence[str] = ()) -> None:
    """Give Beam's file systems their options (e.g. `--s3_endpoint_url=...`) in this process.

    Called even without flags: S3 then reads the standard AWS environment variables.
    """
    FileSystems.set_options(PipelineOptions(list(flags)))


def is_uri(path: str) -> bool:
    """True for `scheme://...` (an object store or remote file system), False for a local path."""
    return bool(_SCHEME.match(str(path)))


def join(base: str, *names: str) -> str:
    return FileSystems.join(str(base), *names)


def split(path: str) -> tuple[str, str]:
    """(parent, name) of a path or URI."""
    return FileSystems.split(str(path).rstrip("/"))


def read_bytes(path: str, limit: int = -1) -> bytes:
    """The bytes of a file; at most `limit` of them when it is not -1."""
    with FileSystems.open(str(path), compression_type=_RAW) as handle:
        return handle.read(limit)


def write_bytes(path: str, data: bytes) -> None:
    """Create or replace `path` with `data` (object stores: the object appears when complete)."""
    if not data:
        raise ValueError(f"refusing to write an empty file {path} (object stores cannot hold one)")
    with FileSystems.create(str(path), compression_type=_RAW) as handle:
        handle.write(data)


def exists(path: str) -> bool:
    return FileSystems.exists(str(path))


def list_files(folder: str) -> dict[str, int]:
    """{path: size} of every file below `folder` (recursively; prefixes on object stores)."""
    pattern = join(folder, "**")
    (result,) = FileSystems.match([pattern])
    return {metadata.path: metadata.size_in_bytes for metadata in result.metadata_list}


def delete(paths: Sequence[str]) -> None:
    """Delete files (and, on local disks, folders with their contents); missing ones are ignored."""
    present = [path for path in paths if exists(path)]
    if present:
        FileSystems.delete(present)


def rename(sources: Sequence[str], targets: Sequence[str]) -> None:
    """Move files (object stores: copy, then delete the source; an existing target is replaced)."""
    if sources:
        FileSystems.rename(list(sources), list(targets))
