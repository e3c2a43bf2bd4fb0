"""KerasTuner's own chief/worker mode: `python -m pipeline.train --tune` as a chief and one worker.

Both processes run the same command on 127.0.0.1 with their own `KERASTUNER_TUNER_ID`; the worker
trains every trial and the chief's oracle records them; the chief then trains the default
configuration's row (two seeds) and writes the results. KerasTuner's chief leaves its serving loop
once every worker it has seen was told the search is over, which with one worker happens at the
worker's last request; the test still bounds it and ends it if it lingers (a known upstream hang
when a worker dies without asking again).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from components.artifacts import RunPaths, read_json

REPO = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT = 150  # seconds; a worker here trains two ~2 s trials after a ~10 s start-up
CHIEF_GRACE = 90  # the chief trains the default's two ~2 s runs after the worker is done
CHIEF_DELAY = 8  # seconds: about a worker's start-up, after which it reaches the run folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tune_command(data: Path, run: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline.train",
        "--data",
        str(data),
        "--run",
        str(run),
        "--tune-only",
        "--tuner",
        "random",
        "--max-trials",
        "4",
        "--trial-images",
        "64",
        "--images",
        "64",  # as long as a trial: the chief confirms nothing
        "--search",
        "g_filters=4",
        "--search",
        "d_filters=8",
        "--search",
        "g_lr=1e-4,2e-4",
        "--search",
        "d_lr=2e-4",
        "--search",
        "beta_1=0.5",
        "--search",
        "batch_size=32",
        "--search",
        "d_spectral_norm=false",
        "--search",
        "r1_gamma=0.1",
        "--search",
        "augment=",
        "--latent-dim",
        "16",
        "--g-filters",
        "4",
        "--d-filters",
        "8",
        "--batch-size",
        "32",
        "--eval-num",
        "16",
        "--precision",
        "float32",
    ]


def start(command: list[str], tuner_id: str, port: int, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "KERASTUNER_TUNER_ID": tuner_id,
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": str(port),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    with open(log, "w") as out:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def test_a_worker_runs_the_trials_and_the_chief_records_them(tiny_records, tmp_path):
    run = tmp_path / "run"
    port = free_port()
    command = tune_command(tiny_records, run)
    # The worker first, and the chief once the worker could have written into the run folder: a
    # worker waits for the chief to mark the folder as a search's (before, the chief refused it).
    worker = start(command, "tuner1", port, tmp_path / "worker.log")
    time.sleep(CHIEF_DELAY)
    chief = start(command, "chief", port, tmp_path / "chief.log")
    try:
        worker_status = worker.wait(timeout=WORKER_TIMEOUT)
        chief_status = chief.wait(timeout=CHIEF_GRACE)
    finally:
        for process in (chief, worker):
            if process.poll() is None:
                process.kill()
                process.wait()
    chief_log, worker_log = (tmp_path / "chief.log").read_text(), (tmp_path / "worker.log").read_text()
    assert worker_status == 0, worker_log[-3000:]
    assert chief_status == 0, chief_log[-3000:]

    tuner = RunPaths(run).tuner
    trials = {path.parent.name: read_json(path) for path in tuner.glob("trial_*/trial.json")}
    assert sorted(trials) == ["trial_0", "trial_1"]
    assert all(trial["status"] == "COMPLETED" and trial["score"] > 0 for trial in trials.values())
    assert sorted(trial["hyperparameters"]["values"]["g_lr"] for trial in trials.values()) == [1e-4, 2e-4]
    assert "tuner1: trial 0 done" in worker_log and "tuner1: trial 1 done" in worker_log

    # The worker trained both trials in the shared run folder; the chief only the default's row.
    for name in trials:
        assert (tuner / name / "execution-0" / "checkpoints" / "best").is_dir()
    assert not RunPaths(run).checkpoints.exists()
    assert "tuner1" not in chief_log and "default configuration: completed" in chief_log
    assert "default configuration" not in worker_log

    # The chief wrote the table and the best file from its oracle's records.
    default, *rows = read_json(tuner / "trials.json")
    assert default["trial_id"] == "default" and len(default["executions"]) == 2
    assert {row["trial_id"]: row["swd_avg"] for row in rows} == {
        name.removeprefix("trial_"): trial["score"] for name, trial in trials.items()
    }
    best = read_json(RunPaths(run).best_hyperparameters)
    assert best["best_trial"]["swd_avg"] == min(trial["score"] for trial in trials.values())
    assert "trial" in chief_log and "swd_avg" in chief_log  # it printed the table
