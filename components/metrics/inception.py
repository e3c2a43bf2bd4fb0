"""FID and KID, only from a Keras InceptionV3 weights file the user already has on disk.

These are the figures most papers quote, but they need ImageNet weights that this project never
downloads (`keras.applications` would fetch them silently). So the user points at a local file
(`inception_v3_weights_tf_dim_ordering_tf_kernels[_notop].h5`, or any `.weights.h5` saved from
`keras.applications.InceptionV3`); without one, FID and KID are simply skipped.

Caveat worth knowing: published FIDs use the 2015 TF-slim Inception graph ("pool_3"), not the
Keras ImageNet weights, so our FID ranks models correctly but is not comparable across papers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from components.errors import PipelineError

INPUT_SIZE = 299
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000

FeatureExtractor = Callable[[np.ndarray], np.ndarray]  # uint8 NHWC -> float64 [n, 2048]


def load_inception(weights: str | os.PathLike, batch_size: int = 64) -> FeatureExtractor:
    """A feature extractor (2048-d average-pool features) from a local InceptionV3 weights file.

    Accepts both the no-top and the full ImageNet file: the no-top model is tried first, then
    the full one, cut at its average pool. Raises `PipelineError` naming the file otherwise.
    """
    path = Path(weights)
    if not path.is_file():
        raise PipelineError(f"`inception_weights` {path} does not exist (it is never downloaded; pass a local file).")
    import keras

    failures = []
    for include_top in (False, True):
        model = keras.applications.InceptionV3(
            include_top=include_top,
            weights=None,
            pooling=None if include_top else "avg",
            input_shape=(INPUT_SIZE, INPUT_SIZE, 3),
        )
        try:
            model.load_weights(str(path))
        except (ValueError, OSError, KeyError) as err:
            failures.append(f"{'with' if include_top else 'without'} top: {str(err).splitlines()[0]}")
            continue
        if include_top:
            model = keras.Model(model.inputs, model.get_layer("avg_pool").output)
        return _InceptionFeatures(model, batch_size)
    raise PipelineError(f"{path} is not a Keras InceptionV3 weights file ({'; '.join(failures)}).")


class _InceptionFeatures:
    """Resize to 299x299 (bilinear), scale to [-1, 1] as Inception expects, and pool."""

    def __init__(self, model, batch_size: int):
        self.model, self.batch_size = model, batch_size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        features = []
        for start in range(0, len(images), self.batch_size):
            batch = tf.image.resize(tf.cast(images[start : start + self.batch_size], tf.float32), (INPUT_SIZE, INPUT_SIZE))
            features.append(np.asarray(self.model(batch / 127.5 - 1.0, training=False), np.float64))
        return np.concatenate(features)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets [n, d] and [m, d]: |mu_a - mu_b|^2 + tr(A) + tr(B) - 2 tr((A B)^(1/2)).

    tr((A B)^(1/2)) is the sum of square roots of the eigenvalues of A B, never a general matrix
    square root (unstable for the rank-deficient covariances of small samples):
    - with fewer samples than features (the trainer's few hundred images vs 2048 features), those
      roots are the singular values of Yc Xc^T / sqrt((n-1)(m-1)), an m x n matrix;
    - otherwise they are the eigenvalues of the symmetric A^(1/2) B A^(1/2), a d x d matrix.
    """
    (n, dims), m = a.shape, len(b)
    xc, yc = a - a.mean(axis=0), b - b.mean(axis=0)
    mean_gap = a.mean(axis=0) - b.mean(axis=0)
    traces = np.sum(xc * xc) / (n - 1) + np.sum(yc * yc) / (m - 1)
    if min(n, m) < dims:
        cross = np.linalg.svd(yc @ xc.T, compute_uv=False).sum() / np.sqrt((n - 1) * (m - 1))
    else:
        cov_a, cov_b = xc.T @ xc / (n - 1), yc.T @ yc / (m - 1)
        values, vectors = np.linalg.eigh(cov_a)
        root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
        cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(mean_gap @ mean_gap + traces - 2 * cross)


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic kernel (x.y/d + 1)^3.

    Averaged over KID_SUBSETS random subsets of KID_SUBSET_SIZE when the sets are larger than
    that (as in the paper), else computed once on the whole sets. Unlike FID it is unbiased: ~0
    for two samples of one distribution, whatever their size.
    """
    size = min(KID_SUBSET_SIZE, len(a), len(b))
    subsets = KID_SUBSETS if max(len(a), len(b)) > size else 1
    rng = np.random.default_rng(seed)
    dims = a.shape[1]

    def kernel(x, y):
        return (x @ y.T / dims + 1.0) ** 3

    estimates = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)]
        kxx, kyy = kernel(x, x), kernel(y, y)
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (size * (size - 1))
        estimates.append(within - 2 * kernel(x, y).mean())
    return float(np.mean(estimates))
