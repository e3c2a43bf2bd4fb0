"""The G/D builders: the seed recipe's architecture, shapes, ranges and precision at 32 and 64 px."""

from __future__ import annotations

import numpy as np
import pytest

from components.config import RECIPES
from components.errors import PipelineError
from components.model import ModelConfig, build_discriminator, build_generator


def seed_build_generator(latent_dim: int):
    """The seed tutorial's `build_generator` (IMG_H = IMG_W = 64), restated in Keras 3."""
    import keras
    from keras.layers import Activation, BatchNormalization, Conv2D, Conv2DTranspose, Dense, Input, LeakyReLU, Reshape

    w_init = keras.initializers.RandomNormal(mean=0.0, stddev=0.02)
    f = [2**i for i in range(5)][::-1]
    filters = 32
    h_output = w_output = 64 // 16
    noise = Input(shape=(latent_dim,))
    x = Dense(f[0] * filters * h_output * w_output, use_bias=False)(noise)
    x = BatchNormalization()(x)
    x = LeakyReLU(0.2)(x)
    x = Reshape((h_output, w_output, 16 * filters))(x)
    for i in range(1, 5):
        x = Conv2DTranspose(f[i] * filters, 5, kernel_initializer=w_init, padding="same", strides=2, use_bias=False)(x)
        x = BatchNormalization()(x)
        x = LeakyReLU(0.2)(x)
    x = Conv2D(3, 5, kernel_initializer=w_init, padding="same", strides=1)(x)
    return keras.Model(noise, Activation("tanh")(x))


def seed_build_discriminator():
    """The seed tutorial's `build_discriminator` (64x64x3 input), restated in Keras 3."""
    import keras
    from keras.layers import Conv2D, Dense, Dropout, Flatten, Input, LeakyReLU

    w_init = keras.initializers.RandomNormal(mean=0.0, stddev=0.02)
    f = [2**i for i in range(4)]
    image_input = Input(shape=(64, 64, 3))
    x = image_input
    for i in range(4):
        x = Conv2D(f[i] * 64, 5, kernel_initializer=w_init, padding="same", strides=2)(x)
        x = LeakyReLU(0.2)(x)
        x = Dropout(0.3)(x)
    x = Dense(1)(Flatten()(x))
    return keras.Model(image_input, x)


def unwrapped(model) -> list:
    """The model's layers, each spectral-normalisation wrapper replaced by the layer it wraps."""
    return [getattr(layer, "layer", layer) for layer in model.layers]


def layer_kinds(model) -> list[str]:
    return [type(layer).__name__ for layer in unwrapped(model) if type(layer).__name__ != "InputLayer"]


def param_counts(model) -> tuple[int, int]:
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return trainable, frozen


def test_seed_recipe_model_is_the_seed_architecture():
    config = ModelConfig(image_size=64, **RECIPES["seed"]["model"])
    generator, seed_generator = build_generator(config), seed_build_generator(128)
    discriminator, seed_discriminator = build_discriminator(config), seed_build_discriminator()

    assert param_counts(generator) == param_counts(seed_generator) == (5_420_323, 17_344)
    assert param_counts(discriminator) == param_counts(seed_discriminator) == (4_314_753, 0)
    assert layer_kinds(generator) == layer_kinds(seed_generator)
    assert layer_kinds(discriminator) == layer_kinds(seed_discriminator)
    assert [w.shape for w in generator.weights] == [w.shape for w in seed_generator.weights]
    assert [w.shape for w in discriminator.weights] == [w.shape for w in seed_discriminator.weights]


@pytest.mark.parametrize("image_size, blocks", [(32, 3), (64, 4)])
def test_shapes_and_ranges(image_size, blocks):
    config = ModelConfig(image_size=image_size, latent_dim=16, g_filters=4, d_filters=4)
    generator, discriminator = build_generator(config), build_discriminator(config)
    assert layer_kinds(generator).count("Conv2DTranspose") == blocks
    assert layer_kinds(discriminator).count("Conv2D") == blocks

    latents = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32) * 50  # saturate tanh
    images = np.asarray(generator(latents, training=False))
    assert images.shape == (5, image_size, image_size, 3) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0 and images.std() > 0

    logits = np.asarray(discriminator(images, training=True))
    assert logits.shape == (5, 1) and logits.dtype == np.float32 and np.isfinite(logits).all()


def test_filter_counts_follow_the_config():
    config = ModelConfig(image_size=32, latent_dim=8, g_filters=8, d_filters=6)
    convs = [layer.filters for layer in unwrapped(build_generator(config)) if hasattr(layer, "filters")]
    assert convs == [32, 16, 8, 3]  # 4x4x64 bottleneck (8 * 2**3), halved per block, then RGB
    convs = [layer.filters for layer in unwrapped(build_discriminator(config)) if hasattr(layer, "filters")]
    assert convs == [6, 12, 24]


def test_mixed_precision_keeps_float32_weights_and_outputs():
    config = ModelConfig(image_size=32, latent_dim=8, g_filters=4, d_filters=4)
    generator = build_generator(config, "mixed_bfloat16")
    discriminator = build_discriminator(config, "mixed_bfloat16")
    assert {w.dtype for w in generator.weights + discriminator.weights} == {"float32"}
    images = generator(np.zeros((2, 8), np.float32), training=True)
    assert np.asarray(images).dtype == np.float32
    assert np.asarray(discriminator(images)).dtype == np.float32
    assert generator.layers[-2].compute_dtype == "bfloat16"  # the work itself runs in bf16


def test_config_round_trip_and_validation():
    config = ModelConfig(image_size=64, latent_dim=100, g_filters=16)
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert ModelConfig.from_dict({}) == ModelConfig()
    with pytest.raises(PipelineError, match="image size 48"):
        ModelConfig(image_size=48)
    with pytest.raises(PipelineError, match="g_filters"):
        ModelConfig(g_filters=0)
    with pytest.raises(PipelineError, match="d_dropout"):
        ModelConfig(d_dropout=1.0)
    with pytest.raises(PipelineError, match="unknown model hyperparameter.*colour"):
        ModelConfig.from_dict({"colour": 3})
    with pytest.raises(PipelineError, match="image_size is not set"):
        build_generator(ModelConfig())


def test_recalibrated_batchnorm_matches_training_mode_statistics():
    from components.model import recalibrate_batchnorm

    config = ModelConfig(image_size=32, latent_dim=8, g_filters=4, d_filters=4)
    generator = build_generator(config)
    latents = np.random.default_rng(0).standard_normal((256, 8)).astype(np.float32)
    before = np.asarray(generator(latents[:64], training=False))

    recalibrate_batchnorm(generator, latents, batch_size=64)

    first_norm = next(layer for layer in generator.layers if type(layer).__name__ == "BatchNormalization")
    dense_out = np.asarray(generator.layers[1](latents))  # the Dense layer feeding the first norm
    np.testing.assert_allclose(first_norm.moving_mean.numpy(), dense_out.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(first_norm.moving_variance.numpy(), dense_out.var(axis=0), rtol=1e-3, atol=1e-6)
    # Inference now behaves like training mode on a large batch, unlike the fresh statistics.
    after = np.asarray(generator(latents, training=False))
    train_mode = np.asarray(generator(latents, training=True))
    assert np.abs(after - train_mode).mean() < 0.1 * np.abs(before - train_mode[:64]).mean()
