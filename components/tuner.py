"""Hyperparameter search for the DCGAN with KerasTuner: every trial is a real, resumable training run.

How the pieces fit:

- The search space maps names of `TrainConfig` / `ModelConfig` fields to KerasTuner
  hyperparameters. `DEFAULT_SPACE` searches the generator's and discriminator's base filters, both
  learning rates (log scale) and Adam's beta_1; a JSON file or `name=spec` strings override it
  name by name (`parse_space_override`, `load_space_file`, `make_space`).
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
import json
import math
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import keras_tuner

from components.artifacts import RunPaths, atomic_directory, atomic_write_json, changed_settings, flatten_dict, read_json
from components.errors import PipelineError
from components.model import ModelConfig
from components.trainer import EVAL_OBJECTIVE, TrainConfig

TUNERS = ("bayesian", "random", "hyperband")
OBJECTIVE = EVAL_OBJECTIVE  # "swd_avg", lower is better
PROJECT_NAME = "tuner"  # KerasTuner's project folder: <run>/tuner (RunPaths.tuner)
SEARCH_RECORD = "search.json"
TRIALS_TABLE = "trials.json"
TRIAL_RESULT = "result.json"
TRIAL_GRID = "best.png"
GRID_IMAGES = 64  # an 8x8 grid, the same latents for every trial so grids compare
GRID_SEED = 0

# Choices are lists, ranges are {"min", "max", "sampling"}, a single value is fixed.
DEFAULT_SPACE: dict[str, Any] = {
    "g_filters": [16, 32, 64],
    "d_filters": [32, 64, 128],
    "g_lr": {"min": 5e-5, "max": 1e-3, "sampling": "log"},
    "d_lr": {"min": 5e-5, "max": 1e-3, "sampling": "log"},
    "beta_1": [0.0, 0.5, 0.9],
}
SAMPLINGS = ("linear", "log", "reverse_log")
UNTUNABLE = ("model", "seed", "image_size")  # seed: executions vary it; image size: the data's

EvaluateFn = Callable[[Any], dict[str, float]]


# -- the search space -----------------------------------------------------------------------------


def tunable_fields() -> dict[str, type]:
    """Every `TrainConfig` / `ModelConfig` field a search may set, with its type (int, float, str, bool)."""
    fields = {}
    for defaults in (ModelConfig(), TrainConfig()):
        for field in dataclasses.fields(defaults):
            if field.name not in UNTUNABLE:
                fields[field.name] = type(getattr(defaults, field.name))
    return fields


def parse_space_override(text: str) -> tuple[str, Any]:
    """`NAME=SPEC` from the command line: `16,32,64` (choices), `5e-5..1e-3:log` (a range with its
    sampling: linear, log or reverse_log; linear if omitted), or `0.5` (fixed). Booleans are
    true/false; a string choice containing commas (an augment policy) needs the JSON file."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip().replace("-", "_"), spec.strip()
    if not sep or not name or not spec:
        raise PipelineError(f"search space entry {text!r} is not NAME=SPEC (e.g. g_lr=5e-5..1e-3:log or g_filters=16,32,64).")
    kind = _field_type(name, f"search space entry {text!r}")
    if ".." in spec:
        bounds, _, sampling = spec.partition(":")
        low, _, high = bounds.partition("..")
        return name, {"min": _convert(low, kind, name), "max": _convert(high, kind, name), "sampling": sampling or "linear"}
    values = [_convert(value, kind, name) for value in spec.split(",")]
    return name, values if len(values) > 1 else values[0]


def load_space_file(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object of NAME: SPEC, SPEC being a list (choices), {"min", "max", "sampling"} or a value."""
    path = Path(path)
    try:
        space = read_json(path)
    except FileNotFoundError as err:
        raise PipelineError(f"search space file {path} does not exist.") from err
    except ValueError as err:
        raise PipelineError(f"search space file {path} is not valid JSON: {err}") from err
    if not isinstance(space, dict):
        raise PipelineError(f"search space file {path} must hold a JSON object of name: spec, got {type(space).__name__}.")
    return space


def make_space(
    base: TrainConfig, file_space: Mapping[str, Any] | None = None, overrides: Sequence[tuple[str, Any]] = ()
) -> dict[str, Any]:
    """`DEFAULT_SPACE` updated by the file's entries, then by the command line's; normalised and
    checked: every choice and both ends of every range make a valid `TrainConfig` from `base`."""
    space = dict(DEFAULT_SPACE)
    space.update(file_space or {})
    space.update(dict(overrides))
    normalised = {name: _normalise_spec(name, spec) for name, spec in space.items()}
    for name, spec in normalised.items():
        candidates = spec if isinstance(spec, list) else [spec["min"], spec["max"]]
        for value in candidates:
            try:
                apply_values(base, {name: value})
            except PipelineError as err:
                raise PipelineError(f"search space entry {name}: {value!r} is not a valid value ({err})") from err
    return normalised


def declare(hp: keras_tuner.HyperParameters, name: str, spec: Any):
    """Declare one hyperparameter of the normalised `spec` on `hp` and return this trial's value."""
    if isinstance(spec, dict):
        if tunable_fields()[name] is int:
            return hp.Int(name, spec["min"], spec["max"], step=spec.get("step"), sampling=spec["sampling"])
        return hp.Float(name, spec["min"], spec["max"], step=spec.get("step"), sampling=spec["sampling"])
    if len(spec) == 1:
        return hp.Fixed(name, spec[0])
    return hp.Choice(name, spec)


def apply_values(base: TrainConfig, values: Mapping[str, Any]) -> TrainConfig:
    """`base` with the named fields replaced (model fields go into `base.model`); names outside the
    tunable fields (e.g. Hyperband's `tuner/epochs`) are ignored."""
    fields = tunable_fields()
    model_names = {field.name for field in dataclasses.fields(ModelConfig)}
    chosen = {name: fields[name](value) for name, value in values.items() if name in fields}
    model = dataclasses.replace(base.model, **{k: v for k, v in chosen.items() if k in model_names})
    return dataclasses.replace(base, model=model, **{k: v for k, v in chosen.items() if k not in model_names})


def tuned_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's hyperparameter values without KerasTuner's bookkeeping entries (`tuner/...`)."""
    return {name: value for name, value in values.items() if not name.startswith("tuner/")}


def _field_type(name: str, where: str) -> type:
    fields = tunable_fields()
    if name not in fields:
        raise PipelineError(f"{where}: {name!r} cannot be searched; searchable: {', '.join(sorted(fields))}.")
    return fields[name]


BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _convert(text: str, kind: type, name: str):
    """One command-line value as the field's type (booleans: true/false, 1/0, yes/no)."""
    text = text.strip()
    try:
        if kind is bool:
            return BOOLEANS[text.lower()]
        return kind(float(text)) if kind is int and float(text).is_integer() else kind(text)
    except (KeyError, ValueError) as err:
        raise PipelineError(f"search space entry {name}: {text!r} is not a valid {kind.__name__}.") from err


def _normalise_spec(name: str, spec: Any) -> list | dict:
    """A choice list or a range dict with a sampling; a single value becomes a one-item list."""
    kind = _field_type(name, "search space")
    if isinstance(spec, dict):
        unknown = set(spec) - {"min", "max", "sampling", "step"}
        if unknown or not {"min", "max"} <= set(spec) or kind in (str, bool):
            raise PipelineError(
                f"search space entry {name}: a range is {{\"min\": .., \"max\": .., \"sampling\": linear|log|reverse_log}} "
                f"over a number, got {spec!r}."
            )
        low, high = _number(name, spec["min"], kind), _number(name, spec["max"], kind)
        sampling = spec.get("sampling", "linear")
        if sampling not in SAMPLINGS:
            raise PipelineError(f"search space entry {name}: sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}.")
        if not low < high:
            raise PipelineError(f"search space entry {name}: min ({low}) must be below max ({high}).")
        if sampling != "linear" and low <= 0:
            raise PipelineError(f"search space entry {name}: {sampling} sampling needs min > 0, got {low}.")
        normalised = {"min": low, "max": high, "sampling": sampling}
        if spec.get("step") is not None:
            normalised["step"] = _number(name, spec["step"], kind)
        return normalised
    values = spec if isinstance(spec, list) else [spec]
    if not values:
        raise PipelineError(f"search space entry {name}: the list of choices is empty.")
    if kind in (str, bool):
        if not all(type(value) is kind for value in values):
            raise PipelineError(f"search space entry {name}: choices must be {kind.__name__}s, got {values!r}.")
        return list(dict.fromkeys(values))
    return list(dict.fromkeys(_number(name, value, kind) for value in values))


def _number(name: str, value: Any, kind: type):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and float(value) != int(value)):
        raise PipelineError(f"search space entry {name}: expected {'an integer' if kind is int else 'a number'}, got {value!r}.")
    return kind(value)


# -- settings and roles ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSettings:
    """How to search. Everything but `max_trials` must stay the same when a search is resumed."""

    tuner: str = "bayesian"
    max_trials: int = 10
    trial_images: int = 20_000  # images seen by one trial (Hyperband: by its longest trials)
    executions_per_trial: int = 1  # trainings per trial with seeds seed, seed+1, ...; swd_avg averaged
    seed: int = 0  # the oracle's seed; the trials train with the TrainConfig's own seed
    hyperband_max_epochs: int = 9
    hyperband_factor: int = 3
    eval_every: int | None = None  # images between evaluations inside a trial (None: at its end only)

    def __post_init__(self) -> None:
        if self.tuner not in TUNERS:
            raise PipelineError(f"tuner must be one of {', '.join(TUNERS)}, got {self.tuner!r}.")
        for name in ("max_trials", "trial_images", "executions_per_trial", "hyperband_max_epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise PipelineError(f"{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)!r}.")
        if self.hyperband_factor < 2:
            raise PipelineError(f"hyperband-factor must be at least 2, got {self.hyperband_factor!r}.")
        if self.seed < 0:
            raise PipelineError(f"seed must be 0 or more, got {self.seed!r}.")
        if self.eval_every is not None and self.eval_every < 1:
            raise PipelineError(f"eval-every must be a positive number of images, got {self.eval_every!r}.")

    def trial_budget(self, values: Mapping[str, Any]) -> int:
        """Images a trial trains to: `trial_images`, or for Hyperband its `tuner/epochs` epochs of
        `trial_images / hyperband_max_epochs` images each (cumulative, as Hyperband counts)."""
        if "tuner/epochs" not in values:
            return self.trial_images
        return math.ceil(int(values["tuner/epochs"]) * self.trial_images / self.hyperband_max_epochs)

    def record(self) -> dict[str, Any]:
        """What a resumed search must share with the original (all but max_trials)."""
        record = dataclasses.asdict(self)
        del record["max_trials"]
        if self.tuner != "hyperband":
            del record["hyperband_max_epochs"], record["hyperband_factor"]
        return record


def search_role(environ: Mapping[str, str] = os.environ) -> str:
    """"single", or in KerasTuner's distributed mode "chief" (serves the oracle, trains nothing) or
    "worker" (asks the chief for trials and trains them), read as KerasTuner reads it: the oracle
    address set, and "chief" in `KERASTUNER_TUNER_ID` for the chief."""
    if "KERASTUNER_ORACLE_IP" not in environ:
        return "single"
    missing = [name for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not environ.get(name)]
    if missing:
        raise PipelineError(f"KERASTUNER_ORACLE_IP is set but {' and '.join(missing)} not; set all three for a distributed search.")
    return "chief" if "chief" in environ["KERASTUNER_TUNER_ID"] else "worker"


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
        overwrite: bool = False,
        verbose: bool = True,
    ):
        super().__init__(oracle, hypermodel, directory=str(run_dir), project_name=PROJECT_NAME, overwrite=overwrite)
        self.settings, self.verbose = settings, verbose
        self._grid_latents: dict[int, Any] = {}  # by latent size: drawn once, shared by every trial
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
            raise keras_tuner.errors.FailedTrialError(reason) from err
        seconds = time.perf_counter() - started
        mean = sum(score[OBJECTIVE] for score in scores) / len(scores)
        if self.verbose and self._is_worker():  # on a worker nothing else reports the trial
            print(f"{self.tuner_id}: trial {trial.trial_id} done in {seconds:.0f} s, {OBJECTIVE} {mean:.4g}")
        best = min(range(len(scores)), key=lambda k: scores[k][OBJECTIVE])
        self._save_best_grid(trial_dir / f"execution-{best}", trial_dir / TRIAL_GRID)
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

    def _save_best_grid(self, run_dir: Path, path: Path) -> None:
        """The grid of the run's best checkpoint, on latents shared by every trial so grids compare."""
        from components.evaluator import fixed_latents, keras_generate
        from components.grid import save_grid
        from components.trainer import BEST, restore_generator

        generator, info = restore_generator(run_dir, BEST)
        latent_dim = info["latent_dim"]
        if latent_dim not in self._grid_latents:
            self._grid_latents[latent_dim] = fixed_latents(GRID_IMAGES, latent_dim, GRID_SEED)
        save_grid(path, keras_generate(generator)(self._grid_latents[latent_dim]))

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


@dataclass
class SearchResult:
    """What a finished search (single process or chief) leaves behind."""

    rows: list[dict[str, Any]]
    best: dict[str, Any] | None  # the best_hyperparameters.json content, None if no trial completed
    table_path: Path
    best_path: Path | None


def make_oracle(settings: SearchSettings) -> keras_tuner.Oracle:
    """The oracle for `settings.tuner`, minimising swd_avg, seeded, capped at `max_trials` trials."""
    objective = keras_tuner.Objective(OBJECTIVE, direction="min")
    seed = settings.seed + 1  # KerasTuner reads seed 0 as "no seed" and picks a random one
    if settings.tuner == "random":
        return keras_tuner.oracles.RandomSearchOracle(objective, max_trials=settings.max_trials, seed=seed)
    if settings.tuner == "bayesian":
        # KerasTuner's default starts with 3 random trials per dimension (15 here): with a budget of
        # ten trials that would be a random search. A third of the budget, at least two, explores.
        initial = max(2, settings.max_trials // 3)
        try:
            return keras_tuner.oracles.BayesianOptimizationOracle(
                objective, max_trials=settings.max_trials, num_initial_points=initial, seed=seed
            )
        except ImportError as err:  # its Gaussian process needs scikit-learn (keras-tuner[bayesian])
            raise PipelineError(f"the bayesian tuner needs scikit-learn ({err}); install it or use --tuner random.") from err
    oracle = keras_tuner.oracles.HyperbandOracle(
        objective, max_epochs=settings.hyperband_max_epochs, factor=settings.hyperband_factor, seed=seed
    )
    oracle.max_trials = settings.max_trials  # Hyperband has no trial cap of its own; the base Oracle honours it
    return oracle


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
        _check_same_search(paths, record, new_search)
    hypermodel = DCGANHyperModel(
        base, space, data_dir, evaluate_fn,
        eval_every=settings.eval_every, train_options={**(train_options or {}), "keep_checkpoints": 1},
    )  # fmt: skip
    tuner = DCGANTuner(
        make_oracle(settings), hypermodel, paths.root, settings, overwrite=new_search and role != "worker", verbose=verbose
    )
    if role != "worker":
        atomic_write_json(paths.tuner / SEARCH_RECORD, record)
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
    """Keep KerasTuner from printing a traceback per failed trial (its DEBUG flag is on by default):
    a diverged trial is an expected outcome; `run_trial` prints one line and keeps the traceback
    in the trial's result.json."""
    from keras_tuner.src import config

    saved, config.DEBUG = config.DEBUG, False
    try:
        yield
    finally:
        config.DEBUG = saved


def _check_same_search(paths: RunPaths, record: dict, new_search: bool) -> None:
    path = paths.tuner / SEARCH_RECORD
    if new_search:
        paths.best_hyperparameters.unlink(missing_ok=True)
        return
    if not path.is_file():
        return
    changes = changed_settings(read_json(path), json.loads(json.dumps(record)))  # the record as JSON sees it
    if changes:
        raise PipelineError(
            f"{paths.tuner} holds a search with other settings ({path}): " + "; ".join(changes)
            + ". Re-run with the same settings to resume it (only --max-trials may change), "
            "choose another run folder, or pass --new-search to discard it."
        )


# -- results --------------------------------------------------------------------------------------


def write_search_results(oracle, paths: RunPaths, settings: SearchSettings, base: TrainConfig) -> SearchResult:
    """Write `tuner/trials.json` and, if a trial completed, `best_hyperparameters.json`."""
    rows = trials_table(oracle, paths, settings)
    table_path = paths.tuner / TRIALS_TABLE
    atomic_write_json(table_path, rows)
    completed = [row for row in rows if row["status"] == "COMPLETED"]
    if not completed:
        return SearchResult(rows, None, table_path, None)
    row = min(completed, key=lambda r: r[OBJECTIVE])
    config = apply_values(base, row["hyperparameters"])
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, image_size=None))
    best = {
        "trial_id": row["trial_id"],
        OBJECTIVE: row[OBJECTIVE],
        "images": row["images"],
        "hyperparameters": row["hyperparameters"],
        "config": config.to_dict(),
        "search": {"tuner": settings.tuner, "trials": len(rows), "completed": len(completed), "table": str(table_path)},
    }
    atomic_write_json(paths.best_hyperparameters, best)
    return SearchResult(rows, best, table_path, paths.best_hyperparameters)


def trials_table(oracle, paths: RunPaths, settings: SearchSettings) -> list[dict[str, Any]]:
    """One row per trial the oracle knows, in trial order: its values, score, time and status.

    Seconds and failure reasons come from the trial's `result.json` (written by whichever process
    ran it); without it (a worker on another filesystem) from what the oracle was told.
    """
    order = [hp.name for hp in oracle.get_space().space]  # the space's order, whatever the trial's
    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        result_path = paths.tuner / f"trial_{trial_id}" / TRIAL_RESULT
        result = read_json(result_path) if result_path.is_file() else {}
        completed = trial.status == "COMPLETED"
        seconds = result.get("seconds")
        if seconds is None and completed and trial.metrics.exists("seconds"):
            seconds = float(trial.metrics.get_last_value("seconds"))
        grid = result_path.parent / TRIAL_GRID
        rows.append(
            {
                "trial_id": trial_id,
                "status": trial.status,
                OBJECTIVE: float(trial.score) if completed and trial.score is not None else None,
                "seconds": seconds,
                "images": settings.trial_budget(trial.hyperparameters.values),
                "hyperparameters": _in_order(tuned_values(trial.hyperparameters.values), order),
                "continues": trial.hyperparameters.values.get("tuner/trial_id"),
                "reason": None if completed else result.get("reason") or _reason_from_message(trial.message),
                "grid": str(grid) if completed and grid.is_file() else None,
            }
        )
    return rows


def _in_order(values: dict[str, Any], order: Sequence[str]) -> dict[str, Any]:
    return {name: values[name] for name in sorted(values, key=lambda name: (order.index(name) if name in order else len(order), name))}


def _reason_from_message(message: str | None) -> str | None:
    """The last line of the traceback KerasTuner stores, without the exception's class name."""
    if not message:
        return None
    last = message.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if last.startswith("keras_tuner") and ": " in last else last


def format_table(rows: Sequence[dict[str, Any]], best_id: str | None = None) -> str:
    """The trials as an aligned text table (best marked with *), failure reasons below it."""
    names = list(dict.fromkeys(name for row in rows for name in row["hyperparameters"]))
    hyperband = any(row["continues"] is not None for row in rows)
    header = ["trial", "status", OBJECTIVE, "seconds", "images", *(["continues"] if hyperband else []), *names]
    lines = [header]
    for row in rows:
        mark = "*" if row["trial_id"] == best_id else " "
        lines.append(
            [f"{mark}{row['trial_id']}", row["status"], _show(row[OBJECTIVE]), _show(row["seconds"], ".0f"), str(row["images"])]
            + ([_show(row["continues"])] if hyperband else [])
            + [_show(row["hyperparameters"].get(name)) for name in names]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    text += [f"trial {row['trial_id']} {row['status'].lower()}: {row['reason']}" for row in rows if row["reason"]]
    return "\n".join(text)


def _show(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


# -- training from a saved best file --------------------------------------------------------------


def load_best_hyperparameters(path: str | os.PathLike) -> dict[str, Any]:
    """The tuned values of a `best_hyperparameters.json`, checked against the tunable fields."""
    path = Path(path)
    try:
        saved = read_json(path)
        values = saved["hyperparameters"]
        if not isinstance(values, dict):
            raise TypeError("'hyperparameters' is not an object")
    except FileNotFoundError as err:
        raise PipelineError(f"hyperparameters file {path} does not exist (a search writes <run>/best_hyperparameters.json).") from err
    except (ValueError, KeyError, TypeError) as err:
        raise PipelineError(f"{path} is not a best_hyperparameters.json file ({err!r}).") from err
    unknown = sorted(set(values) - set(tunable_fields()))
    if unknown:
        raise PipelineError(f"{path} sets unknown hyperparameter(s) {', '.join(unknown)}.")
    return values


def config_from_best(base: TrainConfig, path: str | os.PathLike) -> tuple[TrainConfig, list[str]]:
    """`base` with the best file's tuned values applied (as the search's trials did), and notes on
    the other fields where `base` differs from the configuration the search itself trained."""
    values = load_best_hyperparameters(path)
    try:
        config = apply_values(base, values)
    except PipelineError as err:
        raise PipelineError(f"{path}: {err}") from err
    notes = []
    saved = read_json(path).get("config")
    if isinstance(saved, dict):
        ours = flatten_dict(dataclasses.replace(config, model=dataclasses.replace(config.model, image_size=None)).to_dict())
        for key, value in sorted(flatten_dict(saved).items()):
            if key in ours and ours[key] != value:
                notes.append(f"{key} is {ours[key]!r} here but {value!r} in the search's best configuration")
    return config, notes
