"""A training run's folder: its record (`hparams.json`), its checkpoints and its metrics log.

- `hparams.json` records the `TrainConfig` and the data it trains on (manifest fingerprint and
  counts); a later run in the folder with other hyperparameters or other data is an error unless
  it starts over (`new_run`), which removes only what the trainer wrote.
- `checkpoints/` (components.checkpoints): with no intact checkpoint left a resume refuses
  rather than silently starting again from step 0.
- `metrics.jsonl`: one line per log interval and evaluation; lines after the restored step are
  dropped on resume (they will be redone), and a line torn by a crash is dropped with a note.

`restore_generator(run_dir)` gives back a run's EMA generator as a plain float32 Keras model with
its own BatchNorm statistics, for the exporter, the evaluator and the tuner.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components import guard
from components.artifacts import (
    RunPaths,
    atomic_write_json,
    atomic_write_text,
    changed_settings,
    read_json,
    read_jsonl,
    remove_stale_temporaries,
)
from components.checkpoints import (
    BEST,
    CHECKPOINT_NAME,
    checkpoint_fingerprint,
    checkpoint_prefixes,
    pinned_checkpoints,
    restore_newest_intact,
)
from components.config import TrainConfig
from components.errors import PipelineError

if TYPE_CHECKING:
    from components.train_options import TrainOptions

EVAL_OBJECTIVE = "swd_avg"  # lower is better


# -- hparams.json -----------------------------------------------------------------------------------


def run_record(config: TrainConfig, data_dir: str | Path, manifest: dict, options: TrainOptions) -> dict:
    """hparams.json: the hyperparameters, which data they were trained on, and the options of the
    newest training of the run (budget, evaluations, intervals): with them the file is a complete
    configuration, which `pipeline.train --config` accepts to repeat the run."""
    return {
        "hparams": config.to_dict(),
        "options": options.to_dict(),
        "data": {
            "dir": str(Path(data_dir).resolve()),
            "fingerprint": manifest.get("fingerprint"),
            "counts": {split: int(entry["count"]) for split, entry in manifest["splits"].items()},
            "image_size": int(manifest["image_size"]),
        },
    }


def read_run_record(paths: RunPaths) -> dict | None:
    """The folder's hparams.json, None if there is none; a damaged one is an error naming it."""
    if not paths.hparams.is_file():
        return None
    try:
        record = read_json(paths.hparams)
    except (OSError, ValueError) as err:
        problem = f"it cannot be read as JSON ({err})"
    else:
        problem = run_record_problem(record)
    if problem:
        raise PipelineError(f"{paths.hparams} is not a valid run record: {problem}; pass `overwrite` to start over.")
    return record


def run_record_problem(record: Any) -> str | None:
    """What makes `record` not a usable hparams.json, or None: hyperparameters `TrainConfig` accepts
    (types and ranges), and the data they trained on as `run_record` writes it."""
    if not isinstance(record, dict) or not isinstance(record.get("hparams"), dict) or not isinstance(record.get("data"), dict):
        return "it needs an 'hparams' and a 'data' object"
    try:
        TrainConfig.from_dict(record["hparams"])
    except PipelineError as err:
        return str(err).rstrip(".")
    except (ValueError, TypeError) as err:
        return f"its hyperparameters do not make a configuration ({err})"
    data = record["data"]
    if not isinstance(data.get("dir"), str) or not isinstance(data.get("fingerprint"), (str, type(None))):
        return "its data needs a dir and a fingerprint"
    counts = data.get("counts")
    if not isinstance(counts, dict) or not all(_whole(count) for count in counts.values()):
        return "its data counts must be whole numbers"
    return None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def prepare_run_folder(paths: RunPaths, record: dict, *, new_run: bool, write: bool) -> None:
    """Check that an existing run folder belongs to this configuration and data, or start afresh.

    A folder that holds anything must carry one of this project's markers (hparams.json, or the
    tuner's tuner/search.json): a run is never written into a folder of someone else's. `new_run`
    deletes what a previous run of the trainer wrote (checkpoints, grids, logs, metrics,
    hparams.json: files of its own names only) and nothing else in the folder.
    """
    check_run_folder_is_ours(paths)
    if write:
        for folder in (paths.root, paths.samples):
            remove_stale_temporaries(folder)  # half-written files of a killed run
    saved = None
    if new_run:
        if write:
            remove_trainer_outputs(paths)
    else:
        saved = read_run_record(paths)
        if saved is None and checkpoint_prefixes(paths.checkpoints):
            raise PipelineError(
                f"{paths.checkpoints} holds checkpoints but {paths.hparams} is missing; pass `overwrite` to start over."
            )
        if saved is not None:
            _check_same_run(paths, saved, record)
    if write and (new_run or saved != record):  # a resumption with another budget records it
        atomic_write_json(paths.hparams, record)


def check_run_layout(paths: RunPaths) -> None:
    """Refuse a run folder where one of its own folders (checkpoints, samples, logs, the tuner's, the
    export target) is a file or a link, or one of its files a folder or a link: every stage that
    writes or cleans a run folder checks this first, before it takes a lock or looks inside."""
    folders = (
        paths.checkpoints,
        paths.checkpoints / BEST,
        paths.samples,
        paths.logs,
        paths.tuner,
        paths.export.parent,
        paths.export,
    )
    guard.check_layout("`run`", folders=folders, files=(paths.hparams, paths.metrics, paths.best_hyperparameters))


def check_run_folder_is_ours(paths: RunPaths) -> None:
    """Refuse a `--run` that is a file, or a folder holding things but no marker of this project
    (hparams.json of a training run, tuner/search.json of a search)."""
    if paths.root.is_file():
        raise PipelineError(f"`run` {paths.root} is a file, not a folder.")
    markers = (paths.hparams, paths.tuner / "search.json")
    if paths.root.is_dir() and any(paths.root.iterdir()) and not any(marker.is_file() for marker in markers):
        raise PipelineError(
            f"`run` {paths.root} exists and holds files that no run of this project wrote (no {paths.hparams.name} "
            "nor tuner/search.json); refusing to write into it. Choose a new or empty run folder."
        )


# What the trainer writes, by folder: only regular files of these names are ever deleted by --overwrite.
_TRAINER_FILES = {
    "checkpoints": re.compile(rf"checkpoint|({CHECKPOINT_NAME}|{BEST})-\d+(\.index|\.data-\d+-of-\d+)"),
    "checkpoints/best": re.compile(rf"checkpoint|{BEST}-\d+(\.index|\.data-\d+-of-\d+)"),
    "samples": re.compile(r"step-\d+\.png|best\.png"),
    "logs": re.compile(r"events\.out\.tfevents\..*"),
    ".": re.compile(r"metrics\.jsonl|hparams\.json"),
}
# The one kind of folder the trainer leaves behind: the one TensorFlow writes a checkpoint into when a save is cut short.
_TRAINER_FOLDERS = re.compile(rf"({CHECKPOINT_NAME}|{BEST})-\d+_temp")


def remove_trainer_outputs(paths: RunPaths) -> list[Path]:
    """Delete the trainer's own entries of a run folder and the folders they leave empty; return what
    is left that the trainer did not write.

    Its entries are regular files named as it names them (`_TRAINER_FILES`), the folders of a cut
    short checkpoint save (`_TRAINER_FOLDERS`) and the temporaries of its processes that are gone
    (`remove_stale_temporaries`). A link is never followed nor removed, and a folder of another
    name is kept whole, whatever it holds.
    """
    left = []
    for folder, pattern in sorted(_TRAINER_FILES.items(), key=lambda item: -item[0].count("/")):  # inner folders first
        directory = paths.root / folder
        if directory.is_symlink() or not directory.is_dir():
            continue
        remove_stale_temporaries(directory)
        for entry in sorted(directory.iterdir()):
            if entry.name == BEST and folder == "checkpoints":
                continue
            if entry.is_symlink():
                pass
            elif entry.is_file() and pattern.fullmatch(entry.name):
                entry.unlink()
                continue
            elif entry.is_dir() and folder.startswith("checkpoints") and _TRAINER_FOLDERS.fullmatch(entry.name):
                shutil.rmtree(entry)
                continue
            if folder != ".":
                left.append(entry)
        if folder != "." and not any(directory.iterdir()):
            directory.rmdir()
    for entry in left:
        print(f"note: kept {entry}: the trainer did not write it", file=sys.stderr)
    return left


def _check_same_run(paths: RunPaths, saved: dict, record: dict) -> None:
    changes = changed_settings(TrainConfig.from_dict(saved["hparams"]).to_dict(), record["hparams"], then="in the run")
    if saved["data"]["fingerprint"] != record["data"]["fingerprint"]:
        changes.append(
            f"data: {saved['data']['dir']} (fingerprint {saved['data']['fingerprint']}) in the run, "
            f"{record['data']['dir']} (fingerprint {record['data']['fingerprint']}) now"
        )
    if changes:
        raise PipelineError(
            f"{paths.root} was trained with other settings ({paths.hparams}): "
            + "; ".join(changes)
            + ". Re-run with the run's settings to resume it, choose another run folder, or pass `overwrite` to discard it."
        )


# -- metrics.jsonl ----------------------------------------------------------------------------------


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The lines of a metrics.jsonl that are metrics lines (`metrics_line_problem`); a torn or
    garbled one is skipped with a note, as `read_jsonl` does, so no reader trips on it."""
    records = []
    for record in read_jsonl(path):
        problem = metrics_line_problem(record)
        if problem is None:
            records.append(record)
        else:
            print(f"note: a line of {path} is damaged ({problem}); it is skipped", file=sys.stderr)
    return records


def metrics_line_problem(record: dict[str, Any]) -> str | None:
    """What makes one metrics.jsonl line unusable, or None: a kind, whole step and images-seen
    counts, a time, numeric figures and (evaluations) an object saying what was scored."""
    if record.get("kind") not in ("train", "eval"):
        return f"kind is {record.get('kind')!r}"
    if not all(_whole(record.get(key)) for key in ("step", "images_seen")):
        return f"step {record.get('step')!r} and images_seen {record.get('images_seen')!r} must be whole numbers"
    if not isinstance(record.get("time"), (int, float)) or isinstance(record.get("time"), bool):
        return f"time is {record.get('time')!r}, not a number"
    if not isinstance(record.get("evaluation", {}), dict):
        return "evaluation is not an object"
    for name, value in metric_values(record).items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{name} is {value!r}, not a number"
    return None


def drop_metrics_after(path: Path, step: int) -> None:
    """Forget metric lines a killed run wrote after its last checkpoint (they will be redone), and
    repair lines a crash tore or that damage garbled: the file is rewritten when what is kept is not
    what it holds (lines are written as `json.dumps(line, sort_keys=True)`, so an intact file is)."""
    kept = "".join(json.dumps(record, sort_keys=True) + "\n" for record in read_metrics(path) if record["step"] <= step)
    if path.is_file() and path.read_text(encoding="utf-8", errors="replace") != kept:
        atomic_write_text(path, kept)


def last_record(path: Path, kind: str, step: int) -> dict[str, Any]:
    """The last metrics.jsonl line of `kind` ("train" or "eval") at or before `step`, {} if none."""
    records = [record for record in read_metrics(path) if record["kind"] == kind and record["step"] <= step]
    return records[-1] if records else {}


def metric_values(record: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl line without its bookkeeping: the figures alone."""
    return {key: value for key, value in record.items() if key not in ("kind", "step", "images_seen", "time", "evaluation")}


# -- the generator of a finished run ----------------------------------------------------------------


def restore_generator(run_dir: str | Path, checkpoint: str = "latest"):
    """The EMA generator of a run as a float32 Keras model, and what it is.

    Returns `(generator, info)`: `generator` maps z float32[N, latent_dim] to float32[N, H, W, 3]
    in [-1, 1] whatever precision it trained in, with the BatchNorm statistics of its own weights
    (`components.model.use_standing_statistics`), exactly as the trainer's sample grids and
    evaluations saw it. `info` has `hparams`, `step`, `images_seen`, `image_size`, `latent_dim`,
    `data_dir`, `data_fingerprint`, `data_counts`, `checkpoint` (the file prefix),
    `checkpoint_fingerprint` (`checkpoint_fingerprint` of what was read) and `evaluation` (the
    metrics.jsonl line of the last evaluation at or before that step, {} if none).
    `checkpoint` is "latest" or "best" (the lowest `swd_avg`, present when an evaluator ran).
    """
    import tensorflow as tf

    from components.model import build_generator, use_standing_statistics

    if checkpoint not in ("latest", BEST):
        raise PipelineError(f"checkpoint must be 'latest' or 'best', got {checkpoint!r}.")
    paths = RunPaths(run_dir)
    record = read_run_record(paths)
    if record is None:
        raise PipelineError(f"{paths.root} is not a training run folder: {paths.hparams} does not exist.")
    config = TrainConfig.from_dict(record["hparams"])
    directory = paths.checkpoints / BEST if checkpoint == BEST else paths.checkpoints

    generator = build_generator(config.model, "float32")
    step = tf.Variable(0, dtype=tf.int64)
    images_seen = tf.Variable(0, dtype=tf.int64)
    reader = tf.train.Checkpoint(ema_generator=generator, step=step, images_seen=images_seen)
    with pinned_checkpoints(directory, paths.root) as view:
        pinned = restore_newest_intact(
            reader, view, say=lambda text: print(text, file=sys.stderr), partial=True, shown_as=directory
        )
        fingerprint = checkpoint_fingerprint(pinned) if pinned is not None else None
    prefix = directory / pinned.name if pinned is not None else None
    if prefix is None:
        hint = " (a best checkpoint exists only when training ran with an evaluator)" if checkpoint == BEST else ""
        raise PipelineError(f"{paths.root} has no {checkpoint} checkpoint in {directory}{hint}; train it first.")
    use_standing_statistics(generator)
    data = record["data"]
    info = {
        "hparams": record["hparams"],
        "step": int(step.numpy()),
        "images_seen": int(images_seen.numpy()),
        "image_size": config.model.image_size,
        "latent_dim": config.model.latent_dim,
        "data_dir": data["dir"],
        "data_fingerprint": data["fingerprint"],
        "data_counts": data["counts"],
        "checkpoint": str(prefix),
        "checkpoint_fingerprint": fingerprint,
        "evaluation": last_record(paths.metrics, "eval", int(step.numpy())),
    }
    return generator, info
