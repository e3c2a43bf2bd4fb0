"""An exported generator SavedModel, loaded alone and checked: latents in, uint8 images out.

Nothing here imports the Keras model code: the SavedModel's `serving_default` signature turns
latents into uint8 images, so a model exported today samples the same way after the project's
model code has changed. What the signature returns is checked at every call, because a file's
name says which images it holds: a model that returned fewer images than asked would misname
every file after it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import numpy as np

from components.artifacts import resolve_saved_model
from components.errors import PipelineError
from components.latents import latent_array

SERVING_SIGNATURE = "serving_default"
MAX_BATCH_SIZE = 4096  # latents per generator call: 4,096 128x128 images are 200 MB of uint8, more in float32


class SavedModelGenerator:
    """An exported generator loaded with `tf.saved_model.load`: its signature checked at load, what
    it returns checked at every call (one image is generated at load for that).

    `path` may be a SavedModel folder, its parent (newest version) or a run folder.
    """

    def __init__(self, path: str | os.PathLike):
        import tensorflow as tf

        self.path = resolve_saved_model(path)
        try:
            module = tf.saved_model.load(str(self.path))
        except Exception as err:  # TF raises many types for a corrupt or foreign folder
            raise PipelineError(f"{self.path} is not a loadable SavedModel: {str(err).splitlines()[0]}") from err
        self._serve, self.latent_dim, self.image_shape = _check_serving_signature(module, self.path)
        self._module = module  # keeps the signature's variables alive
        self._generate(np.zeros((1, self.latent_dim), np.float32))  # a model that lies is refused before anything is written

    def images(
        self, indices: np.ndarray, seed: int, truncation: float | None = None, batch_size: int = MAX_BATCH_SIZE
    ) -> np.ndarray:
        """uint8 [n, H, W, 3] images for `indices`; `truncation` clips every latent to +-truncation.

        The generator is called `batch_size` latents at a time: one call on a huge batch would
        need all of its activations at once.
        """
        parts = []
        for start in range(0, len(indices), batch_size):
            z = latent_array(indices[start : start + batch_size], self.latent_dim, seed)
            parts.append(self._generate(z if truncation is None else np.clip(z, -truncation, truncation)))
        return np.concatenate(parts) if parts else np.zeros((0, *self.image_shape), np.uint8)

    def _generate(self, z: np.ndarray) -> np.ndarray:
        """The signature run on latents `z`, checked to give one uint8 image of the declared shape
        per latent: files are named by index, so a wrong count would misname every later file."""
        import tensorflow as tf

        try:
            images = self._serve(z=tf.constant(z))["images"]
        except tf.errors.OpError as err:
            raise PipelineError(f"{self.path}: signature '{SERVING_SIGNATURE}' failed: {err.message.splitlines()[0]}") from err
        expected = (len(z), *self.image_shape)
        if images.dtype != tf.uint8 or tuple(images.shape) != expected:
            raise PipelineError(
                f"{self.path}: signature '{SERVING_SIGNATURE}' returned {images.dtype.name} {tuple(images.shape)} for "
                f"{len(z)} latents instead of uint8 {expected}; it is not a generator as `python -m pipeline.export` writes one."
            )
        return images.numpy()

    def describe(self) -> str:
        """What was loaded, for the user to check: a SavedModel is a program (its graph can read and
        write files through TensorFlow ops when run), so its path, signature and fingerprint are shown."""
        shape = "x".join(map(str, self.image_shape))
        return (
            f"{self.path} (signature {SERVING_SIGNATURE}: z float32[None, {self.latent_dim}] -> images uint8[None, {shape}]; "
            f"fingerprint {self.fingerprint()})"
        )

    def fingerprint(self) -> str:
        """Identifies the exported graph and weights (weights via the checksums in variables.index)."""
        digest = hashlib.sha256()
        for name in ("saved_model.pb", "variables/variables.index"):
            with contextlib.suppress(FileNotFoundError):
                digest.update((self.path / name).read_bytes())
        return digest.hexdigest()[:16]


def _check_serving_signature(module, path: Path):
    """Return the serving function, latent size and image shape, or say what the model lacks."""
    import tensorflow as tf

    signature = module.signatures.get(SERVING_SIGNATURE)
    if signature is None:
        raise PipelineError(
            f"{path} has no '{SERVING_SIGNATURE}' signature (it has: {', '.join(module.signatures) or 'none'}); "
            "it was not exported by `python -m pipeline.export`."
        )
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    z, images = inputs.get("z"), outputs.get("images") if isinstance(outputs, dict) else None
    if (
        z is None
        or z.dtype != tf.float32
        or z.shape.rank != 2
        or z.shape[1] is None
        or images is None
        or images.dtype != tf.uint8
        or images.shape.rank != 4
        or not images.shape[1:].is_fully_defined()
        or images.shape[3] != 3
    ):
        raise PipelineError(
            f"{path}: signature '{SERVING_SIGNATURE}' maps {inputs} to {outputs}; a generator export maps "
            "z: float32[None, latent_dim] to images: uint8[None, H, W, 3]. Export it with `python -m pipeline.export`."
        )
    return signature, int(z.shape[1]), tuple(int(d) for d in images.shape[1:])
