"""The whole chain through its CLIs on tiny data: every artifact a user is promised exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.config import TrainConfig
from tests.helpers import write_synthetic_faces

ROOT = Path(__file__).resolve().parents[1]


def run_pipeline(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.run", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """`pipeline.run` on 40 drawn faces at 32x32, 3 training steps of the default batch; run twice."""
    root = tmp_path_factory.mktemp("e2e")
    write_synthetic_faces(root / "faces", 40, size=32)
    batch = TrainConfig().batch_size
    argv = [
        "--input",
        str(root / "faces"),
        "--data",
        str(root / "data"),
        "--run",
        str(root / "run"),
        "--image-size",
        "32",
        "--eval-fraction",
        "0.25",
        "--images",
        str(3 * batch),
        "--eval-every",
        str(2 * batch),
        "--eval-num",
        "8",
        "--num",
        "6",
        "--quiet",
    ]
    first = run_pipeline(*argv)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_pipeline(*argv)
    assert second.returncode == 0, second.stderr[-3000:]
    return root, first, second


def test_ingest_wrote_shards_and_a_manifest_whose_counts_add_up(chain):
    root, _, _ = chain
    manifest = json.loads((root / "data" / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["seen"] == 40 == counts["written"] + counts["duplicates"] + counts["rejected"]
    assert manifest["image_size"] == 32
    assert sum(manifest["splits"][s]["count"] for s in ("train", "eval")) == counts["written"]
    assert list((root / "data").glob("train-*-of-*.tfrecord")) and list((root / "data").glob("eval-*.tfrecord"))


def test_training_left_checkpoints_metrics_grids_and_logs(chain):
    run = chain[0] / "run"
    assert list((run / "checkpoints").glob("ckpt-3.index")) and (run / "checkpoints" / "best").is_dir()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("swd_avg" in json.dumps(m) for m in metrics)
    grids = sorted((run / "samples").glob("step-*.png"))
    assert grids and Image.open(grids[-1]).size[0] > 32
    assert list((run / "logs").rglob("events.out.tfevents.*"))


def test_one_savedmodel_with_card_and_evaluation_even_after_a_rerun(chain):
    export = chain[0] / "run" / "export" / "generator"
    versions = sorted(p.name for p in export.iterdir() if p.name.isdigit())
    assert versions == ["1"]  # the second run found everything up to date
    card = json.loads((export / "1" / "model_card.json").read_text())
    assert card["image_shape"] == [32, 32, 3] and card["images_seen"] == 3 * TrainConfig().batch_size
    metrics = json.loads((export / "1" / "eval.json").read_text())["metrics"]
    assert np.isfinite(metrics["swd_avg"]) and np.isfinite(metrics["swd_avg_floor"])


def test_samples_and_grid_come_from_the_savedmodel(chain):
    root, first, second = chain
    files = sorted((root / "run" / "export" / "samples").glob("*.png"))
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(6)]
    assert np.asarray(Image.open(files[0])).shape == (32, 32, 3)
    assert (root / "run" / "export" / "grid.png").is_file()
    for result in (first, second):
        assert "pipeline finished" in result.stdout and "swd_avg" in result.stdout
    assert "up to date" in second.stdout + second.stderr


def grid_cells(sheet: np.ndarray, count: int, size: int, padding: int = 2) -> np.ndarray:
    """The first `count` images of a contact sheet made by components.grid.make_grid."""
    columns = (sheet.shape[1] - padding) // (size + padding)
    cells = []
    for index in range(count):
        top, left = padding + (index // columns) * (size + padding), padding + (index % columns) * (size + padding)
        cells.append(sheet[top : top + size, left : left + size])
    return np.stack(cells).astype(int)


def test_the_export_reuses_the_trainers_evaluation_and_its_faces_are_the_training_grids(chain):
    root, first, _ = chain
    run = root / "run"
    evaluation = json.loads((run / "export" / "generator" / "1" / "eval.json").read_text())
    assert "trainer's evaluation" in evaluation["source"] and evaluation["num_requested"] == 8
    assert "is up to date; nothing to do" in first.stderr  # pipeline.evaluate did not score it again
    # The trainer's grid of the exported (best) checkpoint shows images 0..63 of seed 0: the very
    # faces `pipeline.sample --seed 0` generated first from the SavedModel.
    trainer_grid = np.asarray(Image.open(run / "samples" / "best.png").convert("RGB"))
    sampled_grid = np.asarray(Image.open(run / "export" / "grid.png").convert("RGB"))
    assert np.abs(grid_cells(trainer_grid, 6, 32) - grid_cells(sampled_grid, 6, 32)).max() <= 1
