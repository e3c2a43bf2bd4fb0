"""The built-in procedural faces: deterministic, varied, and laid out like a face."""

from __future__ import annotations

import numpy as np
from PIL import Image

from components.synthetic import HAIR_STYLES, MOUTHS, draw_face, sample_traits, synthetic_face
from tests.helpers import write_synthetic_faces


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def share_near(region: np.ndarray, colour, tolerance: int) -> float:
    """Fraction of the region's pixels within `tolerance` of `colour` on every channel."""
    return float((np.abs(region.astype(int) - np.array(colour)).max(axis=-1) <= tolerance).mean())


def test_a_face_depends_only_on_seed_and_index(tmp_path):
    face = pixels(synthetic_face(seed=3, index=7, size=32))
    assert face.shape == (32, 32, 3) and face.dtype == np.uint8
    assert np.array_equal(face, pixels(synthetic_face(3, 7, 32)))
    assert not np.array_equal(face, pixels(synthetic_face(4, 7, 32)))
    assert not np.array_equal(face, pixels(synthetic_face(3, 8, 32)))
    paths = write_synthetic_faces(tmp_path, count=3, size=32, seed=3)
    assert [p.name for p in paths] == ["face-000000.png", "face-000001.png", "face-000002.png"]
    assert np.array_equal(pixels(Image.open(paths[2]).convert("RGB")), pixels(synthetic_face(3, 2, 32)))


def test_traits_vary_across_faces():
    traits = [sample_traits(np.random.default_rng([0, i])) for i in range(200)]
    assert {t.hair_style for t in traits} == set(HAIR_STYLES)
    assert {t.mouth for t in traits} == set(MOUTHS)
    assert len({t.hair for t in traits}) > 100 and len({t.eye for t in traits}) > 100
    assert min(t.eye_size for t in traits) < 0.9 < 1.15 < max(t.eye_size for t in traits)
    assert 0.2 < np.mean([t.blush for t in traits]) < 0.8
    faces = np.stack([pixels(draw_face(t, 32)) for t in traits[:50]]).reshape(50, -1)
    assert len({face.tobytes() for face in faces}) == 50
    assert faces.std(axis=0).mean() > 30  # faces differ a lot, not just by noise


def test_faces_have_skin_in_the_middle_hair_on_top_and_coloured_eyes():
    for index in range(40):
        traits = sample_traits(np.random.default_rng([0, index]))
        face = pixels(draw_face(traits, 32))
        assert share_near(face[14:24, 11:21], traits.skin, 20) > 0.3, index  # cheeks, nose, mouth
        assert share_near(face[:6], traits.hair, 20) > 0.2, index  # the top of the head
        assert share_near(face[10:20, 4:28], traits.eye, 40) > 0, index  # irises at eye level
