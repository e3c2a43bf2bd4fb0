"""Which latent an image gets, and how generator output becomes pixels: decided here, once.

Image `i` of seed `s` has the latent `tf.random.stateless_normal([latent_dim], seed=[s, i],
alg="philox")`: keyed by the image's index, not by a batch or a stream, so it is the same
whatever the batch size, on every machine, and in every stage:

- the trainer's sample grids show images 0..63 of seed `GRID_SEED` (the first 64 files
  `pipeline.sample --seed 0` writes, and every tuner trial's grid);
- the evaluator scores images 0..n-1 of its seed (what `pipeline.evaluate --seed` scores);
- the exported `sample` signature and `pipeline.sample` generate images 0..N-1 of `--seed`;
- the EMA generator's BatchNorm statistics are measured on `RECALIBRATION_COUNT` latents of
  indices from `RECALIBRATION_FIRST_INDEX` up, a range no sampler reaches, so the statistics are
  never fitted to the very images that are scored.

Generator output in [-1, 1] becomes uint8 as round((x + 1) * 127.5), half to even, clipped:
`to_uint8` does it in TensorFlow, so the exported SavedModel and the in-memory model agree.
"""

from __future__ import annotations

import functools

import numpy as np

ALGORITHM = "philox"  # named, not "auto_select", so every machine draws the same numbers
RECIPE = "z_i = tf.random.stateless_normal([latent_dim], seed=[seed, i], alg='philox')"
GRID_SEED = 0
GRID_COUNT = 64  # an 8x8 grid
RECALIBRATION_FIRST_INDEX = 1 << 40
RECALIBRATION_COUNT = 1024


def latents(seed, indices, latent_dim: int):
    """The latents of images `indices` (int64 [n]) of `seed` (int64 scalar): float32 [n, latent_dim].

    Works eagerly and inside a `tf.function` (the exported `sample` signature calls it).
    """
    import tensorflow as tf

    indices = tf.cast(indices, tf.int64)
    seeds = tf.stack([tf.fill(tf.shape(indices), tf.cast(seed, tf.int64)), indices], axis=1)
    return tf.map_fn(
        lambda key: tf.random.stateless_normal([latent_dim], key, alg=ALGORITHM),
        seeds,
        fn_output_signature=tf.TensorSpec([latent_dim], tf.float32),
    )


@functools.lru_cache(maxsize=8)
def _compiled_latents(latent_dim: int):
    """`latents` as a graph: eagerly its map_fn draws row by row, about 40x slower."""
    import tensorflow as tf

    return tf.function(
        lambda seed, indices: latents(seed, indices, latent_dim),
        input_signature=[tf.TensorSpec([], tf.int64), tf.TensorSpec([None], tf.int64)],
    )


def latent_array(indices: np.ndarray, latent_dim: int, seed: int = 0) -> np.ndarray:
    """`latents` of images `indices` as a NumPy float32 [n, latent_dim] array."""
    import tensorflow as tf

    draw = _compiled_latents(latent_dim)
    return draw(tf.constant(seed, tf.int64), tf.constant(np.asarray(indices, np.int64))).numpy()


def first_latents(count: int, latent_dim: int, seed: int = 0) -> np.ndarray:
    """The latents of images 0..count-1 of `seed`."""
    return latent_array(np.arange(count), latent_dim, seed)


def grid_latents(latent_dim: int) -> np.ndarray:
    """The latents of every training and trial grid: images 0..63 of `GRID_SEED`."""
    return first_latents(GRID_COUNT, latent_dim, GRID_SEED)


def recalibration_latents(latent_dim: int) -> np.ndarray:
    """The latents over which an EMA generator's BatchNorm statistics are measured."""
    return latent_array(RECALIBRATION_FIRST_INDEX + np.arange(RECALIBRATION_COUNT), latent_dim)


def to_uint8(images):
    """Generator output in [-1, 1] (any float tensor or array) as a uint8 tensor."""
    import tensorflow as tf

    pixels = tf.cast(images, tf.float32)
    return tf.cast(tf.clip_by_value(tf.round((pixels + 1.0) * 127.5), 0.0, 255.0), tf.uint8)


def to_uint8_array(images) -> np.ndarray:
    """`to_uint8` as a NumPy array, for callers that write files or score images."""
    return to_uint8(images).numpy()
