"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) of the images the discriminator sees.

D sees every real and every fake image through the same random transforms, so it cannot simply
memorise a small training set, and G still gets gradients through them (every op here is
differentiable with respect to the images). Images are float32 NHWC in [-1, 1]; every image of a
batch draws its own transform.

- "color": brightness shift, saturation and contrast scaling (the paper's ranges, rescaled from
  [0, 1] images to [-1, 1]);
- "translation": shift by up to 1/8 of the size in each direction, zeros (mid-grey) filling in;
- "cutout": one square of half the size set to zero at a random place.

A policy is a comma-separated subset, e.g. "color,translation,cutout" (the paper's choice); ""
means no augmentation.
"""

from __future__ import annotations

AUGMENTS = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(policy: str) -> tuple[str, ...]:
    """The augment names of `policy` in application order; ValueError names an unknown one."""
    names = tuple(name.strip() for name in policy.split(",") if name.strip())
    unknown = [name for name in names if name not in AUGMENTS]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {', '.join(unknown)}; known: {', '.join(AUGMENTS)}")
    return names


def diff_augment(images, policy: str, seed=None):
    """`images` transformed by each augment of `policy`. `seed` (an int32 [2] tensor) makes it
    reproducible (the trainer draws one per step from a checkpointed generator); without it a seed
    is drawn from TensorFlow's global random generator."""
    import tensorflow as tf

    names = parse_policy(policy)
    if seed is None:
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
    for index, name in enumerate(names):
        images = _AUGMENT_FUNCTIONS[name](images, tf.random.experimental.stateless_fold_in(seed, index))
    return images


def _uniform(seed, index, shape, low=0.0, high=1.0):
    import tensorflow as tf

    return tf.random.stateless_uniform(shape, tf.random.experimental.stateless_fold_in(seed, index), low, high)


def color(images, seed):
    import tensorflow as tf

    batch = tf.shape(images)[0]
    shape = [batch, 1, 1, 1]
    images = images + _uniform(seed, 0, shape, -1.0, 1.0)  # brightness: +-0.5 on a [0, 1] scale
    mean = tf.reduce_mean(images, axis=3, keepdims=True)
    images = (images - mean) * _uniform(seed, 1, shape, 0.0, 2.0) + mean  # saturation
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    return (images - mean) * _uniform(seed, 2, shape, 0.5, 1.5) + mean  # contrast


def translation(images, seed):
    """Shift rows and columns independently per image by up to TRANSLATION_RATIO of the size."""
    import tensorflow as tf

    batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    shift = int(images.shape[1] * TRANSLATION_RATIO + 0.5)
    padded = tf.pad(images, [[0, 0], [shift, shift], [shift, shift], [0, 0]])
    dy = tf.random.stateless_uniform([batch, 1], tf.random.experimental.stateless_fold_in(seed, 0), 0, 2 * shift + 1, tf.int32)
    dx = tf.random.stateless_uniform([batch, 1], tf.random.experimental.stateless_fold_in(seed, 1), 0, 2 * shift + 1, tf.int32)
    rows = tf.range(height)[None, :] + dy  # [N, H] indices into the padded rows
    cols = tf.range(width)[None, :] + dx
    images = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(images, cols, axis=2, batch_dims=1)


def cutout(images, seed):
    """Zero one CUTOUT_RATIO-sized square per image, centred anywhere (it may hang over an edge)."""
    import tensorflow as tf

    batch, size = tf.shape(images)[0], images.shape[1]
    half = int(size * CUTOUT_RATIO + 0.5) // 2
    centre = tf.random.stateless_uniform([batch, 2], seed, 0, size, tf.int32)
    positions = tf.range(size)
    inside_rows = tf.abs(positions[None, :] - centre[:, :1]) < half  # [N, H]
    inside_cols = tf.abs(positions[None, :] - centre[:, 1:]) < half  # [N, W]
    inside = tf.logical_and(inside_rows[:, :, None], inside_cols[:, None, :])
    return images * tf.cast(tf.logical_not(inside), images.dtype)[:, :, :, None]


_AUGMENT_FUNCTIONS = {"color": color, "translation": translation, "cutout": cutout}
