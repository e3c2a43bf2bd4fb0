"""Paths, manifests and atomic writes shared by every stage.

Every output of the pipeline is written to a temporary sibling and then renamed into place, so a
reader never sees half a file or half a folder, and a killed job leaves either the old output or
the new one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from components.errors import PipelineError

MANIFEST = "manifest.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path, directory: bool) -> None:
    """Give a temp file or folder the permissions a plain `open`/`mkdir` would have.

    `mkstemp`/`mkdtemp` create private (0600/0700) entries; outputs are meant to be shared.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


# Temporary siblings are named `.<name>.<host>-<pid>.<random>.tmp`: a later run can tell those of
# a process that died (killed mid-write) from those of one still writing, and remove them.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMPORARY = re.compile(r"\..+\.([0-9a-f]{8})-(\d+)\.[^.]+\.tmp")


def temporary_prefix(name: str) -> str:
    """The prefix of this process's temporary sibling of `name` (see `remove_stale_temporaries`)."""
    return f".{name}.{_HOST}-{os.getpid()}."


def is_temporary(name: str) -> bool:
    """True for the name of a temporary sibling any process of this project writes (see `temporary_prefix`)."""
    return _TEMPORARY.fullmatch(name) is not None


def process_alive(pid: int) -> bool:
    """True if a process with this id runs on this machine (or might: one we may not signal)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders in `folder` left by processes of this machine that
    are gone (a write or an export killed half-way); return what was removed."""
    folder = Path(folder)
    removed = []
    for entry in folder.iterdir() if folder.is_dir() else ():
        match = _TEMPORARY.fullmatch(entry.name)
        if match and match.group(1) == _HOST and not process_alive(int(match.group(2))):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _publish_mode(Path(tmp), directory=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Pretty, key-sorted JSON written atomically (stable bytes make diffs and hashes useful)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


MAX_JSON_BYTES = 64 * 2**20  # far above any JSON file this project writes (a manifest, a cache, a best file)
MAX_LOG_BYTES = 256 * 2**20  # metrics.jsonl: a line per log interval, megabytes for the longest runs


def read_small_file(path: str | os.PathLike, limit: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of a file this project reads whole (a local path or a URI on a Beam file system).

    Only a regular file of at most `limit` bytes is read: a FIFO or a device put in a file's place
    would block the reader or never end, and a huge (or sparse) file would be read into memory. The
    file is opened without blocking and checked on the open descriptor, so it cannot be swapped in
    between. A folder raises IsADirectoryError, as `open` does; the rest is a PipelineError naming it.
    """
    if "://" in str(path):
        from components import beamfs  # object stores hold no FIFOs; the read is bounded all the same

        data = beamfs.read_bytes(str(path), limit + 1)
    else:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            status = os.fstat(fd)
            if stat.S_ISDIR(status.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
            if not stat.S_ISREG(status.st_mode):
                raise PipelineError(
                    f"{path} is not a regular file (it is a FIFO, a socket or a device); it is not read, as it could "
                    "block or never end. Put the file itself there, or give another path."
                )
            data = handle.read(limit + 1) if status.st_size <= limit else None  # a sparse giant is not read at all
    if data is None or len(data) > limit:
        raise PipelineError(
            f"{path} is larger than {limit // 2**20} MB, far more than a file of this kind holds; it is not read. "
            "Check that it is the right file."
        )
    return data


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file, read with `read_small_file`'s checks (ValueError when it is not JSON)."""
    return json.loads(read_small_file(path).decode("utf-8"))


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line (log-style files such as metrics.jsonl, where appends are the point).

    A file that has other names too (a hard-linked backup copy of the folder, `cp -al`) is not
    appended to, as the other names would change with it: it is copied with the line added and the
    copy replaces this name atomically, leaving the other names as they were.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode("utf-8")
    with open(path, "ab") as handle:
        if os.fstat(handle.fileno()).st_nlink == 1:
            handle.write(line)
            return
    atomic_write_bytes(path, path.read_bytes() + line)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file; lines a crash tore (or damage garbled) are skipped with a
    note, so a log such as metrics.jsonl never stops a run. See `jsonl_is_damaged`."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    text = read_small_file(path, MAX_LOG_BYTES).decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            print(f"note: line {number} of {path} is damaged (a write cut short by a crash?); it is skipped", file=sys.stderr)
    return records


def jsonl_is_damaged(path: str | os.PathLike) -> bool:
    """True when a JSON-lines file has a torn last line or a line that is not a JSON object."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    text = read_small_file(path, MAX_LOG_BYTES).decode("utf-8", errors="replace")
    if not text.endswith("\n"):
        return True
    for line in filter(str.strip, text.splitlines()):
        try:
            if not isinstance(json.loads(line), dict):
                return True
        except ValueError:
            return True
    return False


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temp folder beside `final`; on success rename it to `final` (which must not exist).

    On failure the temp folder is removed and `final` is untouched; a temp folder left by a
    killed process goes with the next `remove_stale_temporaries` of the parent.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(final.name), suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        _publish_mode(tmp, directory=True)
        if final.exists():
            raise FileExistsError(f"{final} already exists")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fingerprint(obj: Any) -> str:
    """A short stable hash of any JSON-able value (options, file lists, hyperparameters)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def flatten_dict(values: dict, prefix: str = "") -> dict[str, Any]:
    """`{"model": {"g_filters": 32}}` -> `{"model.g_filters": 32}`: nested settings as comparable keys."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten_dict(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_settings(before: dict, now: dict, then: str = "before") -> list[str]:
    """One line per flattened key whose value differs: "key: old {then}, new now".

    For the errors that refuse to resume a run or a search under other settings: the user sees
    exactly which settings differ.
    """
    before, now = flatten_dict(before), flatten_dict(now)
    return [
        f"{key}: {before.get(key)!r} {then}, {now.get(key)!r} now"
        for key in sorted(before.keys() | now.keys())
        if before.get(key) != now.get(key)
    ]


def tool_versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact, recorded in every manifest."""
    from importlib import metadata

    versions = {}
    for name in ("tensorflow", "tensorflow-cpu", "keras", "keras-tuner", "apache-beam", "numpy", "pillow"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


class RunPaths:
    """The layout of a run folder (`artifacts/<run>/`), named once so no stage guesses a path."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.samples = self.root / "samples"
        self.logs = self.root / "logs"
        self.metrics = self.root / "metrics.jsonl"
        self.hparams = self.root / "hparams.json"
        self.tuner = self.root / "tuner"
        self.best_hyperparameters = self.root / "best_hyperparameters.json"
        self.export = self.root / "export" / "generator"


def is_version_name(name: str) -> bool:
    """True for the name of an export version folder: ASCII digits only (`str.isdigit` also takes
    characters such as '²' that `int` refuses)."""
    return re.fullmatch("[0-9]+", name) is not None


def saved_model_versions(export_root: str | os.PathLike) -> list[Path]:
    """Integer-named version folders holding a SavedModel, oldest first (TF Serving layout)."""
    root = Path(export_root)
    if not root.is_dir():
        return []
    versions = [p for p in root.iterdir() if is_version_name(p.name) and (p / "saved_model.pb").is_file()]
    return sorted(versions, key=lambda p: int(p.name))


def resolve_saved_model(path: str | os.PathLike) -> Path:
    """Find the SavedModel a user means: a version folder, its parent (newest version), or a run.

    Raises `PipelineError` naming the path when none of these holds a SavedModel.
    """
    from components.errors import PipelineError

    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    for root in (path, RunPaths(path).export):
        versions = saved_model_versions(root)
        if versions:
            return versions[-1]
    if not path.exists():
        raise PipelineError(f"{path} does not exist; pass a SavedModel folder, its parent, or a run folder.")
    raise PipelineError(
        f"{path} holds no SavedModel (no saved_model.pb in it, in a numbered version folder under it, "
        "or under export/generator/ of a run). Export one with `python -m pipeline.export --run <run folder>`."
    )
