"""Paths, manifests and atomic writes shared by every stage.

Every output of the pipeline is written to a temporary sibling and then renamed into place, so a
reader never sees half a file or half a folder, and a killed job leaves either the old output or
the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line (log-style files such as metrics.jsonl, where appends are the point)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True, default=str) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temp folder beside `final`; on success rename it to `final`.

    On failure the temp folder is removed and `final` is untouched. With `overwrite`, an existing
    `final` is moved aside first and deleted only after the new one is in place.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        _publish_mode(tmp, directory=True)
        old = None
        if final.exists():
            if not overwrite:
                raise FileExistsError(f"{final} already exists")
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
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


def saved_model_versions(export_root: str | os.PathLike) -> list[Path]:
    """Integer-named version folders holding a SavedModel, oldest first (TF Serving layout)."""
    root = Path(export_root)
    if not root.is_dir():
        return []
    versions = [p for p in root.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()]
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
