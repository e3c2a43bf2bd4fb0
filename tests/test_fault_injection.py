"""Faults a long run meets, injected on purpose: kills at random points of every stage, files torn or
truncated by a crash, folders that contain one another, and numbers that are not numbers.

Every case checks that the re-run ends where an uninterrupted run ends, that no user file was
touched, and that a user mistake is one `error:` line (exit 2), never a traceback. Kills land at
a random moment after the stage has started its real work (seeded; `--fault-rounds N` repeats
each kill N times with other moments: the long randomized version, e.g.
`python -m pytest tests/test_fault_injection.py --fault-rounds 20`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from components.artifacts import RunPaths, read_jsonl
from components.errors import PipelineError
from tests.helpers import TINY, Result, cli, ingest_tiny, no_traceback, snapshot, write_synthetic_faces

ROOT = Path(__file__).resolve().parents[1]


def kill_during(module: str, argv: list[str], started, rng: random.Random, *, within: float = 1.5, timeout: float = 180) -> bool:
    """Start the CLI, wait until `started()` says its real work began, wait a random moment of up to
    `within` seconds more, and SIGKILL it. False if it finished before the kill landed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", f"pipeline.{module}", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        while not started() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, within))
        if process.poll() is not None:
            return False
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        return True
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture
def rounds(request) -> range:
    return range(request.config.getoption("--fault-rounds"))


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """A user's image folder, with a note of theirs beside the images."""
    root = tmp_path_factory.mktemp("user")
    write_synthetic_faces(root / "faces", 48, size=32)
    (root / "faces" / "README.txt").write_text("my faces, do not delete")
    return root / "faces"


@pytest.fixture(scope="module")
def data(faces, tmp_path_factory) -> Path:
    return ingest_tiny(faces, tmp_path_factory.mktemp("tfrecords") / "faces")


# -- kills at random points of every stage --------------------------------------------------------


def test_a_killed_ingest_reruns_to_the_same_records_and_leaves_no_staging_or_workers(faces, data, tmp_path, rounds):
    rng, user = random.Random(1), snapshot(faces)
    argv = ["--input", str(faces), "--image-size", "32", "--eval-fraction", "0.25", "--quiet"]
    for round_ in rounds:
        out = tmp_path / f"out{round_}"
        kill_during("ingest", [*argv, "--output", str(out)], lambda: any(tmp_path.glob(f".out{round_}.staging-*")), rng)
        time.sleep(1.0)  # the watchdog's poll
        workers = subprocess.run(["pgrep", "-f", "sdk_worker_main"], capture_output=True, text=True).stdout.split()
        assert not [pid for pid in workers if _environ_has(pid, "ANIMEGAN_INGEST_RUN")]
        again = cli("ingest", *argv, "--output", str(out))
        assert again.returncode == 0, again.stderr[-2000:]
        assert records(out) == records(data)  # the records of an uninterrupted ingest
        assert [path.name for path in tmp_path.glob(".*")] == [f".out{round_}.lock"]  # staging gone; the lock stays
    assert snapshot(faces) == user


def records(data: Path) -> dict:
    """An ingest output as comparable content: its files, and its manifest but for when it was made."""
    files = {name: digest for name, digest in snapshot(data).items() if name != "manifest.json" and not name.startswith("cache/")}
    manifest = {
        key: value for key, value in json.loads((data / "manifest.json").read_text()).items() if key not in ("created", "seconds")
    }
    return {**files, "manifest": manifest}


def _environ_has(pid: str, name: str) -> bool:
    try:
        return f"{name}=".encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def test_killed_training_even_mid_checkpoint_resumes_to_the_counts_of_an_uninterrupted_run(data, tmp_path, rounds):
    rng, user = random.Random(2), records(data)
    for round_ in rounds:
        run = tmp_path / f"run{round_}"
        argv = [
            "--data",
            str(data),
            "--run",
            str(run),
            "--images",
            "800",
            *TINY,
            "--no-export",
            "--checkpoint-every",
            "1",
            "--log-every",
            "1",
        ]
        for _ in range(2):  # killed twice: checkpoints are written every step, so kills land inside writes too
            kill_during("train", argv, lambda: any((run / "checkpoints").glob("ckpt-*")), rng, within=2.0)
        again = cli("train", *argv)
        assert again.returncode == 0, again.stderr[-2000:]
        no_traceback(again)
        steps = [record["step"] for record in read_jsonl(RunPaths(run).metrics) if record["kind"] == "train"]
        assert steps == list(range(1, 101))  # every step logged once: none lost, none repeated
        assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith("_temp")]
        assert "done: 100 steps, 800 images seen" in again.stdout  # where an uninterrupted run ends
    assert records(data) == user


def test_a_killed_export_leaves_no_version_and_the_rerun_exports_once(data, tmp_path, rounds):
    rng = random.Random(3)
    run = tmp_path / "run"
    assert cli("train", "--data", str(data), "--run", str(run), "--images", "16", *TINY, "--no-export").returncode == 0
    export = RunPaths(run).export
    for _ in rounds:
        kill_during("export", ["--run", str(run)], lambda: export.is_dir() and any(export.iterdir()), rng, within=3.0)
        versions = [p for p in export.iterdir() if p.name.isdigit()] if export.is_dir() else []
        for version in versions:  # a version that exists is complete
            assert (version / "saved_model.pb").is_file() and (version / "model_card.json").is_file()
    again = cli("export", "--run", str(run))
    assert again.returncode == 0, again.stderr[-2000:]
    assert not [p for p in export.iterdir() if p.name.startswith(".")]  # temp folders of killed exports are gone


def test_a_killed_sampling_reruns_to_byte_identical_files(data, tmp_path, rounds):
    rng = random.Random(4)
    run = tmp_path / "run"
    assert cli("train", "--data", str(data), "--run", str(run), "--images", "16", *TINY).returncode == 0
    whole = tmp_path / "whole"
    assert cli("sample", "--model", str(run), "--num", "400", "--output", str(whole), "--quiet").returncode == 0
    for round_ in rounds:
        out = tmp_path / f"out{round_}"
        kill_during(
            "sample",
            ["--model", str(run), "--num", "400", "--output", str(out), "--generate-batch", "16", "--quiet"],
            lambda: out.is_dir() and len(list(out.iterdir())) > 2,
            rng,
        )
        again = cli("sample", "--model", str(run), "--num", "400", "--output", str(out), "--quiet")
        assert again.returncode == 0, again.stderr[-2000:]
        assert snapshot(out) == snapshot(whole)  # no temp file left, every image as an uninterrupted run drew it


def test_a_killed_tuner_trial_resumes_the_search_without_redoing_finished_trials(data, tmp_path, rounds):
    rng = random.Random(5)
    search = [
        "--tune-only",
        "--tuner",
        "random",
        "--max-trials",
        "4",
        "--trial-images",
        "400",
        "--images",
        "400",  # as long as a trial: a winner needs no confirmation
        "--eval-num",
        "8",
        "--search",
        "g_lr=1e-4,3e-4",
        *[f"--search={name}=4" for name in ("g_filters", "d_filters")],
        *TINY,
    ]
    for round_ in rounds:
        run = tmp_path / f"run{round_}"
        argv = ["--data", str(data), "--run", str(run), *search]
        kill_during("train", argv, lambda: any((run / "tuner").glob("trial_*/execution-0/checkpoints")), rng, within=3.0)
        again = cli("train", *argv)
        assert again.returncode == 0, again.stderr[-2000:]
        rows = json.loads((run / "tuner" / "trials.json").read_text())
        assert [row["status"] for row in rows] == ["COMPLETED", "COMPLETED", "COMPLETED"]  # the default's row, two trials
        assert (run / "best_hyperparameters.json").is_file()


# -- files torn or truncated by a crash --------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_once(data, tmp_path_factory) -> Path:
    """A run of 12 steps with checkpoints at 4, 8 and 12 and an evaluation at the end."""
    run = tmp_path_factory.mktemp("trained") / "run"
    result = cli(
        "train",
        "--data",
        str(data),
        "--run",
        str(run),
        "--images",
        "96",
        *TINY,
        "--checkpoint-every",
        "4",
        "--log-every",
        "4",
        "--eval-every",
        "96",
        "--eval-num",
        "8",
        "--no-export",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return run


@pytest.fixture
def trained(trained_once, tmp_path) -> Path:
    """A copy of that run for one test to damage."""
    import shutil

    return Path(shutil.copytree(trained_once, tmp_path / "run"))


def resume(data: Path, run: Path, images: int = 128) -> Result:
    return cli(
        "train",
        "--data",
        str(data),
        "--run",
        str(run),
        "--images",
        str(images),
        *TINY,
        "--checkpoint-every",
        "4",
        "--log-every",
        "4",
        "--eval-every",
        "96",
        "--eval-num",
        "8",
        "--no-export",
    )


@pytest.mark.parametrize("damage", ["index missing", "data truncated", "state names a missing one", "state file torn"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_last_intact_one_and_says_so(data, trained, damage):
    checkpoints = trained / "checkpoints"
    if damage == "index missing":
        (checkpoints / "ckpt-12.index").unlink()
    elif damage == "data truncated":
        shard = next(checkpoints.glob("ckpt-12.data-*"))
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif damage == "state names a missing one":
        for path in checkpoints.glob("ckpt-12.*"):
            path.unlink()
    else:
        (checkpoints / "checkpoint").write_text('model_checkpoint_path: "ckpt-1')
    result = resume(data, trained)
    assert result.returncode == 0, result.stderr[-2000:]
    no_traceback(result)
    expected = "resumed from step 12" if damage == "state file torn" else "resumed from step 8"
    assert expected in result.stdout
    if damage in ("index missing", "data truncated"):
        assert "skipped checkpoint ckpt-12" in result.stdout + result.stderr
    steps = [record["step"] for record in read_jsonl(RunPaths(trained).metrics) if record["kind"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 16  # nothing logged twice, the budget reached


def test_every_checkpoint_damaged_is_refused_rather_than_a_silent_restart(data, trained):
    for index in (trained / "checkpoints").glob("ckpt-*.index"):
        index.write_bytes(b"garbage")
    result = resume(data, trained)
    assert result.returncode == 2 and result.stderr.count("error:") == 1
    assert "every checkpoint in" in result.stderr and "--overwrite" in result.stderr
    no_traceback(result)


def test_a_torn_metrics_line_is_dropped_and_repaired(data, trained):
    metrics = RunPaths(trained).metrics
    metrics.write_bytes(metrics.read_bytes() + b'{"kind": "train", "step": 13, "d_lo')
    result = resume(data, trained)
    assert result.returncode == 0, result.stderr[-2000:]
    assert metrics.read_bytes().endswith(b"\n")
    for line in metrics.read_text().splitlines():
        json.loads(line)


@pytest.mark.parametrize("name", ["hparams.json", "manifest.json"])
def test_a_torn_record_is_one_error_naming_the_file(data, trained, tmp_path, name):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    target = (trained / name) if name == "hparams.json" else (copy / name)
    target.write_text(target.read_text()[:40])
    result = resume(copy, trained)
    assert result.returncode == 2 and f"{target}" in result.stderr and result.stderr.count("error:") == 1
    no_traceback(result)


@pytest.mark.parametrize(
    "change, complaint",
    [
        (
            lambda m: m["splits"]["train"]["shards"][0].update(file="../../etc/passwd.tfrecord"),
            "not a file name inside the data folder",
        ),
        (lambda m: m["splits"].pop("eval"), "splits must hold 'train' and 'eval'"),
        (lambda m: m.update(image_size="64"), "image_size"),
        (lambda m: m["splits"]["train"]["shards"][0].update(bytes=1), "bytes on disk"),
        (lambda m: m["splits"]["train"].update(count=1), "its count says 1"),
    ],
)
def test_a_manifest_that_lies_is_refused(data, tmp_path, change, complaint):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    change(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = cli("train", "--data", str(copy), "--run", str(tmp_path / "run"), "--images", "8", *TINY)
    assert result.returncode == 2 and complaint in result.stderr, result.stderr[-2000:]
    no_traceback(result)


def test_torn_sample_marker_and_export_files_are_named_or_redone(data, tmp_path):
    run = tmp_path / "run"
    assert (
        cli(
            "train", "--data", str(data), "--run", str(run), "--images", "16", *TINY, "--eval-every", "16", "--eval-num", "8"
        ).returncode
        == 0
    )
    out = tmp_path / "samples"
    assert cli("sample", "--model", str(run), "--num", "4", "--output", str(out), "--quiet").returncode == 0
    (out / "samples.json").write_text('{"model": ')
    torn = cli("sample", "--model", str(run), "--num", "4", "--output", str(out), "--quiet")
    assert torn.returncode == 2 and "samples.json is damaged" in torn.stderr
    no_traceback(torn)

    version = RunPaths(run).export / "1"
    written = (version / "eval.json").read_bytes()
    (version / "eval.json").write_bytes(written[: len(written) // 2])  # an evaluation cut short: done again
    again = cli("evaluate", "--model", str(run), "--data", str(data), "--eval-num", "8", "--skip-if-done")
    assert again.returncode == 0 and "swd_avg" in json.loads((version / "eval.json").read_text())["metrics"]
    (version / "model_card.json").write_text("{")  # a damaged card: the next export makes a new version
    assert cli("export", "--run", str(run)).returncode == 0
    assert (RunPaths(run).export / "2" / "model_card.json").is_file()


def test_a_torn_tuner_record_is_one_error_naming_it(data, tmp_path):
    run = tmp_path / "run"
    search = [
        "--tune-only",
        "--tuner",
        "random",
        "--max-trials",
        "3",
        "--trial-images",
        "16",
        "--images",
        "16",
        "--eval-num",
        "8",
        "--search",
        "g_lr=1e-4",
        *[f"--search={name}=4" for name in ("g_filters", "d_filters")],
        *TINY,
    ]
    assert cli("train", "--data", str(data), "--run", str(run), *search).returncode == 0
    trial = next((run / "tuner").glob("trial_*/trial.json"))
    trial.write_text(trial.read_text()[:30])
    result = cli("train", "--data", str(data), "--run", str(run), *search, "--max-trials", "4")
    assert result.returncode == 2 and str(trial) in result.stderr and "--overwrite-search" in result.stderr
    no_traceback(result)


# -- folders that contain one another; numbers that are not numbers ----------------------------------


def test_folders_inside_each_other_are_refused_and_nothing_is_deleted(faces, data, tmp_path):
    parent = faces.parent
    before = snapshot(parent)
    for argv in (["--output", str(parent), "--overwrite"], ["--output", str(faces)], ["--output", str(faces / "x")]):
        result = cli("ingest", "--input", str(faces), *argv)
        assert result.returncode == 2 and "must be separate folders" in result.stderr, result.stderr[-1000:]
    for run in (data, data / "run", data.parent):
        result = cli("train", "--data", str(data), "--run", str(run), "--images", "8", *TINY)
        assert result.returncode == 2 and "must be separate folders" in result.stderr, result.stderr[-1000:]
    assert snapshot(parent) == before


def test_overwrite_and_new_run_delete_only_what_this_project_wrote(data, faces, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    (copy / "mine.txt").write_text("a user's file")
    refused = cli("ingest", "--input", str(faces), "--output", str(copy), "--image-size", "32", "--overwrite")
    assert refused.returncode == 2 and "mine.txt" in refused.stderr
    assert (copy / "mine.txt").read_text() == "a user's file"

    foreign = tmp_path / "projects"
    (foreign / "logs").mkdir(parents=True)
    (foreign / "logs" / "diary.txt").write_text("mine")
    result = cli("train", "--data", str(data), "--run", str(foreign), "--images", "8", *TINY, "--overwrite")
    assert result.returncode == 2 and "no run of this project wrote" in result.stderr
    assert (foreign / "logs" / "diary.txt").read_text() == "mine"

    run = tmp_path / "run"
    assert cli("train", "--data", str(data), "--run", str(run), "--images", "8", *TINY, "--no-export").returncode == 0
    (run / "samples" / "keep.png").write_bytes(b"mine")
    (run / "notes.md").write_text("mine")
    again = cli("train", "--data", str(data), "--run", str(run), "--images", "8", *TINY, "--no-export", "--overwrite")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (run / "samples" / "keep.png").read_bytes() == b"mine" and (run / "notes.md").read_text() == "mine"


@pytest.mark.parametrize(
    "module, argv",
    [
        ("train", ["--g-lr", "nan"]),
        ("train", ["--epochs", "inf"]),
        ("train", ["--init-stddev", "inf"]),
        ("train", ["--seed", "-1"]),
        ("train", ["--tune", "--search", "g_lr=1e-4..inf:log"]),
        ("ingest", ["--eval-fraction", "nan"]),
        ("sample", ["--truncation", "inf"]),
        ("evaluate", ["--seed", "-3"]),
    ],
)
def test_numbers_that_are_not_numbers_are_one_error_naming_the_flag(data, tmp_path, module, argv):
    base = {
        "train": ["--data", str(data), "--run", str(tmp_path / "run"), "--images", "8", *TINY],
        "ingest": ["--synthetic", "4", "--output", str(tmp_path / "out")],
        "sample": ["--model", str(tmp_path), "--output", str(tmp_path / "s")],
        "evaluate": ["--model", str(tmp_path), "--data", str(data)],
    }[module]
    result = cli(module, *base, *argv)
    assert result.returncode == 2, result.stderr[-2000:]
    flag = argv[-1].split("=")[0] if argv[0] == "--tune" else argv[0]
    assert flag.lstrip("-").replace("-", "_") in result.stderr.replace("-", "_")
    no_traceback(result)


def test_a_read_only_output_or_a_full_disk_is_one_line_and_exit_1(data, tmp_path):
    if os.geteuid() == 0:  # root writes through read-only permissions: simulate a full disk instead
        code = (
            "import errno, sys\n"
            "from pipeline import _cli\n"
            "def main(argv):\n"
            "    raise OSError(errno.ENOSPC, 'No space left on device', sys.argv[1])\n"
            "_cli.run_main(main, tensorflow=False)\n"
        )
        result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x")], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 1 and result.stderr.strip() == f"error: No space left on device: {tmp_path / 'x'}"
        return
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    result = cli("train", "--data", str(data), "--run", str(locked / "run"), "--images", "8", *TINY)
    assert result.returncode == 1 and result.stderr.count("error:") == 1
    no_traceback(result)


def test_file_names_in_any_encoding_and_unreadable_folders_become_records_or_rejects(tmp_path):
    from pipeline.ingest import main as ingest

    faces = tmp_path / "faces"
    paths = write_synthetic_faces(faces, 6, size=32)
    odd = os.fsencode(faces) + b"/caf\xe9-latin1.png"  # not UTF-8
    os.rename(paths[0], odd)
    paths[1].rename(faces / "日本語.png")
    hidden = faces / "locked"
    hidden.mkdir()
    paths[2].rename(hidden / "inside.png")
    hidden.chmod(0)
    try:
        assert ingest(["--input", str(faces), "--output", str(tmp_path / "out"), "--image-size", "32", "--quiet"]) == 0
    finally:
        hidden.chmod(0o755)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    counts = manifest["counts"]
    assert counts["seen"] == counts["written"] + counts["duplicates"] + counts["rejected"]
    if os.geteuid() != 0:  # root can list any folder
        assert {"source": "locked/", "reason": "unreadable"}.items() <= rejects[0].items()
    from components.records import parse_examples
    from tests.helpers import read_records

    shards = [shard["file"] for split in manifest["splits"].values() for shard in split["shards"]]
    serialized = np.array([record for shard in shards for record in read_records(tmp_path / "out" / shard)], dtype=object)
    sources = set(parse_examples(serialized, 32)["source"].numpy())
    assert len(sources) == counts["written"]
    assert b"caf\xe9-latin1.png" in sources and "日本語.png".encode() in sources  # each file's own name, byte for byte


def test_pipeline_errors_never_leave_a_traceback_for_a_missing_model():
    with pytest.raises(PipelineError, match="does not exist"):
        from components.artifacts import resolve_saved_model

        resolve_saved_model("/nonexistent/model")
