"""Where ingest's images come from: a folder tree of files, or built-in procedural faces.

A source lists its inputs by name (`scan`, on the driver: names, sizes and modification times,
no file is read) and reads one by name (`read`, in the Beam workers). Its identity goes into the
ingest output's fingerprint, so a changed input rebuilds the output.
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from components import images, synthetic
from components.artifacts import fingerprint
from components.errors import PipelineError


@dataclass(frozen=True)
class FolderSource:
    """Every file under a folder (recursively), named by its path relative to the folder."""

    root: str

    def scan(self) -> tuple[list[str], dict]:
        """The input names, and an identity for the fingerprint that changes when any input does.

        Cheap but change-sensitive: names, sizes and modification times (no file is read).
        """
        files = self._files()
        identity = {"kind": "folder", "root": str(Path(self.root).resolve()), "files": fingerprint(files)}
        return [name for name, _ in files], identity

    def read(self, name: str) -> bytes:
        return images.read_file(Path(self.root) / name)

    def _files(self) -> list[tuple[str, list[int]]]:
        root = Path(self.root)
        if not root.is_dir():
            raise PipelineError(_no_images_message(f"{root} does not exist or is not a folder."))
        files = []
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .git, .ipynb_checkpoints...
            for name in names:
                if name.startswith("."):  # .DS_Store and friends are not inputs
                    continue
                path = Path(folder, name)
                try:
                    info = path.stat()
                except OSError:  # a dangling link: listed, so that it is rejected as unreadable
                    files.append((path.relative_to(root).as_posix(), [-1, 0]))
                    continue
                if stat.S_ISREG(info.st_mode):  # skip pipes and sockets, which would block a read
                    files.append((path.relative_to(root).as_posix(), [info.st_size, info.st_mtime_ns]))
        if not files:
            raise PipelineError(_no_images_message(f"{root} holds no files."))
        return sorted(files)


@dataclass(frozen=True)
class SyntheticSource:
    """`count` procedural faces (components.synthetic), drawn inside the workers as PNG bytes."""

    count: int
    seed: int = 0
    size: int = 64

    def scan(self) -> tuple[list[str], dict]:
        names = [synthetic.face_filename(index) for index in range(self.count)]
        return names, {"kind": "synthetic", "count": self.count, "seed": self.seed, "size": self.size, "version": synthetic.VERSION}

    def read(self, name: str) -> bytes:
        index = int(name.removeprefix("face-").removesuffix(".png"))
        buffer = io.BytesIO()
        synthetic.synthetic_face(self.seed, index, self.size).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


ImageSource = FolderSource | SyntheticSource


def _no_images_message(problem: str) -> str:
    return (
        f"no input images: {problem} Put the anime faces data set in it (download it from "
        "https://www.kaggle.com/soumikrakshit/anime-faces and unpack its images into data/, any "
        "sub-folders are fine), or point --input at your own image folder, or use the built-in "
        "procedural faces: `python -m pipeline.ingest --synthetic 2000`."
    )
