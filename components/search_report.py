"""What a search leaves behind: the trials table, the chosen configuration, and training from it.

- `tuner/trials.json` (and the printed table, `format_table`): the default configuration's row
  (`"trial_id": "default"`, the base values of the searched fields, its two seeds' scores in
  `executions`), then one row per trial with its values, swd_avg (msssim and floor beside it),
  seconds, images, status, failure reason and grid;
- `<run>/best_hyperparameters.json`: the chosen configuration (`choose`: the best trial only if
  it beats the default by more than the noise), why, the default's score and the noise;
- `tuner/logs/`: the same rows as TensorBoard's HParams dashboard (components.search_dashboard);
- `config_from_best`: a base configuration with a best file's values applied (`--hparams FILE`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.artifacts import RunPaths, atomic_write_json, flatten_dict, read_json
from components.config import TrainConfig
from components.errors import PipelineError
from components.runfolder import EVAL_OBJECTIVE as OBJECTIVE
from components.search_dashboard import write_dashboard
from components.search_folder import DEFAULT_DIR, read_result
from components.search_space import apply_values, base_values, tunable_fields, tuned_values

if TYPE_CHECKING:
    from components.search_space import SearchSettings

TRIALS_TABLE = "trials.json"
TRIAL_RESULT = "result.json"
TRIAL_GRID = "best.png"
DASHBOARD = "logs"  # tuner/logs/: `tensorboard --logdir <run>/tuner/logs`
DEFAULT_ID = "default"
NOISE_RULE = (
    "a trial is chosen only if the default's swd_avg (mean of seeds s, s+1) - the trial's > noise = |swd_avg(s) - swd_avg(s+1)|"
)


@dataclass
class SearchResult:
    """What a finished search (single process or chief) leaves behind."""

    rows: list[dict[str, Any]]  # the default's row first, then the trials
    best: dict[str, Any] | None  # the best_hyperparameters.json content, None if nothing completed
    table_path: Path
    best_path: Path | None
    wall_seconds: float | None = None  # of the call that returned it (a resumed search: this part)


def search_rows(oracle, paths: RunPaths, settings: SearchSettings, base: TrainConfig, space: Mapping[str, Any]) -> list:
    """The table: the default's row, then one row per trial."""
    return [default_row(paths, settings, base, list(space)), *trials_table(oracle, paths, settings)]


def write_search_results(
    rows: list[dict[str, Any]],
    paths: RunPaths,
    settings: SearchSettings,
    base: TrainConfig,
    space: Mapping[str, Any],
    confirmation: dict[str, Any] | None = None,
) -> SearchResult:
    """Write `tuner/trials.json`, the HParams dashboard and, if a row completed, `best_hyperparameters.json`."""
    table_path = paths.tuner / TRIALS_TABLE
    atomic_write_json(table_path, rows)
    write_dashboard(paths.tuner / DASHBOARD, rows, space)
    best = best_file(rows, base, settings, table_path, confirmation)
    if best is None:
        return SearchResult(rows, None, table_path, None)
    atomic_write_json(paths.best_hyperparameters, best)
    return SearchResult(rows, best, table_path, paths.best_hyperparameters)


def default_row(paths: RunPaths, settings: SearchSettings, base: TrainConfig, names: Sequence[str]) -> dict[str, Any]:
    """The default configuration's row, from `tuner/baseline/result.json`."""
    row_dir = paths.tuner / DEFAULT_DIR
    result = read_result(row_dir / TRIAL_RESULT) or {"status": "FAILED", "reason": f"{row_dir / TRIAL_RESULT} is missing"}
    completed = result["status"] == "COMPLETED"
    return _row(
        DEFAULT_ID,
        row_dir,
        result,
        result["status"],
        result.get(OBJECTIVE) if completed else None,
        seconds=result.get("seconds"),
        images=settings.trial_images,
        hyperparameters=base_values(base, names),
        continues=None,
        reason=result.get("reason"),
    )


def trials_table(oracle, paths: RunPaths, settings: SearchSettings) -> list[dict[str, Any]]:
    """One row per trial the oracle knows, in trial order: its values, score, time and status.

    Seconds, per-execution scores and failure reasons come from the trial's `result.json`
    (written by whichever process ran it); without it (a worker on another filesystem) from what
    the oracle was told.
    """
    order = [hp.name for hp in oracle.get_space().space]  # the space's order, whatever the trial's
    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        row_dir = paths.tuner / f"trial_{trial_id}"
        result = read_result(row_dir / TRIAL_RESULT) or {}
        completed = trial.status == "COMPLETED"
        seconds = result.get("seconds")
        if seconds is None and completed and trial.metrics.exists("seconds"):
            seconds = float(trial.metrics.get_last_value("seconds"))
        rows.append(
            _row(
                trial_id,
                row_dir,
                result,
                trial.status,
                float(trial.score) if completed and trial.score is not None else None,
                seconds=seconds,
                images=settings.trial_budget(trial.hyperparameters.values),
                hyperparameters=_in_order(tuned_values(trial.hyperparameters.values), order),
                continues=trial.hyperparameters.values.get("tuner/trial_id"),
                reason=result.get("reason") or _reason_from_message(trial.message),
            )
        )
    return rows


def _row(row_id: str, row_dir: Path, result: dict, status: str, score: float | None, **fields: Any) -> dict[str, Any]:
    """One table row: the fields given, with the executions' scores, msssim and floor of a
    completed row's result.json, its grid, and a reason only when it did not complete."""
    completed = status == "COMPLETED"
    executions = (result.get("executions") or []) if completed else []
    grid = row_dir / TRIAL_GRID

    def mean(name: str) -> float | None:
        values = [execution[name] for execution in executions if name in execution]
        return sum(values) / len(values) if values and len(values) == len(executions) else None

    return {
        "trial_id": row_id,
        "status": status,
        OBJECTIVE: score,
        "executions": [execution[OBJECTIVE] for execution in executions] or None,
        "msssim": mean("msssim"),
        f"{OBJECTIVE}_floor": mean(f"{OBJECTIVE}_floor"),
        **fields,
        "reason": None if completed else fields["reason"],
        "grid": str(grid) if completed and grid.is_file() else None,
    }


# -- the choice -----------------------------------------------------------------------------------


def seed_spread(row: dict[str, Any]) -> float | None:
    """How far apart a completed row's seeds scored (None unless it has two or more). The default
    configuration's is the search's noise: two trainings that differ only by their seed differ by
    this much, so a trial ahead of the default by less is not shown to be better."""
    scores = row.get("executions") or []
    return max(scores) - min(scores) if row["status"] == "COMPLETED" and len(scores) >= 2 else None


def confirmation_row(row_dir: Path, trial_id: str, images: int) -> dict[str, Any]:
    """A row of the confirmation (`components.tuner.DCGANTuner.confirm`), from its result.json."""
    result = read_result(row_dir / TRIAL_RESULT) or {"status": "FAILED", "reason": f"{row_dir / TRIAL_RESULT} is missing"}
    score = result.get(OBJECTIVE) if result["status"] == "COMPLETED" else None
    seconds, reason = result.get("seconds"), result.get("reason")
    return _row(trial_id, row_dir, result, result["status"], score, seconds=seconds, images=images, reason=reason)


def confirmed(confirmation: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the trial chosen by trials smaller or shorter than the final training beat the default
    again as the final training runs (`confirmation`: its "default" and "trial" rows, two seeds
    each, the "image_size" and "images" they trained), by more than the noise there: the larger
    of the two rows' seed spreads (the default's two seeds can agree by chance while the trial's
    differ widely); and the figures, for the reason line."""
    size = confirmation["image_size"]
    where = f"{size}x{size} for {confirmation['images']:,} images"
    if "skipped" in confirmation:
        return False, f"at {where}: not run, {confirmation['skipped']}"
    default, trial = confirmation["default"], confirmation["trial"]
    if trial["status"] != "COMPLETED":
        return False, f"at {where}: the trial failed ({trial['reason']})"
    if default["status"] != "COMPLETED":
        return True, f"at {where}: the default failed ({default['reason']}), the trial scored {trial[OBJECTIVE]:.4g}"
    noise = max(seed_spread(default), seed_spread(trial) or 0.0)
    figures = f"at {where}: {OBJECTIVE} {trial[OBJECTIVE]:.4g} vs default {default[OBJECTIVE]:.4g} ± noise {noise:.2g}"
    return default[OBJECTIVE] - trial[OBJECTIVE] > noise, figures


def winners(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The completed trials that beat the default's row (`rows[0]`) by more than its `seed_spread`
    (the noise), best first (none when the default's row failed: nothing to beat)."""
    default = rows[0]
    if default["status"] != "COMPLETED":
        return []
    noise = seed_spread(default)
    ahead = [row for row in rows[1:] if row["status"] == "COMPLETED" and default[OBJECTIVE] - row[OBJECTIVE] > noise]
    return sorted(ahead, key=lambda row: row[OBJECTIVE])


def choose(rows: Sequence[dict[str, Any]], confirmation: Mapping[str, Any] | None = None) -> tuple[dict[str, Any] | None, str]:
    """The row to train next (the default's row is `rows[0]`) and one line saying why: the best
    completed trial if it beats the default's mean swd_avg by more than the default's
    `seed_spread`, else the default; a failed default leaves the best trial, if any. With a
    `confirmation` (trials smaller or shorter than the final training), the trial it trained (the
    best winner, or the best one whose confirmation the budget held) must also beat the default as
    the final training runs (`confirmed`): a configuration that wins at 32x32 may lose at 64x64,
    and one that leads after a few thousand images (a smaller batch: more steps) may lose by the end."""
    default = rows[0]
    trials = [row for row in rows[1:] if row["status"] == "COMPLETED"]
    best = min(trials, key=lambda row: row[OBJECTIVE]) if trials else None
    if default["status"] != "COMPLETED":
        return best, f"the default configuration failed ({default['reason']}); " + (
            f"best trial {best['trial_id']} chosen" if best else "no trial completed"
        )
    if best is None:
        return default, f"no tuned trial {'completed' if len(rows) > 1 else 'ran'}; the default configuration is chosen"
    scores = _against_default("best trial", best, default)
    if best not in winners(rows):
        return default, f"no configuration beat the default by more than the noise ({scores})"
    if confirmation is None:
        return best, f"trial {best['trial_id']} beat the default by more than the noise ({scores})"
    tried = next(row for row in trials if row["trial_id"] == confirmation["trial_id"])
    if tried is not best:  # the best's confirmation did not fit the budget, a runner-up's did
        scores = _against_default("trial", tried, default)
    again, figures = confirmed(confirmation)
    if again:
        return tried, f"trial {tried['trial_id']} beat the default by more than the noise ({scores}; confirmed {figures})"
    return (
        default,
        f"trial {tried['trial_id']} beat the default in the trials ({scores}) but not as the final training runs ({figures})",
    )


def _against_default(label: str, trial: dict[str, Any], default: dict[str, Any]) -> str:
    """`best trial 3: swd_avg 5 vs default 11 ± noise 2`, `label` naming the trial."""
    return (
        f"{label} {trial['trial_id']}: {OBJECTIVE} {trial[OBJECTIVE]:.4g} "
        f"vs default {default[OBJECTIVE]:.4g} ± noise {seed_spread(default):.2g}"
    )


def best_file(
    rows: Sequence[dict[str, Any]],
    base: TrainConfig,
    settings: SearchSettings,
    table_path: Path,
    confirmation: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """best_hyperparameters.json: the chosen row's tuned values (none for the default) and full
    configuration, why it was chosen, the default's score and noise, the best trial, the
    confirmation if one ran; None when no row completed."""
    chosen, reason = choose(rows, confirmation)
    if chosen is None:
        return None
    default = rows[0]
    completed = [row for row in rows[1:] if row["status"] == "COMPLETED"]
    best_trial = min(completed, key=lambda row: row[OBJECTIVE]) if completed else None
    values = {} if chosen is default else chosen["hyperparameters"]
    config = apply_values(base, values)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, image_size=None))
    return {
        "chosen": "default" if chosen is default else "trial",
        "reason": reason,
        "trial_id": chosen["trial_id"],
        OBJECTIVE: chosen[OBJECTIVE],
        "images": chosen["images"],
        "hyperparameters": values,
        "config": config.to_dict(),
        "default": {
            OBJECTIVE: default[OBJECTIVE],
            "executions": default["executions"],
            "noise": seed_spread(default),
            "seed": base.seed,
        },
        "best_trial": {key: best_trial[key] for key in ("trial_id", OBJECTIVE, "hyperparameters")} if best_trial else None,
        "ratio_to_default": chosen[OBJECTIVE] / default[OBJECTIVE] if default[OBJECTIVE] else None,
        "confirmation": _confirmation_record(confirmation),
        "search": {
            "tuner": settings.tuner,
            "trials": len(rows) - 1,
            "completed": len(completed),
            "table": str(table_path),
            "noise_rule": NOISE_RULE,
            "score_last": settings.score_last,
            "trial_image_size": settings.trial_image_size,
        },
    }


def _confirmation_record(confirmation: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The confirmation's figures as the best file keeps them (None: none ran)."""
    if confirmation is None:
        return None
    keep = ("trial_id", "status", OBJECTIVE, "executions", "seconds", "images", "reason")
    rows = {name: {key: confirmation[name][key] for key in keep} for name in ("default", "trial") if name in confirmation}
    skipped = {"skipped": confirmation["skipped"]} if "skipped" in confirmation else {}
    where = {key: confirmation[key] for key in ("trial_id", "image_size", "images")}
    return {**where, "confirmed": confirmed(confirmation)[0], **rows, **skipped}


def _in_order(values: dict[str, Any], order: Sequence[str]) -> dict[str, Any]:
    def place(name: str) -> tuple[int, str]:
        return (order.index(name) if name in order else len(order), name)

    return {name: values[name] for name in sorted(values, key=place)}


def _reason_from_message(message: str | None) -> str | None:
    """The last line of the traceback KerasTuner stores, without the exception's class name."""
    if not message:
        return None
    last = message.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if last.startswith("keras_tuner") and ": " in last else last


def format_table(rows: Sequence[dict[str, Any]], best_id: str | None = None) -> str:
    """The rows as an aligned text table (the chosen one marked with *), the default's two seeds
    and the noise, and failure reasons below it."""
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
    text += [
        f"{row['trial_id']}: {OBJECTIVE} {' and '.join(f'{score:.4g}' for score in row['executions'])} with its two seeds, "
        f"noise {seed_spread(row):.2g}"
        for row in rows
        if row["trial_id"] == DEFAULT_ID and seed_spread(row) is not None
    ]
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
    except (FileNotFoundError, NotADirectoryError) as err:
        raise PipelineError(
            f"hyperparameters file {path} does not exist (a search writes <run>/best_hyperparameters.json)."
        ) from err
    except IsADirectoryError as err:
        raise PipelineError(f"hyperparameters file {path} is a folder; pass the best_hyperparameters.json inside a run.") from err
    except ValueError as err:
        raise PipelineError(f"{path} is not a best_hyperparameters.json file: it is not JSON ({err}).") from err
    problem = best_file_problem(saved)
    if problem:
        raise PipelineError(f"{path} {problem}: it is not a usable best_hyperparameters.json file.")
    return saved["hyperparameters"]


def best_file_problem(content: Any) -> str | None:
    """What makes `content` not a usable best_hyperparameters.json, or None: its `hyperparameters`
    must be an object of tunable fields, each of its field's type (a JSON `true` is no batch size,
    a string no learning rate); the ranges are `TrainConfig`'s to check."""
    if not isinstance(content, dict) or not isinstance(content.get("hyperparameters"), dict):
        return "holds no 'hyperparameters' object"
    fields = tunable_fields()
    unknown = sorted(set(content["hyperparameters"]) - set(fields))
    if unknown:
        return f"sets unknown hyperparameter(s) {', '.join(unknown)}"
    for name, value in content["hyperparameters"].items():
        kind = fields[name]
        if kind is float:
            fits = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            fits = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if not fits:
            return f"sets {name} to {value!r}, not {'a finite number' if kind is float else 'of type ' + kind.__name__}"
    return None


def config_from_best(base: TrainConfig, path: str | os.PathLike) -> tuple[TrainConfig, list[str]]:
    """`base` with the best file's tuned values applied (as the search's trials did), and notes on
    the other fields where `base` differs from the configuration the search itself trained."""
    values = load_best_hyperparameters(path)
    try:
        config = apply_values(base, values)
    except PipelineError as err:
        raise PipelineError(f"{path}: {err}") from err
    saved_file = read_json(path)
    notes = []
    if saved_file.get("chosen") == "default":
        notes.append(f"the search chose its default configuration ({saved_file.get('reason')}): no tuned values to apply")
    saved = saved_file.get("config")
    if isinstance(saved, dict):
        ours = flatten_dict(dataclasses.replace(config, model=dataclasses.replace(config.model, image_size=None)).to_dict())
        for key, value in sorted(flatten_dict(saved).items()):
            if key in ours and ours[key] != value:
                notes.append(f"{key} is {ours[key]!r} here but {value!r} in the search's best configuration")
    return config, notes
