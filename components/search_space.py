"""The search space of the hyperparameter search: which `TrainConfig` fields vary, and how.

A space maps names of `TrainConfig` / `ModelConfig` fields to KerasTuner hyperparameters:
a list is a choice, `{"min", "max", "sampling"}` a range, a single value is fixed.
`DEFAULT_SPACE` searches the generator's and discriminator's base filters, both learning rates
(log scale) and Adam's beta_1; a JSON file (`load_space_file`) or `NAME=SPEC` strings from the
command line (`parse_space_override`) override it name by name (`make_space`), and every choice
and both ends of every range are checked to make a valid `TrainConfig` before a trial starts.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from components.artifacts import read_json
from components.config import TrainConfig
from components.errors import PipelineError
from components.model import ModelConfig

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
