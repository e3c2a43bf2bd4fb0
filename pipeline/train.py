"""`python -m pipeline.train`: train the DCGAN on ingested TFRecords, resuming where it stopped."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from components import guard, locks
from components.artifacts import RunPaths
from components.augment import AUGMENTS
from components.config import LOSSES, MAX_BATCH_SIZE, MAX_IMAGES, MAX_STEPS, RECIPES, TRAIN_STEPS, TrainConfig, recipe_config
from components.errors import PipelineError
from components.model import D_KERNELS, MAX_FILTERS, MAX_LATENT_DIM, UPSAMPLES, ModelConfig
from components.runfolder import check_run_layout
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

_TRAIN_DEFAULTS = TrainConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = _cli.make_parser("python -m pipeline.train", DESCRIPTION, "--data DIR [options]", tables=("train", "search"))
    parser.add_argument(
        "--data", required=True,
        help="ingested data folder (holds manifest.json and the shards): a local path, or a URI of a Beam file system "
        "(s3://, gs://, ...), copied once into a verified local cache; that file system's options go after --",
    )  # fmt: skip
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
    for name in ("precision", "jit", "checkpoint_every", "keep_checkpoints", "sample_every", "log_every",
                 "steps_per_execution", "overwrite", "no_export"):  # fmt: skip
        _cli.add_setting(runtime, TrainOptions, name)
    runtime.add_argument("--quiet", action="store_true", help="no progress bar or messages, only errors")
    return parser


def add_hparam_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainConfig` / `ModelConfig` field. Fields that differ between recipes default
    to None (the --recipe's value); the others have their one default."""
    parser.add_argument(
        "--recipe", choices=tuple(RECIPES), default="default",
        help="default: the measured best recipe (bench/bench_quality.py); seed: the tutorial's recipe, "
        "as the trainer had it before (dropout D, k5 transposed convs, BCE, 2e-4/2e-4). Flags below override it",
    )  # fmt: skip
    model = parser.add_argument_group("model (image size comes from the data's manifest)")
    model.add_argument(
        "--latent-dim",
        type=_cli.bounded_int(1, MAX_LATENT_DIM),
        help="size of the generator's input noise z" + _recipe_note("latent_dim"),
    )
    model.add_argument(
        "--g-filters",
        type=_cli.bounded_int(1, MAX_FILTERS),
        help="filters of the generator's last block; doubled per block towards the input" + _recipe_note("g_filters"),
    )
    model.add_argument(
        "--d-filters",
        type=_cli.bounded_int(1, MAX_FILTERS),
        help="filters of the discriminator's first block; doubled per block" + _recipe_note("d_filters"),
    )
    model.add_argument(
        "--d-dropout", type=_cli.finite_float,
        help="dropout rate after each discriminator block (0: none)" + _recipe_note("d_dropout"),
    )
    model.add_argument(
        "--init-stddev", type=_cli.finite_float,
        help="std of the N(0, s) initialiser of the convolutions" + _recipe_note("init_stddev"),
    )
    model.add_argument(
        "--g-upsample", choices=UPSAMPLES,
        help="generator up-sampling: transpose5 (k5 stride 2, checkerboard-prone), transpose4 (k4 stride 2) or resize "
        "(nearest x2 then conv)" + _recipe_note("g_upsample"),
    )  # fmt: skip
    model.add_argument(
        "--d-kernel", type=int, choices=D_KERNELS,
        help="kernel size of the discriminator's stride-2 convolutions (the seed's 5; 4 trains about 1.2x faster "
        "on a CPU but scored worse at equal images seen)" + _recipe_note("d_kernel"),
    )  # fmt: skip
    model.add_argument(
        "--d-spectral-norm", action=argparse.BooleanOptionalAction,
        help="spectral normalisation of every discriminator layer" + _recipe_note("d_spectral_norm"),
    )  # fmt: skip
    model.add_argument(
        "--d-minibatch-std", action=argparse.BooleanOptionalAction,
        help="minibatch standard deviation channel before the discriminator's last layer" + _recipe_note("d_minibatch_std"),
    )  # fmt: skip

    training = parser.add_argument_group("training")
    training.add_argument(
        "--batch-size",
        type=_cli.bounded_int(1, MAX_BATCH_SIZE),
        help="global batch size (split over replicas)" + _recipe_note("batch_size"),
    )
    training.add_argument("--g-lr", type=_cli.finite_float, help="generator Adam learning rate" + _recipe_note("g_lr"))
    training.add_argument("--d-lr", type=_cli.finite_float, help="discriminator Adam learning rate" + _recipe_note("d_lr"))
    training.add_argument(
        "--beta-1", type=_cli.finite_float,
        help="Adam beta_1 (momentum) of both optimisers" + _recipe_note("beta_1"),
    )
    training.add_argument(
        "--beta-2", type=_cli.finite_float,
        help="Adam beta_2 of both optimisers: how fast they learn the gradients' scale" + _recipe_note("beta_2"),
    )  # fmt: skip
    training.add_argument(
        "--lr-hold", type=_cli.finite_float, metavar="FRACTION",
        help="fraction of the run's steps at full learning rates; after it both fall linearly to zero at the "
        "last step (1: constant; a resume with a larger budget recomputes the schedule)" + _recipe_note("lr_hold"),
    )  # fmt: skip
    training.add_argument("--loss", choices=LOSSES, help="adversarial loss: bce (non-saturating) or hinge" + _recipe_note("loss"))
    training.add_argument(
        "--label-smoothing", type=_cli.finite_float,
        help="BCE label smoothing (targets 1 -> 1 - s/2, 0 -> s/2)" + _recipe_note("label_smoothing"),
    )
    training.add_argument(
        "--ema-decay", type=_cli.finite_float,
        help="decay of the generator's weight EMA used for samples and export (0: no averaging)" + _recipe_note("ema_decay"),
    )
    training.add_argument(
        "--ema-warmup", type=_cli.finite_float,
        help="EMA warm-up: decay = min(ema-decay, (1+n)/(warmup+n)) at G update n" + _recipe_note("ema_warmup"),
    )
    training.add_argument(
        "--augment", metavar="POLICY",
        help="DiffAugment of the discriminator's real and fake inputs: comma-separated subset of "
        f"{','.join(AUGMENTS)}, or '' for none" + _recipe_note("augment"),
    )  # fmt: skip
    training.add_argument(
        "--ada-target", type=_cli.finite_float, metavar="SIGN",
        help="adaptive augmentation: augment a share of images steered so that D's mean sign on reals stays near "
        "this (0.6 is StyleGAN2-ADA's); 0 augments every image" + _recipe_note("ada_target"),
    )  # fmt: skip
    training.add_argument(
        "--ada-images", type=_cli.bounded_int(1, MAX_IMAGES), metavar="IMAGES",
        help="with --ada-target: images seen for the augmented share to move from 0 to 100%%" + _recipe_note("ada_images"),
    )  # fmt: skip
    training.add_argument(
        "--mirror", action=argparse.BooleanOptionalAction,
        help="flip each real image left-right with probability 1/2 (twice the distinct faces)" + _recipe_note("mirror"),
    )  # fmt: skip
    training.add_argument(
        "--r1-gamma", type=_cli.finite_float,
        help="weight of the R1 gradient penalty on real images (0: off)" + _recipe_note("r1_gamma"),
    )
    training.add_argument(
        "--r1-every",
        type=_cli.bounded_int(1, MAX_STEPS),
        help="lazy R1: apply the penalty every this many D updates" + _recipe_note("r1_every"),
    )
    training.add_argument(
        "--seed", type=_cli.seed, default=_TRAIN_DEFAULTS.seed,
        help="seeds the initial weights, the order of the training data and the training latents; also the "
        "evaluator's latents and the search's oracle (the sample grids always show images 0..63 of seed 0)",
    )  # fmt: skip
    training.add_argument(
        "--train-step", choices=TRAIN_STEPS, default=_TRAIN_DEFAULTS.train_step,
        help="dcgan: one D and one G update per batch; seed: the tutorial's loop (2 rounds of D-fake, D-real, G)",
    )  # fmt: skip


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
    model_names = {field.name for field in dataclasses.fields(ModelConfig)} - {"image_size"}
    train_names = {field.name for field in dataclasses.fields(TrainConfig)} - {"model"}
    model = {name: getattr(args, name) for name in model_names if getattr(args, name) is not None}
    training = {name: getattr(args, name) for name in train_names if getattr(args, name) is not None}
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
