"""What a search leaves behind: the trials table, the best configuration, and training from it.

- `tuner/trials.json` (and the printed table, `format_table`): one row per trial with its values,
  swd_avg, seconds, images, status, failure reason and grid;
- `<run>/best_hyperparameters.json`: the best trial's values and the full configuration it trained;
- `config_from_best`: a base configuration with a best file's values applied (`--hparams FILE`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from components.artifacts import RunPaths, atomic_write_json, flatten_dict, read_json
from components.config import TrainConfig
from components.errors import PipelineError
from components.runfolder import EVAL_OBJECTIVE as OBJECTIVE
from components.search_space import apply_values, tunable_fields, tuned_values

if TYPE_CHECKING:
    from components.search_space import SearchSettings

TRIALS_TABLE = "trials.json"
TRIAL_RESULT = "result.json"
TRIAL_GRID = "best.png"


@dataclass
class SearchResult:
    """What a finished search (single process or chief) leaves behind."""

    rows: list[dict[str, Any]]
    best: dict[str, Any] | None  # the best_hyperparameters.json content, None if no trial completed
    table_path: Path
    best_path: Path | None


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
