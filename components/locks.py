"""One writer per folder: advisory locks on run folders, data folders, export targets and sample folders.

A folder's lock is the hidden file `.<name>.lock` beside it (in its parent), for three reasons:

- an ingest publishes a data folder by renaming a finished staging folder over it: a lock file
  inside would be replaced with the folder, and two processes would hold locks on different files;
- the lock can be taken before the folder exists, and before anything looks inside it, so a
  folder of someone else's is never written into just to lock it;
- a file of ours inside a folder would count as one the folder-ownership checks do not know
  (components.runfolder, components.data_folder).

The lock is filelock's `ReadWriteLock`, a SQLite database whose locks are the operating system's
(POSIX record locks): they vanish when their process ends, however it ends, so a lock file left
by a killed process never blocks the next command; the empty file itself stays (deleting a lock
file while another process opens it would let two processes lock two different files).

- `writing(folder)`: exclusive. A training's run folder, an ingest's output, an export target,
  a sampling's output folder. A second writer is refused at once (`PipelineError`, naming the
  process that holds it), or with `wait` waits that long first.
- `reading(folder)`: shared. Every command that reads a data folder holds it while it reads, so
  a re-ingest into the folder is refused instead of mixing old and new records under one run.

Both nest within a process: a training inside `pipeline.run`, an evaluator inside a training,
a read inside this process's own write. Where no lock file can be created (a read-only parent
folder), `reading` goes on without one: nobody can replace that folder either. Object-store
URIs are not locked (they have no such locks); their readers copy the data to a local folder first.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import filelock

from components.errors import PipelineError

# How many holds of each mode this process has on each lock file: a read inside this process's own
# write is already covered by the write (filelock's lock refuses to change modes within a process).
_held: Counter[tuple[Path, str]] = Counter()


def lock_file(folder: str | os.PathLike) -> Path:
    """The lock of `folder`: `.<name>.lock` beside it (symbolic links resolved, so every path to one
    folder gives the same lock)."""
    folder = Path(folder).resolve()
    return folder.with_name(f".{folder.name or 'root'}.lock")


@contextlib.contextmanager
def writing(folder: str | os.PathLike, flag: str, *, wait: float = 0.0) -> Iterator[None]:
    """Hold `folder` exclusively; `flag` names it in messages (e.g. "`run`", components.errors). Another holder, writer or
    reader, makes this a `PipelineError` at once, or after `wait` seconds of waiting for it."""
    with _holding(folder, flag, "write", wait):
        yield


@contextlib.contextmanager
def reading(folder: str | os.PathLike, flag: str) -> Iterator[None]:
    """Hold `folder` shared with other readers; a process writing it makes this a `PipelineError`."""
    with _holding(folder, flag, "read", 0.0):
        yield


@contextlib.contextmanager
def _holding(folder: str | os.PathLike, flag: str, mode: str, wait: float) -> Iterator[None]:
    path = lock_file(folder)
    if mode == "read" and _held[path, "write"]:
        yield
        return
    lock = _open(path, optional=mode == "read")
    if lock is None:
        yield
        return
    acquire = lock.acquire_write if mode == "write" else lock.acquire_read
    try:
        try:
            acquire(blocking=False)
        except filelock.Timeout:
            if wait <= 0:
                raise
            print(f"note: {_in_use(folder, flag, mode, path)}; waiting up to {wait:.0f} s for it to finish", file=sys.stderr)
            acquire(timeout=wait, blocking=True)
    except filelock.Timeout:
        advice = "wait for it to finish (or stop it), then run this command again"
        if mode == "write":
            advice += ", or choose another folder: one process at a time may write a folder, and none while others read it"
        raise PipelineError(f"{_in_use(folder, flag, mode, path)}; {advice}.") from None
    except RuntimeError as err:  # this process already holds it in the other mode
        raise PipelineError(
            f"{flag} {folder}: this process already {'writes' if mode == 'read' else 'reads'} it ({err})."
        ) from err
    except sqlite3.DatabaseError as err:
        raise PipelineError(f"{path} is not a lock file of ours ({err}); move it away and run the command again.") from err
    _held[path, mode] += 1
    try:
        yield
    finally:
        _held[path, mode] -= 1
        lock.release()


def _open(path: Path, *, optional: bool) -> filelock.ReadWriteLock | None:
    """The lock object of `path` (its folder and file created); None when `optional` and the folder
    cannot be written. Anything but a regular file at `path` (a folder, a link, a pipe) is refused:
    no lock could be taken there, and a link's target is not ours to write."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _check_lock_file(path)
        return filelock.ReadWriteLock(path)
    except (NotADirectoryError, FileExistsError) as err:
        raise PipelineError(
            f"cannot lock {path.parent / path.name[1:-5]}: a part of {path.parent} is a file, not a folder."
        ) from err
    except (OSError, sqlite3.OperationalError) as err:
        unwritable = isinstance(err, sqlite3.OperationalError) or err.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        if optional and unwritable:  # a folder whose parent nobody can write, nobody can replace
            return None
        if isinstance(err, OSError):
            raise
        raise PipelineError(f"cannot create the lock file {path} ({err}); check that {path.parent} can be written.") from err


def _check_lock_file(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode):
        return
    kind = "a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a regular file"
    raise PipelineError(
        f"{path} is {kind}, but the lock file of {path.parent / path.name[1:-5]} goes there; "
        "move it away and run the command again."
    )


def _in_use(folder: str | os.PathLike, flag: str, mode: str, path: Path) -> str:
    """'`run` M is being written by process 12 (python -m pipeline.train ...)': who holds the lock."""
    found = holders(path)
    if not found:
        return f"{flag} {folder} is being {'written' if mode == 'read' else 'written or read'} by another process"
    doing = "written" if "write" in found.values() else "read"
    return f"{flag} {folder} is being {doing} by " + ", ".join(f"process {pid}{_command_of(pid)}" for pid in sorted(found))


def holders(path: str | os.PathLike) -> dict[int, str]:
    """The other processes holding a lock on the file `path`, each with "read" or "write" (from
    Linux's /proc/locks; empty elsewhere, or when the kernel does not say)."""
    try:
        stat = os.stat(path)
        table = Path("/proc/locks").read_text()
    except OSError:
        return {}
    device = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    found: dict[int, str] = {}
    for line in table.splitlines():
        fields = line.split()
        if device in fields and "->" not in fields:  # "->": a process waiting for the lock, not holding it
            at = fields.index(device)
            pid, kind = int(fields[at - 1]), fields[at - 2].lower()
            if pid not in (0, os.getpid()) and found.get(pid) != "write":
                found[pid] = kind
    return found


def _command_of(pid: int) -> str:
    """' (python -m pipeline.train --data ...)': what a process runs, as far as this machine tells."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")
    except OSError:
        return ""
    words = [Path(words[0]).name, *words[1:]] if words and words[0] else words
    text = " ".join(" ".join(words).split())
    return f" ({text[:120]}{'...' if len(text) > 120 else ''})" if text else ""
