"""DCGAN generator and discriminator builders, driven by a small hyperparameter config.

The seed recipe's settings (`components.config.RECIPES["seed"]`: g_upsample "transpose5", no
spectral norm, no minibatch std, dropout 0.3) rebuild the seed tutorial's networks exactly at
64x64:

- generator: Dense(4*4*512, no bias) -> BatchNorm -> LeakyReLU(0.2) -> Reshape(4, 4, 512), then one
  block per doubling of resolution (Conv2DTranspose k5 s2 "same", no bias -> BatchNorm ->
  LeakyReLU(0.2)) with 256, 128, 64, 32 filters, then Conv2D(3, k5) -> tanh;
- discriminator: one block per halving (Conv2D k5 s2 "same" -> LeakyReLU(0.2) -> Dropout(0.3)) with
  64, 128, 256, 512 filters, then Flatten -> Dense(1) (a logit).

Other image sizes keep the 4x4 bottleneck and change the number of blocks (32: 3, 64: 4, 128: 5);
the filter counts double from the image end towards the 4x4 end, so `g_filters` is the width of
the generator's last block and `d_filters` the width of the discriminator's first. Like the seed,
convolutions start from N(0, init_stddev) and the Dense layers keep Keras' default initialiser.

Recipe switches beyond the seed, each off in the seed's recipe:

- `g_upsample`: "transpose5" is the seed's Conv2DTranspose k5 s2, whose kernel does not divide by
  the stride, so neighbouring output pixels get unequal overlaps (the checkerboard);
  "transpose4" (k4 s2: every output pixel sums exactly 2x2 taps) and "resize" (nearest x2 then a
  k5 conv) are checkerboard-free;
- `d_spectral_norm`: every D weight layer wrapped in `keras.layers.SpectralNormalization`. Off in
  both recipes: on 8,000 real faces it held D back so much that 16,000 images gave blobs
  (swd_avg 84 with it, 52 without, one seed; README, Results);
- `d_minibatch_std`: a minibatch standard deviation channel before D's last layer (ProGAN), which
  lets D see a batch's lack of variety and so pushes G away from mode collapse.

`d_kernel`, the kernel of D's stride-2 convolutions, is the seed's 5 in both recipes. 4 (the DCGAN
paper's) or 3 make a training step about 1.25x or 1.45x faster on a bf16 CPU, where oneDNN's
weight gradients of the k5 layers are slow, but scored clearly worse at equal images seen
(README, Results), so they are options for a fixed time budget, not defaults.

Precision is a per-model argument (`dtype_policy`, e.g. "mixed_bfloat16") rather than Keras'
global policy, so building a float32 copy for export never depends on what ran before. The last
layer of each network computes in float32, so images and logits are float32 under any policy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from components.errors import PipelineError
from components.settings import check_settings, setting

IMAGE_SIZES = (32, 64, 128)
BOTTLENECK = 4  # spatial size of the generator's first feature map and the discriminator's last
CHANNELS = 3
LEAKY_SLOPE = 0.2
KERNEL = 5
UPSAMPLES = ("transpose5", "transpose4", "resize")
D_KERNELS = (3, 4, 5)
MINIBATCH_STD_GROUP = 4  # images per standard-deviation group (ProGAN / StyleGAN)
# Limits shared with the command line's flags. StyleGAN's latents are 512 wide; 256 filters
# double to 8,192 at G's 4x4 end for 128x128 images: some 2 GB of weights in its first
# convolution alone, about what a large GPU holds beside the rest.
MAX_LATENT_DIM = 1024
MAX_FILTERS = 256


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the two networks. Defaults are the default recipe's (measured by
    bench/bench_quality.py); the seed recipe's values give the tutorial's architecture.

    `image_size` is None until the trainer fills it in from the data manifest (the model must fit
    the data, so it is never a free choice).
    """

    image_size: int | None = None
    latent_dim: int = setting(128, "size of the generator's input noise z", kind=int, low=1, high=MAX_LATENT_DIM)
    g_filters: int = setting(
        32, "filters of the generator's last block; doubled per block towards the input", kind=int, low=1, high=MAX_FILTERS
    )
    # Half the seed's D width: the step costs 0.6x and, with learning rates x2 (TrainConfig), the
    # faces get better per image seen (README, Results); 64 with those rates diverges.
    d_filters: int = setting(
        32, "filters of the discriminator's first block; doubled per block", kind=int, low=1, high=MAX_FILTERS
    )
    d_dropout: float = setting(
        0.0, "dropout rate after each discriminator block (0: none)", kind=float, low=0, high=1, high_included=False
    )
    init_stddev: float = setting(
        0.02, "std of the N(0, s) initialiser of the convolutions", kind=float, low=0, low_included=False
    )
    g_upsample: str = setting(
        "transpose4",
        "generator up-sampling: transpose5 (k5 stride 2, checkerboard-prone), transpose4 (k4 stride 2) or resize "
        "(nearest x2 then conv)",
        kind=str,
        choices=UPSAMPLES,
    )
    d_kernel: int = setting(  # the seed's; see the module docstring
        KERNEL,
        "kernel size of the discriminator's stride-2 convolutions (the seed's 5; 4 trains about 1.2x faster on a CPU "
        "but scored worse at equal images seen)",
        kind=int,
        choices=D_KERNELS,
    )
    d_spectral_norm: bool = setting(  # see the module docstring
        False, "spectral normalisation of every discriminator layer", kind=bool
    )
    d_minibatch_std: bool = setting(True, "minibatch standard deviation channel before the discriminator's last layer", kind=bool)

    def __post_init__(self) -> None:
        if self.image_size is not None and self.image_size not in IMAGE_SIZES:
            raise PipelineError(
                f"image size {self.image_size} is not supported; the models are built for {', '.join(map(str, IMAGE_SIZES))} "
                "pixels (re-run the ingest with `image_size` set to one of these)."
            )
        check_settings(self)

    @property
    def num_blocks(self) -> int:
        """Up-sampling blocks in G = down-sampling blocks in D: log2(image_size / 4)."""
        return (self.require_image_size() // BOTTLENECK).bit_length() - 1

    def require_image_size(self) -> int:
        if self.image_size is None:
            raise PipelineError("ModelConfig.image_size is not set; it comes from the data manifest.")
        return self.image_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        return cls(**check_fields(cls, values, "model"))


def check_fields(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """`values` unchanged if every key is a field of `cls`; an unknown key is a user error naming it
    (an `hparams.json` from a newer version, or a typo in a search space file)."""
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise PipelineError(f"unknown {where} hyperparameter(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}.")
    return dict(values)


def _conv_init(config: ModelConfig):
    import keras

    return keras.initializers.RandomNormal(mean=0.0, stddev=config.init_stddev)


def build_generator(config: ModelConfig, dtype_policy: str = "float32", sync_batchnorm: bool = False):
    """z: float32[N, latent_dim] -> images float32[N, S, S, 3] in [-1, 1] (tanh).

    `sync_batchnorm` computes BatchNorm statistics over the global batch of all replicas, so
    training on several devices or workers behaves like one device with the same batch, and every
    replica keeps the same moving statistics. It changes no weight, so checkpoints are
    interchangeable.
    """
    import keras
    from keras import layers

    blocks = config.num_blocks
    widest = config.g_filters * 2**blocks
    policy = {"dtype": dtype_policy}

    noise = keras.Input(shape=(config.latent_dim,), name="generator_noise_input")
    x = layers.Dense(BOTTLENECK * BOTTLENECK * widest, use_bias=False, **policy)(noise)
    x = layers.BatchNormalization(synchronized=sync_batchnorm, **policy)(x)
    x = layers.LeakyReLU(negative_slope=LEAKY_SLOPE, **policy)(x)
    x = layers.Reshape((BOTTLENECK, BOTTLENECK, widest), **policy)(x)
    for block in range(1, blocks + 1):
        x = _upsample(config, widest // 2**block, policy)(x)
        x = layers.BatchNormalization(synchronized=sync_batchnorm, **policy)(x)
        x = layers.LeakyReLU(negative_slope=LEAKY_SLOPE, **policy)(x)
    x = layers.Conv2D(CHANNELS, KERNEL, padding="same", kernel_initializer=_conv_init(config), **policy)(x)
    images = layers.Activation("tanh", dtype="float32", name="images")(x)
    return keras.Model(noise, images, name="generator")


def _upsample(config: ModelConfig, filters: int, policy: dict):
    """One doubling of resolution without bias (BatchNorm follows), as `config.g_upsample` says."""
    import keras
    from keras import layers

    options = dict(padding="same", use_bias=False, kernel_initializer=_conv_init(config), **policy)
    if config.g_upsample == "resize":
        return keras.Sequential(
            [layers.UpSampling2D(2, interpolation="nearest", **policy), layers.Conv2D(filters, KERNEL, **options)]
        )
    kernel = KERNEL if config.g_upsample == "transpose5" else 4
    return layers.Conv2DTranspose(filters, kernel, strides=2, **options)


def build_discriminator(config: ModelConfig, dtype_policy: str = "float32"):
    """images float32[N, S, S, 3] in [-1, 1] -> float32[N, 1] logits (real > 0)."""
    import keras
    from keras import layers

    size = config.require_image_size()
    policy = {"dtype": dtype_policy}

    images = keras.Input(shape=(size, size, CHANNELS), name="discriminator_image_input")
    normalize = layers.SpectralNormalization if config.d_spectral_norm else (lambda layer, **_: layer)
    x = images
    for block in range(config.num_blocks):
        filters = config.d_filters * 2**block
        conv = layers.Conv2D(filters, config.d_kernel, strides=2, padding="same", kernel_initializer=_conv_init(config), **policy)
        x = normalize(conv, **policy)(x)
        x = layers.LeakyReLU(negative_slope=LEAKY_SLOPE, **policy)(x)
        if config.d_dropout:
            x = layers.Dropout(config.d_dropout, **policy)(x)
    if config.d_minibatch_std:
        x = MinibatchStdDev(**policy)(x)
    x = layers.Flatten(**policy)(x)
    logits = normalize(layers.Dense(1, dtype="float32"), dtype="float32", name="logits")(x)
    return keras.Model(images, logits, name="discriminator")


def _minibatch_std_class():
    import keras
    from keras import ops

    class MinibatchStdDev(keras.layers.Layer):
        """Appends one channel: the mean standard deviation of the features within groups of
        `MINIBATCH_STD_GROUP` consecutive images (the whole batch if it does not divide), the same
        for every image of a group. The trainer's D pass puts reals before fakes, so groups never
        mix the two as long as the batch divides by the group size."""

        def call(self, inputs):
            shape = ops.shape(inputs)
            batch = shape[0]
            group = ops.where(batch % MINIBATCH_STD_GROUP == 0, MINIBATCH_STD_GROUP, batch)
            grouped = ops.reshape(ops.cast(inputs, "float32"), (-1, group, shape[1], shape[2], shape[3]))
            std = ops.sqrt(ops.var(grouped, axis=1) + 1e-8)  # [N/G, H, W, C]
            score = ops.repeat(ops.mean(std, axis=(1, 2, 3)), group, axis=0)  # [N]: one per image
            channel = ops.broadcast_to(ops.reshape(score, (-1, 1, 1, 1)), (batch, shape[1], shape[2], 1))
            return ops.concatenate([inputs, ops.cast(channel, inputs.dtype)], axis=-1)

        def compute_output_shape(self, input_shape):
            return (*input_shape[:-1], input_shape[-1] + 1)

    return MinibatchStdDev


def MinibatchStdDev(**kwargs):
    """The minibatch standard deviation layer (built lazily so importing this module stays TF-free)."""
    return _minibatch_std_class()(**kwargs)


def recalibrate_batchnorm(model, latents, batch_size: int = 128) -> None:
    """Set every BatchNormalization layer's moving statistics to those of its inputs over `latents`.

    An EMA generator has averaged weights but no statistics of its own: the moving means and
    variances it inherits from the raw generator describe other activations, and its samples
    come out washed out and alike. Running it in training mode over a fixed set of latents and
    keeping each layer's exact mean and variance ("standing statistics", as BigGAN does) makes
    inference-mode samples match what the averaged weights actually produce.
    """
    import keras
    import tensorflow as tf

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return
    probe = keras.Model(model.input, [layer.input for layer in norms])
    sums = [0.0] * len(norms)
    squares = [0.0] * len(norms)
    for start in range(0, len(latents), batch_size):
        batch = latents[start : start + batch_size]
        for index, inputs in enumerate(probe(batch, training=True)):
            inputs = tf.cast(inputs, tf.float32)
            axes = list(range(len(inputs.shape) - 1))  # all but the channel axis
            sums[index] += tf.reduce_mean(inputs, axes) * len(batch)
            squares[index] += tf.reduce_mean(tf.square(inputs), axes) * len(batch)
    for layer, total, total_squares in zip(norms, sums, squares):
        mean = total / len(latents)
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(tf.maximum(total_squares / len(latents) - tf.square(mean), 0.0))


def use_standing_statistics(generator, source=None) -> None:
    """Make the float32 `generator` what samples, evaluations and exports use: `source`'s weights
    (the EMA generator, in any precision) if given, and BatchNorm statistics measured for them.

    The trainer (grids, evaluations), `restore_generator` and the exporter all go through here,
    on the same latents (`components.latents.recalibration_latents`), so the same weights give
    the same images everywhere. See `recalibrate_batchnorm`.
    """
    from components.latents import recalibration_latents

    if source is not None:
        for target, weight in zip(generator.weights, source.weights):
            target.assign(weight.value)
    recalibrate_batchnorm(generator, recalibration_latents(int(generator.input_shape[-1])))
