"""`python -m pipeline.evaluate` on a tiny SavedModel that honours the exporter's contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from components.errors import PipelineError
from pipeline.evaluate import main

LATENT = 8


def save_tiny_generator(path: Path, size: int = 32, signatures: tuple[str, ...] = ("serving_default", "sample")) -> Path:
    """A SavedModel like the exporter's (DESIGN.md), made with plain TensorFlow.

    `serving_default`: z float32[None, 8] -> {"images": uint8[None, size, size, 3]};
    `sample`: (num int32, seed int64) -> the same, from stateless (deterministic) latents.
    """
    import tensorflow as tf

    class TinyGenerator(tf.Module):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(0)
            self.kernel = tf.Variable(rng.normal(0, 0.5, (LATENT, 4 * 4 * 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, LATENT], tf.float32, name="z")])
        def serve(self, z):
            pixels = tf.reshape(tf.tanh(z @ self.kernel), (-1, 4, 4, 3))
            pixels = tf.image.resize(pixels, (size, size), method="bilinear")
            return {"images": tf.cast(tf.clip_by_value(tf.round((pixels + 1) * 127.5), 0, 255), tf.uint8)}

        @tf.function(input_signature=[tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int64)])
        def sample(self, num, seed):
            z = tf.random.stateless_normal([num, LATENT], seed=tf.stack([seed, tf.constant(0, tf.int64)]))
            return self.serve(z)

    module = TinyGenerator()
    functions = {"serving_default": module.serve, "sample": module.sample}
    tf.saved_model.save(module, str(path), signatures={name: functions[name] for name in signatures})
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder whose export/generator/1/ holds the tiny 32x32 generator."""
    run = tmp_path_factory.mktemp("run")
    save_tiny_generator(run / "export" / "generator" / "1")
    return run


def test_evaluate_writes_eval_json_beside_the_model_and_prints_a_table(run_dir, tiny_records, capsys):
    args = ["--model", str(run_dir), "--data", str(tiny_records)]
    args += ["--eval-num", "12", "--generate-batch", "5", "--train-limit", "40"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "SWD x1e3, average" in out and "MS-SSIM" in out and "copy fraction" in out
    assert "FID/KID skipped" in err

    report = json.loads((run_dir / "export" / "generator" / "1" / "eval.json").read_text())
    metrics = report["metrics"]
    assert metrics["num_images"] == 12
    assert {
        "swd_32",
        "swd_16",
        "swd_avg",
        "swd_avg_floor",
        "msssim",
        "msssim_real",
        "memorisation_nn_generated",
        "memorisation_nn_real",
        "memorisation_copy_fraction",
    } <= set(metrics)
    assert "fid" not in metrics and report["train_images_searched"] == 40 and report["split"] == "eval"
    assert all(np.isfinite(v) for v in metrics.values())

    # Fixed latents and a fixed real set: a second run scores the same, and --output moves the file.
    assert main(args + ["--output", str(run_dir / "again.json")]) == 0
    assert json.loads((run_dir / "again.json").read_text())["metrics"] == metrics

    # --skip-if-done: the same request is not scored again; another --num is.
    again = run_dir / "again.json"
    stamp = again.stat().st_mtime_ns
    assert main(args + ["--output", str(again), "--skip-if-done"]) == 0
    assert again.stat().st_mtime_ns == stamp and "up to date" in capsys.readouterr().err
    other_num = ["--eval-num", "8", "--train-limit", "40", "--output", str(again), "--skip-if-done"]
    assert main(["--model", str(run_dir), "--data", str(tiny_records), *other_num]) == 0
    assert json.loads(again.read_text())["metrics"]["num_images"] == 8


def test_num_larger_than_the_split_is_capped_with_a_note(run_dir, tiny_records, capsys):
    out_file = run_dir / "capped.json"
    model = run_dir / "export" / "generator"
    assert main(["--model", str(model), "--data", str(tiny_records), "--train-limit", "0", "--output", str(out_file)]) == 0
    err = capsys.readouterr().err
    assert "comparing 16 generated with 16 real" in err and "memorisation skipped" in err
    metrics = json.loads(out_file.read_text())["metrics"]
    assert metrics["num_images"] == 16 and "memorisation_nn_generated" not in metrics


def test_user_mistakes_are_clear_errors(run_dir, tiny_records, tmp_path):
    data = ["--data", str(tiny_records)]
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "saved_model.pb").write_bytes(b"not a protobuf")
    cases = [
        (["--model", str(empty)] + data, "holds no SavedModel"),
        (["--model", str(corrupt)] + data, "not a loadable SavedModel"),
        (["--model", str(run_dir), "--data", str(tmp_path)], "not an ingested data folder"),
        (["--model", str(run_dir), "--inception-weights", str(tmp_path / "none.h5")] + data, "never downloaded"),
    ]
    for argv, message in cases:
        with pytest.raises(PipelineError, match=message):
            main(argv)


def test_a_model_without_the_serving_signature_is_refused(tmp_path, tiny_records):
    model = save_tiny_generator(tmp_path / "sample_only", signatures=("sample",))
    with pytest.raises(PipelineError, match="no 'serving_default' signature.*sample"):
        main(["--model", str(model), "--data", str(tiny_records)])


def test_a_model_of_another_image_size_is_refused(tmp_path, tiny_records):
    model = save_tiny_generator(tmp_path / "small", size=16)
    with pytest.raises(PipelineError, match="generates 16x16 images but .* holds 32x32"):
        main(["--model", str(model), "--data", str(tiny_records)])


def test_the_command_line_exits_2_with_a_one_line_error(tmp_path, tiny_records):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.evaluate", "--model", str(tmp_path), "--data", str(tiny_records)],
        check=False,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("error: ") and "holds no SavedModel" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_cli_scores_what_evaluate_generator_scores_on_the_same_latents(run_dir, tiny_records):
    # Both draw components.latents: the trainer's figures (TrainingEvaluator on the Keras
    # generator) and pipeline.evaluate's (on its export) agree for the same weights.
    import tensorflow as tf

    from components.records import load_images
    from tests.helpers import evaluate_generator

    out_file = run_dir / "same.json"
    settings = ["--eval-num", "12", "--seed", "3", "--train-limit", "40", "--output", str(out_file)]
    assert main(["--model", str(run_dir), "--data", str(tiny_records), *settings]) == 0
    serve = tf.saved_model.load(str(run_dir / "export" / "generator" / "1")).signatures["serving_default"]
    expected = evaluate_generator(
        lambda z: serve(z=tf.constant(z))["images"].numpy(),
        load_images(tiny_records, "eval"),
        load_images(tiny_records, "train", limit=40),
        latent_dim=LATENT,
        num=12,
        seed=3,
    )
    assert json.loads(out_file.read_text())["metrics"] == pytest.approx(expected)
