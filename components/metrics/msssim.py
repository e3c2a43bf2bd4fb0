"""MS-SSIM between random pairs of images: a diversity check that catches mode collapse.

Two images drawn from a healthy generator look no more alike than two real images do; a
collapsed generator draws near-copies of a few images, so its pairs score close to 1. The
figure only means something beside the same measure on real pairs (ProGAN, Odena et al. 2017).

The implementation follows Wang et al. (2003) as used by ProGAN (`metrics/ms_ssim.py`, from the
TensorFlow models repository): 5 scales with the paper's weights, an 11-tap Gaussian window of
sigma 1.5 that shrinks with the image at small scales, 2x2 average pooling between scales, per-pair
scores averaged at the end. Vectorised over all pairs at once (loops run over scales and taps).
"""

from __future__ import annotations

import numpy as np

WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])  # the paper's; they do not sum to 1
FILTER_SIZE = 11
FILTER_SIGMA = 1.5
K1, K2 = 0.01, 0.03
MAX_VALUE = 255.0
_CHUNK = 256  # pairs per vectorised step: bounds the float temporaries


def _gaussian_taps(size: int, sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian; its outer product is MATLAB's fspecial('gaussian') window."""
    offsets = np.arange(size) - (size - 1) / 2
    taps = np.exp(-(offsets**2) / (2 * sigma**2))
    return (taps / taps.sum()).astype(np.float32)


def _blur_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of NHWC `x` over height and width (no border: SSIM's convention)."""
    size = len(taps)
    rows = sum(weight * x[:, offset : offset + x.shape[1] - size + 1] for offset, weight in enumerate(taps))
    return sum(weight * rows[:, :, offset : offset + x.shape[2] - size + 1] for offset, weight in enumerate(taps))


def _ssim_and_contrast(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair mean SSIM and contrast-structure terms at one scale (float32 NHWC inputs).

    float32 is enough: the variances are differences of terms up to 255^2 = 65025, whose rounding
    (~0.004) is small against the stabiliser c2 = 58.5.
    """
    size = min(FILTER_SIZE, x.shape[1], x.shape[2])
    taps = _gaussian_taps(size, size * FILTER_SIGMA / FILTER_SIZE)  # the window shrinks with the image
    mu_x, mu_y = _blur_valid(x, taps), _blur_valid(y, taps)
    var_x = _blur_valid(x * x, taps) - mu_x * mu_x
    var_y = _blur_valid(y * y, taps) - mu_y * mu_y
    cov = _blur_valid(x * y, taps) - mu_x * mu_y
    c1, c2 = (K1 * MAX_VALUE) ** 2, (K2 * MAX_VALUE) ** 2
    contrast = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return (luminance * contrast).mean(axis=(1, 2, 3)), contrast.mean(axis=(1, 2, 3))


def _halve(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling (an odd last row or column is dropped)."""
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    x = x[:, :h, :w]
    return (x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2]) * 0.25


def ms_ssim(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """MS-SSIM of each pair (x[i], y[i]) of uint8 NHWC images: [n] floats, 1 for identical images."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two NHWC batches of one shape, got {x.shape} and {y.shape}")
    scores = []
    for start in range(0, len(x), _CHUNK):
        a, b = x[start : start + _CHUNK].astype(np.float32), y[start : start + _CHUNK].astype(np.float32)
        ssim, contrast = [], []
        for _ in WEIGHTS:
            level_ssim, level_contrast = _ssim_and_contrast(a, b)
            ssim.append(level_ssim)
            contrast.append(level_contrast)
            a, b = _halve(a), _halve(b)
        # Negative terms would make fractional powers NaN; the reference clips them to 0.
        ssim, contrast = np.clip(ssim, 0, None), np.clip(contrast, 0, None)
        scores.append(np.prod(contrast[:-1] ** WEIGHTS[:-1, None], axis=0) * ssim[-1] ** WEIGHTS[-1])
    return np.concatenate(scores)


def random_pairs(count: int, max_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of up to `max_pairs` disjoint pairs of distinct images out of `count`, seeded."""
    order = np.random.default_rng(seed).permutation(count)
    pairs = min(max_pairs, count // 2)
    return order[:pairs], order[pairs : 2 * pairs]


def pairwise_ms_ssim(images: np.ndarray, max_pairs: int = 1000, seed: int = 0) -> float:
    """Mean MS-SSIM over random disjoint pairs of a set: higher means less diverse (1 = all identical)."""
    if len(images) < 2:
        raise ValueError(f"need at least 2 images to form a pair, got {len(images)}")
    first, second = random_pairs(len(images), max_pairs, seed)
    return float(np.mean(ms_ssim(images[first], images[second])))
