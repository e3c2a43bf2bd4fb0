"""Data folders on object stores: a verified local copy for the stages that train and evaluate.

`pipeline.ingest` can write its output to any Beam file system (s3://, gs://, hdfs://, azfs://).
TensorFlow 2.21 cannot read most of them (it has no s3:// scheme), and a training run reads its
shards many times over, so `local_data(uri)` copies a remote data folder once into a local cache
(`$ANIMEGAN_CACHE_DIR`, default `~/.cache/animegan-pipeline`, under `data/<hash of the URI>/`)
and hands the stages that local folder. Every shard is checked against the manifest (size,
record count, CRCs) before the copy is published (renamed into place, manifest last); a copy
that still matches the remote manifest is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from components import beamfs
from components.artifacts import MANIFEST, atomic_write_bytes
from components.errors import PipelineError

CACHE_VARIABLE = "ANIMEGAN_CACHE_DIR"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "animegan-pipeline")


def local_data(data: str, fs_flags: Sequence[str] = (), say: Callable[[str], None] = print) -> str:
    """A local folder with the contents of the data folder `data`: itself when it is local."""
    if not beamfs.is_uri(data):
        return data
    from components.records import manifest_problem

    beamfs.configure(fs_flags)
    uri = data.rstrip("/")
    try:
        manifest_bytes = beamfs.read_bytes(beamfs.join(uri, MANIFEST))
        manifest = json.loads(manifest_bytes)
    except Exception as err:
        raise PipelineError(
            f"cannot read {uri}/{MANIFEST} ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
            "is it an ingest output, and are the file system's options (after --) right?"
        ) from err
    problem = manifest_problem(manifest)
    if problem:
        raise PipelineError(f"{uri}/{MANIFEST} is not a valid manifest: {problem}.")
    local = cache_root() / "data" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if _same_manifest(local, manifest_bytes):
        return str(local)
    _download(uri, manifest, manifest_bytes, local)
    say(f"data: {uri} copied to {local} ({manifest.get('bytes', 0) / 1e6:,.1f} MB, every shard checked)")
    return str(local)


def _same_manifest(local: Path, manifest_bytes: bytes) -> bool:
    try:
        return (local / MANIFEST).read_bytes() == manifest_bytes
    except OSError:
        return False


def _download(uri: str, manifest: dict, manifest_bytes: bytes, local: Path) -> None:
    """Copy every shard into a fresh folder beside `local`, verify it, then swap it into place."""
    from components.shards import verify_shard

    try:
        local.parent.mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError) as err:
        raise PipelineError(
            f"the local copy of {uri} cannot be made under {local.parent}: a part of that path is a file, not a folder. "
            f"Set {CACHE_VARIABLE} to a folder (or unset it for ~/.cache/animegan-pipeline), or move that file away."
        ) from err
    staging = local.with_name(f".{local.name}.download-{secrets.token_hex(4)}")
    staging.mkdir()
    try:
        for split in manifest["splits"].values():
            for shard in split["shards"]:
                data = beamfs.read_bytes(beamfs.join(uri, shard["file"]))
                if len(data) != shard["bytes"]:
                    raise PipelineError(
                        f"shard {uri}/{shard['file']} holds {len(data)} bytes, the manifest says {shard['bytes']}."
                    )
                (staging / shard["file"]).write_bytes(data)
                verify_shard(staging / shard["file"], shard["count"], shown_as=f"{uri}/{shard['file']}")
        atomic_write_bytes(staging / MANIFEST, manifest_bytes)  # last: the copy is complete
        old = local.with_name(f".{local.name}.old-{secrets.token_hex(4)}")
        if local.exists():
            os.replace(local, old)
        os.replace(staging, local)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
