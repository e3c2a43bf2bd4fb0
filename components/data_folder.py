"""An ingest output folder: what makes it ours, and how a new one replaces an old one safely.

A data folder is ours when it holds a valid `manifest.json`; its own files are the manifest,
`rejects.jsonl`, the shards the manifest lists and the cache files in `cache/`. The ingest
replaces only such a folder, and only when it holds nothing else: a user's file beside our
shards, or in `cache/`, is never deleted.

A new output is built in a staging folder beside the output (`.<name>.staging-<token>`, marked
by `_staging.json` with the process that owns it) and then published:

- local disks: the finished staging folder is renamed into place (an old output is moved aside
  first and deleted after), so a reader sees the old output or the new one, never half of one;
- object stores (no atomic rename): the old manifest is deleted first, so the old output stops
  existing for readers; then its files, then the new shards and rejects move in, and the new
  manifest is written last: it is what makes the output exist.

Staging folders and set-aside outputs left by a killed ingest are removed by the next ingest
of the same output (only those whose marker names a process of this machine that is gone).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path

from components import beamfs
from components.artifacts import MANIFEST, is_temporary, process_alive, read_small_file
from components.errors import PipelineError

REJECTS = "rejects.jsonl"
CACHE = "cache"
MARKER = "_staging.json"
_CACHE_FILE = re.compile(r"eval-[0-9a-f]+\.json|verified-shards\.json")


def read_output_manifest(output: str) -> dict | None:
    """The manifest of an existing ingest output, or None (absent, torn or not ours)."""
    from components.records import manifest_problem

    path = beamfs.join(output, MANIFEST)
    try:
        manifest = json.loads(read_small_file(path))
    except PipelineError:
        raise  # a FIFO or a giant in its place: named, not taken for an absent manifest
    except Exception:  # noqa: BLE001 - absent, unreadable, torn: not a finished output
        return None
    return manifest if manifest_problem(manifest) is None else None


def own_files(manifest: dict) -> set[str]:
    """The names (relative to the folder) that an ingest output with this manifest may hold."""
    shards = {shard["file"] for split in manifest["splits"].values() for shard in split["shards"]}
    return {MANIFEST, REJECTS, *shards}


def foreign_entries(output: str, manifest: dict | None) -> list[str]:
    """Entries of `output` this project did not write (everything but `cache/`, when there is no
    manifest), named relative to `output`: the files in `cache/` are looked at one by one, as a
    replaced output takes its cache with it."""
    ours = own_files(manifest) if manifest else set()
    if beamfs.is_uri(output):
        prefix = output.rstrip("/") + "/"
        names = [path[len(prefix) :] for path in beamfs.list_files(prefix)]
    else:
        names = []
        for entry in Path(output).iterdir():
            if entry.name == CACHE and entry.is_dir() and not entry.is_symlink():
                names += [f"{CACHE}/{inner.name}" for inner in entry.iterdir()]
            else:
                names.append(entry.name)
    return sorted(name for name in names if name not in ours and not _is_cache_file(name))


def _is_cache_file(name: str) -> bool:
    """True for `cache/<file>` of ours: the evaluator's real-side figures (components.evaluator.baseline_cache),
    the shard verification record older versions wrote, and their temporaries."""
    folder, _, file = name.partition("/")
    return folder == CACHE and (_CACHE_FILE.fullmatch(file) is not None or is_temporary(file))


def check_replaceable(output: str, manifest: dict | None, overwrite: bool) -> None:
    """Refuse to write into `output` unless it is absent, empty, or an output of ours with nothing else
    in it (and then only with `overwrite`, or when its inputs or options changed)."""
    if not beamfs.is_uri(output) and not Path(output).exists():  # a file or a link there: components.guard refused it
        return
    foreign = foreign_entries(output, manifest)
    if manifest is None and foreign:
        raise PipelineError(
            f"`output` {output} exists and is not an ingest output (no valid {MANIFEST}; it holds {_some(foreign)}). "
            "Nothing was written: choose a new or empty `output` folder."
        )
    if foreign:
        raise PipelineError(
            f"`output` {output} is an ingest output but also holds {_some(foreign)}, which this project did not "
            "write; refusing to replace it (with or without `overwrite`). Move those out, or choose another `output`."
        )


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


# -- staging ------------------------------------------------------------------------------------


def new_staging(output: str) -> str:
    """A fresh staging folder beside `output`, marked with this process."""
    parent, name = beamfs.split(output)
    staging = beamfs.join(parent, f".{name}.staging-{secrets.token_hex(4)}")
    marker = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    beamfs.write_bytes(beamfs.join(staging, MARKER), json.dumps(marker).encode())
    return staging


def remove_leftovers(output: str) -> list[str]:
    """Delete staging folders of `output` whose ingest process (on this machine) is gone, and a
    set-aside old output of ours (a kill between the two renames of a local publish). Returns
    what was removed."""
    parent, name = beamfs.split(output)
    removed = []
    for staging in _marked_stagings(parent, name):
        try:
            marker = json.loads(beamfs.read_bytes(beamfs.join(staging, MARKER)))
        except Exception:  # noqa: BLE001 - a torn marker: its writer died while writing it
            marker = {"host": socket.gethostname(), "pid": -1}
        if marker.get("host") == socket.gethostname() and not process_alive(int(marker.get("pid", -1))):
            delete_folder(staging)
            removed.append(staging)
    if not beamfs.is_uri(output):
        for old in Path(parent).glob(f".{name}.old-*"):
            if old.is_symlink() or not old.is_dir():  # not an output we set aside: not ours to delete
                continue
            manifest = read_output_manifest(str(old))
            if manifest is not None and not foreign_entries(str(old), manifest):
                shutil.rmtree(old)
                removed.append(str(old))
    return removed


def _marked_stagings(parent: str, name: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems

    (result,) = FileSystems.match([beamfs.join(parent, f".{name}.staging-*", MARKER)])
    return sorted(beamfs.split(metadata.path)[0] for metadata in result.metadata_list)


def delete_folder(folder: str) -> None:
    if beamfs.is_uri(folder):
        beamfs.delete(list(beamfs.list_files(folder.rstrip("/") + "/")))
    else:
        shutil.rmtree(folder, ignore_errors=True)


# -- publishing ---------------------------------------------------------------------------------


def publish(staging: str, output: str, moves: dict[str, str], rejects: str, manifest: dict, previous: dict | None) -> None:
    """Make the staging folder's work the output: shards renamed to `moves` ({staged: final}),
    `rejects.jsonl` and, last, `manifest.json`; the previous output (ours, `previous`) replaced."""
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    if beamfs.is_uri(output):
        _publish_by_manifest(staging, output, moves, rejects, text, previous)
    else:
        _publish_by_rename(Path(staging), Path(output), moves, rejects, text)


def _publish_by_rename(staging: Path, output: Path, moves: dict[str, str], rejects: str, manifest: str) -> None:
    from components.artifacts import atomic_write_text

    for staged, final in moves.items():
        os.replace(staging / staged, staging / final)
    for leftover in staging.iterdir():  # progress counts, chunk summaries, the marker
        if leftover.name not in moves.values():
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    atomic_write_text(staging / REJECTS, rejects)
    atomic_write_text(staging / MANIFEST, manifest)
    old = None
    if output.exists():
        if not any(output.iterdir()):
            output.rmdir()
        else:
            old = output.with_name(f".{output.name}.old-{secrets.token_hex(4)}")
            os.replace(output, old)
    os.replace(staging, output)
    if old is not None:
        shutil.rmtree(old)


def _publish_by_manifest(
    staging: str, output: str, moves: dict[str, str], rejects: str, manifest: str, previous: dict | None
) -> None:
    if previous is not None:
        beamfs.delete([beamfs.join(output, MANIFEST)])  # first: from here on the old output does not exist
        old = [beamfs.join(output, name) for name in own_files(previous) if name != MANIFEST]
        beamfs.delete(old + list(beamfs.list_files(beamfs.join(output, CACHE) + "/")))
    beamfs.rename([beamfs.join(staging, staged) for staged in moves], [beamfs.join(output, final) for final in moves.values()])
    if rejects:
        beamfs.write_bytes(beamfs.join(output, REJECTS), rejects.encode())
    beamfs.write_bytes(beamfs.join(output, MANIFEST), manifest.encode())  # last: now the output exists
    delete_folder(staging)
