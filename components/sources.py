"""Where ingest's images come from: a folder tree of files, or built-in procedural faces.

A source lists its inputs by name (`scan`, on the driver: names, sizes and modification times,
no file is read) and reads one by name (`read`, in the Beam workers). Its identity goes into the
ingest output's fingerprint, so a changed input rebuilds the output.
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from components import beamfs, images, synthetic
from components.artifacts import MANIFEST, fingerprint
from components.errors import PipelineError

# Files only this project's folders hold: a run (hparams.json), a data folder (manifest.json), a
# sample folder (samples.json), an exported model (saved_model.pb).
PROJECT_MARKERS = frozenset({"hparams.json", MANIFEST, "samples.json", "saved_model.pb"})


@dataclass
class Scan:
    """What a source holds: the input names, an identity for the fingerprint (changes when any
    input does), and the parts that could not even be listed (each one a reject with a reason)."""

    names: list[str]
    identity: dict
    unlisted: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class FolderSource:
    """Every file under a folder (recursively), named by its path relative to the folder.

    `root` is a local folder or any URI Beam's file systems read (gs://, s3://, hdfs://, ...).
    Hidden files and folders (a leading dot) are not inputs. Links to files and folders are
    followed; a folder reached twice, a pipe or a socket is a reject, never read, and so is a folder
    this project wrote (it holds one of PROJECT_MARKERS: a run folder reached through a link would
    feed its contact sheets back as faces). Names may be in
    any encoding: a name that is not UTF-8 travels with its undecodable bytes escaped (Python's
    surrogateescape).
    """

    root: str

    def scan(self) -> Scan:
        """Names, sizes and modification times only: no file is read."""
        files, unlisted = self._remote_files() if beamfs.is_uri(self.root) else self._local_files()
        if not files and not unlisted:
            raise PipelineError(_no_images_message(f"{self.root} holds no files."))
        root = self.root if beamfs.is_uri(self.root) else str(Path(self.root).resolve())
        identity = {"kind": "folder", "root": root, "files": fingerprint(sorted(files)), "unlisted": unlisted}
        return Scan(sorted(name for name, _ in files), identity, unlisted)

    def read(self, name: str, max_bytes: int) -> bytes:
        """The bytes of input `name`, or `images.Rejected` (among others when over `max_bytes`)."""
        if not beamfs.is_uri(self.root):
            return images.read_file(Path(self.root) / name, max_bytes)
        try:
            data = beamfs.read_bytes(beamfs.join(self.root, name), max_bytes + 1)
        except Exception as err:
            raise images.Rejected(images.UNREADABLE, str(err).splitlines()[0] if str(err) else type(err).__name__) from err
        return images.check_size(data, max_bytes)

    def _local_files(self) -> tuple[list[tuple[str, list[int]]], list[dict]]:
        root = Path(self.root)
        if not root.is_dir():
            raise PipelineError(_no_images_message(f"{root} does not exist or is not a folder."))
        files, unlisted = [], []

        def reject(path: str | os.PathLike, reason: str, detail: str, folder: bool = False) -> None:
            unlisted.append(
                {"source": Path(path).relative_to(root).as_posix() + ("/" if folder else ""), "reason": reason, "detail": detail}
            )

        def unreadable(err: OSError) -> None:  # a sub-folder we may not list: a reject, not a silent skip
            reject(err.filename, images.UNREADABLE, f"cannot list the folder: {err.strerror}", folder=True)

        # Links are followed, to files and to folders alike; a folder read already (through
        # another link, or a link to a folder above it) is a reject, so a loop ends. Real
        # sub-folders go before links, so a folder is read under its own name where it can be.
        read_folders: dict[str, str] = {}  # real path -> the name it was read under
        for folder, dirs, names in os.walk(root, onerror=unreadable, followlinks=True):
            real = os.path.realpath(folder)
            if real in read_folders:
                reject(
                    folder,
                    images.REPEATED_FOLDER,
                    f"the same folder as {read_folders[real]} (through a link), read already",
                    folder=True,
                )
                dirs[:] = []
                continue
            label = Path(folder).relative_to(root).as_posix()
            read_folders[real] = "the input folder" if label == "." else f"{label}/"
            markers = sorted(PROJECT_MARKERS.intersection(names))
            if markers:
                detail = f"holds {markers[0]}: a folder this project wrote (a run, data, sample or model folder), not faces"
                reject(folder, images.PROJECT_FOLDER, detail, folder=True)
                dirs[:] = []
                continue
            dirs[:] = sorted(
                (d for d in dirs if not d.startswith(".")), key=lambda d: (os.path.islink(os.path.join(folder, d)), d)
            )
            for name in names:
                if name.startswith("."):  # .DS_Store and friends are not inputs
                    continue
                path = Path(folder, name)
                try:
                    info = path.stat()
                except OSError:  # a dangling link: listed, so that it is rejected as unreadable
                    files.append((path.relative_to(root).as_posix(), [-1, 0]))
                    continue
                if stat.S_ISREG(info.st_mode):
                    files.append((path.relative_to(root).as_posix(), [info.st_size, info.st_mtime_ns]))
                else:  # never read: a pipe or a socket would block the read
                    reject(path, images.NOT_A_FILE, "not a regular file (a pipe, socket or device)")
        return files, sorted(unlisted, key=lambda reject: reject["source"])

    def _remote_files(self) -> tuple[list[tuple[str, list[int]]], list[dict]]:
        prefix = self.root.rstrip("/") + "/"
        try:
            listing = beamfs.list_files(prefix)
        except Exception as err:
            raise PipelineError(f"cannot list `input` {self.root}: {str(err).splitlines()[0]}") from err
        files = []
        for path, size in listing.items():
            name = path[len(prefix) :]
            if name and not any(part.startswith(".") for part in name.split("/")):
                files.append((name, [size]))
        return files, []


@dataclass(frozen=True)
class SyntheticSource:
    """`count` procedural faces (components.synthetic), drawn inside the workers as PNG bytes."""

    count: int
    seed: int = 0
    size: int = 64

    def scan(self) -> Scan:
        names = [synthetic.face_filename(index) for index in range(self.count)]
        return Scan(
            names, {"kind": "synthetic", "count": self.count, "seed": self.seed, "size": self.size, "version": synthetic.VERSION}
        )

    def read(self, name: str, max_bytes: int) -> bytes:
        """The PNG bytes of face `name` (a few kB: never near `max_bytes`)."""
        index = int(name.removeprefix("face-").removesuffix(".png"))
        buffer = io.BytesIO()
        synthetic.synthetic_face(self.seed, index, self.size).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


ImageSource = FolderSource | SyntheticSource


def _no_images_message(problem: str) -> str:
    return (
        f"no input images: {problem} Put the anime faces data set in it (download it from "
        "https://www.kaggle.com/soumikrakshit/anime-faces and unpack its images into data/, any "
        "sub-folders are fine), or point `input` at your own image folder, or use the built-in "
        "procedural faces: `python -m pipeline.ingest --synthetic 2000`."
    )
