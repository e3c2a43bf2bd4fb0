"""Helpers several test modules share: ways to make inputs and expected values, not project code."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.evaluator import Evaluator, generate_images
from components.latents import first_latents
from components.synthetic import face_filename, synthetic_face


def write_synthetic_faces(folder: Path, count: int, size: int = 64, seed: int = 0) -> list[Path]:
    """Draw faces 0..count-1 of `seed` into `folder` as lossless PNGs (an image folder to ingest)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        paths.append(folder / face_filename(index))
        synthetic_face(seed, index, size).save(paths[-1], format="PNG", compress_level=1)
    return paths


def evaluate_generator(generate, real_eval: np.ndarray, real_train=None, *, latent_dim: int, num: int = 1024, seed: int = 0, batch_size: int = 256) -> dict[str, float]:
    """A one-off evaluation of `generate` (latents -> uint8 images) on images 0..n-1 of `seed`."""
    evaluator = Evaluator(real_eval, real_train, num=num, seed=seed)
    return evaluator.score(generate_images(generate, first_latents(evaluator.num, latent_dim, seed), batch_size))


def read_records(path: Path) -> list[bytes]:
    """The serialized records of one TFRecord file, read (and CRC-checked) by TensorFlow."""
    import tensorflow as tf

    return [record.numpy() for record in tf.data.TFRecordDataset(str(path))]
