"""The one place that decides whether a command may write a path.

Every output of every command, a file (an `eval.json`, a contact sheet) or a folder (a run, a data
folder, a sample folder, an export target), goes through `output_file` or `output_folder` before
anything is written. They refuse, each with one `PipelineError` that names the setting and the path
(a component's label is the setting's name in backticks, components.errors; a CLI's, its flag):

- a symbolic link at the path: replacing it would turn the user's link into a real file or folder,
  and writing through it would write where the command line does not say;
- a path under a file (or a broken link): nothing can be created there;
- a folder where a file is expected, a file (or a device, a pipe) where a folder is expected;
- an output that is an input of the command, lies inside one or contains one: the output would
  become input (a run folder inside the image folder is read as faces by the next ingest);
- an existing file that is not provably ours: only a file in one of our formats (`ours`) is
  replaced. An existing folder is written only when the check of its own marker agrees, which
  the caller runs next (components.runfolder, components.data_folder, components.sampler): each
  kind of folder knows which of its contents are ours; `check_layout` refuses one whose known
  entries are of the wrong kind (a file named like a folder of ours, a link named like a file).

`data_inputs` names the inputs behind a data folder (the image folder it was ingested from), and
`mark_png` / `is_marked_png` are how a contact sheet of ours is told from a user's picture.

Object-store URIs are only checked against the inputs: they have no links, files-as-folders or
parents of their own.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path, PurePath, PurePosixPath

from components.artifacts import MANIFEST, read_json
from components.errors import PipelineError

Inputs = Iterable[tuple[str, str | os.PathLike | None]]  # (flag, path) of every input of the command; None: none

_LARGEST_OWN_FILE = 256 << 20  # bytes; a larger file is none of ours (records, contact sheets), and is not read to find out


def output_file(flag: str, path: str | os.PathLike, *, ours: Callable[[Path], bool], what: str, inputs: Inputs = ()) -> None:
    """Check that the file `path` may be written; `ours(path)` tells an existing file of ours, which
    `what` describes to the user ("an evaluation written by pipeline.evaluate")."""
    path = Path(path)
    _check_place(flag, path)
    if path.is_dir():
        raise PipelineError(
            f"{flag} {path} is a folder; {flag} names a file to write: give a file path (inside it, for example)."
        )
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise PipelineError(f"{flag} {path} is not a regular file (a device, a pipe or a socket); give the path of a new file.")
    for input_flag, folder in inputs:
        if folder is not None and _comparable(folder) in (_comparable(path), *_comparable(path).parents):
            raise PipelineError(
                f"{flag} {path} lies inside {input_flag} {folder}, an input of this command: writing there would change "
                "that input (nothing was written). Choose a path outside it."
            )
    if path.exists() and (path.stat().st_size > _LARGEST_OWN_FILE or not ours(path)):
        raise PipelineError(
            f"{flag} {path} exists and is not {what}; refusing to replace it (nothing was written). "
            "Choose another path, or move that file away first."
        )


def output_folder(flag: str, path: str | os.PathLike, *, inputs: Inputs = ()) -> None:
    """Check that the folder `path` (a local path or a URI) may be created or written into, apart from
    its contents, which the caller's own marker check judges."""
    if _is_uri(path):
        _check_apart_from(flag, path, inputs)
        return
    path = Path(path)
    _check_place(flag, path)
    if path.exists() and not path.is_dir():
        raise PipelineError(f"{flag} {path} is a file, not a folder; move that file away, or choose another path.")
    _check_apart_from(flag, path, inputs)


def check_layout(flag: str, *, folders: Iterable[Path] = (), files: Iterable[Path] = ()) -> None:
    """Refuse a folder of ours whose known entries are of the wrong kind: a file where it keeps a
    folder (`checkpoints/`), a folder where it writes a file (`metrics.jsonl`), or a link there (a
    write would replace it). Each would otherwise stop the command midway. A link where a folder of
    ours goes is refused too: writing or cleaning through it would change the folder it points to."""
    for folder in folders:
        if folder.is_symlink():
            raise PipelineError(
                f"{flag}: {folder} is a symbolic link (to {os.readlink(folder)}), but a folder of ours goes there; outputs are "
                "never written through a link. Replace it with a real folder, or move it away (nothing was written)."
            )
        if os.path.lexists(folder) and not folder.is_dir():
            raise PipelineError(
                f"{flag}: {folder} is not a folder, but a folder of ours goes there; move it away (nothing was written)."
            )
    for file in files:
        if file.is_symlink() or file.is_dir():
            kind = "a symbolic link" if file.is_symlink() else "a folder"
            raise PipelineError(f"{flag}: {file} is {kind}, but a file of ours goes there; move it away (nothing was written).")


def check_apart(first_flag: str, first: str | os.PathLike, second_flag: str, second: str | os.PathLike) -> None:
    """Refuse two folders that are the same or where one lies inside the other.

    Each stage writes and replaces its own folder: an output inside an input would become input,
    a run folder equal to a data folder would be wiped by the next ingest. Local paths are
    compared after resolving links and `..`; URIs as written.
    """
    a, b = _comparable(first), _comparable(second)
    if a == b:
        relation = "are the same folder"
    elif b in a.parents:
        relation = f"lie one inside the other ({first_flag} is inside {second_flag})"
    elif a in b.parents:
        relation = f"lie one inside the other ({second_flag} is inside {first_flag})"
    else:
        return
    raise PipelineError(
        f"{first_flag} {first} and {second_flag} {second} {relation}; they must be separate folders, neither "
        "inside the other (nothing was written). Choose another folder for one of them."
    )


def data_inputs(flag: str, data: str | os.PathLike) -> list[tuple[str, str | None]]:
    """The inputs of a command that reads the data folder `data`: the folder itself, and the local image
    folder its manifest says it was ingested from, while that exists (an output written inside it would
    be read as images by the next ingest of that folder)."""
    root = None
    try:
        source = read_json(Path(data) / MANIFEST).get("source")
        if source.get("kind") == "folder" and not _is_uri(source["root"]) and Path(source["root"]).is_dir():
            root = source["root"]
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass  # no manifest (a URI), or not one of ours: the data's own check says so when it is read
    return [(flag, str(data)), (f"{flag}'s input folder", root)]


def _check_place(flag: str, path: Path) -> None:
    """No link at `path`, and every existing folder above it a folder."""
    if path.is_symlink():
        target = os.readlink(path)
        state = "" if path.exists() else ", which does not exist"
        raise PipelineError(
            f"{flag} {path} is a symbolic link (to {target}{state}); outputs are never written through a link nor "
            "replace one. Give the real path, or another name."
        )
    for parent in reversed(path.parents):
        if os.path.lexists(parent) and not parent.is_dir():
            kind = "a broken symbolic link" if parent.is_symlink() else "a file"
            raise PipelineError(
                f"{flag} {path}: {parent} is {kind}, not a folder, so nothing can be written under it. Choose another path."
            )


def _check_apart_from(flag: str, output: str | os.PathLike, inputs: Inputs) -> None:
    for input_flag, folder in inputs:
        if folder is not None:
            check_apart(input_flag, folder, flag, output)


def _is_uri(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def _comparable(path: str | os.PathLike) -> PurePath:
    text = str(path)
    if _is_uri(text):
        scheme, rest = text.split("://", 1)
        return PurePosixPath("/", scheme, *[part for part in rest.split("/") if part])
    return Path(text).resolve()


# -- our formats ---------------------------------------------------------------------------------


# A PNG we write carries this text chunk right after its header: a later run may replace that PNG,
# and only that one. The PNG format keeps `tEXt` chunks as metadata; viewers ignore them.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_HEADER_END = len(_PNG_SIGNATURE) + 4 + 4 + 13 + 4  # length, type, IHDR's 13 bytes, CRC
_PNG_MARK = b"Software\x00animegan-pipeline"
_PNG_MARK_CHUNK = struct.pack(">I", len(_PNG_MARK)) + b"tEXt" + _PNG_MARK + struct.pack(">I", zlib.crc32(b"tEXt" + _PNG_MARK))


def mark_png(data: bytes) -> bytes:
    """`data`, a PNG, with our text chunk after its header (see `is_marked_png`)."""
    if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return data[:_PNG_HEADER_END] + _PNG_MARK_CHUNK + data[_PNG_HEADER_END:]


def is_marked_png(path: Path) -> bool:
    """True for a PNG file that carries our text chunk: one this project wrote."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_PNG_HEADER_END + len(_PNG_MARK_CHUNK))
    except OSError:
        return False
    return head.startswith(_PNG_SIGNATURE) and head[_PNG_HEADER_END:] == _PNG_MARK_CHUNK
