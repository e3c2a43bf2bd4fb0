"""Run by tests/test_exporter.py in a fresh process: use an exported generator with TensorFlow alone.

Usage: python load_saved_model_check.py SAVED_MODEL_DIR OUT.npz
Writes the outputs of both signatures to OUT.npz and prints a JSON line naming any project module
that got imported (there must be none: a SavedModel needs no project code).
"""

import json
import sys

import numpy as np
import tensorflow as tf

model = tf.saved_model.load(sys.argv[1])
serve, sample = model.signatures["serving_default"], model.signatures["sample"]
latent_dim = serve.structured_input_signature[1]["z"].shape[1]


def sampled(num: int, seed: int) -> np.ndarray:
    return sample(num=tf.constant(num, tf.int32), seed=tf.constant(seed, tf.int64))["images"].numpy()


np.savez(
    sys.argv[2],
    serving=serve(z=tf.random.stateless_normal([3, latent_dim], seed=[1, 2], alg="philox"))["images"].numpy(),
    sample_seed7=sampled(5, 7),
    sample_seed7_again=sampled(5, 7),
    sample_seed8=sampled(5, 8),
    sample_one=sampled(1, 7),
)
print(json.dumps({"project_modules": sorted(name for name in sys.modules if name.split(".")[0] in ("components", "pipeline"))}))
