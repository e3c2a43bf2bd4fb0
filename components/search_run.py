"""Running a search: the folder, the default's row, KerasTuner's trials, the confirmation as the
final training runs and the results, in that order (`run_search`); the trials themselves are
`components.tuner.DCGANTuner`'s, each one `components.search_hypermodel`'s."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

from components.artifacts import RunPaths
from components.config import TrainConfig
from components.errors import PipelineError
from components.search_console import quiet_trial_failures
from components.search_cost import confirmation_cost
from components.search_folder import prepare_search_folder, wait_for_chief
from components.search_hypermodel import DCGANHyperModel, EvaluateFn
from components.search_report import TRIAL_RESULT, SearchResult, search_rows, write_search_results
from components.search_space import SearchSettings, make_oracle, neighbours, search_role
from components.tuner import DCGANTuner


def run_search(
    base: TrainConfig,
    space: Mapping[str, Any],
    data_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    settings: SearchSettings,
    *,
    evaluate_fn: EvaluateFn | None,
    confirm_evaluate_fn: EvaluateFn | None = None,
    confirm_speeds: tuple[float, float] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    train_options: Mapping[str, Any] | None = None,
    new_search: bool = False,
    verbose: bool = True,
) -> SearchResult | None:
    """Search (or resume searching) in `<run_dir>/tuner/`; return the table and the chosen configuration.

    First the default configuration (`base`) is trained with two seeds (`DCGANTuner.train_default`),
    then KerasTuner's trials; the best trial is chosen only if it beats the default by more than
    the noise (components.search_report). `evaluate_fn` scores generators at the trial image size
    (`TrainingEvaluator(..., image_size=settings.trial_image_size)`); `evaluation` describes it
    (e.g. its num and seed) for the record: a resumed search must score the same way. With trials
    smaller or shorter than the final training (`settings.final_images`) and an evaluator at the
    data's size (`confirm_evaluate_fn`; `evaluate_fn` when the trials train at that size), a
    trial that wins is trained again beside the default at the data's size for the final
    training's images before it is chosen (`DCGANTuner.confirm_a_winner`: the best trial whose
    confirmation the budget holds), and a budget keeps the time
    that takes: `confirm_speeds` are the base configuration's images/s at the trial size and at
    the data's (speed probes); without them the cost is estimated from the ratio of pixels, which
    overestimates it on a CPU.
    """
    from components.records import read_manifest

    started = time.perf_counter()
    role = search_role()
    paths = RunPaths(run_dir)
    manifest = read_manifest(data_dir)
    check_trial_image_size(data_dir, settings.trial_image_size)
    record = {
        "settings": settings.record(),
        "space": dict(space),
        "base_config": base.to_dict(),
        "evaluation": dict(evaluation or {}),
        "data_fingerprint": manifest.get("fingerprint"),
    }
    if role == "worker":
        wait_for_chief(paths)
    else:
        prepare_search_folder(paths, record, new_search)
    hypermodel = DCGANHyperModel(
        base,
        space,
        data_dir,
        evaluate_fn,
        settings,
        train_options={**(train_options or {}), "keep_checkpoints": 1},
    )
    data_size = int(manifest["image_size"])
    if confirm_evaluate_fn is None and settings.trial_image_size in (None, data_size):
        confirm_evaluate_fn = evaluate_fn  # trials score at the data's size already
    confirmation = confirmation_cost(settings, data_size, confirm_speeds) if confirm_evaluate_fn is not None else None
    full_size = None
    if confirmation is not None:  # trials smaller or shorter: a winner is trained again as the final training runs
        full_size = DCGANHyperModel(
            base,
            space,
            data_dir,
            confirm_evaluate_fn,
            dataclasses.replace(settings, trial_image_size=None),
            train_options=hypermodel.train_options,
        )
    try:  # reloads KerasTuner's state files when resuming
        oracle = make_oracle(settings, neighbours(base, space))
        tuner = DCGANTuner(oracle, hypermodel, paths.root, settings, confirmation=confirmation, verbose=verbose)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise PipelineError(
            f"KerasTuner cannot reload its record of the search in {paths.tuner} ({type(err).__name__}: {err}); "
            "a file there is damaged. Pass `overwrite_search` to start the search again."
        ) from err
    if role == "single":
        tuner.train_default()
    if role == "chief" and verbose:
        print(
            f"chief: serving the search on {os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}; "
            "start workers with the same command and their own KERASTUNER_TUNER_ID"
        )
    try:
        with quiet_trial_failures():
            if role != "single" or not tuner.over_budget():
                tuner.search(verbose=1 if verbose else 0)
    except RuntimeError as err:
        if "consecutive failures" not in str(err):
            raise
        raise PipelineError(
            f"the search stopped: {str(err).splitlines()[0]} See {paths.tuner}/trial_*/{TRIAL_RESULT} for the reasons."
        ) from err
    if role == "worker":
        return None
    if role == "chief":
        tuner.train_default()
    rows = search_rows(tuner.oracle, paths, settings, base, space)
    confirmed = None if full_size is None else tuner.confirm_a_winner(rows, full_size, data_size)
    result = write_search_results(rows, paths, settings, base, space, confirmed)
    return dataclasses.replace(result, wall_seconds=time.perf_counter() - started)


def check_trial_image_size(data_dir: str | os.PathLike, trial_size: int | None) -> None:
    """A trial image size must be one the models are built for and divide the data's size."""
    from components.model import IMAGE_SIZES
    from components.records import downscale_factor, read_manifest

    if trial_size is None:
        return
    if trial_size not in IMAGE_SIZES:
        raise PipelineError(
            f"trial-image-size must be one of the models' sizes ({', '.join(map(str, IMAGE_SIZES))}), got {trial_size}."
        )
    downscale_factor(data_dir, int(read_manifest(data_dir)["image_size"]), trial_size)
