"""The SavedModel exporter: signatures usable without project code, versions, atomicity, model card."""

from __future__ import annotations

import datetime
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from components import exporter
from components.artifacts import RunPaths, read_json, resolve_saved_model, saved_model_versions
from components.errors import PipelineError
from components.latents import latents
from components.latents import to_uint8_array as to_uint8

LATENT = 8
SIZE = 16
HELPER = Path(__file__).with_name("load_saved_model_check.py")


def tiny_generator(seed: int = 0):
    """A 16x16 DCGAN-shaped generator (Dense, BatchNorm, transposed convs, tanh), random weights."""
    import keras

    keras.utils.set_random_seed(seed)
    z = keras.Input((LATENT,))
    x = keras.layers.Dense(4 * 4 * 16, use_bias=False)(z)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.LeakyReLU(0.2)(x)
    x = keras.layers.Reshape((4, 4, 16))(x)
    x = keras.layers.Conv2DTranspose(8, 5, strides=2, padding="same")(x)
    x = keras.layers.LeakyReLU(0.2)(x)
    x = keras.layers.Conv2DTranspose(3, 5, strides=2, padding="same", activation="tanh")(x)
    return keras.Model(z, x, name="generator")


def expected_images(generator, seed: int, count: int) -> np.ndarray:
    return to_uint8(generator(latents(seed, np.arange(count), LATENT), training=False))


@pytest.fixture(scope="module")
def generator():
    return tiny_generator()


@pytest.fixture(scope="module")
def exported(generator, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export") / "generator"
    return exporter.export_generator(generator, root, {"hyperparameters": {"latent_dim": LATENT}, "images_seen": 1234})


def test_export_loads_in_a_fresh_process_that_imports_only_tensorflow(exported, generator, tmp_path):
    out = tmp_path / "outputs.npz"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, str(HELPER), str(exported), str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["project_modules"] == []
    outputs = np.load(out)
    for key in ("serving", "sample_seed7", "sample_seed7_again", "sample_seed8", "sample_one"):
        assert outputs[key].dtype == np.uint8 and outputs[key].shape[1:] == (SIZE, SIZE, 3), key
    assert outputs["serving"].shape[0] == 3 and outputs["sample_one"].shape[0] == 1
    assert outputs["sample_seed7"].shape[0] == 5
    # Deterministic per seed, different across seeds, and equal (within 1 grey level) to the
    # in-memory generator fed the documented latents: the same across processes.
    assert np.array_equal(outputs["sample_seed7"], outputs["sample_seed7_again"])
    assert not np.array_equal(outputs["sample_seed7"], outputs["sample_seed8"])
    assert np.abs(outputs["sample_seed7"].astype(int) - expected_images(generator, 7, 5)).max() <= 1
    assert np.array_equal(outputs["sample_one"][0], outputs["sample_seed7"][0])  # image i does not depend on num
    import tensorflow as tf

    z = tf.random.stateless_normal([3, LATENT], seed=[1, 2], alg="philox")
    assert np.abs(outputs["serving"].astype(int) - to_uint8(generator(z, training=False))).max() <= 1
    assert len(np.unique(outputs["serving"])) > 10  # real images, not a constant


def test_versions_increase_and_the_newest_is_resolved(generator, tmp_path):
    root = tmp_path / "generator"
    first = exporter.export_generator(generator, root, {})
    second = exporter.export_generator(generator, root, {})
    assert (first.name, second.name) == ("1", "2")
    assert saved_model_versions(root) == [first, second]
    assert resolve_saved_model(root) == second
    assert read_json(second / exporter.MODEL_CARD)["version"] == 2
    assert sorted(p.name for p in root.iterdir()) == ["1", "2"]  # no temporary folders left behind


def test_a_mismatching_export_fails_loudly_and_leaves_no_version(generator, tmp_path, monkeypatch):
    root = tmp_path / "generator"
    exporter.export_generator(generator, root, {})
    # Pretend the in-memory generator renders 2 grey levels brighter than the SavedModel does.
    monkeypatch.setattr(exporter, "to_uint8_array", lambda images: np.clip(to_uint8(images).astype(int) + 2, 0, 255))
    with pytest.raises(PipelineError, match="differ .* by 2 grey levels"):
        exporter.export_generator(generator, root, {})
    assert sorted(p.name for p in root.iterdir()) == ["1"]


def test_an_interrupted_export_leaves_no_visible_version(generator, tmp_path, monkeypatch):
    root = tmp_path / "generator"
    real_write = exporter._write_saved_model

    def write_then_die(model, folder, latent_dim):
        real_write(model, folder, latent_dim)  # the SavedModel is complete on disk...
        raise KeyboardInterrupt  # ...but the export is stopped before its check and rename

    monkeypatch.setattr(exporter, "_write_saved_model", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        exporter.export_generator(generator, root, {})
    assert saved_model_versions(root) == [] and list(root.iterdir()) == []


def test_model_card_holds_the_callers_fields_and_the_exports(exported):
    card = read_json(exported / exporter.MODEL_CARD)
    assert card["hyperparameters"] == {"latent_dim": LATENT} and card["images_seen"] == 1234
    assert card["version"] == 1 and card["latent_dim"] == LATENT and card["image_shape"] == [SIZE, SIZE, 3]
    assert set(card["signatures"]) == {"serving_default", "sample"}
    assert 0 <= card["export_check"]["max_grey_level_difference"] <= 1
    assert {"keras", "numpy"} <= set(card["tool_versions"])
    assert any(name.startswith("tensorflow") for name in card["tool_versions"])
    exported_at = datetime.datetime.fromisoformat(card["export_time"])
    assert abs((datetime.datetime.now(datetime.timezone.utc) - exported_at).total_seconds()) < 600


@pytest.fixture(scope="module")
def trained_run(tiny_records, tmp_path_factory) -> Path:
    """A run of a few steps on the 32x32 fixture, with a stand-in evaluator so a best checkpoint exists."""
    from components.config import TrainConfig
    from components.model import ModelConfig
    from components.train_options import TrainOptions
    from components.trainer import train

    run = tmp_path_factory.mktemp("run")
    config = TrainConfig(model=ModelConfig(latent_dim=LATENT, g_filters=4, d_filters=4), batch_size=16)
    scores = itertools.chain([3.0, 2.0], itertools.repeat(4.0))  # one per 16 images: step 2 is the best
    options = TrainOptions(images=48, precision="float32", checkpoint_every=1, log_every=1, sample_every=10, eval_every=16)
    train(config, tiny_records, run, options, evaluate_fn=lambda generator: {"swd_avg": next(scores)}, verbose=False)
    return run


def test_export_cli_writes_the_runs_best_ema_generator_with_its_card(trained_run, tiny_records, capsys):
    from components.runfolder import restore_generator
    from components.sampler import SavedModelGenerator
    from pipeline.export import main

    assert main(["--run", str(trained_run), "--checkpoint", "best"]) == 0
    version = RunPaths(trained_run).export / "1"
    assert str(version) in capsys.readouterr().out
    card = read_json(version / exporter.MODEL_CARD)
    generator, info = restore_generator(trained_run, "best")
    assert (card["checkpoint"], card["step"], card["images_seen"]) == ("best", 2, 32)
    assert card["metrics"]["swd_avg"] == 2.0
    assert card["hyperparameters"] == info["hparams"] and card["hyperparameters"]["model"]["latent_dim"] == LATENT
    assert card["data"] == {"dir": str(tiny_records.resolve()), "fingerprint": "test", "counts": {"train": 96, "eval": 32}}
    assert card["image_shape"] == [32, 32, 3]
    served = SavedModelGenerator(trained_run).images(np.arange(4), seed=3)
    assert np.abs(served.astype(int) - expected_images(generator, 3, 4)).max() <= 1

    assert main(["--run", str(trained_run)]) == 0  # latest: a second version, the final step
    assert read_json(RunPaths(trained_run).export / "2" / exporter.MODEL_CARD)["step"] == 3


def test_export_run_if_changed_reuses_the_version_of_the_same_checkpoint(trained_run):
    latest, exported = exporter.export_run(trained_run, exporter.ExportOptions("latest"))
    assert exported
    assert exporter.export_run(trained_run, exporter.ExportOptions("latest"), if_changed=True) == (latest, False)
    newer, exported = exporter.export_run(trained_run, exporter.ExportOptions("best"), if_changed=True)  # another checkpoint
    assert exported and int(newer.name) == int(latest.name) + 1


def test_export_cli_errors_name_the_run(tmp_path):
    from pipeline.export import main

    with pytest.raises(PipelineError, match="is not a folder"):
        main(["--run", str(tmp_path / "missing")])
    with pytest.raises(PipelineError, match="not a training run folder"):
        main(["--run", str(tmp_path)])
