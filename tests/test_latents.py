"""components.latents: one latent per (seed, image index), one float-to-uint8 rounding."""

import numpy as np

from components import latents


def test_image_i_has_the_same_latent_in_any_batch_and_order():
    whole = latents.first_latents(10, 8, seed=3)
    assert whole.shape == (10, 8) and whole.dtype == np.float32
    np.testing.assert_array_equal(latents.latent_array([7, 2], 8, seed=3), whole[[7, 2]])
    eager = np.asarray(latents.latents(3, np.arange(10), 8))
    np.testing.assert_array_equal(eager, whole)
    assert not np.allclose(latents.first_latents(10, 8, seed=4), whole)
    assert abs(float(latents.first_latents(2000, 8).std()) - 1.0) < 0.05  # N(0, 1)


def test_grids_show_the_first_images_of_seed_zero_and_recalibration_uses_other_latents():
    np.testing.assert_array_equal(latents.grid_latents(8), latents.first_latents(64, 8, seed=0))
    recalibration = latents.recalibration_latents(8)
    assert recalibration.shape == (latents.RECALIBRATION_COUNT, 8)
    assert not np.isclose(recalibration[:, None, :], latents.first_latents(4096, 8)[None]).all(axis=2).any()


def test_to_uint8_rounds_and_clips():
    out = latents.to_uint8_array(np.array([-1.5, -1.0, 0.0, 1.0, 2.0, -1 + 0.4 / 127.5, -1 + 0.6 / 127.5]))
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 128, 255, 255, 0, 1]  # 127.5 rounds half to even: 128
