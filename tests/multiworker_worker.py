"""One worker of the two-process MultiWorkerMirroredStrategy test (run by tests/test_multiworker.py).

Usage: python tests/multiworker_worker.py DATA_DIR RUN_DIR WEIGHTS_OUT.npz, with TF_CONFIG set.
Trains a tiny model through `components.trainer.train` and saves every weight of G, D and the
EMA generator, so the test can compare the workers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from components.config import TrainConfig
from components.model import ModelConfig
from components.trainer import train


def main(data_dir: str, run_dir: str, weights_out: str) -> None:
    config = TrainConfig(model=ModelConfig(latent_dim=8, g_filters=4, d_filters=4), batch_size=8)
    result = train(config, data_dir, run_dir, images=48, precision="float32", checkpoint_every=3, sample_every=6, log_every=2, verbose=False)
    gan = result.gan
    weights = {
        f"{net}/{index}": np.asarray(weight.numpy())
        for net in ("generator", "discriminator", "ema_generator")
        for index, weight in enumerate(getattr(gan, net).weights)
    }
    np.savez(weights_out, steps=result.steps, images_seen=result.images_seen, **weights)


if __name__ == "__main__":
    main(*sys.argv[1:4])
