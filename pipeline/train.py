"""`python -m pipeline.train`: train the DCGAN on ingested TFRecords, resuming where it stopped."""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from components import guard, locks
from components.artifacts import RunPaths
from components.config import RECIPES, RUN_FIELDS, TrainConfig, recipe_config
from components.errors import PipelineError
from components.model import ModelConfig
from components.runfolder import check_run_layout
from components.settings import setting_fields
from components.train_options import DEFAULT_IMAGES, TrainOptions
from pipeline import _cli, _config
from pipeline._search import add_search_arguments, config_from_best_file, search, search_cost_line

DESCRIPTION = """\
Train the DCGAN (the measured default recipe; --recipe seed for the seed tutorial's) on a data
folder written by `python -m pipeline.ingest`, into a run folder:

  <run>/hparams.json     hyperparameters and the data's fingerprint
  <run>/checkpoints/     the last few checkpoints (G, D, EMA generator, optimisers, RNG, step)
  <run>/samples/         step-NNNNNNN.png grids from the EMA generator: images 0..63 of
                         `pipeline.sample --seed 0`; best.png for the best checkpoint
  <run>/logs/            TensorBoard: losses, D's mean logits on reals and fakes, images/s, grids
  <run>/metrics.jsonl    one JSON line per log interval (and per evaluation)
  <run>/export/generator/<version>/   the trained EMA generator as a SavedModel (--no-export: not)

Re-running the same command resumes from the newest checkpoint ("resumed from step N") and
stops at the same step as an uninterrupted run; a larger --images/--epochs trains further.
Different hyperparameters or data for an existing run are an error unless --overwrite.
Multi-worker training: start the same command on every worker with TF_CONFIG set.

At the end the run is exported (components.exporter): the best checkpoint by swd_avg when an
evaluator ran, else the latest; a re-run that trained nothing new does not export again.

--tune first searches hyperparameters with KerasTuner (components.tuner) in <run>/tuner/. It
prints an estimate of its cost, trains the untuned configuration of the flags (the default) with
two seeds, then --max-trials - 2 tuned trials; each training sees --trial-images images from
scratch and scores the mean swd_avg of its last --score-last evaluations on the eval split; a
trial that diverges or crashes is recorded as failed and the search goes on. The best trial is
chosen only if it beats the default's mean by more than the noise (how far its two seeds
differ); otherwise the default is. It writes <run>/tuner/trials.json, the HParams dashboard
<run>/tuner/logs/ and <run>/best_hyperparameters.json, prints the table and the choice, then
trains the chosen configuration for the full budget (evaluated at least at its end) and exports it.
Re-running the same command resumes the search without redoing finished trials. --tune-only
stops after the search; --hparams FILE trains from a saved best file without searching. A
distributed search runs the same command in several processes with KERASTUNER_ORACLE_IP,
KERASTUNER_ORACLE_PORT and KERASTUNER_TUNER_ID: "chief" serves the oracle and trains no trial,
any other id (tuner1, tuner2, ...) asks it for trials and trains them.

examples:
  python -m pipeline.train --data tfrecords/anime --epochs 10
  python -m pipeline.train --data tfrecords/anime --images 200000 --eval-every 20000
  python -m pipeline.train --data tfrecords/anime --tune --max-trials 8 --trial-images 20000 --trial-image-size 32 --epochs 30
  python -m pipeline.train --data tfrecords/anime --tune-only --tuner hyperband --search g_filters=32,64
  python -m pipeline.train --data tfrecords/anime --run artifacts/final --hparams artifacts/anime/best_hyperparameters.json"""


def build_parser() -> argparse.ArgumentParser:
    parser = _cli.make_parser("python -m pipeline.train", DESCRIPTION, "--data DIR [options]", tables=("train", "search"))
    parser.add_argument(
        "--data",
        required=True,
        help="ingested data folder (holds manifest.json and the shards): a local path, or a URI of a Beam file system "
        "(s3://, gs://, ...), copied once into a verified local cache; that file system's options go after --",
    )
    parser.add_argument("--run", type=Path, help="run folder (default: artifacts/<name of the data folder>)")

    budget = parser.add_argument_group(f"budget (one of; default --images {DEFAULT_IMAGES})")
    exclusive = budget.add_mutually_exclusive_group()
    for name in ("epochs", "images"):
        _cli.add_setting(exclusive, TrainOptions, name)
    add_hparam_arguments(parser)

    evaluation = parser.add_argument_group("evaluation (components.evaluator, on the data's eval split)")
    for name in ("eval_every", "eval_num"):
        _cli.add_setting(evaluation, TrainOptions, name)

    add_search_arguments(parser)

    runtime = parser.add_argument_group("runtime (may change between resumptions)")
    for name in (
        "precision",
        "jit",
        "checkpoint_every",
        "keep_checkpoints",
        "sample_every",
        "log_every",
        "steps_per_execution",
        "overwrite",
        "no_export",
    ):
        _cli.add_setting(runtime, TrainOptions, name)
    runtime.add_argument("--quiet", action="store_true", help="no progress bar or messages, only errors")
    return parser


def add_hparam_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainConfig` / `ModelConfig` setting, built from the field (components.settings).
    A recipe sets every field but the run's own (`RUN_FIELDS`), so their flags default to None: the
    --recipe's value, which each flag's help states for every recipe."""
    parser.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        default="default",
        help="default: the measured best recipe (bench/bench_quality.py); seed: the tutorial's recipe, "
        "as the trainer had it before (dropout D, k5 transposed convs, BCE, 2e-4/2e-4). Flags below override it",
    )
    model = parser.add_argument_group("model (image size comes from the data's manifest)")
    for field in setting_fields(ModelConfig):
        _cli.add_setting(model, ModelConfig, field.name, default=None, note=_recipe_note(field.name))
    training = parser.add_argument_group("training")
    for field in setting_fields(TrainConfig):
        if field.name in RUN_FIELDS:
            _cli.add_setting(training, TrainConfig, field.name)
        else:
            _cli.add_setting(training, TrainConfig, field.name, default=None, note=_recipe_note(field.name))


def _recipe_note(name: str) -> str:
    """' (default recipe: X; seed: Y; ...)': the default recipe's value of a TrainConfig or ModelConfig
    field, and every other recipe's where it differs (a flag left out takes its --recipe's value)."""
    values = {recipe: _field_value(config, name) for recipe, config in _recipe_configs().items()}
    others = [f"{recipe}: {value!r}" for recipe, value in values.items() if recipe != "default" and value != values["default"]]
    return f" (default recipe: {'; '.join([repr(values['default']), *others])})"


@functools.cache
def _recipe_configs() -> dict[str, TrainConfig]:
    """Every recipe's configuration, built once for all the flags' help notes."""
    return {recipe: recipe_config(recipe) for recipe in RECIPES}


def _field_value(config: TrainConfig, name: str):
    return getattr(config.model, name) if hasattr(config.model, name) else getattr(config, name)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The --recipe with every flag given on the command line (or with its own default) applied."""
    model = {field.name: getattr(args, field.name) for field in setting_fields(ModelConfig)}
    training = {field.name: getattr(args, field.name) for field in setting_fields(TrainConfig)}
    model = {name: value for name, value in model.items() if value is not None}
    training = {name: value for name, value in training.items() if value is not None}
    return recipe_config(args.recipe, model=model, **training)


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    """The run's options (budget, evaluations, precision, intervals) as the flags give them."""
    return _cli.options_from_args(TrainOptions, args)


def recorded_settings(path: Path, document: object) -> dict[str, dict] | None:
    """`--config` of a JSON record: a run's hparams.json (its hyperparameters, options and data: the
    whole run, to repeat it), or a search's best_hyperparameters.json (applied as --hparams applies it)."""
    from components.runfolder import run_record_problem

    if not isinstance(document, dict):
        return None
    if "chosen" in document:
        return {"train": {"hparams": str(path)}}
    if "hparams" not in document or "data" not in document:
        return None
    problem = run_record_problem(document)
    if problem:
        raise PipelineError(f"--config {path} is not a valid run record: {problem}.")
    hparams = TrainConfig.from_dict(document["hparams"]).to_dict()
    model = {name: value for name, value in hparams.pop("model").items() if name != "image_size"}
    options = document.get("options") if isinstance(document.get("options"), dict) else {}
    return {"train": {**model, **hparams, **options, "data": document["data"]["dir"]}}


def main(argv: Sequence[str] | None = None, tables=None) -> int:
    ours, fs_flags = _cli.split_beam_args(sys.argv[1:] if argv is None else argv)
    args = _config.parse_command_line(build_parser(), ours, tables=tables, records=recorded_settings)
    config = config_from_args(args)  # validates every hyperparameter before TensorFlow loads
    options = options_from_args(args)
    if args.hparams:  # read before any download or lock: a wrong file (a FIFO, a giant) is named at once
        config = config_from_best_file(config, args.hparams, quiet=args.quiet)
    if "://" in str(args.run or ""):
        raise PipelineError(
            f"--run {args.run}: run folders are local paths (or a mounted file system); only --data may be a URI."
        )
    run_dir = args.run or Path("artifacts") / _cli.data_name(args.data)
    args.data = _cli.resolve_data(args.data, fs_flags, quiet=args.quiet)
    guard.output_folder("--run", run_dir, inputs=guard.data_inputs("--data", args.data))
    check_run_layout(RunPaths(run_dir))

    _cli.import_tensorflow_quietly()  # only now: --help and option errors stay instant
    with locks.reading(args.data, "--data"), _run_folder_lock(run_dir):
        evaluator = functools.cache(lambda: make_evaluator(args))  # loaded once, shared by search and training
        tuned = args.tune or args.tune_only
        if tuned:
            started = time.perf_counter()
            config = search(args, config, run_dir, evaluator)
            search_seconds = time.perf_counter() - started
            if config is None:
                return 0
        started = time.perf_counter()
        result, evaluated, chief = train_run(args, config, options, run_dir, evaluator, evaluate=bool(args.eval_every) or tuned)
        if not args.quiet:
            print(_summary(result))
            if tuned:
                print(search_cost_line(search_seconds, time.perf_counter() - started, args.tune_budget))
        if chief and not args.no_export:
            export(run_dir, "best" if evaluated else "latest", quiet=args.quiet)
    return 0


def _run_folder_lock(run_dir: Path):
    """The run folder's lock for the whole command (search, training, export) in the one process that
    writes all of it. Not in a distributed search's workers, which share the folder with their chief
    and each lock only their trials' folders, nor under TF_CONFIG, where the trainer locks it in the
    chief alone (components.trainer)."""
    from components.distribute import cluster_spec_from_env
    from components.search_space import search_role

    if cluster_spec_from_env() is not None or search_role() == "worker":
        return contextlib.nullcontext()
    return locks.writing(run_dir, "--run")


def make_evaluator(args: argparse.Namespace):
    """The evaluator of the data's eval split (real images loaded and described once)."""
    from components.evaluator import TrainingEvaluator

    return TrainingEvaluator(args.data, num=args.eval_num, seed=args.seed)


def train_run(args: argparse.Namespace, config: TrainConfig, options: TrainOptions, run_dir: Path, evaluator, *, evaluate: bool):
    """Train `config` into `run_dir` with the run's `options` (budget, evaluations, runtime).

    With `evaluate`, the chief scores the EMA generator every --eval-every images (if set) and at
    the end. Returns (TrainResult, whether it was evaluated, whether this process is the chief).
    """
    import keras

    from components.distribute import choose_strategy, is_chief
    from components.trainer import train

    strategy = choose_strategy()  # before any other TensorFlow work, as multi-worker training needs
    chief = is_chief(strategy)
    evaluate_fn = evaluator() if evaluate and chief else None
    keras.utils.set_random_seed(config.seed)  # same seed, same initial weights: as a search trial trains
    result = train(config, args.data, run_dir, options, strategy=strategy, evaluate_fn=evaluate_fn, verbose=not args.quiet)
    return result, evaluate_fn is not None, chief


def export(run_dir: Path, checkpoint: str, *, quiet: bool) -> Path:
    """Export `checkpoint` of the run, unless the newest export already holds that very checkpoint
    (a re-run of a finished command trains nothing and should not add an identical version)."""
    from components.exporter import ExportOptions, export_run

    version, exported = export_run(run_dir, ExportOptions(checkpoint=checkpoint), if_changed=True)
    if not quiet:
        state = f"{checkpoint} checkpoint" if exported else f"already holds the {checkpoint} checkpoint"
        print(f"  export:       {version} ({state})")
    return version


def _summary(result) -> str:
    metrics = ", ".join(f"{name} {value:.4g}" for name, value in sorted(result.metrics.items()))
    samples = sorted(RunPaths(result.run_dir).samples.glob("step-*.png"))
    lines = [
        f"done: {result.steps} steps, {result.images_seen} images seen, {result.seconds:.0f} s",
        f"  last metrics: {metrics or '-'}",
        f"  run folder:   {result.run_dir}",
    ]
    if samples:
        lines.append(f"  last grid:    {samples[-1]}")
    return "\n".join(lines)


def console_script() -> None:
    """`python -m pipeline.train` and the `animegan-train` command: `main` with the exit codes and the one
    `error:` line every command shares."""
    _cli.run_main(main, tensorflow=False)


if __name__ == "__main__":
    console_script()
