"""Settings declared once: a dataclass field's default, type, range, choices and help text.

A stage's configuration is a frozen dataclass whose fields are made with `setting(...)`. The
dataclass checks itself with `check_settings` (a library caller gets the same checks as the
command line), the command line's flags are built from the same fields (`pipeline._cli.add_setting`),
and a configuration file's keys are the fields' names. Errors name the setting, never a flag:
the command line and the configuration file each say where the value came from.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from components.errors import PipelineError

KINDS = (int, float, str, bool)


def setting(
    default: Any,
    help: str,
    *,
    kind: type,
    low: float | None = None,
    high: float | None = None,
    low_included: bool = True,
    high_included: bool = True,
    choices: tuple | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field that is a user setting. `kind` is its type (int, float, str or bool); a
    default of None means "not set" (the help says what happens then); `low`/`high` bound numbers,
    each end included unless `low_included`/`high_included` says not."""
    if kind not in KINDS:
        raise TypeError(f"kind must be one of {KINDS}, got {kind!r}")
    metadata = {
        "help": help,
        "kind": kind,
        "low": low,
        "high": high,
        "low_included": low_included,
        "high_included": high_included,
        "choices": choices,
        "metavar": metavar,
    }
    return dataclasses.field(default=default, metadata={"setting": metadata})


class SettingError(PipelineError):
    """A setting's value is not allowed. The message names the setting ("eval_num must be ...");
    `setting` and `problem` let a front end name it its own way (the command line: by its flag)."""

    def __init__(self, setting: str, problem: str):
        super().__init__(f"{setting} {problem}")
        self.setting, self.problem = setting, problem


def setting_fields(cls_or_instance) -> list[dataclasses.Field]:
    """The fields of a configuration that are settings (declared with `setting`)."""
    return [field for field in dataclasses.fields(cls_or_instance) if "setting" in field.metadata]


def problem(field: dataclasses.Field, value: Any) -> str | None:
    """What is wrong with `value` for the setting `field`, or None."""
    spec = field.metadata["setting"]
    kind = spec["kind"]
    if value is None:
        return None if field.default is None else f"must be set (a {kind.__name__})"
    if kind is bool:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else kind):
        return f"must be {_kind_name(kind)}, got {value!r}"
    if spec["choices"] is not None and value not in spec["choices"]:
        return f"must be one of {', '.join(map(str, spec['choices']))}, got {value!r}"
    if kind is float and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    low, high = spec["low"], spec["high"]
    too_low = low is not None and (value < low if spec["low_included"] else value <= low)
    too_high = high is not None and (value > high if spec["high_included"] else value >= high)
    if too_low or too_high:
        return f"must be {_range(spec)}, got {value!r}"
    return None


def check_settings(config: Any) -> None:
    """Raise `SettingError` naming the first setting of `config` whose value is not allowed."""
    for field in setting_fields(config):
        wrong = problem(field, getattr(config, field.name))
        if wrong:
            raise SettingError(field.name, f"{wrong}.")


def settings_dict(config: Any) -> dict[str, Any]:
    """The settings of `config` by name: what an artifact records and a configuration file holds."""
    return {field.name: getattr(config, field.name) for field in setting_fields(config)}


def _kind_name(kind: type) -> str:
    return {int: "a whole number", float: "a number", str: "a string"}[kind]


def _range(spec: dict) -> str:
    """'a whole number from 1 to 1,000' / 'in (0, 1]' / 'in [0, 1)' / 'at least 0'."""
    low, high, kind = spec["low"], spec["high"], spec["kind"]
    if kind is int and low is not None and high is not None:
        return f"a whole number from {low:,} to {high:,}"
    if low is not None and high is not None:
        return interval(low, high, spec["low_included"], spec["high_included"])
    if low is not None:
        return f"{'at least' if spec['low_included'] else 'more than'} {low:g}"
    return f"{'at most' if spec['high_included'] else 'less than'} {high:g}"


def interval(low: float, high: float, low_included: bool = True, high_included: bool = True) -> str:
    """'in [0, 1)': the range of a number, each end's bracket saying whether it is allowed."""
    return f"in {'[' if low_included else '('}{low:g}, {high:g}{']' if high_included else ')'}"
