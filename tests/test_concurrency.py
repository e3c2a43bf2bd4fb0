"""One writer per folder, and SIGTERM as Ctrl-C (components.locks, pipeline._cli.run_main).

A second writer of a run folder, a data folder, a sampling's folder or a whole `pipeline.run` is
refused at once with one `error:` line naming the process that holds it; exports into one folder
take turns; a re-ingest under a training is refused instead of mixing old and new records; an
export reads whole checkpoints while a training rotates them; SIGTERM stops a training as Ctrl-C
does, and re-running resumes. Holders other than a real training are small processes that take
the same lock (no TensorFlow start-up), so the refusals are checked in a few seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from components import locks
from components.artifacts import RunPaths
from components.errors import PipelineError
from tests.conftest import write_tiny_records
from tests.helpers import TINY, cli, no_traceback, snapshot, train_tiny
from tests.test_fault_injection import ROOT

HOLD = """
import sys, time
from components import locks
hold = locks.writing if sys.argv[1] == "write" else locks.reading
with hold(sys.argv[2], "--test"):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def holder(mode: str, folder: Path, seconds: float = 60) -> subprocess.Popen:
    """Another process holding `folder`'s lock ("write" or "read") for `seconds`, once it has printed."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, mode, str(folder), str(seconds)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


def one_error(result, *words: str) -> str:
    """The result is exit 2 with one `error:` line holding every one of `words`; that line."""
    no_traceback(result)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    images = np.repeat(np.repeat(rng.integers(0, 256, size=(64, 4, 4, 3)), 8, axis=1), 8, axis=2).astype(np.uint8)
    return write_tiny_records(tmp_path_factory.mktemp("records") / "faces", images[:48], images[48:])


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    """A finished tiny run with one exported version."""
    return train_tiny(data, tmp_path_factory.mktemp("runs") / "run", images=32)


# -- the lock itself ---------------------------------------------------------------------------------


def test_readers_share_a_folder_a_writer_does_not_and_the_refusal_names_the_holder(tmp_path):
    folder = tmp_path / "data"
    reader = holder("read", folder)
    try:
        with locks.reading(folder, "--data"):  # another reader: fine
            pass
        with pytest.raises(PipelineError) as refused, locks.writing(folder, "--output"):
            pass
        assert f"--output {folder} is being read by process {reader.pid}" in str(refused.value)
    finally:
        stop(reader)
    with locks.writing(folder, "--output"), locks.reading(folder, "--data"), locks.writing(folder, "--output"):
        pass  # a process nests its own holds, a read inside its write included
    assert not folder.exists() and locks.lock_file(folder) == tmp_path / ".data.lock"  # beside, not inside


def test_a_lock_left_by_a_killed_process_does_not_block_the_next_one(tmp_path):
    folder = tmp_path / "run"
    killed = holder("write", folder)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    assert locks.lock_file(folder).is_file()  # the file stays; the operating system's lock went with the process
    with locks.writing(folder, "--run"):
        pass


# -- every CLI that writes a folder ------------------------------------------------------------------


def test_a_run_folder_in_use_is_refused_by_train_and_by_a_whole_pipeline_run(data, tmp_path):
    run = tmp_path / "run"
    other = holder("write", run)
    try:
        train = cli("train", "--data", str(data), "--run", str(run), "--images", "32", *TINY, "--quiet")
        whole = cli("run", "--input", str(tmp_path / "faces"), "--data", str(tmp_path / "records"), "--run", str(run), "--quiet")
    finally:
        stop(other)
    one_error(train, f"--run {run}", f"process {other.pid}", "being written")
    one_error(whole, f"--run {run}", f"process {other.pid}")
    assert not run.exists() and not (tmp_path / "records").exists()  # refused before anything was written


def test_a_sampling_folder_in_use_is_refused(trained, tmp_path):
    out = tmp_path / "samples"
    other = holder("write", out)
    try:
        result = cli("sample", "--model", str(trained), "--num", "4", "--output", str(out))
    finally:
        stop(other)
    one_error(result, f"--output {out}", f"process {other.pid}")
    assert not out.exists()


def test_two_exports_into_one_folder_take_turns(trained):
    export_root = RunPaths(trained).export
    other = holder("write", export_root, seconds=2)
    try:
        result = cli("export", "--run", str(trained))
    finally:
        stop(other)
    no_traceback(result)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"export folder {export_root} is being written by process {other.pid}" in result.stderr and "waiting" in result.stderr
    assert sorted(p.name for p in export_root.iterdir() if p.name.isdigit()) == ["1", "2"]


# -- a real training: refusals around it, an export beside it, SIGTERM, resumption -------------------


def test_a_live_training_refuses_a_second_writer_and_a_reingest_exports_whole_and_resumes_after_sigterm(data, tmp_path):
    run = tmp_path / "run"
    argv = [
        "--data",
        str(data),
        "--run",
        str(run),
        "--images",
        "100000",
        *TINY,
        "--checkpoint-every",
        "1",
        "--keep-checkpoints",
        "2",
        "--log-every",
        "1",
        "--sample-every",
        "100000",
        "--no-export",
        "--quiet",
    ]
    records = snapshot(data)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    training = subprocess.Popen(
        [sys.executable, "-m", "pipeline.train", *argv], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not list((run / "checkpoints").glob("ckpt-*.index")) and training.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert training.poll() is None, training.stderr.read()[-2000:]

        second = cli("train", *argv)
        one_error(second, f"--run {run}", f"process {training.pid}", "pipeline.train")
        reingest = cli("ingest", "--synthetic", "20", "--output", str(data), "--image-size", "32", "--overwrite", "--quiet")
        one_error(reingest, f"--output {data}", f"being read by process {training.pid}")
        assert snapshot(data) == records

        exported = cli("export", "--run", str(run))  # checkpoints are saved (and the oldest deleted) at every step
        no_traceback(exported)
        assert exported.returncode == 0, exported.stderr[-2000:]

        training.send_signal(signal.SIGTERM)
        code, stderr = training.wait(timeout=60), training.stderr.read()
    finally:
        stop(training)
    assert code == 143, stderr[-2000:]
    assert "terminated (SIGTERM): re-run the same command to resume" in stderr and "Traceback" not in stderr
    steps = sorted(int(p.name[5:-6]) for p in (run / "checkpoints").glob("ckpt-*.index"))
    assert steps, "the last checkpoint is kept"

    resumed = cli("train", *[arg if arg != "100000" else str(8 * (steps[-1] + 2)) for arg in argv if arg != "--quiet"])
    no_traceback(resumed)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from step {steps[-1]}" in resumed.stdout
