"""Export a trained generator as a versioned TensorFlow SavedModel, with a model card, and prove it.

Layout (TF Serving): `<export_root>/<version>/` with `saved_model.pb`, `variables/` and, beside
them, `model_card.json`. Versions are integers, one more than the largest present; each is
written to a hidden temporary folder and renamed, so a reader (or TF Serving, which watches the
folder) never sees half a model, and a failed export leaves no version at all.

Signatures, usable with `tf.saved_model.load` and no project code:
- `serving_default`: z float32[None, latent_dim] -> {"images": uint8[None, H, W, 3]}
- `sample`: num int32, seed int64 -> the same; latents from a stateless RNG keyed by
  (seed, image index) (components.latents), so a seed gives the same images on every
  call and every machine, and they are the first images `pipeline.sample --seed` writes.

Before the rename the export is loaded back and compared with the in-memory generator on the same
latents; more than one grey level of difference fails the export.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components import guard, locks
from components.artifacts import (
    RunPaths,
    atomic_directory,
    atomic_write_json,
    is_version_name,
    read_json,
    remove_stale_temporaries,
    saved_model_versions,
    tool_versions,
)
from components.errors import PipelineError
from components.latents import RECIPE as LATENTS_RECIPE
from components.latents import latents, to_uint8, to_uint8_array
from components.sampler import SERVING_SIGNATURE
from components.settings import check_settings, setting, settings_dict

SAMPLE_SIGNATURE = "sample"
MODEL_CARD = "model_card.json"
EVAL_FILE = "eval.json"  # written by pipeline.evaluate, or here from the trainer's own evaluation
MAX_GREY_LEVEL_DIFFERENCE = 1
CHECK_SEED = 20240601  # latents used to compare the export with the in-memory generator
EXPORT_WAIT_SECONDS = 600  # how long an export waits for another one into the same folder to finish


def export_generator(
    generator,
    export_root: str | os.PathLike,
    model_card: dict,
    *,
    check_count: int = 16,
    extra_files: dict[str, dict] | None = None,
) -> Path:
    """Write `generator` (a Keras model z -> float32 images in [-1, 1]) as the next SavedModel version.

    `model_card` holds what only the caller knows (hyperparameters, data, images seen, metrics);
    the exporter adds shapes, signatures, version, tool versions, export time and the check result.
    `extra_files` ({name: JSON object}) are written beside it. Returns the new version folder.
    Exports into one folder take turns (components.locks): each gets its own version number.
    """
    with locks.writing(export_root, "export folder", wait=EXPORT_WAIT_SECONDS):
        return _export_next_version(generator, Path(export_root), model_card, check_count, extra_files)


def _export_next_version(
    generator, export_root: Path, model_card: dict, check_count: int, extra_files: dict[str, dict] | None
) -> Path:
    latent_dim, image_shape = _generator_shapes(generator)
    export_root = Path(export_root)
    guard.output_folder("export folder", export_root)
    remove_stale_temporaries(export_root)  # the temp folders of exports that were killed
    version = next_version(export_root)
    final = export_root / str(version)
    try:
        with atomic_directory(final) as tmp:
            _write_saved_model(generator, tmp, latent_dim)
            difference = verify_export(generator, tmp, latent_dim, check_count)
            card = {
                **model_card,
                "version": version,
                "export_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "latent_dim": latent_dim,
                "image_shape": list(image_shape),
                "signatures": {
                    SERVING_SIGNATURE: (
                        f"z: float32[None, {latent_dim}] -> images: uint8[None, {', '.join(map(str, image_shape))}]"
                    ),
                    SAMPLE_SIGNATURE: "num: int32, seed: int64 -> images (deterministic; latents below)",
                },
                "latents": LATENTS_RECIPE,
                "export_check": {"images": check_count, "max_grey_level_difference": difference},
                "tool_versions": tool_versions(),
            }
            atomic_write_json(tmp / MODEL_CARD, card)
            for name, content in (extra_files or {}).items():
                atomic_write_json(tmp / name, {**content, "model": str(final)})
    except FileExistsError as err:
        raise PipelineError(f"{final} appeared while exporting (another export running?); run the export again.") from err
    return final


def next_version(export_root: Path) -> int:
    """One more than the largest integer-named entry (even a broken one, so no name is reused)."""
    taken = [int(p.name) for p in export_root.iterdir() if is_version_name(p.name)] if export_root.is_dir() else []
    return max(taken, default=0) + 1


def _generator_shapes(generator) -> tuple[int, tuple[int, ...]]:
    input_shape, output_shape = tuple(generator.input_shape), tuple(generator.output_shape)
    if len(input_shape) != 2 or len(output_shape) != 4 or output_shape[-1] != 3:
        raise ValueError(f"expected a generator z[N, latent] -> images[N, H, W, 3], got {input_shape} -> {output_shape}")
    return int(input_shape[1]), tuple(int(d) for d in output_shape[1:])


def _write_saved_model(generator, folder: Path, latent_dim: int) -> None:
    """Save both signatures through Keras 3's ExportArchive (it tracks the model's variables)."""
    import keras
    import tensorflow as tf

    def images_from(z):
        return {"images": to_uint8(generator(z, training=False))}

    def serving_default(z):
        return images_from(z)

    def sample(num, seed):
        return images_from(latents(seed, tf.range(tf.cast(num, tf.int64)), latent_dim))

    archive = keras.export.ExportArchive()
    archive.track(generator)
    archive.add_endpoint(SERVING_SIGNATURE, serving_default, [tf.TensorSpec([None, latent_dim], tf.float32, name="z")])
    archive.add_endpoint(
        SAMPLE_SIGNATURE, sample, [tf.TensorSpec([], tf.int32, name="num"), tf.TensorSpec([], tf.int64, name="seed")]
    )
    archive.write_out(str(folder), verbose=False)


def verify_export(generator, folder: Path, latent_dim: int, count: int) -> int:
    """Load the SavedModel back and compare it with `generator` on the same latents.

    Returns the largest difference in grey levels; raises PipelineError above
    MAX_GREY_LEVEL_DIFFERENCE, or when `sample` is not deterministic, so a bad export never
    becomes a visible version.
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(str(folder))
    z = latents(CHECK_SEED, tf.range(count, dtype=tf.int64), latent_dim)
    expected = to_uint8_array(generator(z, training=False)).astype(np.int16)
    served = loaded.signatures[SERVING_SIGNATURE](z=z)["images"].numpy()
    sample = loaded.signatures[SAMPLE_SIGNATURE]
    sampled = [sample(num=tf.constant(count), seed=tf.constant(CHECK_SEED, tf.int64))["images"].numpy() for _ in range(2)]
    difference = max(int(np.abs(images.astype(np.int16) - expected).max()) for images in (served, *sampled))
    if difference > MAX_GREY_LEVEL_DIFFERENCE:
        raise PipelineError(
            f"export check failed: the SavedModel's images differ from the in-memory generator's by {difference} grey "
            f"levels (at most {MAX_GREY_LEVEL_DIFFERENCE} allowed) on the same latents; no version was written."
        )
    if not np.array_equal(sampled[0], sampled[1]):
        raise PipelineError(
            "export check failed: the 'sample' signature gave different images for one seed; no version was written."
        )
    return difference


# --- exporting a training run ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportOptions:
    """How a run is exported (`export_run`); `pipeline.export` builds its flags from these fields."""

    checkpoint: str = setting(
        "latest",
        "which checkpoint's EMA generator: the last one saved, or the best by the evaluator's swd_avg",
        kind=str,
        choices=("latest", "best"),
    )

    def __post_init__(self) -> None:
        check_settings(self)


def export_run(
    run_dir: str | os.PathLike, options: ExportOptions = ExportOptions(), *, if_changed: bool = False
) -> tuple[Path, bool]:
    """Export the EMA generator of a run's checkpoint `options.checkpoint` to `<run>/export/generator/`.

    Returns the version folder and whether it is new. With `if_changed` (re-running a finished
    pipeline), the newest version is returned instead when it already holds this very checkpoint
    (same checkpoint file, same contents), so an unchanged run does not pile up versions.
    When the trainer evaluated exactly this checkpoint, its figures go into `eval.json` beside the
    model (what `pipeline.evaluate` would write), so they are not computed a second time.
    """
    from components.checkpoints import BEST, checkpoint_fingerprint, checkpoint_prefixes
    from components.runfolder import check_run_layout, restore_generator

    paths, checkpoint = RunPaths(run_dir), options.checkpoint
    check_run_layout(paths)
    with locks.writing(paths.export, "export folder", wait=EXPORT_WAIT_SECONDS):  # the check and the export as one
        if if_changed:
            newest = checkpoint_prefixes(paths.checkpoints / BEST if checkpoint == BEST else paths.checkpoints)
            try:
                current = _export_of(paths, checkpoint_fingerprint(newest[0])) if newest else None
            except FileNotFoundError:  # rotated away by a training just now: export what is there
                current = None
            if current is not None:
                return current, False
        generator, info = restore_generator(paths.root, checkpoint)
        card = run_model_card(paths, info, options)
        return export_generator(generator, paths.export, card, extra_files=_trainer_evaluation(info, paths)), True


def _export_of(paths: RunPaths, fingerprint: str) -> Path | None:
    """The newest version, if it was exported from a checkpoint with these contents."""
    versions = saved_model_versions(paths.export)
    if not versions:
        return None
    try:
        newest = read_json(versions[-1] / MODEL_CARD)
    except (OSError, ValueError):
        return None  # no card, or a damaged one: export again
    return versions[-1] if isinstance(newest, dict) and newest.get("checkpoint_fingerprint") == fingerprint else None


def run_model_card(paths: RunPaths, info: dict, options: ExportOptions) -> dict:
    """The caller's half of a model card, from `restore_generator`'s info: where the weights came
    from and how good they are (the trainer's last evaluation at or before the exported step;
    null when the run trained without an evaluator)."""
    from components.runfolder import metric_values

    return {
        "run": str(paths.root.resolve()),
        "checkpoint": options.checkpoint,
        "checkpoint_path": info["checkpoint"],
        "checkpoint_fingerprint": info["checkpoint_fingerprint"],
        "step": info["step"],
        "images_seen": info["images_seen"],
        "hyperparameters": info["hparams"],
        "data": {
            "dir": info["data_dir"],
            "fingerprint": info["data_fingerprint"],
            "counts": info["data_counts"],
        },
        "metrics": metric_values(info["evaluation"]) or None,
        "settings": {"export": {"run": str(paths.root.resolve()), **settings_dict(options)}},  # `export --config` reads it
    }


def _trainer_evaluation(info: dict, paths: RunPaths) -> dict[str, dict]:
    """{"eval.json": ...} when the trainer's last evaluation scored exactly the exported weights."""
    from components.runfolder import metric_values

    evaluation = info["evaluation"]
    if not evaluation or evaluation.get("step") != info["step"] or not evaluation.get("evaluation"):
        return {}
    return {
        EVAL_FILE: {
            "metrics": metric_values(evaluation),
            "data": info["data_dir"],
            **evaluation["evaluation"],
            "source": f"the trainer's evaluation of this checkpoint (step {info['step']}, {paths.metrics})",
            "time": datetime.datetime.fromtimestamp(evaluation["time"], datetime.timezone.utc).isoformat(timespec="seconds"),
        }
    }
