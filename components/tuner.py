"""Hyperparameter search for the DCGAN with KerasTuner: every trial is a real, resumable training run.

How the pieces fit:

- The search space (components.search_space) maps names of `TrainConfig` / `ModelConfig` fields
  to KerasTuner hyperparameters.
- `DCGANHyperModel.build(hp)` turns a trial's values into a `TrainConfig`: a light object, since
  the trainer builds the networks itself and a GAN built here would be thrown away.
  `DCGANHyperModel.fit` trains that config with `components.trainer.train` for the trial's image
  budget and returns the evaluator's `swd_avg` on the eval split (the objective, lower is better).
- `DCGANTuner` subclasses KerasTuner's `BaseTuner`, not `Tuner`: `Tuner.run_trial` wraps
  `model.fit` with Keras callbacks (`SaveBestEpoch` saves a plain Keras model's weights every
  epoch) and insists that `build` returns a `keras.Model`, while our trials train through the
  trainer, which checkpoints, resumes and detects NaN on its own. The oracles (random, Bayesian,
  Hyperband), the state files, resuming, the failed-trial limit and the chief/worker mode
  (`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`) are KerasTuner's own.

A trial that diverges (the trainer raises `TrainingDiverged`) or crashes is reported to the oracle as
failed with its reason, and the search goes on until KerasTuner's limit of consecutive failures.
Hyperband's epochs are units of `trial_images / hyperband_max_epochs` images; a trial that
continues an earlier one starts from a copy of that trial's run folder, so it resumes from its
checkpoint instead of training again from scratch.

Files, all under `<run>/tuner/` (KerasTuner's project folder) except the best file:

    oracle.json, tuner0.json, trial_<id>/trial.json   KerasTuner's state; a re-run resumes from it
    search.json                                        the search settings; a re-run must match
    trial_<id>/execution-<k>/                          one trainer run folder per execution
    trial_<id>/best.png                                grid from the trial's best checkpoint
    trial_<id>/result.json                             status, swd_avg, seconds, failure reason
    trials.json                                        the table of all trials
    <run>/best_hyperparameters.json                    the best trial's values and full config
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import json
import math
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import keras_tuner

from components.artifacts import (
    RunPaths,
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    changed_settings,
    read_json,
    remove_stale_temporaries,
)
from components.config import TrainConfig
from components.errors import PipelineError
from components.runfolder import BEST, check_run_folder_is_ours
from components.runfolder import EVAL_OBJECTIVE as OBJECTIVE
from components.search_report import TRIAL_GRID, TRIAL_RESULT, SearchResult, write_search_results
from components.search_space import SearchSettings, apply_values, declare, make_oracle, search_role

PROJECT_NAME = "tuner"  # KerasTuner's project folder: <run>/tuner (RunPaths.tuner)
SEARCH_RECORD = "search.json"

EvaluateFn = Callable[[Any], dict[str, float]]


# -- the hypermodel and the tuner -----------------------------------------------------------------


class DCGANHyperModel(keras_tuner.HyperModel):
    """The DCGAN as a search space: `build(hp)` gives a `TrainConfig`, `fit` trains and scores it."""

    def __init__(
        self,
        base: TrainConfig,
        space: Mapping[str, Any],
        data_dir: str | os.PathLike,
        evaluate_fn: EvaluateFn | None,
        *,
        eval_every: int | None = None,
        train_options: Mapping[str, Any] | None = None,
    ):
        super().__init__(name="dcgan")
        self.base, self.space, self.data_dir = base, dict(space), Path(data_dir)
        self.evaluate_fn, self.eval_every = evaluate_fn, eval_every
        self.train_options = dict(train_options or {})

    def build(self, hp: keras_tuner.HyperParameters) -> TrainConfig:
        return apply_values(self.base, {name: declare(hp, name, spec) for name, spec in self.space.items()})

    def fit(self, hp, config: TrainConfig, *, run_dir: Path, images: int, verbose: bool = True) -> dict[str, float]:
        """Train `config` in `run_dir` (resuming what is there) to `images` images; the best swd_avg."""
        import keras

        from components.trainer import train

        if self.evaluate_fn is None:
            raise PipelineError("a search needs an evaluator: the trials are ranked by swd_avg on the eval split.")
        keras.backend.clear_session()  # each trial builds new networks; free the last one's graphs
        gc.collect()
        keras.utils.set_random_seed(config.seed)  # same seed, same initial weights: trials compare
        result = train(
            config, self.data_dir, run_dir, images=images, evaluate_fn=self.evaluate_fn,
            eval_every=self.eval_every, verbose=verbose, **self.train_options,
        )  # fmt: skip
        swd = result.best_swd if result.best_swd is not None else result.metrics.get(OBJECTIVE)
        if swd is None or not math.isfinite(swd):
            raise PipelineError(f"the evaluator gave no finite {OBJECTIVE} for {run_dir}.")
        scores = {OBJECTIVE: float(swd), "images_seen": float(result.images_seen)}
        if f"{OBJECTIVE}_floor" in result.metrics:
            scores[f"{OBJECTIVE}_floor"] = float(result.metrics[f"{OBJECTIVE}_floor"])
        return scores


class DCGANTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """Runs each trial through `DCGANHyperModel.fit`; KerasTuner's Keras-model machinery is skipped."""

    def __init__(
        self,
        oracle: keras_tuner.Oracle,
        hypermodel: DCGANHyperModel,
        run_dir: str | os.PathLike,
        settings: SearchSettings,
        *,
        verbose: bool = True,
    ):
        super().__init__(oracle, hypermodel, directory=str(run_dir), project_name=PROJECT_NAME)
        self.settings, self.verbose = settings, verbose
        # Save at once: a search interrupted in its first trial then resumes instead of restarting.
        self.save()

    def run_trial(self, trial, *args, **kwargs) -> list[dict[str, float]]:
        """Train every execution of `trial`; KerasTuner averages the returned metrics."""
        hp = trial.hyperparameters
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        images = self.settings.trial_budget(hp.values)
        started = time.perf_counter()
        try:
            config = self.hypermodel.build(hp)
            scores = []
            for execution in range(self.settings.executions_per_trial):
                run_dir = trial_dir / f"execution-{execution}"
                if "tuner/trial_id" in hp.values:
                    self._continue_from(hp.values["tuner/trial_id"], run_dir)
                seeded = dataclasses.replace(config, seed=config.seed + execution)
                scores.append(self.hypermodel.fit(hp, seeded, run_dir=run_dir, images=images, verbose=self.verbose))
        except Exception as err:  # noqa: BLE001 - any crash fails this trial, not the search
            reason = _reason(err)
            seconds = time.perf_counter() - started
            atomic_write_json(
                trial_dir / TRIAL_RESULT,
                {"status": "FAILED", "reason": reason, "images": images, "seconds": seconds, "traceback": traceback.format_exc()},
            )
            if self.verbose:
                print(f"trial {trial.trial_id} failed after {seconds:.0f} s: {reason}")
            raise keras_tuner.errors.FailedTrialError(reason) from None  # the traceback is in result.json
        seconds = time.perf_counter() - started
        mean = sum(score[OBJECTIVE] for score in scores) / len(scores)
        if self.verbose and self._is_worker():  # on a worker nothing else reports the trial
            print(f"{self.tuner_id}: trial {trial.trial_id} done in {seconds:.0f} s, {OBJECTIVE} {mean:.4g}")
        best = min(range(len(scores)), key=lambda k: scores[k][OBJECTIVE])
        self._keep_grid(trial_dir / f"execution-{best}", trial_dir / TRIAL_GRID)
        atomic_write_json(
            trial_dir / TRIAL_RESULT,
            {"status": "COMPLETED", OBJECTIVE: mean, "executions": scores, "images": images, "seconds": seconds, "grid": TRIAL_GRID},
        )
        return [{**score, "seconds": seconds} for score in scores]

    def _continue_from(self, past_trial_id: str, run_dir: Path) -> None:
        """Start a Hyperband continuation from a copy of the earlier trial's run folder (once)."""
        if run_dir.exists():
            return  # an interrupted continuation: the trainer resumes from its own checkpoint
        past = Path(self.get_trial_dir(past_trial_id)) / run_dir.name
        if not past.is_dir():
            raise PipelineError(
                f"Hyperband continues trial {past_trial_id} but {past} does not exist here "
                "(distributed Hyperband needs the run folder on a filesystem every worker shares)."
            )
        with atomic_directory(run_dir) as tmp:
            shutil.copytree(past, tmp, dirs_exist_ok=True)

    @staticmethod
    def _keep_grid(run_dir: Path, path: Path) -> None:
        """The trial's grid: the one the trainer drew of its best checkpoint (images 0..63 of seed
        0, the same latents for every trial, so the grids compare)."""
        grid = RunPaths(run_dir).samples / f"{BEST}.png"
        if grid.is_file():
            atomic_write_bytes(path, grid.read_bytes())

    def save_model(self, trial_id, model, step=0):
        """Trials keep their own checkpoints in their run folders; nothing else to save."""

    def load_model(self, trial):
        raise NotImplementedError("trained trials live in <run>/tuner/trial_<id>/execution-<k>/ (components.trainer.restore_generator)")


def _reason(err: Exception) -> str:
    """One line saying why a trial failed: the trainer's message, or the exception type and text."""
    if isinstance(err, PipelineError):
        return str(err)
    return f"{type(err).__name__}: {err}".strip().splitlines()[0] if str(err) else type(err).__name__


# -- running a search -----------------------------------------------------------------------------


def run_search(
    base: TrainConfig,
    space: Mapping[str, Any],
    data_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    settings: SearchSettings,
    *,
    evaluate_fn: EvaluateFn | None,
    evaluation: Mapping[str, Any] | None = None,
    train_options: Mapping[str, Any] | None = None,
    new_search: bool = False,
    verbose: bool = True,
) -> SearchResult | None:
    """Search (or resume searching) in `<run_dir>/tuner/`; return the table and the best trial.

    `evaluation` describes `evaluate_fn` (e.g. its num and seed) for the record: a resumed search
    must score the same way. `train_options` go to every trial's `train` call (precision, jit,
    intervals). `new_search` discards an earlier search in that folder. A worker of a distributed
    search returns None once the chief has no more trials for it; the chief (which trains
    nothing, so needs no `evaluate_fn`) returns the result once every worker is done.
    """
    from components.records import read_manifest

    role = search_role()
    paths = RunPaths(run_dir)
    manifest = read_manifest(data_dir)
    record = {
        "settings": settings.record(),
        "space": dict(space),
        "base_config": base.to_dict(),
        "evaluation": dict(evaluation or {}),
        "data_fingerprint": manifest.get("fingerprint"),
    }
    if role != "worker":
        check_run_folder_is_ours(paths)
        _check_same_search(paths, record, new_search)
        atomic_write_json(paths.tuner / SEARCH_RECORD, record)  # first: it marks the folder as a search of ours
        _check_tuner_state(paths.tuner)
        for folder in (paths.tuner, *paths.tuner.glob("trial_*")):
            remove_stale_temporaries(folder)  # a trial's half-written files or half-copied run of a killed search
    hypermodel = DCGANHyperModel(
        base, space, data_dir, evaluate_fn,
        eval_every=settings.eval_every, train_options={**(train_options or {}), "keep_checkpoints": 1},
    )  # fmt: skip
    tuner = DCGANTuner(make_oracle(settings), hypermodel, paths.root, settings, verbose=verbose)
    if role == "chief" and verbose:
        print(
            f"chief: serving the search on {os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}; "
            "start workers with the same command and their own KERASTUNER_TUNER_ID"
        )
    try:
        with _quiet_trial_failures():
            tuner.search(verbose=1 if verbose else 0)
    except RuntimeError as err:
        if "consecutive failures" not in str(err):
            raise
        raise PipelineError(
            f"the search stopped: {str(err).splitlines()[0]} See {paths.tuner}/trial_*/{TRIAL_RESULT} for the reasons."
        ) from err
    if role == "worker":
        return None
    return write_search_results(tuner.oracle, paths, settings, base)


@contextlib.contextmanager
def _quiet_trial_failures() -> Iterator[None]:
    """Keep KerasTuner from printing a traceback per failed trial (it prints every one to stderr):
    a diverged trial is an expected outcome; `run_trial` prints one line and keeps the traceback
    in the trial's result.json. Other output, and tracebacks of anything else, pass through."""
    saved, sys.stderr = sys.stderr, _FailedTrialTracebackFilter(sys.stderr)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = saved


class _FailedTrialTracebackFilter(io.TextIOBase):
    """A text stream that drops whole tracebacks ending in a `FailedTrialError` line."""

    def __init__(self, stream):
        self.stream, self.held = stream, ""

    def write(self, text: str) -> int:
        if not self.held and not text.startswith("Traceback (most recent call last):"):
            return self.stream.write(text)
        self.held += text
        if self.held.endswith("\n"):
            last = self.held.rstrip("\n").rsplit("\n", 1)[-1]
            if last and not last[0].isspace() and not last.startswith("Traceback"):  # the exception line
                if "FailedTrialError: " not in last:
                    self.stream.write(self.held)
                self.held = ""
        return len(text)

    def flush(self) -> None:
        if self.held:
            self.stream.write(self.held)
            self.held = ""
        self.stream.flush()


def _check_tuner_state(tuner_dir: Path) -> None:
    """KerasTuner's own state files (it writes them in place, not atomically) must parse, or
    reloading them would fail deep inside KerasTuner: name a damaged one instead."""
    for path in [tuner_dir / "oracle.json", *tuner_dir.glob("tuner*.json"), *tuner_dir.glob("trial_*/trial.json")]:
        if not path.is_file():
            continue
        try:
            json.loads(path.read_text())
        except ValueError as err:
            raise PipelineError(
                f"{path}, KerasTuner's record of the search, is damaged (a write cut short by a crash?): {err}. "
                "Pass --new-search to start the search again."
            ) from err


def _check_same_search(paths: RunPaths, record: dict, new_search: bool) -> None:
    """Resume only the same search; `new_search` discards the tuner folder (all of it ours)."""
    path = paths.tuner / SEARCH_RECORD
    if new_search:
        shutil.rmtree(paths.tuner, ignore_errors=True)
        paths.best_hyperparameters.unlink(missing_ok=True)
        return
    if not path.is_file():
        return
    try:
        saved = read_json(path)
    except ValueError as err:
        raise PipelineError(f"{path} is damaged ({err}); pass --new-search to start the search again.") from err
    changes = changed_settings(saved, json.loads(json.dumps(record)))  # the record as JSON sees it
    if changes:
        raise PipelineError(
            f"{paths.tuner} holds a search with other settings ({path}): " + "; ".join(changes)
            + ". Re-run with the same settings to resume it (only --max-trials may change), "
            "choose another run folder, or pass --new-search to discard it."
        )
