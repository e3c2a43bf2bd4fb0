"""MirroredStrategy over two logical CPU devices in one process (run by tests/test_multiworker.py).

Usage: python tests/mirrored_worker.py DATA_DIR RUN_DIR. Stands in for a machine with two GPUs:
the devices must be configured before TensorFlow starts, hence a process of its own. Trains a tiny
model with DiffAugment through `components.trainer.train` for 4 steps, resumes it to 6, and prints
one JSON line of what the test checks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import tensorflow as tf

from components.config import TrainConfig
from components.gan import DCGAN
from components.model import ModelConfig
from components.train_options import TrainOptions
from components.trainer import train


def main(data_dir: str, run_dir: str) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    config = TrainConfig(model=ModelConfig(latent_dim=8, g_filters=4, d_filters=4), batch_size=8, augment="translation,cutout")
    options = TrainOptions(precision="float32", checkpoint_every=2, sample_every=4, log_every=2)
    first = train(config, data_dir, run_dir, dataclasses.replace(options, images=32), verbose=False, strategy=strategy)
    second = train(config, data_dir, run_dir, dataclasses.replace(options, images=48), verbose=False, strategy=strategy)

    gan = second.gan
    replica_seeds = strategy.experimental_local_results(strategy.run(lambda: DCGAN._replica_seed(gan.augment_seeds)))
    weights = [*gan.generator.weights, *gan.discriminator.weights, *gan.ema_generator.weights]
    copies = [[np.asarray(copy) for copy in strategy.experimental_local_results(weight)] for weight in weights]
    print(
        json.dumps(
            {
                "replicas": strategy.num_replicas_in_sync,
                "first": [first.steps, first.images_seen],
                "second": [second.steps, second.images_seen, second.resumed_from],
                "augment_seeds_differ": not np.array_equal(np.asarray(replica_seeds[0]), np.asarray(replica_seeds[1])),
                "copies_identical": all(np.array_equal(pair[0], pair[-1]) for pair in copies),
                "all_finite": all(np.isfinite(pair[0]).all() for pair in copies),
                "metrics": {name: float(np.mean(value)) for name, value in second.metrics.items()},
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
