"""Hyperparameter search for the DCGAN with KerasTuner: every trial is a real, resumable training run.

How the pieces fit:

- The search space (components.search_space) maps names of `TrainConfig` / `ModelConfig` fields
  to KerasTuner hyperparameters.
- A trial is `components.search_hypermodel`: `DCGANHyperModel.build(hp)` turns a trial's values
  into a `TrainConfig`, and `DCGANHyperModel.fit` trains that config with
  `components.trainer.train` for the trial's image budget (at the trial image size) and returns
  `run_score`: the mean `swd_avg` of its last few evaluations on the eval split (the objective,
  lower is better).
- `DCGANTuner` subclasses KerasTuner's `BaseTuner`, not `Tuner`: `Tuner.run_trial` wraps
  `model.fit` with Keras callbacks (`SaveBestEpoch` saves a plain Keras model's weights every
  epoch) and insists that `build` returns a `keras.Model`, while our trials train through the
  trainer, which checkpoints, resumes and detects NaN on its own. The oracles (random, Bayesian,
  Hyperband), the state files, resuming, the failed-trial limit and the chief/worker mode
  (`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`) are KerasTuner's own.
- Before the trials, `DCGANTuner.train_default` trains the untuned base configuration the same
  way with two seeds: the row every trial must beat by more than the seed-to-seed noise
  (components.search_report chooses).

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
    trial_<id>/result.json                             status, swd_avg, each execution's scores, seconds, failure reason
    baseline/execution-{0,1}/, best.png, result.json   the same for the default configuration (seeds seed, seed+1)
    confirm/default/, confirm/trial_<id>/              the best trial and the default again at the data's size
    trials.json                                        the table: the default's row, then every trial
    logs/<row id>/                                     TensorBoard's HParams dashboard (components.search_dashboard)
    <run>/best_hyperparameters.json                    the chosen configuration, the default's score and the noise
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras_tuner

from components.artifacts import RunPaths, atomic_directory, atomic_write_bytes, atomic_write_json
from components.checkpoints import BEST
from components.config import DEFAULT_TRAININGS, TrainConfig
from components.errors import PipelineError
from components.runfolder import EVAL_OBJECTIVE as OBJECTIVE
from components.search_cost import ConfirmationCost, search_spending
from components.search_folder import CONFIRM_DIR, DEFAULT_DIR, PROBE_RECORD, read_probes, read_result
from components.search_hypermodel import DCGANHyperModel
from components.search_report import DEFAULT_ID, TRIAL_GRID, TRIAL_RESULT, choose, confirmation_row, search_rows, winners
from components.search_space import SearchSettings, apply_values
from components.shards import DamagedData

PROJECT_NAME = "tuner"  # KerasTuner's project folder: <run>/tuner (RunPaths.tuner)


# -- the tuner ------------------------------------------------------------------------------------


class DCGANTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """Runs each trial through `DCGANHyperModel.fit`; KerasTuner's Keras-model machinery is skipped."""

    def __init__(
        self,
        oracle: keras_tuner.Oracle,
        hypermodel: DCGANHyperModel,
        run_dir: str | os.PathLike,
        settings: SearchSettings,
        *,
        confirmation: ConfirmationCost | None = None,
        verbose: bool = True,
    ):
        # KerasTuner prints "Reloading Tuner from ..." when it resumes a search (no option silences it).
        with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO()):
            super().__init__(oracle, hypermodel, directory=str(run_dir), project_name=PROJECT_NAME)
        self.settings, self.verbose = settings, verbose
        self.confirmation = confirmation  # of a winner at the data's size (None: trials train there, nothing to confirm)
        # Save at once: a search interrupted in its first trial then resumes instead of restarting.
        self.save()

    def run_trial(self, trial, *args, **kwargs) -> list[dict[str, float]]:
        """Train every execution of `trial`; KerasTuner averages the returned metrics."""
        hp = trial.hyperparameters
        result = self._train_row(
            Path(self.get_trial_dir(trial.trial_id)),
            lambda: self.hypermodel.build(hp),
            self.settings.trial_budget(hp.values),
            self.settings.executions_per_trial,
            continues=hp.values.get("tuner/trial_id"),
        )
        if result["status"] == "FAILED":
            if self.verbose:
                print(f"trial {trial.trial_id} failed after {result['seconds']:.0f} s: {result['reason']}")
            raise keras_tuner.errors.FailedTrialError(result["reason"]) from None  # the traceback is in result.json
        if self.verbose and self._is_worker():  # on a worker nothing else reports the trial
            print(
                f"{self.tuner_id}: trial {trial.trial_id} done in {result['seconds']:.0f} s, {OBJECTIVE} {result[OBJECTIVE]:.4g}"
            )
        return [{**score, "seconds": result["seconds"]} for score in result["executions"]]

    def pre_create_trial(self) -> None:
        """End the search before a trial that would take it past its budget (`over_budget`):
        KerasTuner's oracle stops once it holds `max_trials` trials, so lowering that to the trials
        it has is how its public API ends a search early (`run_search` does not start a search
        whose default's row spent the budget: a `max_trials` of 0 means no cap)."""
        if (
            self.settings.budget_seconds is not None and self.oracle.trials and self.over_budget()
        ):  # a worker's oracle is a client
            self.oracle.max_trials = len(self.oracle.trials)

    def over_budget(self) -> bool:
        """True (and says so) when the next trial would take the search past `settings.budget_seconds`.

        The next trial's cost is its images (Hyperband: its longest) at the seconds per image the
        search's finished trainings took here, and the time a confirmation of the best trial so far
        needs stays kept; what has been spent comes from the rows' result.json files and the probe
        record, so a resumed search counts what its earlier runs paid.
        """
        if self.settings.budget_seconds is None:
            return False
        reserve = self.confirmation_seconds(self._spending().seconds_per_image)  # may probe a new leader: first
        spent = self._spending()
        next_cost = self.settings.trial_images * self.settings.executions_per_trial * spent.seconds_per_image
        if spent.seconds + next_cost + reserve <= self.settings.budget_seconds:
            return False
        if self.verbose:
            kept = f" (and ~{reserve:.0f} s kept to confirm the best trial as the final training runs)" if reserve else ""
            print(
                f"budget: {spent.seconds:.0f} s of {self.settings.budget_seconds:.0f} s spent and the next trial would take "
                f"~{next_cost:.0f} s{kept}: the search stops after {len(self.oracle.trials)} tuned trial(s)"
            )
        return True

    def _table(self) -> list[dict[str, Any]]:
        """The search's rows so far, the default's first (components.search_report.search_rows)."""
        return search_rows(self.oracle, RunPaths(self.directory), self.settings, self.hypermodel.base, self.hypermodel.space)

    def _spending(self):
        """What the search has spent so far (`components.search_cost.search_spending`)."""
        return search_spending(Path(self.project_dir), [self.get_trial_dir(trial_id) for trial_id in self.oracle.trials])

    def confirmation_seconds(self, trial_seconds_per_image: float, trial: dict[str, Any] | None = None) -> float:
        """What confirming `trial` (a row of the table; by default the one the noise rule chooses so
        far, components.search_report.choose) as the final training runs would take
        (`self.confirmation`), from the default's row's measured seconds per image (evaluations and
        start-up included) and the trial's step cost against the default's (`_cost_factor`)."""
        if self.confirmation is None:
            return 0.0
        rows = self._table()
        default_cost = _seconds_per_image(rows[0]) or trial_seconds_per_image
        return self.confirmation.seconds(default_cost, self._cost_factor(trial or choose(rows)[0], default_cost))

    def _cost_factor(self, trial: dict[str, Any] | None, default_cost: float) -> float:
        """What `trial` costs per image against the default at the data's size: probed there
        (`step_cost`: its cost there can differ from its cost at the trial size, and a reserve
        priced too low lets trials spend the confirmation's time), or without probes as measured
        at the trial size; for the default, or no trial yet, 1 (a winner still to come is taken to
        cost what the default does)."""
        if trial is None or trial["trial_id"] == DEFAULT_ID or not _seconds_per_image(trial):
            return 1.0
        probed = self.step_cost(trial)
        return probed if probed is not None else _seconds_per_image(trial) / default_cost

    def train_default(self) -> dict[str, Any]:
        """The default configuration's row: `base` with seeds seed and seed+1 at the trial budget,
        the same way as a trial (`_train_row`), in `tuner/baseline/`; its result.

        It stays out of KerasTuner's oracle: as a trial it would take the oracle's first proposal
        (the public API cannot hand the oracle chosen values), count its two seeds as two trials
        of a Bayesian model that assumes one score per point, and sit outside Hyperband's
        brackets. A result.json on file (a resumed search) is returned without training again.
        """
        row_dir = Path(self.project_dir) / DEFAULT_DIR
        done = read_result(row_dir / TRIAL_RESULT)
        if done is not None:
            return done
        images = self.settings.trial_images
        if self.verbose:
            seed = self.hypermodel.base.seed
            print(
                f"default configuration: {DEFAULT_TRAININGS} trainings of {images} images "
                f"(seeds {seed} and {seed + 1}) to score it and the noise"
            )
        result = self._train_row(row_dir, lambda: self.hypermodel.base, images, DEFAULT_TRAININGS)
        if self.verbose:
            scores = ", ".join(f"{score[OBJECTIVE]:.4g}" for score in result.get("executions", []))
            print(
                f"default configuration: {result['status'].lower()} in {result['seconds']:.0f} s, "
                f"{OBJECTIVE} {scores or result['reason']}"
            )
        return result

    def _train_row(
        self,
        row_dir: Path,
        build: Callable[[], TrainConfig],
        images: int,
        executions: int,
        continues: str | None = None,
        hypermodel: DCGANHyperModel | None = None,
    ) -> dict[str, Any]:
        """Train `executions` runs of the config `build` gives (seeds seed, seed+1, ...) in
        `row_dir/execution-<k>/` with `hypermodel` (the trials' own unless given); write and return
        its result.json: COMPLETED with the mean swd_avg and each execution's scores, or FAILED with
        the reason (a diverged or crashed training fails its row, not the search)."""
        hypermodel = hypermodel or self.hypermodel
        started = time.perf_counter()
        try:
            config = build()
            scores = []
            for execution in range(executions):
                run_dir = row_dir / f"execution-{execution}"
                if continues is not None:
                    self._continue_from(continues, run_dir)
                seeded = dataclasses.replace(config, seed=config.seed + execution)
                scores.append(hypermodel.fit(None, seeded, run_dir=run_dir, images=images, verbose=self.verbose))
        except DamagedData as err:
            raise DataStopsSearch(str(err)) from err  # nothing is recorded: the row trains once the data is mended
        except Exception as err:  # noqa: BLE001 - any crash fails this row, not the search
            result = {
                "status": "FAILED",
                "reason": _reason(err),
                "images": images,
                "seconds": time.perf_counter() - started,
                "traceback": traceback.format_exc(),
            }
            atomic_write_json(row_dir / TRIAL_RESULT, result)
            return result
        best = min(range(len(scores)), key=lambda k: scores[k][OBJECTIVE])
        self._keep_grid(row_dir / f"execution-{best}", row_dir / TRIAL_GRID)
        result = {
            "status": "COMPLETED",
            OBJECTIVE: sum(score[OBJECTIVE] for score in scores) / len(scores),
            "executions": scores,
            "images": images,
            "seconds": time.perf_counter() - started,
            "grid": TRIAL_GRID,
        }
        atomic_write_json(row_dir / TRIAL_RESULT, result)
        return result

    def confirm_a_winner(self, rows: list[dict[str, Any]], full_size: DCGANHyperModel, image_size: int) -> dict[str, Any] | None:
        """Confirm the best of the trials that beat the default's row by more than the noise
        (components.search_report.winners) whose confirmation the budget holds (`confirm`): a
        winner found late can cost more at the data's size than the reserve kept for the one that
        led before it, and a runner-up that fits is worth confirming rather than none. None when
        no trial beat the row; the best's record, skipped, when the budget holds none."""
        first = None
        for trial in winners(rows):
            confirmation = self.confirm(trial, full_size, image_size)
            if "skipped" not in confirmation:
                return confirmation
            first = first or confirmation
            if self.verbose:
                print(f"not confirming trial {trial['trial_id']}: {confirmation['skipped']}")
        return first

    def confirm(self, trial: dict[str, Any], full_size: DCGANHyperModel, image_size: int) -> dict[str, Any]:
        """`trial` (a row of the table) and the default trained again as the final training runs
        (`full_size` trains and scores at the data's size, for the final training's images), two
        seeds each, in `tuner/confirm/`: the trial is kept only if it wins there too
        (components.search_report.confirmed). Rows on file (a resumed search) are not trained again.

        With a budget, each row starts only if the budget holds it: the default's at the estimate
        (`confirmation_seconds`), the trial's at the default's measured seconds there times the
        trial's step cost; a row the budget cannot hold skips the confirmation of this trial."""
        root = Path(self.project_dir) / CONFIRM_DIR
        images, rows = self.confirmation.images_per_training, {}
        where = {"image_size": image_size, "images": images, "trial_id": trial["trial_id"]}
        config = apply_values(self.hypermodel.base, trial["hyperparameters"])
        for name, row_id, build in (
            ("default", DEFAULT_ID, lambda: self.hypermodel.base),
            ("trial", trial["trial_id"], lambda: config),
        ):
            row_dir = root / ("default" if name == "default" else f"trial_{row_id}")
            if read_result(row_dir / TRIAL_RESULT) is None:
                unaffordable = self._unaffordable(trial, rows.get("default"))
                if unaffordable:
                    return {**where, "skipped": unaffordable}
                if self.verbose:
                    print(
                        f"confirming at {image_size}x{image_size}: the {name} ({DEFAULT_TRAININGS} trainings of {images} images)"
                    )
                self._train_row(row_dir, build, images, DEFAULT_TRAININGS, hypermodel=full_size)
            rows[name] = confirmation_row(row_dir, row_id, images)
        return {**where, **rows}

    def _unaffordable(self, trial: dict[str, Any], default_confirmed: dict[str, Any] | None) -> str | None:
        """Why the budget cannot hold the next row of `trial`'s confirmation (None: it can, or
        there is no budget): once the default's row is measured there, the trial's two trainings
        at its seconds times the trial's step cost; before, the estimate of the whole confirmation."""
        if self.settings.budget_seconds is None:
            return None
        if default_confirmed is not None and default_confirmed["status"] == "COMPLETED":
            rows = self._table()
            needed = default_confirmed["seconds"] * self._cost_factor(trial, _seconds_per_image(rows[0]) or 1.0)
        else:  # nothing measured at the data's size yet: the estimate of the whole
            needed = self.confirmation_seconds(self._spending().seconds_per_image, trial)
        spent = self._spending()  # the trial's probe, if it ran just now, is spent
        left = self.settings.budget_seconds - spent.seconds
        return None if needed <= left else f"the budget has {max(left, 0):.0f} s left, it needs ~{needed:.0f} s"

    def step_cost(self, trial: dict[str, Any]) -> float | None:
        """The training step cost per image of `trial` (a row of the table) against the default's,
        both at the data's size: a speed probe of the trial's configuration, once per trial and
        kept in `PROBE_RECORD` with the seconds it took, which the search's spending counts (the
        default's probe is the confirmation's); None without the default's probe."""
        from components.search_cost import measure_speed

        if self.confirmation is None or self.confirmation.speeds is None:
            return None
        tuner_dir = Path(self.project_dir)
        probes = read_probes(tuner_dir)
        probe = probes.get(trial["trial_id"])
        if probe is None or probe["hyperparameters"] != trial["hyperparameters"]:  # trusted only for the same values
            config = apply_values(self.hypermodel.base, trial["hyperparameters"])
            options = self.hypermodel.train_options
            precision, jit = options.get("precision", "auto"), options.get("jit")
            started = time.perf_counter()
            speed = measure_speed(config, self.confirmation.image_size, precision=precision, jit=jit)
            cost = self.confirmation.speeds[1] / speed
            probe = {"hyperparameters": trial["hyperparameters"], "cost": cost, "seconds": time.perf_counter() - started}
            atomic_write_json(tuner_dir / PROBE_RECORD, {**probes, trial["trial_id"]: probe})
        return probe["cost"]

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
        raise NotImplementedError(
            "trained trials live in <run>/tuner/trial_<id>/execution-<k>/ (components.trainer.restore_generator)"
        )


def _seconds_per_image(row: dict[str, Any]) -> float | None:
    """A completed table row's measured seconds per image (None: not completed, or no time on file)."""
    if row["status"] != "COMPLETED" or not row["seconds"]:
        return None
    return row["seconds"] / (row["images"] * len(row["executions"]))


class DataStopsSearch(PipelineError, keras_tuner.errors.FatalError):
    """Damaged data ends the search with one error: KerasTuner lets a `FatalError` through, where
    any other failure would fail this trial and the next ones for the same reason."""


def _reason(err: Exception) -> str:
    """One line saying why a trial failed: the trainer's message, or the exception type and text."""
    if isinstance(err, PipelineError):
        return str(err)
    return f"{type(err).__name__}: {err}".strip().splitlines()[0] if str(err) else type(err).__name__
