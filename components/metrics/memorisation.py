"""Memorisation: is the generator copying its training images?

For each generated image we find the nearest training image in pixel space. On its own that
distance has no scale, so the same is measured for held-out real images, which by construction
copy nothing: a generator whose images sit much closer to the training set than unseen real
images do is reproducing it. Pixel distance finds copies and near-copies (the failure that
matters for a small data set); it says nothing about perceptual similarity.

Distances are root-mean-square pixel differences on a 0..1 scale (0 = identical image, about
0.4 between unrelated natural images), computed for all pairs with one matrix product per chunk.
"""

from __future__ import annotations

import numpy as np

COPY_QUANTILE = 0.01  # "closer to the training set than 99% of held-out real images are"
_CHUNK = 1024  # references per matrix product: bounds the float32 copy of the training set


def _flatten(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, np.float32).reshape(len(images), -1) / 255.0


def nearest_neighbours(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query image, the RMS distance to its nearest reference image and that image's index.

    Both are uint8 NHWC of one image shape. Uses |q - r|^2 = |q|^2 + |r|^2 - 2 q.r over chunks of
    the references, so memory stays bounded whatever the training set's size.
    """
    if np.shape(queries)[1:] != np.shape(references)[1:]:
        raise ValueError(f"image shapes differ: {np.shape(queries)[1:]} vs {np.shape(references)[1:]}")
    if len(references) == 0:
        raise ValueError("no reference images to compare with")
    q = _flatten(queries)
    q_norms = np.einsum("ij,ij->i", q, q)
    best = np.full(len(q), np.inf)
    best_index = np.zeros(len(q), np.int64)
    for start in range(0, len(references), _CHUNK):
        r = _flatten(references[start : start + _CHUNK])
        squared = q_norms[:, None] + np.einsum("ij,ij->i", r, r)[None, :] - 2.0 * (q @ r.T)
        index = squared.argmin(axis=1)
        value = squared[np.arange(len(q)), index]
        better = value < best
        best[better], best_index[better] = value[better], start + index[better]
    dims = q.shape[1]
    return np.sqrt(np.maximum(best, 0.0) / dims), best_index


def memorisation_summary(generated_distance: np.ndarray, real_distance: np.ndarray) -> dict[str, float]:
    """Compare nearest-training-image distances of generated and of held-out real images.

    - `nn_generated`, `nn_real`: the median distances (0..1 RMS).
    - `copy_fraction`: the share of generated images closer to the training set than 99% of the
      held-out real images are. About 0.01 for a generator that copies nothing; near 1 for one
      that only reproduces training images.
    """
    threshold = np.quantile(real_distance, COPY_QUANTILE)
    return {
        "nn_generated": float(np.median(generated_distance)),
        "nn_real": float(np.median(real_distance)),
        "copy_fraction": float(np.mean(generated_distance < threshold)),
    }
