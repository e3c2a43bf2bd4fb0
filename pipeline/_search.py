"""The `--tune` part of `python -m pipeline.train`: its flags, the search, what it prints.

Before the search: an estimate of its cost (components.search_cost). After it: the table with the
default configuration's row, the search's time, the choice (a tuned trial only if it beats the
default by more than the noise) and its gain over the default. `--hparams FILE` reads a best
file back through `config_from_best_file`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.artifacts import RunPaths
from components.config import SEARCH_LIMITS, TrainConfig
from components.errors import PipelineError
from components.search_settings import SearchSettings
from pipeline._cli import add_setting, bounded_float, bounded_int, options_from_args

DEFAULT_MAX_TRIALS = 10
MAX_BUDGET_MULTIPLE = 100.0  # a search a hundred times the final training's time is weeks of a run of days


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the KerasTuner search (components.tuner); the model/training flags are its base."""
    search = parser.add_argument_group("hyperparameter search (KerasTuner, objective swd_avg on the eval split)")
    mode = search.add_mutually_exclusive_group()
    mode.add_argument(
        "--tune",
        action="store_true",
        help="search, then train the chosen configuration (the best trial if it beats the default by more than the noise, "
        "else the default) for the budget above",
    )
    mode.add_argument("--tune-only", action="store_true", help="search and write best_hyperparameters.json, train nothing more")
    mode.add_argument(
        "--hparams",
        type=Path,
        metavar="FILE",
        help="train with the tuned values of a best_hyperparameters.json (no search; none if it chose the default)",
    )
    add_setting(search, SearchSettings, "tuner")
    add_budget_arguments(search)
    for name in (
        "score_last",
        "executions_per_trial",
        "hyperband_max_epochs",
        "hyperband_factor",
    ):
        add_setting(search, SearchSettings, name)
    search.add_argument(
        "--search",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="override one search dimension, NAME being a model or training flag in snake_case: choices "
        "(g_filters=16,32,64), a range (g_lr=5e-5..1e-3:log; sampling linear, log or reverse_log) or a fixed value "
        "(beta_1=0.5); repeatable, applied after --search-file. The default space is centred on the configuration the "
        "other flags give: filters halved and doubled, learning rates from half to twice theirs, batch size halved and "
        "doubled, spectral norm on and off, R1 off or x10, beta_1 0 or 0.5, DiffAugment (color,translation,cutout) on "
        "and off; for the default recipe: g_filters=16,32,64 d_filters=16,32,64 g_lr=2e-4..8e-4:log "
        "d_lr=4e-4..1.6e-3:log batch_size=8,16,32 d_spectral_norm=false,true r1_gamma=0,0.1,1 beta_1=0,0.5; "
        "other fields keep the flags' values",
    )
    search.add_argument(
        "--search-file",
        type=Path,
        metavar="FILE",
        help='JSON object of NAME: SPEC overriding the default space, e.g. {"g_filters": [16, 32], '
        '"g_lr": {"min": 1e-4, "max": 1e-3, "sampling": "log"}, "beta_1": 0.5}',
    )
    search.add_argument(
        "--overwrite-search", action="store_true", help="discard an earlier search in <run>/tuner/ instead of resuming it"
    )


def add_budget_arguments(group, note: str = "") -> None:
    """The search's budget flags (trials, time, a trial's images and size), which `pipeline.run`
    passes on too; `note` ends each help (there: that they need --tune)."""
    group.add_argument(
        "--max-trials",
        type=bounded_int(*SEARCH_LIMITS["max_trials"]),
        metavar="N",
        help="the search's budget in trials: the default configuration's 2 trainings (seeds --seed and --seed+1, which "
        "also measure the noise) + N-2 tuned trials; at least 3 (may grow when resuming; caps hyperband too); "
        f"default {DEFAULT_MAX_TRIALS}, or no cap but --tune-budget's when that is given" + note,
    )
    group.add_argument(
        "--tune-budget",
        type=bounded_float(0, MAX_BUDGET_MULTIPLE, low_included=False),
        metavar="X",
        help="the search's budget in time, as a multiple of the final training's (1.0: the search, the default's row "
        "included, may take as long as the final training); estimated from a speed probe before the search, which stops "
        "itself before a trial would cross it; the time spent is printed after" + note,
    )
    for name in ("trial_images", "trial_image_size"):
        add_setting(group, SearchSettings, name, note=note)


def search(args: argparse.Namespace, base: TrainConfig, run_dir: Path, evaluator) -> TrainConfig | None:
    """Run (or resume) the search; the chosen configuration to train next, or None when this
    process is done (--tune-only, or a worker of a distributed search)."""
    from components.distribute import cluster_spec_from_env
    from components.search_report import format_table
    from components.search_space import load_space_file, make_space, parse_space_override, search_role
    from components.search_run import check_trial_image_size, run_search

    if cluster_spec_from_env() is not None:
        raise PipelineError("--tune does not run under TF_CONFIG; distribute a search with the KERASTUNER_* variables.")
    max_trials = args.max_trials or (SEARCH_LIMITS["max_trials"][1] if args.tune_budget else DEFAULT_MAX_TRIALS)
    final_images = _final_images(args)
    settings = options_from_args(SearchSettings, args, max_trials=max_trials, seed=args.seed, final_images=final_images)
    file_space = load_space_file(args.search_file) if args.search_file else None
    space = make_space(base, file_space, [parse_space_override(entry) for entry in args.search])
    role = search_role()
    if args.tune_budget is not None and role != "single":
        raise PipelineError("--tune-budget needs a search on one machine; cap a distributed search with --max-trials.")
    check_trial_image_size(args.data, settings.trial_image_size)
    train_options = {"precision": args.precision, "jit": args.jit, "log_every": args.log_every, "sample_every": args.sample_every}
    fresh = args.overwrite_search or not (RunPaths(run_dir).tuner / "search.json").is_file()  # a resumed search has paid in part
    confirm_speeds = None
    if args.tune_budget is not None or (role == "single" and fresh and not args.quiet):
        estimate = _cost_estimate(args, base, settings)
        confirm_speeds = (estimate.trial_images_per_sec, estimate.final_images_per_sec)
        if args.tune_budget is not None:
            settings = dataclasses.replace(settings, budget_seconds=args.tune_budget * estimate.final_seconds)
        if fresh and not args.quiet:
            print(estimate.describe(settings, final=not args.tune_only))
    if settings.trial_image_size is None:
        load = evaluator
    else:
        load = functools.cache(lambda: trial_evaluator(args, settings.trial_image_size))
    result = run_search(
        base,
        space,
        args.data,
        run_dir,
        settings,
        evaluate_fn=_LoadedAtFirstUse(load) if role == "chief" else load(),
        confirm_evaluate_fn=_LoadedAtFirstUse(evaluator),  # the data's size: loaded only if a trial wins at a smaller one
        confirm_speeds=confirm_speeds,
        evaluation={"num": args.eval_num, "seed": args.seed, "split": "eval"},
        train_options=train_options,
        new_search=args.overwrite_search,
        verbose=not args.quiet,
    )
    if result is None:
        if not args.quiet:
            print(f"worker done: the chief has no more trials; it writes the results to {RunPaths(run_dir).tuner}")
        return None
    best = result.best
    if not args.quiet:
        print(format_table(result.rows, best["trial_id"] if best else None))
    if best is None:
        raise PipelineError(f"no trial of the search completed; see {result.table_path} for the reasons.")
    if not args.quiet:
        print(_search_summary(result, tune_only=args.tune_only, budget_seconds=settings.budget_seconds))
    if args.tune_only:
        return None
    return config_from_best_file(base, result.best_path, quiet=args.quiet)


class _LoadedAtFirstUse:
    """An evaluator loaded when it first scores: a chief scores only the default's row, after its
    workers are done, and must mark the run folder as a search's before they write into it
    (loading the eval split first would give them a head start)."""

    def __init__(self, load: Callable[[], Any]):
        self.load = load

    def __call__(self, generator) -> dict[str, float]:
        return self.load()(generator)

    @property
    def request(self) -> dict[str, Any]:
        return self.load().request


def trial_evaluator(args: argparse.Namespace, image_size: int):
    """The evaluator of the trials at --trial-image-size: the eval split downscaled as they train."""
    from components.evaluator import TrainingEvaluator

    return TrainingEvaluator(args.data, num=args.eval_num, seed=args.seed, image_size=image_size)


def _cost_estimate(args: argparse.Namespace, base: TrainConfig, settings):
    """What the search and the final training will take (a `components.search_cost.CostEstimate`):
    speed probes of the base configuration at the trial and the data's image size. With
    --tune-only the final training is the one --images / --epochs describe, trained later."""
    from components.records import read_manifest
    from components.search_cost import confirmation_cost, estimate_cost, measure_speed

    size = int(read_manifest(args.data)["image_size"])
    trial_size = settings.trial_image_size or size
    trial_speed = measure_speed(base, trial_size, precision=args.precision, jit=args.jit)
    final_speed = trial_speed if trial_size == size else measure_speed(base, size, precision=args.precision, jit=args.jit)
    confirmation = confirmation_cost(settings, size, (trial_speed, final_speed))
    return estimate_cost(settings, trial_speed, settings.final_images, final_speed, confirmation=confirmation)


def _final_images(args: argparse.Namespace) -> int:
    """The final training's images (--images, or --epochs over the data's train split): with
    --tune-only, the training --hparams runs later with the same flags."""
    from components.records import read_manifest
    from components.train_options import TrainOptions

    return TrainOptions(images=args.images, epochs=args.epochs).budget(int(read_manifest(args.data)["splits"]["train"]["count"]))


def search_cost_line(search_seconds: float, final_seconds: float, budget_multiple: float | None) -> str:
    """After the final training: what the search cost, measured, against that training (and its budget)."""
    ratio = search_seconds / final_seconds if final_seconds > 0 else math.inf
    budget = f" (budget {budget_multiple:g} x)" if budget_multiple is not None else ""
    return (
        f"search {search_seconds:.0f} s, final training {final_seconds:.0f} s: "
        f"the search cost {ratio:.2f} x the final training{budget}"
    )


def _search_summary(result, *, tune_only: bool, budget_seconds: float | None = None) -> str:
    """After the table: the search's time, what was chosen and why, the gain over the default."""
    best = result.best
    confirmation = best.get("confirmation")
    confirmed_rows = [confirmation[name] for name in ("default", "trial") if name in (confirmation or {})]
    trainings = sum(row["seconds"] or 0 for row in [*result.rows, *confirmed_rows])
    budget = f" of a budget of {budget_seconds:.0f} s" if budget_seconds is not None else ""
    lines = [f"search: {result.wall_seconds:.0f} s wall time here ({trainings:.0f} s of trainings over all its runs{budget})"]
    if best["chosen"] == "default":
        lines.append(f"{best['reason']}; {'keeping' if tune_only else 'training'} the default configuration")
    else:
        lines.append(f"chosen: {best['reason']}")
    if best["best_trial"] is not None and best["default"]["swd_avg"]:
        trial_ratio = best["best_trial"]["swd_avg"] / best["default"]["swd_avg"]
        lines.append(
            f"gain over the default: swd_avg x{best['ratio_to_default']:.3f} for the chosen configuration, "
            f"x{trial_ratio:.3f} for the best trial (lower is better)"
        )
    lines.append(f"best file: {result.best_path}")
    return "\n".join(lines)


def config_from_best_file(base: TrainConfig, path: Path, *, quiet: bool) -> TrainConfig:
    from components.search_report import config_from_best

    config, notes = config_from_best(base, path)
    if not quiet:
        for note in notes:
            print(f"note: {note}")
    return config
