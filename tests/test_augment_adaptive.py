"""Mirrored reals, adaptive augmentation, the recipes kept for earlier defaults, and a training
step without Grappler's "remapper failed" error line."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from components.config import LR_HOLD_IMAGES, RECIPES, TrainConfig, recipe_config
from components.errors import PipelineError
from components.model import ModelConfig
from components.trainer import build_gan, compile_gan

TINY = {"image_size": 32, "latent_dim": 8, "g_filters": 4, "d_filters": 4}
POLICY = "color,translation,cutout"


def tiny_gan(**overrides):
    config = recipe_config("default", model=TINY, batch_size=8, **overrides)
    gan = build_gan(config, "float32")
    compile_gan(gan, config, "float32")
    return gan


def images(count: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (count, 32, 32, 3)).astype(np.float32)


def adapt(gan, logits: float, steps: int) -> None:
    """`steps` of D's adjustment bookkeeping with every real logit equal to `logits`."""
    for _ in range(steps):
        gan._adapt_augmentation(tf.fill([16, 1], logits))
        gan.step.assign_add(1)


def test_adaptive_share_rises_while_d_is_sure_of_the_reals_and_falls_when_it_is_not():
    gan = tiny_gan(augment=POLICY, ada_target=0.6, ada_images=640)
    assert float(gan.augment_p.numpy()) == 0.0  # adaptive: starts without augmentation
    adapt(gan, 3.0, 3)
    assert float(gan.augment_p.numpy()) == 0.0  # moves only every 4 steps
    adapt(gan, 3.0, 1)
    assert float(gan.augment_p.numpy()) == pytest.approx(16 * 4 / 640)  # 64 images of 640: +0.1
    adapt(gan, 3.0, 40)
    assert float(gan.augment_p.numpy()) == 1.0  # clipped
    adapt(gan, -3.0, 8)
    assert float(gan.augment_p.numpy()) == pytest.approx(0.8)


def test_mean_sign_below_the_target_keeps_the_share_at_zero():
    gan = tiny_gan(augment=POLICY, ada_target=0.6, ada_images=640)
    adapt(gan, 3.0, 2)
    adapt(gan, -3.0, 2)  # mean sign 0 over the 4 steps: below 0.6
    assert float(gan.augment_p.numpy()) == 0.0


def test_the_share_decides_which_images_are_augmented():
    gan = tiny_gan(augment=POLICY, ada_target=0.6)
    batch = tf.constant(images(64))
    assert np.array_equal(gan._augment(batch).numpy(), batch.numpy())  # share 0: untouched
    gan.augment_p.assign(1.0)
    augmented = gan._augment(batch).numpy()
    assert all(not np.array_equal(a, b) for a, b in zip(augmented, batch.numpy()))
    gan.augment_p.assign(0.5)
    changed = [not np.array_equal(a, b) for a, b in zip(gan._augment(batch).numpy(), batch.numpy())]
    assert 10 < sum(changed) < 54


def test_a_fixed_policy_augments_every_image_and_holds_no_adaptive_state():
    gan = tiny_gan(augment=POLICY)
    assert float(gan.augment_p.numpy()) == 1.0
    assert set(gan.checkpointed_state()) == {"augment_rng"}
    assert set(tiny_gan(augment=POLICY, ada_target=0.6).checkpointed_state()) == {"augment_rng", "augment_p", "ada_signs"}
    assert tiny_gan().checkpointed_state() == {}  # runs without augmentation keep their checkpoint layout


def test_mirror_flips_about_half_of_the_reals_left_right_and_nothing_else():
    gan = tiny_gan(mirror=True)
    batch = images(64)
    mirrored = gan._mirror(tf.constant(batch)).numpy()
    same = [np.array_equal(m, b) for m, b in zip(mirrored, batch)]
    flipped = [np.array_equal(m, b[:, ::-1]) for m, b in zip(mirrored, batch)]
    assert all(s or f for s, f in zip(same, flipped))
    assert 10 < sum(flipped) < 54
    assert set(gan.checkpointed_state()) == {"augment_rng"}  # its random stream resumes with the run


def test_mirrored_and_adaptive_training_steps_run_and_log_the_share():
    gan = tiny_gan(mirror=True, augment=POLICY, ada_target=0.6, ada_images=64)
    for _ in range(8):
        logs = gan.train_on_batch(images(), return_dict=True)
    assert np.isfinite([np.mean(v) for v in logs.values()]).all()
    assert 0.0 <= float(np.mean(logs["augment_p"])) <= 1.0
    assert int(gan.step.numpy()) == 8


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ada_target": 0.6}, "needs an augment policy"),
        ({"augment": POLICY, "ada_target": 1.0}, "ada_target must be in [0, 1)"),
        ({"augment": POLICY, "ada_target": 0.6, "ada_images": 0}, "ada_images must be a whole number"),
        ({"mirror": 1}, "mirror must be true or false"),
    ],
)
def test_bad_adaptive_or_mirror_settings_are_one_clear_error(overrides, message):
    with pytest.raises(PipelineError, match=message.replace("[", r"\[").replace(")", r"\)")):
        TrainConfig(**overrides)


def test_the_tutorial_step_refuses_mirroring():
    with pytest.raises(PipelineError, match="without augment, mirror or r1_gamma"):
        recipe_config("seed", train_step="seed", mirror=True)


@pytest.mark.parametrize("name", ["seed", "v1", "v2", "v3", "v4"])
def test_earlier_defaults_write_out_every_field_so_new_defaults_cannot_change_them(name):
    recipe = RECIPES[name]
    settings = {field.name for field in dataclasses.fields(TrainConfig)} - {"model", "seed", "train_step"}
    assert set(recipe) - {"model"} == settings
    assert set(recipe["model"]) == {field.name for field in dataclasses.fields(ModelConfig)} - {"image_size"}


def test_the_earlier_defaults_are_what_they_were():
    v2, v1 = recipe_config("v2"), recipe_config("v1")
    assert (v2.batch_size, v2.model.d_spectral_norm, v2.beta_1, v2.lr_hold, v2.r1_gamma) == (16, False, 0.0, 0.5, 0.1)
    assert (v1.batch_size, v1.model.d_spectral_norm, v1.beta_1, v1.lr_hold, v1.r1_gamma) == (32, True, 0.5, 1.0, 0.0)
    assert dataclasses.replace(v1, batch_size=16, model=v2.model, beta_1=0.0, lr_hold=0.5, r1_gamma=0.1) == v2
    v4, v3, default = recipe_config("v4"), recipe_config("v3"), recipe_config("default")
    assert (v3.model.d_filters, v3.g_lr, v3.d_lr, v3.beta_2, v3.lr_hold, v3.lr_hold_images) == (32, 4e-4, 8e-4, 0.99, 0.5, 0)
    assert (v4.lr_hold_images, v4.ema_warmup, default.ema_warmup) == (LR_HOLD_IMAGES, 10.0, 20.0)
    assert dataclasses.replace(v3, lr_hold_images=LR_HOLD_IMAGES) == v4
    assert dataclasses.replace(v4, ema_warmup=20.0) == default


def test_a_training_with_r1_prints_no_remapper_error(tiny_records, tmp_path, capfd):
    """Grappler's remapper fails on R1's second-order gradient through D's fused convolution and
    says so at level E; the step turns that optimizer off instead (C++ writes to the process's
    stderr, which capfd sees)."""
    from components.train_options import TrainOptions
    from components.trainer import train

    config = recipe_config("default", model=TINY, batch_size=8, r1_every=1)
    assert config.r1_gamma > 0
    train(config, tiny_records, tmp_path / "run", TrainOptions(images=32, log_every=2), verbose=False)
    assert "remapper failed" not in capfd.readouterr().err


def test_the_search_s_speed_probe_with_r1_prints_no_remapper_error(capfd):
    """The probe `--tune` runs before a search builds the same step, so it turns the remapper off too."""
    from components.search_cost import measure_speed

    config = recipe_config("default", model=TINY, batch_size=8, r1_every=2)
    assert measure_speed(config, 32, precision="float32", steps=4, warmup=1) > 0
    assert "remapper failed" not in capfd.readouterr().err


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_on_the_command_line_is_exactly_that_recipe(name, tmp_path):
    """No flag's own default may override the recipe the user named."""
    from pipeline.train import build_parser, config_from_args

    assert config_from_args(build_parser().parse_args(["--data", str(tmp_path), "--recipe", name])) == recipe_config(name)
