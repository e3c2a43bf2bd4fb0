"""The evaluator's metrics on small synthetic sets whose right answers are known."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from components.errors import PipelineError
from components.evaluator import Evaluator, TrainingEvaluator
from components.latents import first_latents
from components.metrics.inception import frechet_distance, kernel_inception_distance, load_inception
from components.metrics.memorisation import memorisation_summary, nearest_neighbours
from components.metrics.msssim import ms_ssim, pairwise_ms_ssim
from components.metrics.swd import laplacian_pyramid, sliced_wasserstein, swd_descriptors, swd_from_descriptors
from tests.helpers import evaluate_generator


def faces(count: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Procedural "faces": a tinted background, a skin ellipse, two dark eyes, a little texture."""
    rng = np.random.default_rng(seed)
    grid = (np.arange(size) + 0.5) / size
    y, x = grid[None, :, None, None], grid[None, None, :, None]

    def param(low, high, channels=1):
        return rng.uniform(low, high, size=(count, 1, 1, channels))

    background = param(40, 140, 3) + 60 * y * param(-1, 1)
    cx, cy, rx, ry = param(0.4, 0.6), param(0.45, 0.6), param(0.22, 0.32), param(0.28, 0.38)
    face = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1
    skin = np.array([235, 195, 165]) + param(-20, 20, 3)
    eye = sum((x - (cx + side * 0.35 * rx)) ** 2 + (y - (cy - 0.1 * ry)) ** 2 < (0.3 * rx) ** 2 for side in (-1, 1))
    image = np.where(eye > 0, param(10, 120, 3), np.where(face, skin, background))
    return to_pixels(image + rng.normal(0, 6, size=(count, size, size, 3)))


def to_pixels(values) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def blur(images: np.ndarray, passes: int) -> np.ndarray:
    """`passes` rounds of a [1 2 1]/4 blur in both directions (edge-padded)."""
    x = images.astype(np.float64)
    for _ in range(passes):
        for axis in (1, 2):
            padded = np.pad(x, [(1, 1) if a == axis else (0, 0) for a in range(4)], mode="edge")
            x = (
                np.take(padded, range(x.shape[axis]), axis)
                + 2 * np.take(padded, range(1, x.shape[axis] + 1), axis)
                + np.take(padded, range(2, x.shape[axis] + 2), axis)
            ) / 4
    return to_pixels(x)


@pytest.fixture(scope="module")
def halves():
    """Two disjoint halves of one synthetic distribution, 200 images of 32x32 each."""
    images = faces(400)
    return images[:200], images[200:]


# --- SWD -----------------------------------------------------------------------------------


def test_pyramid_matches_the_reference_mirror_convolution():
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    kernel = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1])[None, :, :, None].astype(np.float32) / 256
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)

    # The reference, transcribed: convolve with mirror borders, subsample / zero-stuff, subtract.
    g0 = images.astype(np.float32)
    g1 = scipy_ndimage.convolve(g0, kernel, mode="mirror")[:, ::2, ::2]
    stuffed = np.zeros_like(g0)
    stuffed[:, ::2, ::2] = g1
    band0 = g0 - scipy_ndimage.convolve(stuffed, kernel * 4, mode="mirror")

    ours = laplacian_pyramid(images, 2)
    np.testing.assert_allclose(ours[0], band0, atol=1e-3)
    np.testing.assert_allclose(ours[1], g1, atol=1e-3)


def test_swd_equals_the_reference_procedure_written_out_plainly():
    """The reference's steps, one patch at a time in float64, on our pyramid and random streams."""
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (12, 32, 32, 3)).astype(np.uint8)
    b = to_pixels(a + rng.normal(0, 30, a.shape))
    positions, directions = np.random.default_rng([0, 0]), np.random.default_rng([0, 1])
    corners = {res: (positions.integers(0, res - 6, (12, 128)), positions.integers(0, res - 6, (12, 128))) for res in (32, 16)}

    def descriptors(images):
        result = {}
        for res, level in zip((32, 16), laplacian_pyramid(images, 2)):
            rows, cols = corners[res]
            patches = np.array(
                [
                    level[i, r : r + 7, c : c + 7].transpose(2, 0, 1)  # (C, 7, 7) as in the reference
                    for i in range(len(images))
                    for r, c in zip(rows[i], cols[i])
                ],
                np.float64,
            )
            patches -= patches.mean(axis=(0, 2, 3), keepdims=True)
            patches /= patches.std(axis=(0, 2, 3), keepdims=True)
            result[res] = patches.reshape(len(patches), -1)
        return result

    da, db = descriptors(a), descriptors(b)
    expected = {}
    for res in (32, 16):
        repeats = []
        for _ in range(4):
            dirs = directions.standard_normal((128, 147))
            dirs = (dirs / np.linalg.norm(dirs, axis=1, keepdims=True)).T
            repeats.append(np.mean(np.abs(np.sort(da[res] @ dirs, axis=0) - np.sort(db[res] @ dirs, axis=0))))
        expected[f"swd_{res}"] = 1e3 * np.mean(repeats)
    result = sliced_wasserstein(a, b, seed=0)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-5)


def test_flat_images_have_empty_bands_and_a_flat_top():
    pyramid = laplacian_pyramid(np.full((2, 32, 32, 3), 90, np.uint8), 2)
    assert [level.shape for level in pyramid] == [(2, 32, 32, 3), (2, 16, 16, 3)]
    np.testing.assert_allclose(pyramid[0], 0, atol=1e-3)
    np.testing.assert_allclose(pyramid[1], 90, atol=1e-3)


def test_swd_reports_every_level_from_the_image_size_down_to_16():
    rng = np.random.default_rng(0)
    for size, keys in ((64, ["swd_64", "swd_32", "swd_16"]), (32, ["swd_32", "swd_16"]), (16, ["swd_16"])):
        a, b = (rng.integers(0, 256, (4, size, size, 3)).astype(np.uint8) for _ in range(2))
        result = sliced_wasserstein(a, b)
        assert list(result) == keys + ["swd_avg"]
        assert result["swd_avg"] == pytest.approx(np.mean([result[k] for k in keys]))
    with pytest.raises(ValueError, match="at least 16"):
        sliced_wasserstein(np.zeros((4, 8, 8, 3), np.uint8), np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="equally sized"):
        sliced_wasserstein(np.zeros((4, 16, 16, 3), np.uint8), np.zeros((5, 16, 16, 3), np.uint8))


def test_identical_sets_score_zero_and_a_reordered_set_scores_low(halves):
    a, b = halves
    assert all(value == 0 for value in sliced_wasserstein(a, a).values())
    assert 0 < sliced_wasserstein(a, a[::-1])["swd_avg"] < sliced_wasserstein(a, b)["swd_avg"] * 1.5


def test_damage_raises_swd_in_step_with_its_strength(halves):
    a, b = halves
    reference = swd_descriptors(a)
    rng = np.random.default_rng(1)

    def swd_avg(images):
        return swd_from_descriptors(reference, swd_descriptors(images))["swd_avg"]

    floor = swd_avg(b)
    damages = {
        "blur": [blur(b, passes) for passes in (1, 3, 8)],
        "noise": [to_pixels(b + rng.normal(0, sigma, b.shape)) for sigma in (8, 24, 64)],
        "colour": [to_pixels(b + rng.uniform(-s, s, (len(b), 1, 1, 3))) for s in (20, 50, 100)],
    }
    for name, damaged in damages.items():
        scores = [floor] + [swd_avg(images) for images in damaged]
        assert scores == sorted(scores) and scores[-1] > 3 * floor, (name, scores)


def test_one_global_colour_shift_is_normalised_away_like_the_reference(halves):
    # Per-set channel standardisation (ProGAN's) makes SWD blind to one shift shared by all images:
    # the band-pass levels do not change at all, only the coarsest level moves through clipping.
    a, b = halves
    shifted = to_pixels(b.astype(np.int16) + np.array([20, -20, 0]))
    plain, moved = sliced_wasserstein(a, b), sliced_wasserstein(a, shifted)
    assert moved["swd_32"] == pytest.approx(plain["swd_32"], rel=0.02)


def test_swd_is_seeded(halves):
    a, b = halves[0][:64], halves[1][:64]
    assert sliced_wasserstein(a, b, seed=3) == sliced_wasserstein(a, b, seed=3)
    assert sliced_wasserstein(a, b, seed=3) != sliced_wasserstein(a, b, seed=4)


def test_a_flat_generator_gets_a_finite_bad_score(halves):
    a, _ = halves
    flat = np.full_like(a, 128)
    result = sliced_wasserstein(a, flat)
    assert np.isfinite(result["swd_avg"]) and result["swd_avg"] > 100


# --- diversity -----------------------------------------------------------------------------


def test_ms_ssim_is_one_for_identical_pairs_and_matches_tensorflow_on_grey_images():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    # TensorFlow's version needs >= 11 px at the 5th scale: 176 = 11 * 16. One channel, so both
    # average in the same order.
    x = to_pixels(np.kron(rng.uniform(0, 255, (3, 22, 22, 1)), np.ones((1, 8, 8, 1))) + rng.normal(0, 20, (3, 176, 176, 1)))
    y = to_pixels(x + rng.normal(0, 40, x.shape))
    np.testing.assert_allclose(ms_ssim(x, x), 1.0, atol=1e-6)
    expected = tf.image.ssim_multiscale(tf.constant(x), tf.constant(y), 255.0).numpy()
    np.testing.assert_allclose(ms_ssim(x, y), expected, atol=1e-4)


def test_a_collapsed_set_scores_as_undiverse(halves):
    a, _ = halves
    collapsed = np.repeat(a[:1], len(a), axis=0)
    assert pairwise_ms_ssim(collapsed) == pytest.approx(1.0)
    assert pairwise_ms_ssim(a) < 0.5
    with pytest.raises(ValueError, match="at least 2"):
        pairwise_ms_ssim(a[:1])


# --- memorisation --------------------------------------------------------------------------


def memorisation(generated: np.ndarray, train: np.ndarray, heldout: np.ndarray) -> dict[str, float]:
    return memorisation_summary(nearest_neighbours(generated, train)[0], nearest_neighbours(heldout, train)[0])


def test_memorisation_finds_planted_copies():
    train, heldout, fresh = faces(150, seed=1), faces(60, seed=2), faces(50, seed=3)
    planted = [7, 42, 99, 120, 149]
    generated = np.concatenate([fresh, train[planted]])

    distances, nearest = nearest_neighbours(generated, train)
    assert np.all(distances[-5:] < 1e-3) and nearest[-5:].tolist() == planted
    assert np.all(distances[:-5] > 0.02)

    report = memorisation(generated, train, heldout)
    assert report["copy_fraction"] == pytest.approx(5 / 55)
    assert report["nn_generated"] == pytest.approx(report["nn_real"], rel=0.3)
    assert memorisation(train[:40], train, heldout)["copy_fraction"] == 1.0


# --- FID / KID -----------------------------------------------------------------------------


def test_frechet_and_kernel_distances_grow_with_a_mean_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
    shifted = b + np.array([2.0] + [0.0] * 7)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) < 0.05
    assert frechet_distance(a, shifted) == pytest.approx(4.0, rel=0.05)  # |mean gap|^2
    assert abs(kernel_inception_distance(a[:400], b[:400])) < 0.01 * kernel_inception_distance(a[:400], shifted[:400])


def test_frechet_distance_with_fewer_samples_than_features_matches_the_covariance_form():
    rng = np.random.default_rng(1)
    a, b = rng.random((5, 8)), 1.3 * rng.random((7, 8))
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    gap = a.mean(axis=0) - b.mean(axis=0)
    assert frechet_distance(a, b) == pytest.approx(gap @ gap + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def test_inception_weights_are_only_read_from_a_local_file(tmp_path):
    with pytest.raises(PipelineError, match="never downloaded"):
        load_inception(tmp_path / "missing.h5")
    (tmp_path / "junk.weights.h5").write_bytes(b"not weights")
    with pytest.raises(PipelineError, match="not a Keras InceptionV3 weights file"):
        load_inception(tmp_path / "junk.weights.h5")


# --- the evaluator -------------------------------------------------------------------------


def pool_generator(pool: np.ndarray):
    """A stand-in generator: each latent picks an image from `pool` (deterministically)."""
    return lambda z: pool[np.abs((z[:, 0] * 1e4).astype(np.int64)) % len(pool)]


def test_evaluator_puts_a_good_generator_near_the_floor_and_flags_bad_ones():
    real, train = faces(240, seed=10), faces(200, seed=11)
    evaluator = Evaluator(real, train, num=100, seed=0)
    assert evaluator.num == 100

    good = evaluator.score(faces(100, seed=12))
    collapsed = evaluator.score(np.repeat(faces(1, seed=13), 100, axis=0))
    copier = evaluator.score(train[:100])

    assert set(good) >= {
        "swd_32",
        "swd_16",
        "swd_avg",
        "swd_avg_floor",
        "msssim",
        "msssim_real",
        "memorisation_nn_generated",
        "memorisation_nn_real",
        "memorisation_copy_fraction",
    }
    assert good["swd_avg"] < 2 * good["swd_avg_floor"]
    assert collapsed["swd_avg"] > 5 * good["swd_avg"]
    assert collapsed["msssim"] == pytest.approx(1.0) and good["msssim"] < 2 * good["msssim_real"] < 1.0
    assert good["memorisation_copy_fraction"] < 0.1 and copier["memorisation_copy_fraction"] == 1.0
    assert good["swd_avg_floor"] == collapsed["swd_avg_floor"]  # the real side is computed once


def test_evaluate_generator_is_deterministic_and_caps_num_at_half_the_real_set():
    real, pool = faces(40, seed=20), faces(64, seed=21)
    first = evaluate_generator(pool_generator(pool), real, latent_dim=4, num=500, seed=1, batch_size=7)
    again = evaluate_generator(pool_generator(pool), real, latent_dim=4, num=500, seed=1, batch_size=64)
    assert first == again and first["num_images"] == 20
    assert "memorisation_nn_generated" not in first
    assert first_latents(3, 4, seed=1).shape == (3, 4)


def test_evaluator_rejects_too_few_images_and_wrong_shapes():
    with pytest.raises(ValueError, match="at least 4"):
        Evaluator(faces(3))
    with pytest.raises(ValueError, match="positive"):
        Evaluator(faces(8), num=0)
    evaluator = Evaluator(faces(8), num=4)
    with pytest.raises(ValueError, match="expected 4 uint8 images"):
        evaluator.score(faces(4, size=16))


def test_training_evaluator_scores_a_keras_generator_on_fixed_latents(tiny_records):
    import keras

    evaluate = TrainingEvaluator(tiny_records, num=64, seed=0, train_limit=40)
    generator = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(8 * 8 * 3, activation="tanh"),
            keras.layers.Reshape((8, 8, 3)),
            keras.layers.UpSampling2D(4),
        ]
    )
    first, second = evaluate(generator), evaluate(generator)
    assert first == second  # fixed latents, fixed real set
    assert first["num_images"] == 16  # the tiny eval split has 32 images: two halves of 16
    assert np.isfinite(first["swd_avg"]) and first["swd_avg"] > first["swd_avg_floor"]
    assert 0 <= first["memorisation_copy_fraction"] <= 1

    with pytest.raises(ValueError, match="shape"):
        evaluate(keras.Sequential([keras.Input((8,)), keras.layers.Dense(16 * 16 * 3), keras.layers.Reshape((16, 16, 3))]))


def test_training_evaluator_needs_enough_eval_images(tmp_path):
    from tests.conftest import write_tiny_records

    images = faces(12)
    data = write_tiny_records(tmp_path / "data", images[:9], images[9:], shards=1)
    with pytest.raises(PipelineError, match="at least 4"):
        TrainingEvaluator(data)


def test_fid_and_kid_come_from_a_local_inception_file(tmp_path):
    import keras

    keras.utils.set_random_seed(0)  # random weights (the wiring, not ImageNet), the same ones every run
    weights = tmp_path / "inception_notop.weights.h5"
    keras.applications.InceptionV3(include_top=False, weights=None, pooling="avg").save_weights(weights)
    inception = load_inception(weights, batch_size=4)
    real = faces(8, seed=30)
    assert inception(real[:3]).shape == (3, 2048)

    evaluator = Evaluator(real, num=4, inception=inception)
    # Random weights rank two different face sets in no particular order; the reference set itself
    # (the evaluator's first half of its seeded permutation) must score zero and a flat set more.
    reference = real[np.random.default_rng(0).permutation(len(real))[:4]]
    same, flat = evaluator.score(reference), evaluator.score(np.full((4, 32, 32, 3), 255, np.uint8))
    assert {"fid", "kid", "fid_floor", "kid_floor"} <= set(same)
    assert same["fid"] == pytest.approx(0, abs=1e-3 * flat["fid"]) and flat["fid"] > 0
    assert flat["kid"] > same["kid"]


def test_the_real_side_is_cached_on_disk_per_data_split_count_and_seed(tiny_records, monkeypatch):
    from components import evaluator

    shutil.rmtree(tiny_records / "cache", ignore_errors=True)  # the shared fixture: start without a cache
    floors = []
    honest = evaluator.swd_from_descriptors
    monkeypatch.setattr(evaluator, "swd_from_descriptors", lambda *a, **k: (floors.append(1), honest(*a, **k))[1])
    first = TrainingEvaluator(tiny_records, num=8, seed=0, train_limit=40)
    assert len(floors) == 1  # the floor: one SWD between the two real halves
    cache = evaluator.baseline_cache(tiny_records, "eval", 8, 0, 40)
    assert cache.parent == tiny_records / "cache" and cache.is_file()

    again = TrainingEvaluator(tiny_records, num=8, seed=0, train_limit=40)
    assert len(floors) == 1 and again.evaluator.baseline == first.evaluator.baseline
    np.testing.assert_array_equal(again.evaluator._real_nn, first.evaluator._real_nn)
    TrainingEvaluator(tiny_records, num=8, seed=1, train_limit=40)  # another seed: other halves, computed
    assert len(floors) == 2 and evaluator.baseline_cache(tiny_records, "eval", 8, 1, 40) != cache

    cache.write_text('{"baseline": {"swd_avg_fl')  # torn by a crash: computed again, and rewritten
    repaired = TrainingEvaluator(tiny_records, num=8, seed=0, train_limit=40)
    assert len(floors) == 3 and repaired.evaluator.baseline == first.evaluator.baseline
    assert json.loads(cache.read_text())["baseline"] == first.evaluator.baseline
