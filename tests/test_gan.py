"""The DCGAN train_step: it learns, its EMA follows, the seed loop and every precision run."""

from __future__ import annotations

import numpy as np
import pytest

from components.config import recipe_config
from components.model import ModelConfig
from components.trainer import build_gan, compile_gan

TINY = ModelConfig(image_size=32, latent_dim=8, g_filters=4, d_filters=4)


def tiny_images(count: int = 16, seed: int = 0) -> np.ndarray:
    """Smooth blocky images in [-1, 1]: easy for D to tell from G's first outputs."""
    rng = np.random.default_rng(seed)
    blocks = rng.uniform(-1, 1, size=(count, 4, 4, 3)).astype(np.float32)
    return np.repeat(np.repeat(blocks, 8, axis=1), 8, axis=2)


def make_gan(policy: str = "float32", recipe: str = "default", **overrides):
    config = recipe_config(recipe, model=TINY.to_dict(), batch_size=8, **overrides)
    gan = build_gan(config, policy)
    compile_gan(gan, config, policy)
    return gan


def snapshot(model) -> list[np.ndarray]:
    return [np.array(w.numpy()) for w in model.weights]


def distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(sum(np.sum((x - y) ** 2) for x, y in zip(a, b)))


def test_training_changes_both_nets_and_lowers_d_loss():
    gan = make_gan(d_lr=1e-3, g_lr=1e-4)
    images = tiny_images()
    g_before, d_before = snapshot(gan.generator), snapshot(gan.discriminator)

    history = [gan.train_on_batch(images[:8], return_dict=True) for _ in range(12)]

    assert all(set(h) == {"d_loss", "g_loss", "d_real_logit", "d_fake_logit", "augment_p"} for h in history)
    assert all(np.isfinite(np.asarray(v)).all() for h in history for v in h.values())
    assert distance(snapshot(gan.generator), g_before) > 0
    assert distance(snapshot(gan.discriminator), d_before) > 0
    first, last = float(np.mean(history[0]["d_loss"])), float(np.mean(history[-1]["d_loss"]))
    assert last < first  # D quickly learns to separate blocky reals from G's noise
    assert int(gan.d_optimizer.iterations) == int(gan.g_optimizer.iterations) == 12


def test_ema_differs_from_raw_weights_and_follows_them():
    gan = make_gan(ema_decay=0.9, g_lr=1e-3)
    start = snapshot(gan.ema_generator)
    assert distance(start, snapshot(gan.generator)) == 0  # starts as a copy

    for _ in range(20):
        gan.train_on_batch(tiny_images()[:8])

    raw, ema = gan.generator.trainable_weights, gan.ema_generator.trainable_weights
    raw_now = [np.array(w.numpy()) for w in raw]
    ema_now = [np.array(w.numpy()) for w in ema]
    ema_start = [start[i] for i, w in enumerate(gan.ema_generator.weights) if w.trainable]
    assert distance(ema_now, raw_now) > 0  # an average, not a copy
    assert distance(ema_now, ema_start) > 0  # it moved ...
    assert distance(ema_now, raw_now) < distance(ema_start, raw_now)  # ... towards the trained weights
    # BatchNorm statistics are copied, not averaged.
    for ema_w, w in zip(gan.ema_generator.non_trainable_weights, gan.generator.non_trainable_weights):
        np.testing.assert_array_equal(ema_w.numpy(), w.numpy())


@pytest.mark.parametrize("warmup", [None, 10.0])
def test_the_ema_decay_ramps_as_its_warmup_says(warmup):
    """After G update n the EMA is w + d (ema - w) with d = min(ema_decay, (1 + n) / (warmup + n)); the
    default's warm-up is 20 (its average spans about the last 1/19 of the updates)."""
    from components.config import TrainConfig

    gan = make_gan(g_lr=1e-3, **({} if warmup is None else {"ema_warmup": warmup}))
    warmup = TrainConfig().ema_warmup if warmup is None else warmup
    expected = [np.array(w.numpy()) for w in gan.ema_generator.trainable_weights]
    for n in range(1, 4):
        gan.train_on_batch(tiny_images()[:8])
        decay = min(0.999, (1 + n) / (warmup + n))
        raw = [np.array(w.numpy()) for w in gan.generator.trainable_weights]
        expected = [w + decay * (e - w) for w, e in zip(raw, expected)]
    for ema, want in zip(gan.ema_generator.trainable_weights, expected):
        np.testing.assert_allclose(ema.numpy(), want, rtol=1e-5, atol=1e-6)
    assert TrainConfig().ema_warmup == 20.0


def test_zero_decay_makes_the_ema_a_copy():
    gan = make_gan(ema_decay=0.0)
    for _ in range(3):
        gan.train_on_batch(tiny_images()[:8])
    assert distance(snapshot(gan.ema_generator), snapshot(gan.generator)) == 0


def test_seed_loop_makes_two_rounds_of_updates():
    gan = make_gan(recipe="seed", train_step="seed")
    for _ in range(3):
        logs = gan.train_on_batch(tiny_images()[:8], return_dict=True)
    assert int(gan.d_optimizer.iterations) == 3 * 4  # 2 rounds x (D on fakes, D on reals)
    assert int(gan.g_optimizer.iterations) == 3 * 2
    assert np.isfinite([np.mean(v) for v in logs.values()]).all()


def test_latents_change_every_step_and_follow_the_seed():
    first, again, other = make_gan(seed=1), make_gan(seed=1), make_gan(seed=2)
    draws = [np.asarray(first._draw_latents(4)) for _ in range(2)]
    assert not np.allclose(draws[0], draws[1])
    np.testing.assert_array_equal(draws[0], np.asarray(again._draw_latents(4)))
    assert not np.allclose(draws[0], np.asarray(other._draw_latents(4)))


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_every_precision_builds_and_trains_a_step(policy):
    gan = make_gan(policy)
    before = snapshot(gan.generator)
    logs = gan.train_on_batch(tiny_images()[:8], return_dict=True)
    assert np.isfinite([np.mean(v) for v in logs.values()]).all()
    assert {w.dtype for w in gan.generator.weights} == {"float32"}
    samples = np.asarray(gan(np.zeros((2, 8), np.float32)))
    assert samples.dtype == np.float32 and samples.shape == (2, 32, 32, 3)
    if policy == "mixed_float16":
        assert type(gan.g_optimizer).__name__ == "LossScaleOptimizer"
    else:
        assert distance(snapshot(gan.generator), before) > 0
