"""tf.distribute training: two MultiWorkerMirroredStrategy workers on 127.0.0.1 (both finish, weights
identical) and MirroredStrategy over two logical devices in one process (trains, resumes, replicas agree)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from components.artifacts import RunPaths, read_jsonl

HELPER = Path(__file__).resolve().parent / "multiworker_worker.py"
TIMEOUT = 240  # seconds for both workers together; a hung collective fails the test instead of CI


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_two_workers_train_in_step_and_end_with_identical_weights(tiny_records, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    run = tmp_path / "run"
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_CPP_MIN_LOG_LEVEL="2")
        command = [sys.executable, str(HELPER), str(tiny_records), str(run), str(tmp_path / f"worker{index}.npz")]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [process.communicate(timeout=TIMEOUT)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, "\n=====\n".join(o[-3000:] for o in outputs)

    chief, other = (np.load(tmp_path / f"worker{index}.npz") for index in range(2))
    assert int(chief["steps"]) == int(other["steps"]) == 6 and int(chief["images_seen"]) == 48
    weights = [name for name in chief.files if "/" in name]
    assert len(weights) > 20 and set(weights) == {name for name in other.files if "/" in name}
    different = [name for name in weights if not np.array_equal(chief[name], other[name])]
    assert different == []
    # They trained (a conv bias of D left its zero initialisation) and averaged (EMA != G).
    assert any(np.abs(chief[name]).sum() > 0 for name in weights if name.startswith("discriminator/") and chief[name].ndim == 1)
    assert any(not np.array_equal(chief[f"ema_generator/{i}"], chief[f"generator/{i}"]) for i in range(4))

    # Only the chief wrote the run folder; the other worker's private checkpoints are gone.
    paths = RunPaths(run)
    assert sorted(p.name for p in paths.checkpoints.glob("ckpt-*.index")) == ["ckpt-3.index", "ckpt-6.index"]
    assert not [p for p in paths.checkpoints.iterdir() if p.name.startswith(".worker")]
    assert [r["step"] for r in read_jsonl(paths.metrics)] == [2, 4, 6]
    assert sorted(p.name for p in paths.samples.iterdir()) == ["step-0000006.png"]


MIRRORED_HELPER = Path(__file__).resolve().parent / "mirrored_worker.py"


def test_mirrored_strategy_on_two_devices_trains_resumes_and_keeps_replicas_in_step(tiny_records, tmp_path):
    """Two logical CPU devices stand in for two GPUs (MirroredStrategy in one process)."""
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(MIRRORED_HELPER), str(tiny_records), str(run)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["first"] == [4, 32] and result["second"] == [6, 48, 4]
    assert result["copies_identical"] and result["all_finite"]
    assert result["augment_seeds_differ"]  # each replica augments its half of the batch differently
    assert {"d_loss", "g_loss", "d_real_logit", "d_fake_logit"} <= set(result["metrics"])
    assert [r["step"] for r in read_jsonl(RunPaths(run).metrics)] == [2, 4, 6]
