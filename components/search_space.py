"""What a hyperparameter search explores and how: the space, the settings, the oracle.

A space maps names of `TrainConfig` / `ModelConfig` fields to KerasTuner hyperparameters:
a list is a choice, `{"min", "max", "sampling"}` a range, a single value is fixed.
`default_space(base)` is centred on the configuration being tuned: filters, learning rates, batch
size, spectral norm, R1, Adam's beta_1 and DiffAugment, each around the base's own value; a JSON
file (`load_space_file`) or `NAME=SPEC` strings from the command line (`parse_space_override`)
override it name by name (`make_space`), and every choice and both ends of every range are
checked to make a valid `TrainConfig` before a trial starts.

`make_oracle` builds KerasTuner's oracle from the `SearchSettings` (components.search_settings);
`search_role` reads KerasTuner's chief/worker environment.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras_tuner

from components.artifacts import read_json
from components.config import TrainConfig
from components.errors import PipelineError
from components.model import ModelConfig
from components.runfolder import EVAL_OBJECTIVE as OBJECTIVE
from components.search_settings import SearchSettings

DIFF_AUGMENT = "color,translation,cutout"  # the DiffAugment policy a search tries against the base's


def default_space(base: TrainConfig) -> dict[str, Any]:
    """The space searched unless told otherwise, centred on `base` (the default recipe, or what the
    flags made of it), in the knobs measured to matter for a new data set.

    Every dimension holds base's own value and moves a short way from it: filters halved or
    doubled, learning rates from half to twice base's (log scale), batch size halved or doubled,
    spectral norm on D toggled, R1 off or ten times stronger, beta_1 0 or 0.5, DiffAugment on or
    off. Wide ranges drawn at random spend a search's few trials on models far from the region a
    tuned default already sits in; short steps around it are what a small budget can test.
    Choices are lists, ranges are {"min", "max", "sampling"}.
    """
    model, r1 = base.model, base.r1_gamma or 0.1
    space = {
        "g_filters": sorted({max(1, model.g_filters // 2), model.g_filters, model.g_filters * 2}),
        "d_filters": sorted({max(1, model.d_filters // 2), model.d_filters, model.d_filters * 2}),
        "g_lr": {"min": base.g_lr / 2, "max": base.g_lr * 2, "sampling": "log"},
        "d_lr": {"min": base.d_lr / 2, "max": base.d_lr * 2, "sampling": "log"},
        "batch_size": sorted({max(1, base.batch_size // 2), base.batch_size, base.batch_size * 2}),
        "d_spectral_norm": [model.d_spectral_norm, not model.d_spectral_norm],
        "r1_gamma": sorted({0.0, base.r1_gamma, r1 * 10}),
        "beta_1": sorted({0.0, 0.5, base.beta_1}),
        "augment": [base.augment, "" if base.augment else DIFF_AUGMENT],
    }
    if base.train_step == "seed":  # the tutorial's step trains without R1 or augmentation
        del space["r1_gamma"], space["augment"]
    return space


SAMPLINGS = ("linear", "log", "reverse_log")
UNTUNABLE = ("model", "seed", "image_size")  # seed: executions vary it; image size: the data's


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
    true/false; `augment=` fixes a text setting empty; a string choice containing commas (an
    augment policy) needs the JSON file."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip().replace("-", "_"), spec.strip()
    if not sep or not name:
        raise PipelineError(f"search space entry {text!r} is not NAME=SPEC (e.g. g_lr=5e-5..1e-3:log or g_filters=16,32,64).")
    kind = _field_type(name, f"search space entry {text!r}")
    if not spec:
        if kind is not str:
            raise PipelineError(f"search space entry {text!r} has no value (e.g. g_lr=5e-5..1e-3:log or g_filters=16,32,64).")
        return name, ""  # a text setting fixed empty: augment= searches without augmentation
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
    """`default_space(base)` updated by the file's entries, then by the command line's; normalised
    and checked: every choice and both ends of every range make a valid `TrainConfig` from `base`."""
    space = default_space(base)
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


def declare(hp, name: str, spec: Any):
    """Declare one hyperparameter of the normalised `spec` on `hp` (a `keras_tuner.HyperParameters`)
    and return this trial's value."""
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


def base_values(base: TrainConfig, names: Sequence[str]) -> dict[str, Any]:
    """The values `base` gives the fields `names`: the default configuration's row of a search,
    shown beside the trials' values."""
    return {name: getattr(base.model if hasattr(base.model, name) else base, name) for name in names}


def tuned_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's hyperparameter values without KerasTuner's bookkeeping entries (`tuner/...`), each
    as its field's type: KerasTuner hands a choice of booleans back as 0 or 1."""
    fields = tunable_fields()
    return {
        name: fields[name](value) if name in fields else value for name, value in values.items() if not name.startswith("tuner/")
    }


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
                f'search space entry {name}: a range is {{"min": .., "max": .., "sampling": linear|log|reverse_log}} '
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
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (kind is int and float(value) != int(value))
    ):
        raise PipelineError(f"search space entry {name}: expected {'an integer' if kind is int else 'a number'}, got {value!r}.")
    return kind(value)


# -- settings and roles ---------------------------------------------------------------------------


def search_role(environ: Mapping[str, str] = os.environ) -> str:
    """This process's part: "single", or in KerasTuner's distributed mode "chief" (serves the oracle, trains nothing) or
    "worker" (asks the chief for trials and trains them), read as KerasTuner reads it: the oracle
    address set, and "chief" in `KERASTUNER_TUNER_ID` for the chief."""
    if "KERASTUNER_ORACLE_IP" not in environ:
        return "single"
    missing = [name for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not environ.get(name)]
    if missing:
        raise PipelineError(
            f"KERASTUNER_ORACLE_IP is set but {' and '.join(missing)} not; set all three for a distributed search."
        )
    return "chief" if "chief" in environ["KERASTUNER_TUNER_ID"] else "worker"


def make_oracle(settings: SearchSettings, neighbours: Sequence[Mapping[str, Any]] = ()) -> keras_tuner.Oracle:
    """The oracle for `settings.tuner`, minimising swd_avg, seeded, capped at the `tuned_trials`
    (the default configuration's row is trained apart: `components.tuner.DCGANTuner.train_default`).
    The random and Bayesian oracles propose the `neighbours` (of the default, `neighbours`) first."""
    objective = keras_tuner.Objective(OBJECTIVE, direction="min")
    seed = settings.seed + 1  # KerasTuner reads seed 0 as "no seed" and picks a random one
    if settings.tuner == "random":
        return _NeighboursFirstRandom(objective, max_trials=settings.tuned_trials, seed=seed, neighbours=neighbours)
    if settings.tuner == "bayesian":
        # KerasTuner's default starts with 3 random trials per dimension (15 here): with a budget of
        # ten trials that would be a random search. The neighbours are its first points; without
        # them a third of the budget, at least two, explores at random.
        initial = 2 if neighbours else max(2, settings.tuned_trials // 3)
        try:
            return _NeighboursFirstBayesian(
                objective, max_trials=settings.tuned_trials, num_initial_points=initial, seed=seed, neighbours=neighbours
            )
        except ImportError as err:  # its Gaussian process needs scikit-learn (keras-tuner[bayesian])
            raise PipelineError(f"the bayesian tuner needs scikit-learn ({err}); install it or use `tuner` random.") from err
    oracle = keras_tuner.oracles.HyperbandOracle(
        objective, max_epochs=settings.hyperband_max_epochs, factor=settings.hyperband_factor, seed=seed
    )
    oracle.max_trials = settings.tuned_trials  # Hyperband has no trial cap of its own; the base Oracle honours it
    return oracle


WIDTHS = ("g_filters", "d_filters", "d_kernel")  # larger values make every training step slower


def neighbours(base: TrainConfig, space: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The configurations one step from `base` in the normalised `space`: one dimension moved to
    another of its choices or to an end of its range, every other at base's value. A tuned
    default is most likely beaten by a small change, and a small budget can try each of those
    where random draws would change everything at once. Ordered so that every dimension gets one
    step (its larger value first) before any gets a second, except that steps widening a network
    (`WIDTHS`) come last: each costs several trials of the others' in a budget of time, and a
    wider winner makes the final training slower too. A fixed dimension keeps its one value;
    none when another dimension does not hold base's value (there is no centre to step from)."""
    centre = base_values(base, list(space))
    steps = []
    for name, spec in space.items():
        points = spec if isinstance(spec, list) else [spec["min"], spec["max"]]
        if len(points) == 1:
            centre[name] = points[0]
        elif not (centre[name] in points if isinstance(spec, list) else spec["min"] <= centre[name] <= spec["max"]):
            return []
        steps.append(sorted((value for value in points if value != centre[name]), reverse=True))
    ordered = []
    for rank in range(max(map(len, steps), default=0)):
        ordered += [{**centre, name: values[rank]} for name, values in zip(space, steps) if rank < len(values)]
    return sorted(ordered, key=lambda step: any(step[name] > centre[name] for name in WIDTHS if name in step))


class _NeighboursFirst:
    """A KerasTuner oracle that proposes the `neighbours` it has not proposed yet before its own
    choices (its trials are its record: a resumed search goes on where it stopped)."""

    def __init__(self, *args, neighbours: Sequence[Mapping[str, Any]] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.neighbours = [dict(values) for values in neighbours]

    def populate_space(self, trial_id):
        proposed = [tuned_values(trial.hyperparameters.values) for trial in self.trials.values()]
        for values in self.neighbours:
            if values not in proposed:
                return {"status": keras_tuner.engine.trial.TrialStatus.RUNNING, "values": dict(values)}
        return super().populate_space(trial_id)


class _NeighboursFirstRandom(_NeighboursFirst, keras_tuner.oracles.RandomSearchOracle):
    pass


class _NeighboursFirstBayesian(_NeighboursFirst, keras_tuner.oracles.BayesianOptimizationOracle):
    pass
