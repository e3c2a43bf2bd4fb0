"""The training run: run folder, resume (also after SIGKILL), evaluation hook, NaN guard, errors."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from components.artifacts import RunPaths, read_json, read_jsonl
from components.config import TrainConfig, recipe_config
from components.errors import PipelineError
from components.grid import make_grid
from components.latents import grid_latents, to_uint8_array
from components.model import ModelConfig
from components.runfolder import metric_values, restore_generator
from components.train_options import TrainOptions
from components.trainer import train
from components.training_loop import TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]
TINY = TrainConfig(model=ModelConfig(latent_dim=8, g_filters=4, d_filters=4), batch_size=8)
TINY_FLAGS = ["--latent-dim", "8", "--g-filters", "4", "--d-filters", "4", "--batch-size", "8"]
QUIET = {"verbose": False}


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.train", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def tensorboard_steps(logs: Path) -> dict[str, list[int]]:
    """Every TensorBoard tag in `logs` with the steps it was written at."""
    import tensorflow as tf

    steps: dict[str, list[int]] = {}
    for events in logs.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


def test_a_run_writes_its_folder_and_restores_its_generators(tiny_records, tmp_path):
    swd_values = iter([5.0, 2.0, 3.0, 4.0])
    seen_shapes = []

    def fake_evaluate(generator) -> dict[str, float]:
        seen_shapes.append(tuple(generator(np.zeros((2, 8), np.float32)).shape))
        return {"swd_avg": next(swd_values), "swd_16": 1.0}

    run = tmp_path / "run"
    options = TrainOptions(images=64, precision="bfloat16", checkpoint_every=4, sample_every=4, log_every=2, eval_every=16)
    result = train(TINY, tiny_records, run, options, evaluate_fn=fake_evaluate, verbose=False)

    paths = RunPaths(run)
    assert (result.steps, result.images_seen, result.best_swd) == (8, 64, 2.0)
    assert result.metrics["swd_avg"] == 4.0 and np.isfinite(result.metrics["d_loss"])
    assert seen_shapes == [(2, 32, 32, 3)] * 4  # at 16, 32, 48, 64 images; none repeated at the end

    record = read_json(paths.hparams)
    assert record["hparams"] == TINY.with_image_size(32).to_dict()
    assert record["data"]["counts"] == {"train": 96, "eval": 32} and record["data"]["fingerprint"] == "test"
    assert sorted(p.name for p in paths.checkpoints.glob("ckpt-*.index")) == ["ckpt-4.index", "ckpt-8.index"]
    assert [p.name for p in (paths.checkpoints / "best").glob("*.index")] == ["best-4.index"]
    assert sorted(p.name for p in paths.samples.iterdir()) == ["best.png", "step-0000004.png", "step-0000008.png"]
    assert (paths.samples / "best.png").read_bytes() == (paths.samples / "step-0000004.png").read_bytes()  # the best step's grid
    assert Image.open(paths.samples / "step-0000008.png").size == (8 * 34 + 2, 8 * 34 + 2)  # 8x8 grid of 32 px
    steps = tensorboard_steps(paths.logs)
    assert set(steps) >= {
        "train/d_loss",
        "train/g_loss",
        "train/d_real_logit",
        "train/d_fake_logit",
        "train/images_per_sec",
        "eval/swd_avg",
        "samples",
    }
    # Every scalar again against the images seen (batch 8 here): runs of other batch sizes line up on those.
    assert steps["train/d_loss"] == [2, 4, 6, 8] and steps["by_images_seen/train/d_loss"] == [16, 32, 48, 64]
    assert steps["by_images_seen/eval/swd_avg"] == [16, 32, 48, 64]

    lines = read_jsonl(paths.metrics)
    assert [(r["kind"], r["step"]) for r in lines if r["kind"] == "train"] == [("train", s) for s in (2, 4, 6, 8)]
    assert [(r["step"], r["swd_avg"]) for r in lines if r["kind"] == "eval"] == [(2, 5.0), (4, 2.0), (6, 3.0), (8, 4.0)]
    assert all(
        {"d_loss", "g_loss", "d_real_logit", "d_fake_logit", "images_per_sec"} <= set(r) for r in lines if r["kind"] == "train"
    )

    generator, info = restore_generator(run)
    assert {k: info[k] for k in ("step", "images_seen", "image_size", "latent_dim", "data_fingerprint")} == {
        "step": 8,
        "images_seen": 64,
        "image_size": 32,
        "latent_dim": 8,
        "data_fingerprint": "test",
    }
    assert info["data_counts"] == {"train": 96, "eval": 32} and info["hparams"] == record["hparams"]
    assert info["data_dir"] == str(Path(tiny_records).resolve())
    assert metric_values(info["evaluation"]) == {"swd_avg": 4.0, "swd_16": 1.0}
    restored = np.asarray(generator(grid_latents(8)))
    assert restored.dtype == np.float32 and restored.shape == (64, 32, 32, 3)
    assert np.abs(restored).max() <= 1.0
    # The last sample grid is exactly what the restored generator draws for the grid's latents.
    saved_grid = np.asarray(Image.open(paths.samples / "step-0000008.png").convert("RGB"))
    assert np.abs(saved_grid.astype(int) - make_grid(to_uint8_array(restored)).astype(int)).max() <= 1
    # It is the EMA, in float32, with BatchNorm statistics of its own (not the raw generator's).
    trained_ema = result.gan.ema_generator
    np.testing.assert_allclose(generator.trainable_weights[0].numpy(), trained_ema.trainable_weights[0].numpy())
    assert not np.allclose(generator.non_trainable_weights[0].numpy(), trained_ema.non_trainable_weights[0].numpy())

    best, best_info = restore_generator(run, "best")
    assert (best_info["step"], best_info["evaluation"]["swd_avg"]) == (4, 2.0)
    assert not np.allclose(np.asarray(best(grid_latents(8))), restored)


def test_rerun_resumes_and_a_finished_run_does_nothing(tiny_records, tmp_path, capsys):
    run = tmp_path / "run"
    first = train(
        TINY, tiny_records, run, TrainOptions(epochs=0.5, checkpoint_every=2, log_every=2, precision="float32"), **QUIET
    )
    assert (first.steps, first.images_seen, first.resumed_from) == (6, 48, None)

    second = train(TINY, tiny_records, run, TrainOptions(images=80, checkpoint_every=2, log_every=2, precision="float32"))
    assert (second.steps, second.images_seen, second.resumed_from) == (10, 80, 6)
    assert "resumed from step 6 (48 images seen)" in capsys.readouterr().out
    steps = [r["step"] for r in read_jsonl(RunPaths(run).metrics)]
    assert steps == [2, 4, 6, 8, 10]

    third = train(TINY, tiny_records, run, TrainOptions(images=80, precision="float32"))
    assert (third.steps, third.images_seen) == (10, 80)
    assert third.metrics == pytest.approx(second.metrics)  # read back from metrics.jsonl
    assert "nothing to do" in capsys.readouterr().out


def test_other_hyperparameters_or_data_need_new_run(tiny_records, tmp_path):
    run = tmp_path / "run"
    train(TINY, tiny_records, run, TrainOptions(images=16, precision="float32"), **QUIET)
    changed = TrainConfig(model=TINY.model, batch_size=8, g_lr=1e-3)
    with pytest.raises(PipelineError, match=rf"g_lr: {TrainConfig().g_lr} in the run, 0.001 now.*`overwrite`"):
        train(changed, tiny_records, run, TrainOptions(images=16, precision="float32"), **QUIET)

    other_data = tmp_path / "other"
    shutil.copytree(tiny_records, other_data)
    manifest = read_json(other_data / "manifest.json")
    (other_data / "manifest.json").write_text(json.dumps({**manifest, "fingerprint": "other"}))
    with pytest.raises(PipelineError, match="fingerprint test.*fingerprint other"):
        train(TINY, other_data, run, TrainOptions(images=16, precision="float32"), **QUIET)

    fresh = train(changed, tiny_records, run, TrainOptions(images=16, overwrite=True, precision="float32"), **QUIET)
    assert (fresh.resumed_from, fresh.steps) == (None, 2)
    assert read_json(RunPaths(run).hparams)["hparams"]["g_lr"] == 1e-3


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_records, tmp_path, monkeypatch):
    import tensorflow as tf

    from components.gan import DCGAN

    honest_loss = DCGAN._generator_loss

    def poisoned_from_step_6(self, fake_logits):
        loss = honest_loss(self, fake_logits)
        return loss * tf.where(self.g_optimizer.iterations >= 5, np.nan, 1.0)

    monkeypatch.setattr(DCGAN, "_generator_loss", poisoned_from_step_6)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"diverged at step 6: .*g_loss=nan.*last good checkpoint \(step 4\)"):
        options = TrainOptions(images=400, checkpoint_every=2, steps_per_execution=1, precision="float32")
        train(TINY, tiny_records, run, options, **QUIET)

    assert sorted(p.name for p in RunPaths(run).checkpoints.glob("ckpt-*.index")) == ["ckpt-2.index", "ckpt-4.index"]
    generator, info = restore_generator(run)
    assert info["step"] == 4
    assert np.isfinite(np.asarray(generator(np.ones((2, 8), np.float32)))).all()


def test_sigkilled_run_resumes_to_the_same_counts_as_an_uninterrupted_one(tiny_records, tmp_path):
    images = 2400  # 300 steps: seconds of work, so the kill lands mid-run
    run = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "pipeline.train",
        "--data",
        str(tiny_records),
        "--run",
        str(run),
        "--images",
        str(images),
        *TINY_FLAGS,
        "--precision",
        "float32",
        "--checkpoint-every",
        "10",
        "--log-every",
        "10",
        "--sample-every",
        "1000",
    ]
    import tensorflow as tf

    def newest_checkpoint_step() -> int | None:
        prefix = tf.train.latest_checkpoint(str(RunPaths(run).checkpoints))  # complete checkpoints only
        return int(prefix.rsplit("-", 1)[1]) if prefix else None

    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while newest_checkpoint_step() is None and time.monotonic() < deadline:
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    killed_at = newest_checkpoint_step()
    assert 0 < killed_at < images // 8

    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from step {killed_at}" in resumed.stdout
    _, info = restore_generator(run)

    keras.utils.set_random_seed(TINY.seed)  # as the command line does: the same initial weights
    options = TrainOptions(images=images, log_every=10, precision="float32")
    uninterrupted = train(TINY, tiny_records, tmp_path / "whole", options, **QUIET)
    assert (info["step"], info["images_seen"]) == (uninterrupted.steps, uninterrupted.images_seen) == (300, 2400)
    train_steps = [r["step"] for r in read_jsonl(RunPaths(run).metrics)]
    assert train_steps == list(range(10, 301, 10))  # lines of the killed run past its checkpoint were dropped
    # The resumed run saw exactly the batches, latents and updates of the uninterrupted one.
    resumed_weights, _ = restore_generator(run)
    whole_weights, _ = restore_generator(tmp_path / "whole")
    for a, b in zip(resumed_weights.weights, whole_weights.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_steps_per_execution_and_a_resumption_change_no_weight(tiny_records, tmp_path):
    def weights(run: str, images: int, steps_per_execution: int, config: TrainConfig = TINY) -> list[np.ndarray]:
        keras.utils.set_random_seed(config.seed)
        options = TrainOptions(
            images=images,
            steps_per_execution=steps_per_execution,
            log_every=4,
            checkpoint_every=4,
            sample_every=4,
            precision="float32",
        )
        result = train(config, tiny_records, tmp_path / run, options, **QUIET)
        gan = result.gan
        return [w.numpy() for w in [*gan.generator.weights, *gan.discriminator.weights, *gan.ema_generator.weights]]

    def assert_same(first: list[np.ndarray], second: list[np.ndarray]) -> None:
        for a, b in zip(first, second):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)

    # A learning-rate schedule and lazy R1 run inside the multi-step graph call, per step (the
    # default holds its rates for longer than these runs, so the schedule starts at once here).
    scheduled = dataclasses.replace(TINY, lr_hold_images=0)
    assert scheduled.lr_hold < 1 and scheduled.r1_gamma > 0
    assert_same(weights("one", 200, 1, scheduled), weights("four", 200, 4, scheduled))
    # A run extended from 96 to 200 images equals a 200-image run when the rates are constant (a
    # schedule spans the budget it was given, so extending a run changes it: README, Train).
    constant = dataclasses.replace(TINY, lr_hold=1.0)
    whole = weights("constant", 200, 1, constant)
    assert_same(whole, (weights("resumed", 96, 4, constant), weights("resumed", 200, 4, constant))[1])


def test_cli_reports_user_errors_without_traceback(tmp_path):
    missing = cli("--data", str(tmp_path / "nowhere"), "--images", "8", timeout=60)
    assert missing.returncode == 2 and "nowhere does not exist" in missing.stderr
    bad = cli("--data", str(tmp_path), "--g-lr", "-1", timeout=60)
    assert bad.returncode == 2 and "--g-lr must be more than 0, got -1" in bad.stderr
    assert "Traceback" not in missing.stderr + bad.stderr
    helped = cli("--help", timeout=60)
    assert helped.returncode == 0
    for flag in (
        "--epochs",
        "--images",
        "--g-filters",
        "--d-lr",
        "--ema-decay",
        "--precision",
        "--jit",
        "--overwrite",
        "--checkpoint-every",
    ):
        assert flag in helped.stdout


def test_restore_generator_errors_name_the_folder(tiny_records, tmp_path):
    with pytest.raises(PipelineError, match=f"{tmp_path}.*not a training run folder"):
        restore_generator(tmp_path)
    run = tmp_path / "run"
    train(TINY, tiny_records, run, TrainOptions(images=8, precision="float32"), **QUIET)
    with pytest.raises(PipelineError, match="no best checkpoint.*evaluator"):
        restore_generator(run, "best")


def test_config_round_trip_and_validation():
    config = TrainConfig(model=ModelConfig(image_size=64, g_filters=16), g_lr=1e-4, ema_decay=0.99)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert TrainConfig.from_dict({"g_lr": 1e-4}) == recipe_config("seed", g_lr=1e-4)  # older files: the seed's
    with pytest.raises(PipelineError, match="unknown training hyperparameter.*warp"):
        TrainConfig.from_dict({"warp": 9})
    with pytest.raises(PipelineError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(PipelineError, match="train_step"):
        TrainConfig(train_step="fast")
    with pytest.raises(PipelineError, match="configured for 64x64.*holds 32x32"):
        config.with_image_size(32)


def test_the_gpu_code_paths_run_on_cpu_float16_with_loss_scaling_and_xla(tiny_records, tmp_path):
    """float16 mixed precision (with dynamic loss scaling) and XLA are the GPU defaults; no GPU runs
    here, so they are forced on the CPU: training, resuming, and compiling the step."""
    half = dict(precision="float16", checkpoint_every=4, log_every=4, sample_every=4)
    first = train(TINY, tiny_records, tmp_path / "half", TrainOptions(images=32, **half), verbose=False)
    assert type(first.gan.g_optimizer).__name__ == "LossScaleOptimizer"
    assert first.gan.generator.layers[1].compute_dtype == "float16"
    resumed = train(TINY, tiny_records, tmp_path / "half", TrainOptions(images=64, **half), verbose=False)
    assert (resumed.resumed_from, resumed.steps) == (4, 8)
    assert all(np.isfinite(w.numpy()).all() for w in resumed.gan.ema_generator.weights)

    compiled = train(TINY, tiny_records, tmp_path / "xla", TrainOptions(images=16, precision="float32", jit=True), verbose=False)
    assert compiled.gan.jit_compile and compiled.steps == 2
    assert np.isfinite(compiled.metrics["d_loss"])
