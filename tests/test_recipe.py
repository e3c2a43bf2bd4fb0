"""The training-recipe switches (issue 8): each builds and trains, the losses and augmentations are
right, R1 is lazy, the seed recipe is the old default, and older run folders still load."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from components.augment import cutout, diff_augment, parse_policy, translation
from components.config import LR_HOLD_IMAGES, RECIPES, TrainConfig, recipe_config
from components.errors import PipelineError
from components.model import MinibatchStdDev, ModelConfig, build_discriminator, build_generator
from components.runfolder import restore_generator
from components.train_options import TrainOptions
from components.trainer import build_gan, compile_gan, full_rate_steps, train

TINY = {"image_size": 32, "latent_dim": 8, "g_filters": 4, "d_filters": 4}


def tiny_gan(recipe: str = "default", **overrides):
    model = {**TINY, **overrides.pop("model", {})}
    config = recipe_config(recipe, model=model, batch_size=8, **overrides)
    gan = build_gan(config, "float32")
    compile_gan(gan, config, "float32")
    return gan


def images(count: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (count, 32, 32, 3)).astype(np.float32)


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": {"g_upsample": "resize"}},
        {
            "model": {
                "g_upsample": "transpose5",
                "d_kernel": 5,
                "d_spectral_norm": False,
                "d_minibatch_std": False,
                "d_dropout": 0.3,
            }
        },
        {"model": {"d_kernel": 3}},
        {"loss": "bce", "label_smoothing": 0.1, "ema_decay": 0.0},
        {"augment": "color,translation,cutout", "r1_gamma": 1.0, "r1_every": 2, "g_lr": 1e-4, "d_lr": 4e-4},
    ],
    ids=["resize", "seed-networks", "d-kernel-3", "bce-no-ema", "augment-r1-ttur"],
)
def test_each_switch_builds_and_trains_steps(overrides):
    gan = tiny_gan(**overrides)
    before = [w.numpy().copy() for w in gan.generator.trainable_weights]
    for _ in range(2):
        logs = gan.train_on_batch(images(), return_dict=True)
    assert np.isfinite([np.mean(v) for v in logs.values()]).all()
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, gan.generator.trainable_weights))


def test_upsampling_layers_follow_the_switch():
    kinds = {}
    for upsample in ("transpose5", "transpose4", "resize"):
        generator = build_generator(ModelConfig(**TINY, g_upsample=upsample))
        first_block = generator.layers[5:6]  # after input, dense, BN, act, reshape
        kinds[upsample] = [(type(layer).__name__, getattr(layer, "kernel_size", None)) for layer in first_block]
        assert generator.output_shape == (None, 32, 32, 3)
    assert kinds["transpose5"] == [("Conv2DTranspose", (5, 5))]
    assert kinds["transpose4"] == [("Conv2DTranspose", (4, 4))]
    assert kinds["resize"][0][0] == "Sequential"


def test_discriminator_switches_change_its_layers():
    plain = build_discriminator(ModelConfig(**TINY, d_spectral_norm=False, d_minibatch_std=False, d_dropout=0.0))
    full = build_discriminator(ModelConfig(**TINY, d_spectral_norm=True, d_minibatch_std=True, d_dropout=0.3))
    names = [type(layer).__name__ for layer in full.layers]
    assert names.count("SpectralNormalization") == 4  # 3 convs and the logit layer
    assert names.count("Dropout") == 3 and "MinibatchStdDev" in names
    assert "Dropout" not in [type(layer).__name__ for layer in plain.layers]


@pytest.mark.parametrize("kernel", [3, 4, 5])
def test_discriminator_kernel_follows_the_switch(kernel):
    discriminator = build_discriminator(ModelConfig(**TINY, d_kernel=kernel, d_spectral_norm=False))
    convs = [layer for layer in discriminator.layers if type(layer).__name__ == "Conv2D"]
    assert [layer.kernel.shape[:2] for layer in convs] == [(kernel, kernel)] * 3
    assert discriminator.output_shape == (None, 1)


def test_discriminator_kernel_outside_the_choices_is_a_clear_error():
    with pytest.raises(PipelineError, match="d_kernel must be one of 3, 4, 5, got 7"):
        ModelConfig(**TINY, d_kernel=7)


def test_minibatch_std_groups_never_mix_reals_and_fakes():
    same = np.ones((4, 2, 2, 3), np.float32)  # a group of identical images: std 0
    varied = np.random.default_rng(0).normal(size=(4, 2, 2, 3)).astype(np.float32)
    out = np.asarray(MinibatchStdDev()(tf.constant(np.concatenate([same, varied]))))
    assert out.shape == (8, 2, 2, 4)
    np.testing.assert_allclose(out[:4, :, :, 3], 1e-4, atol=1e-6)  # sqrt(1e-8)
    assert (out[4:, :, :, 3] > 0.3).all()
    np.testing.assert_array_equal(out[..., :3], np.concatenate([same, varied]))


def test_hinge_and_bce_losses_are_numerically_right():
    real, fake = tf.constant([[2.0], [0.5]]), tf.constant([[-3.0], [0.2]])
    hinge = tiny_gan(loss="hinge")
    # D: mean(relu(1 - real)) + mean(relu(1 + fake)) = (0 + 0.5)/2 + (0 + 1.2)/2
    assert float(hinge._discriminator_loss(real, fake)) == pytest.approx(0.85)
    assert float(hinge._generator_loss(fake)) == pytest.approx(1.4)  # -mean(fake)

    bce = tiny_gan(loss="bce", label_smoothing=0.0)

    def softplus(x):
        return np.log1p(np.exp(x))

    expected_d = np.mean(softplus(-np.array([2.0, 0.5]))) + np.mean(softplus(np.array([-3.0, 0.2])))
    assert float(bce._discriminator_loss(real, fake)) == pytest.approx(expected_d, rel=1e-5)
    assert float(bce._generator_loss(fake)) == pytest.approx(np.mean(softplus(-np.array([-3.0, 0.2]))), rel=1e-5)


def test_diffaugment_keeps_shapes_and_range_and_is_differentiable():
    x = tf.constant(images(6))
    seed = tf.constant([1, 2])
    for name, augment in (("translation", translation), ("cutout", cutout)):
        out = np.asarray(augment(x, seed))
        assert out.shape == x.shape
        # Only moved or zeroed pixels: every value is an input value or 0, so the range holds.
        assert set(np.unique(out)) <= set(np.unique(x.numpy())) | {0.0}, name
        assert not np.array_equal(out, x.numpy()), name
    everything = diff_augment(x, "color,translation,cutout", seed=seed)
    assert everything.shape == x.shape and np.isfinite(everything).all()
    np.testing.assert_array_equal(everything, diff_augment(x, "color,translation,cutout", seed=seed))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(diff_augment(x, "color,translation,cutout", seed=seed) ** 2)
    gradient = tape.gradient(loss, x)
    assert gradient is not None and float(tf.reduce_sum(tf.abs(gradient))) > 0
    assert parse_policy("") == () and parse_policy("cutout, color") == ("cutout", "color")
    with pytest.raises(PipelineError, match="augment: unknown augmentation"):
        TrainConfig(augment="colour")


def test_r1_penalty_is_added_every_n_steps_only():
    import keras

    gans = []
    for gamma in (0.0, 1.0):
        keras.utils.set_random_seed(3)
        gan = tiny_gan(r1_gamma=gamma, r1_every=3)
        gan._r1_penalty = lambda reals: tf.constant(100.0)  # constant: adds to the loss, not the gradients
        gans.append(gan)
    losses = [[float(np.mean(g.train_on_batch(images(), return_dict=True)["d_loss"])) for _ in range(6)] for g in gans]
    np.testing.assert_allclose(np.subtract(losses[1], losses[0]), [100, 0, 0, 100, 0, 0], atol=1e-3)


def test_r1_penalty_value_scales_with_gamma_and_the_lazy_interval():
    gan = tiny_gan(r1_gamma=2.0, r1_every=4, model={"d_spectral_norm": False})  # SN updates D on every call
    reals = tf.constant(images())
    with tf.GradientTape() as tape:
        tape.watch(reals)
        logits = gan.discriminator(reals, training=True)
    squared = float(tf.reduce_mean(tf.reduce_sum(tf.square(tape.gradient(logits, reals)), axis=[1, 2, 3])))
    assert float(gan._r1_penalty(reals)) == pytest.approx(0.5 * 2.0 * 4 * squared, rel=1e-3)


def test_learning_rates_hold_then_fall_linearly_to_zero_at_the_last_step():
    config = recipe_config("default", model=TINY, batch_size=8, lr_hold=0.5, lr_hold_images=0, g_lr=1e-3, d_lr=4e-3)
    gan = build_gan(config, "float32")
    compile_gan(gan, config, "float32", total_steps=10)
    rates = []
    for step in (0, 5, 6, 9, 10):
        gan.step.assign(step)
        rates.append((float(gan.g_optimizer.learning_rate), float(gan.d_optimizer.learning_rate)))
    np.testing.assert_allclose(rates, [(1e-3, 4e-3), (1e-3, 4e-3), (8e-4, 3.2e-3), (2e-4, 8e-4), (0, 0)], rtol=1e-5, atol=1e-9)
    gan.train_on_batch(images(), return_dict=True)  # the schedule runs inside the compiled step
    assert int(gan.step) == 11 and float(gan.g_optimizer.learning_rate) == 0.0


def test_learning_rates_are_constant_without_a_budget_or_with_lr_hold_1():
    for total_steps, hold in ((None, 0.5), (10, 1.0)):
        config = recipe_config("default", model=TINY, batch_size=8, lr_hold=hold, lr_hold_images=0)
        gan = build_gan(config, "float32")
        compile_gan(gan, config, "float32", total_steps=total_steps)
        gan.step.assign(9)
        assert float(gan.g_optimizer.learning_rate) == pytest.approx(config.g_lr)


@pytest.mark.parametrize(
    "total_steps, rates_at_steps_0_9_10_12_15_30",
    [
        (10, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),  # no longer than lr_hold_images: constant to the end
        (15, [1.0, 1.0, 1.0, 0.6, 0.0, 0.0]),  # half of it is shorter than lr_hold_images: they hold, then 5 steps fall
        (40, [1.0, 1.0, 1.0, 1.0, 1.0, 0.5]),  # half of it is longer: the rates hold for 20 steps, then 20 fall
    ],
)
def test_the_rates_hold_for_lr_hold_images_at_least(total_steps, rates_at_steps_0_9_10_12_15_30):
    config = recipe_config("default", model=TINY, batch_size=8, lr_hold=0.5, lr_hold_images=80, g_lr=1e-3, d_lr=4e-3)
    gan = build_gan(config, "float32")
    compile_gan(gan, config, "float32", total_steps=total_steps)
    rates = []
    for step in (0, 9, 10, 12, 15, 30):
        gan.step.assign(step)
        rates.append(float(gan.g_optimizer.learning_rate) / config.g_lr)
        assert float(gan.d_optimizer.learning_rate) == pytest.approx(rates[-1] * config.d_lr, abs=1e-9)
    np.testing.assert_allclose(rates, rates_at_steps_0_9_10_12_15_30, atol=1e-6)


def test_the_default_trains_short_runs_at_constant_rates_and_decays_long_ones():
    default = recipe_config("default")
    assert default.lr_hold == 0.5 and default.lr_hold_images == LR_HOLD_IMAGES
    steps = lambda images: images // default.batch_size  # noqa: E731
    assert full_rate_steps(default, steps(LR_HOLD_IMAGES)) == steps(LR_HOLD_IMAGES)  # constant to the end
    assert full_rate_steps(default, steps(LR_HOLD_IMAGES * 3 // 2)) == steps(LR_HOLD_IMAGES)  # then falls over a third
    assert full_rate_steps(default, steps(208_000)) == steps(104_000)  # half of a long run, as lr_hold says


def test_a_resumed_run_continues_the_learning_rate_schedule(tiny_records, tmp_path):
    config = recipe_config(
        "default", model={"latent_dim": 8, "g_filters": 4, "d_filters": 4}, batch_size=16, lr_hold=0.0, lr_hold_images=0
    )
    train(config, tiny_records, tmp_path / "run", TrainOptions(images=48, checkpoint_every=1), verbose=False)
    result = train(config, tiny_records, tmp_path / "run", TrainOptions(images=64, checkpoint_every=1), verbose=False)
    assert result.resumed_from == 3 and result.steps == 4
    assert float(result.gan.g_optimizer.learning_rate) == 0.0  # step 4 of 4: the end of the decay


def test_a_run_within_its_hold_resumes_with_a_budget_whose_rates_fall(tiny_records, tmp_path):
    """The optimisers' checkpointed variables must not depend on the budget: a run of constant rates
    (all within lr_hold_images) extended past them decays, from the same checkpoint."""
    config = recipe_config(
        "default", model={"latent_dim": 8, "g_filters": 4, "d_filters": 4}, batch_size=16, lr_hold=0.5, lr_hold_images=64
    )
    first = train(config, tiny_records, tmp_path / "run", TrainOptions(images=48, checkpoint_every=1), verbose=False)
    assert float(first.gan.g_optimizer.learning_rate) == pytest.approx(config.g_lr)  # 3 steps within a hold of 4
    longer = train(config, tiny_records, tmp_path / "run", TrainOptions(images=128, checkpoint_every=1), verbose=False)
    assert longer.resumed_from == 3 and longer.steps == 8
    assert float(longer.gan.g_optimizer.learning_rate) == 0.0  # step 8 of 8: the end of the decay


def test_seed_recipe_is_the_old_default_and_the_new_default_differs():
    old_defaults = {
        "model": {"image_size": None, "latent_dim": 128, "g_filters": 32, "d_filters": 64, "d_dropout": 0.3, "init_stddev": 0.02},
        "batch_size": 128,
        "g_lr": 2e-4,
        "d_lr": 2e-4,
        "beta_1": 0.5,
        "label_smoothing": 0.1,
        "ema_decay": 0.999,
        "seed": 0,
        "train_step": "dcgan",
    }  # fmt: skip  (TrainConfig().to_dict() before issue 8)
    seed = recipe_config("seed")
    assert TrainConfig.from_dict(old_defaults) == seed
    assert seed.loss == "bce" and seed.augment == "" and seed.r1_gamma == 0.0
    assert seed.model.g_upsample == "transpose5" and not seed.model.d_spectral_norm and not seed.model.d_minibatch_std
    assert seed.model.d_kernel == 5
    assert recipe_config("default") == TrainConfig() != seed
    assert recipe_config("seed", model={"d_dropout": 0.0}, g_lr=1e-3).model.d_dropout == 0.0
    with pytest.raises(PipelineError, match="unknown recipe"):
        recipe_config("fancy")
    with pytest.raises(PipelineError, match="train_step seed"):
        recipe_config("default", train_step="seed")


def test_cli_recipe_and_flags(tmp_path):
    from pipeline.train import build_parser, config_from_args

    def parse(*argv):
        return config_from_args(build_parser().parse_args(["--data", str(tmp_path), *argv]))

    assert parse() == TrainConfig()
    assert parse("--recipe", "seed") == recipe_config("seed")
    config = parse("--recipe", "seed", "--loss", "hinge", "--no-d-spectral-norm", "--d-minibatch-std", "--augment", "cutout")
    assert (config.loss, config.augment, config.model.d_minibatch_std, config.model.d_spectral_norm) == (
        "hinge",
        "cutout",
        True,
        False,
    )
    assert config.g_lr == RECIPES["seed"]["g_lr"]


def test_a_run_from_before_the_recipes_still_restores(tiny_records, tmp_path):
    """An hparams.json without the new fields (written before issue 8) resumes and restores as the seed recipe."""
    from components.artifacts import atomic_write_json, read_json

    config = recipe_config("seed", model={"latent_dim": 8, "g_filters": 4, "d_filters": 4}, batch_size=16)
    train(config, tiny_records, tmp_path / "run", TrainOptions(images=16), verbose=False)
    hparams_path = tmp_path / "run" / "hparams.json"
    record = read_json(hparams_path)
    for name in ("loss", "ema_warmup", "augment", "r1_gamma", "r1_every"):
        del record["hparams"][name]
    for name in ("g_upsample", "d_kernel", "d_spectral_norm", "d_minibatch_std"):
        del record["hparams"]["model"][name]
    atomic_write_json(hparams_path, record)

    generator, info = restore_generator(tmp_path / "run")
    assert info["step"] == 1 and generator.output_shape == (None, 32, 32, 3)
    result = train(config, tiny_records, tmp_path / "run", TrainOptions(images=32), verbose=False)  # resumes: same settings
    assert result.resumed_from == 1 and result.steps == 2


def test_the_benchmarks_earlier_defaults_are_the_recipes_as_flags(tmp_path):
    """bench_long trains them through the CLI, bench_quality and bench_train through TrainConfig."""
    from bench.bench_long import RUNS
    from pipeline.train import build_parser, config_from_args

    def as_flags(name: str) -> TrainConfig:
        return config_from_args(build_parser().parse_args(["--data", str(tmp_path), *RUNS[name]]))

    assert as_flags("previous_default") == recipe_config("v1")
    assert as_flags("v2") == recipe_config("v2")
    assert as_flags("v4") == recipe_config("v4") and as_flags("default") == recipe_config("default")
    stabilisers_off = as_flags("default_without_decay_r1")
    assert (stabilisers_off.lr_hold, stabilisers_off.r1_gamma, stabilisers_off.batch_size) == (1.0, 0.0, 16)


def test_the_long_run_plot_takes_a_finished_runs_curve_from_its_report(tmp_path):
    from bench.bench_long import parse_args, recorded_evaluations

    report = tmp_path / "old_run.json"
    report.write_text('{"evaluations": [{"images_seen": 32, "swd_avg": 2.5}, {"images_seen": 16, "swd_avg": 3.0}]}')
    assert parse_args(["--plot-only", "--compare", f"old={report}"]).compare == {"old": report}
    assert [(r["images_seen"], r["swd_avg"]) for r in recorded_evaluations(report)] == [(16, 3.0), (32, 2.5)]
    report.write_text('{"evaluations": [{"images_seen": 16}]}')
    with pytest.raises(SystemExit, match="no list of `evaluations` with images_seen and swd_avg"):
        recorded_evaluations(report)
    for bad in ("old", f"={report}", f"old={tmp_path / 'missing.json'}"):
        with pytest.raises(SystemExit):
            parse_args(["--compare", bad])
