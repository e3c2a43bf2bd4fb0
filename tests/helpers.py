"""Helpers several test modules share: ways to make inputs and expected values, not project code."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import io
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from components.evaluator import Evaluator, generate_images
from components.latents import first_latents
from components.synthetic import face_filename, synthetic_face
from pipeline._cli import run_main


def write_synthetic_faces(folder: Path, count: int, size: int = 64, seed: int = 0) -> list[Path]:
    """Draw faces 0..count-1 of `seed` into `folder` as lossless PNGs (an image folder to ingest)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        paths.append(folder / face_filename(index))
        synthetic_face(seed, index, size).save(paths[-1], format="PNG", compress_level=1)
    return paths


def evaluate_generator(
    generate, real_eval: np.ndarray, real_train=None, *, latent_dim: int, num: int = 1024, seed: int = 0, batch_size: int = 256
) -> dict[str, float]:
    """A one-off evaluation of `generate` (latents -> uint8 images) on images 0..n-1 of `seed`."""
    evaluator = Evaluator(real_eval, real_train, num=num, seed=seed)
    return evaluator.score(generate_images(generate, first_latents(evaluator.num, latent_dim, seed), batch_size))


def read_records(path: Path) -> list[bytes]:
    """The serialized records of one TFRecord file, read (and CRC-checked) by TensorFlow."""
    import tensorflow as tf

    return [record.numpy() for record in tf.data.TFRecordDataset(str(path))]


# -- the commands, run in this process -------------------------------------------------------------

TINY = ["--latent-dim", "8", "--g-filters", "4", "--d-filters", "4", "--batch-size", "8", "--precision", "float32"]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below `folder` with the hash of its bytes: what 'untouched' is checked against."""
    files = [path for path in sorted(folder.rglob("*")) if path.is_file()]
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(module: str, *argv: str) -> Result:
    """`python -m pipeline.<module> argv...` run in this process (no interpreter start-up per call):
    the same `run_main` turns its outcome into an exit status and one `error:` line, and anything
    else (our bug) raises here with its traceback."""
    main = importlib.import_module(f"pipeline.{module}").main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_main(main, list(argv), tensorflow=False)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


def no_traceback(result: Result) -> None:
    assert "Traceback" not in result.stderr, result.stderr[-2000:]


def ingest_tiny(faces: Path, out: Path) -> Path:
    """`pipeline.ingest` of an image folder at 32x32 with a quarter held out; the data folder."""
    argv = ["--input", str(faces), "--output", str(out), "--image-size", "32", "--eval-fraction", "0.25", "--quiet"]
    result = cli("ingest", *argv)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def train_tiny(data: Path, run: Path, images: int) -> Path:
    """`pipeline.train` of the tiny networks (`TINY`) for `images` images, exported at its end; the run folder."""
    result = cli("train", "--data", str(data), "--run", str(run), "--images", str(images), *TINY, "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    return run


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Fail (rather than hang the suite) when the block runs longer than `seconds`: a read of a FIFO
    with no writer blocks for ever, and a bad value that starts real work runs for long."""

    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s: blocked on a read, or a bad value started real work?")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
