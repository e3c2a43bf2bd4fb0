"""Score a generator against held-out real images: SWD with its floor, diversity, memorisation.

One figure means little on its own, so every model figure comes with its real-data reference:

- `swd_<res>`, `swd_avg` (x1e3, lower is better; the trainer's `best` checkpoint and the tuner
  use `swd_avg`) beside `swd_<res>_floor`, `swd_avg_floor`: the same SWD between two disjoint
  halves of the real images, i.e. what a perfect generator would score at this sample size.
- `msssim` beside `msssim_real`: mean MS-SSIM of random pairs; far above the real figure means
  the generator repeats itself (mode collapse).
- `memorisation_nn_generated` beside `memorisation_nn_real` and `memorisation_copy_fraction`:
  distances to the nearest training image (only when training images are given).
- `fid`, `kid` beside `fid_floor`, `kid_floor`: only with a local Inception weights file.

How the real images are used: they are shuffled with the seed and split into two equal halves
of `n = min(num, len(real) // 2)` images. The generator's `n` images are compared with the first
half (the reference), the second half is compared with the same reference to give the floor, on
the same random directions and patch positions, so the two figures differ only by the images.

`Evaluator` does the real-side work once (descriptors, floor, baselines) and then scores any
number of generated sets cheaply: the trainer evaluates every few thousand images this way
(`TrainingEvaluator`); `components.evaluation.evaluate_model` (`pipeline.evaluate`) scores an
exported SavedModel into eval.json. Both score images 0..n-1 of their seed (`components.latents`),
so one set of weights gets one set of figures whichever way it is evaluated.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from components.errors import PipelineError
from components.latents import first_latents
from components.metrics.inception import FeatureExtractor, frechet_distance, kernel_inception_distance, load_inception
from components.metrics.memorisation import memorisation_summary, nearest_neighbours
from components.metrics.msssim import pairwise_ms_ssim
from components.metrics.swd import swd_descriptors, swd_from_descriptors

MAX_PAIRS = 1000  # MS-SSIM pairs per set: the mean is stable to ~0.005 by then
MEMORISATION_SAMPLE = 1024  # generated and held-out images checked against the training set
DEFAULT_TRAIN_LIMIT = 10_000  # training images searched for copies (memory: ~120 MB at 64x64)

Generate = Callable[[np.ndarray], np.ndarray]  # z float32 [n, latent] -> uint8 NHWC [n, H, W, 3]


def generate_images(
    generate: Callable[[np.ndarray], np.ndarray],
    inputs: np.ndarray,
    batch_size: int = 256,
    progress: Callable[[int], Any] | None = None,
) -> np.ndarray:
    """Run `generate` over the rows of `inputs` (latents, or image indices) in batches.

    `generate` must return uint8 NHWC images; `progress(k)` is called after each batch of k.
    """
    batches = []
    for start in range(0, len(inputs), batch_size):
        images = np.asarray(generate(inputs[start : start + batch_size]))
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"the generator must return uint8 NHWC images, got {images.dtype} {images.shape}")
        batches.append(images)
        if progress:
            progress(len(images))
    return np.concatenate(batches)


class Evaluator:
    """Scores generated sets against one fixed real set; the real side is computed once.

    `real` is uint8 NHWC (the eval split), `train` the training images for the memorisation check
    (None skips it), `inception` an optional feature extractor for FID/KID. `cache` (see
    `baseline_cache`) keeps the real-vs-real figures, the costliest part of the real side (the
    floor alone is one full SWD), for the next evaluator of the same data, split, size and seed.
    """

    def __init__(
        self,
        real: np.ndarray,
        train: np.ndarray | None = None,
        *,
        num: int = 1024,
        seed: int = 0,
        inception: FeatureExtractor | None = None,
        cache: Path | None = None,
    ):
        real = np.asarray(real)
        if num <= 0:
            raise ValueError(f"num must be positive, got {num}")
        self.num = min(num, len(real) // 2)
        if self.num < 2:
            raise ValueError(f"need at least 4 real images (two halves of 2), got {len(real)}")
        self.image_shape = real.shape[1:]
        self.seed = seed
        self.inception = inception
        order = np.random.default_rng(seed).permutation(len(real))
        reference, floor_half = real[order[: self.num]], real[order[self.num : 2 * self.num]]

        self._reference = swd_descriptors(reference, seed)
        self.train = train
        if inception is not None:
            self._reference_features = inception(reference)
        real_nn_size = None if train is None else min(2 * self.num, MEMORISATION_SAMPLE)
        cached = _read_cache(cache, real_nn_size, inception is not None)
        if cached is not None:
            self.baseline, self._real_nn = cached
            return
        floor = swd_from_descriptors(self._reference, swd_descriptors(floor_half, seed), seed)
        self.baseline = {f"{name}_floor": value for name, value in floor.items()}
        self.baseline["msssim_real"] = pairwise_ms_ssim(real[order[: 2 * self.num]], MAX_PAIRS, seed)
        self._real_nn = None
        if train is not None:
            heldout = real[order[:real_nn_size]]
            self._real_nn = nearest_neighbours(heldout, train)[0]
            self.baseline["memorisation_nn_real"] = float(np.median(self._real_nn))
        if inception is not None:
            floor_features = inception(floor_half)
            self.baseline["fid_floor"] = frechet_distance(floor_features, self._reference_features)
            self.baseline["kid_floor"] = kernel_inception_distance(floor_features, self._reference_features, seed)
        if cache is not None:
            _write_cache(cache, self.baseline, self._real_nn)

    def score(self, generated: np.ndarray) -> dict[str, float]:
        """All metrics for `num` generated uint8 NHWC images, with the real baselines beside them."""
        generated = np.asarray(generated)
        if generated.shape != (self.num, *self.image_shape) or generated.dtype != np.uint8:
            raise ValueError(
                f"expected {self.num} uint8 images of shape {self.image_shape}, got {generated.dtype} {generated.shape}"
            )
        metrics = swd_from_descriptors(self._reference, swd_descriptors(generated, self.seed), self.seed)
        metrics["msssim"] = pairwise_ms_ssim(generated, MAX_PAIRS, self.seed)
        if self.train is not None:
            generated_nn = nearest_neighbours(generated[:MEMORISATION_SAMPLE], self.train)[0]
            summary = memorisation_summary(generated_nn, self._real_nn)
            metrics["memorisation_nn_generated"] = summary["nn_generated"]
            metrics["memorisation_copy_fraction"] = summary["copy_fraction"]
        if self.inception is not None:
            features = self.inception(generated)
            metrics["fid"] = frechet_distance(features, self._reference_features)
            metrics["kid"] = kernel_inception_distance(features, self._reference_features, self.seed)
        return {**metrics, **self.baseline, "num_images": self.num}


def load_evaluation_images(
    data_dir: str | os.PathLike, split: str = "eval", train_limit: int = DEFAULT_TRAIN_LIMIT, image_size: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The real images to score against (`split`) and the training images to search for copies,
    at `image_size` (None: the data's; smaller: downscaled as training reads them, for the tuner's
    trials at a smaller size).

    The training images are None when `train_limit` is 0 or when `split` is itself the training
    split (held-out images are the point of the memorisation check).
    """
    from components.records import load_images

    real = load_images(data_dir, split, image_size=image_size)
    if len(real) < 4:
        raise PipelineError(
            f"split '{split}' of {data_dir} holds {len(real)} images; evaluation needs at least 4 "
            "(two halves of 2). Ingest with a larger `eval_fraction`."
        )
    if train_limit <= 0 or split == "train":
        return real, None
    train = load_images(data_dir, "train", limit=train_limit, image_size=image_size)
    return real, train


def keras_generate(generator) -> Generate:
    """Wrap a Keras generator (z -> float [-1, 1] NHWC) as `Generate`, in inference mode."""
    from components.latents import to_uint8_array

    return lambda z: to_uint8_array(generator(z, training=False))


CACHE_VERSION = 1


def baseline_cache(
    data_dir: str | os.PathLike,
    split: str,
    num: int,
    seed: int,
    train_limit: int,
    inception_weights: str | os.PathLike | None = None,
    image_size: int | None = None,
) -> Path:
    """Where the real-side figures of one evaluation set-up are cached: `<data>/cache/eval-<key>.json`,
    the key hashing the data's fingerprint, split, image count, seed, memorisation set, Inception
    weights and downscaled size (like stylegan2-ada's metric cache). A new ingest replaces the
    folder, cache included."""
    from components.artifacts import fingerprint
    from components.records import read_manifest

    weights = Path(inception_weights) if inception_weights else None
    key = fingerprint(
        {
            "version": CACHE_VERSION,
            "data": read_manifest(data_dir).get("fingerprint"),
            "split": split,
            "num": num,
            "seed": seed,
            "train_limit": train_limit,
            "inception": [str(weights.resolve()), weights.stat().st_size, weights.stat().st_mtime_ns] if weights else None,
            **({"image_size": image_size} if image_size else {}),  # the key of a full-size set-up is as it was
        }
    )
    return Path(data_dir, "cache", f"eval-{key}.json")


def _read_cache(
    path: Path | None, real_nn_size: int | None, inception: bool
) -> tuple[dict[str, float], np.ndarray | None] | None:
    """The cached (baseline, real nearest-neighbour distances), or None if absent, unreadable or
    not what this set-up computes (`real_nn_size` distances, or None without a training set; FID and
    KID floors with `inception`). Figures no computation gives (negative distances, an MS-SSIM
    outside [0, 1], a median that is not the distances') are a lying cache: computed again."""
    from components.artifacts import read_json

    if path is None:
        return None
    try:
        cached = read_json(path)
        baseline = {str(name): float(value) for name, value in cached["baseline"].items()}
        real_nn = None if cached["real_nn"] is None else np.asarray(cached["real_nn"], np.float64)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # absent, torn or from another version: compute it again
    expected = {"swd_avg_floor", "msssim_real"} | ({"fid_floor", "kid_floor"} if inception else set())
    expected |= set() if real_nn_size is None else {"memorisation_nn_real"}
    swd = {name for name in baseline if re.fullmatch(r"swd_[0-9]+_floor", name)}
    if set(baseline) != expected | swd or not swd or not all(map(math.isfinite, baseline.values())):
        return None
    if min(value for name, value in baseline.items() if name != "kid_floor") < 0 or baseline["msssim_real"] > 1:
        return None  # the unbiased KID estimate alone may be below zero
    if real_nn_size is None:
        return (baseline, None) if real_nn is None else None
    if real_nn is None or real_nn.shape != (real_nn_size,) or not np.all((real_nn >= 0) & (real_nn <= 1)):
        return None  # distances are RMS differences of images in [0, 1]
    if not math.isclose(baseline["memorisation_nn_real"], float(np.median(real_nn)), rel_tol=1e-6, abs_tol=1e-9):
        return None  # (computed in float32 before it was written)
    return baseline, real_nn


def _write_cache(path: Path, baseline: dict[str, float], real_nn: np.ndarray | None) -> None:
    from components.artifacts import atomic_write_json

    content = {"version": CACHE_VERSION, "baseline": baseline, "real_nn": None if real_nn is None else real_nn.tolist()}
    try:
        atomic_write_json(path, content)
    except OSError:
        pass  # a read-only data folder: the figures are computed again next time


def evaluation_request(
    data_dir: str | os.PathLike,
    split: str,
    num: int,
    seed: int,
    image_size: int | None = None,
    *,
    train_limit: int = DEFAULT_TRAIN_LIMIT,
    inception_weights: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """What identifies an evaluation's figures, but for the model: the data, the split, the images
    asked for, the seed, the training images searched for copies, the Inception weights (by
    content) and a downscaled size. `evaluation_is_current` compares it with the one on file."""
    import hashlib

    from components.records import read_manifest

    weights = hashlib.sha256(Path(inception_weights).read_bytes()).hexdigest()[:16] if inception_weights else None
    request = {
        "data_fingerprint": read_manifest(data_dir).get("fingerprint"),
        "split": split,
        "num_requested": num,
        "seed": seed,
        "train_limit": train_limit,
        "inception_fingerprint": weights,
    }
    return {**request, "image_size": image_size} if image_size else request


EVAL_KEYS = ("data_fingerprint", "split", "num_requested", "seed")  # what every eval.json of ours records


def eval_file_problem(content: Any) -> str | None:
    """What makes `content` not an eval.json of ours (pipeline.evaluate's, or the export's copy of
    the trainer's figures), or None: figures that are numbers, and what they were computed on."""
    if not isinstance(content, dict):
        return f"it holds a {type(content).__name__}, not an object"
    metrics = content.get("metrics")
    if not isinstance(metrics, dict) or "num_images" not in metrics:
        return "it holds no metrics with their num_images"
    wrong = sorted(name for name, value in metrics.items() if not isinstance(value, (int, float)) or isinstance(value, bool))
    if wrong:
        return f"metric {wrong[0]} is {metrics[wrong[0]]!r}, not a number"
    missing = [key for key in EVAL_KEYS if key not in content]
    return f"it does not say what was evaluated (no {missing[0]})" if missing else None


def read_evaluation(path: str | os.PathLike) -> dict[str, Any] | None:
    """The eval.json at `path` if it is one of ours; None when there is none, or it is torn or
    foreign (what to do with such a file is the caller's choice: an output is not overwritten blindly)."""
    from components.artifacts import read_json

    try:
        content = read_json(path)
    except (OSError, ValueError):
        return None
    return content if eval_file_problem(content) is None else None


_OWN_START = b'{\n  "data": '  # how an eval.json of ours begins (atomic_write_json: indented, keys sorted)


def replaceable_evaluation(path: str | os.PathLike) -> bool:
    """True when the file at `path` may be replaced by a new evaluation: an eval.json of ours
    (`read_evaluation`), or one cut short (a crash, a full disk) that begins as ours do. A user's
    file of that name is never taken for ours, even in the model's own folder."""
    from components.artifacts import read_small_file

    try:
        data = read_small_file(path)
    except OSError:
        return False
    try:
        return eval_file_problem(json.loads(data)) is None
    except ValueError:  # torn: ours if it begins as ours do (or is a beginning of that)
        return bool(data) and (data.startswith(_OWN_START) or _OWN_START.startswith(data))


def evaluation_is_current(
    done: dict[str, Any], request: dict[str, Any], path: str | os.PathLike, model_dir: str | os.PathLike
) -> bool:
    """True when `done` (an eval.json of ours, at `path`) holds the figures of `request` (with the
    model's `model_fingerprint`, `SavedModelGenerator.fingerprint`) for the model in `model_dir`.

    The model is known by its fingerprint; an eval.json without one is taken as this model's only
    when the export wrote it (its `source`) inside this very version folder, with the model.
    Anything else is evaluated again: figures of another model, data or setting are never reported.
    """
    settings = {key: value for key, value in request.items() if key != "model_fingerprint"}
    if not settings.items() <= done.items():
        return False
    if "model_fingerprint" in done:
        return done["model_fingerprint"] == request["model_fingerprint"]
    return "source" in done and Path(path).resolve().parent == Path(model_dir).resolve()


class TrainingEvaluator:
    """For the trainer and the tuner: `evaluate(keras_generator) -> metrics`, on fixed latents.

    The real images are loaded and described once, at construction (floor included); each call
    then only generates `num` images and scores them. Same weights, same numbers: the latents are
    images 0..n-1 of `seed` (for the generator's latent size, read from its input shape).
    `request` (see `evaluation_request`) travels with the figures into metrics.jsonl, so an
    export of the evaluated checkpoint can reuse them. `image_size` scores generators of a
    smaller size than the data's against real images downscaled as training reads them
    (`components.records.downscale_images`): the tuner's trials at `trial_image_size`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        num: int = 1024,
        seed: int = 0,
        *,
        split: str = "eval",
        train_limit: int = DEFAULT_TRAIN_LIMIT,
        batch_size: int = 256,
        inception_weights: str | os.PathLike | None = None,
        image_size: int | None = None,
    ):
        real, train = load_evaluation_images(data_dir, split, train_limit, image_size)
        inception = load_inception(inception_weights) if inception_weights else None
        cache = baseline_cache(data_dir, split, num, seed, train_limit, inception_weights, image_size)
        self.evaluator = Evaluator(real, train, num=num, seed=seed, inception=inception, cache=cache)
        self.seed, self.batch_size = seed, batch_size
        self.request = evaluation_request(
            data_dir, split, num, seed, image_size, train_limit=train_limit, inception_weights=inception_weights
        )
        self._latents: dict[int, np.ndarray] = {}

    def __call__(self, generator) -> dict[str, float]:
        latent_dim = int(generator.input_shape[-1])
        if latent_dim not in self._latents:
            self._latents[latent_dim] = first_latents(self.evaluator.num, latent_dim, self.seed)
        return self.evaluator.score(generate_images(keras_generate(generator), self._latents[latent_dim], self.batch_size))
