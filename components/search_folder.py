"""A search's folder, `<run>/tuner/`: what makes it safe to resume.

- `search.json` records the settings, space, base configuration, evaluation and data of the
  search; a re-run must match it (only `max_trials` may change) or start over with `new_search`;
- KerasTuner's own state files (written in place, not atomically) are checked to parse, so a file
  torn by a crash is named in one line instead of failing deep inside KerasTuner;
- temporary files and half-copied run folders of a killed search are removed;
- a row's `result.json` (a trial's, or the default configuration's) is read back, a torn one
  counting as absent.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from components.artifacts import RunPaths, atomic_write_json, changed_settings, read_json, remove_stale_temporaries
from components.errors import PipelineError
from components.runfolder import EVAL_OBJECTIVE as OBJECTIVE
from components.runfolder import check_run_folder_is_ours

SEARCH_RECORD = "search.json"
DEFAULT_DIR = "baseline"  # tuner/baseline/: the default configuration's row, beside KerasTuner's trial_<id>/
CONFIRM_DIR = "confirm"  # tuner/confirm/: the best trial and the default again as the final training runs
PROBE_RECORD = "step_probes.json"  # tuner/step_probes.json: the leaders' speed probes at the data's size


def prepare_search_folder(paths: RunPaths, record: dict[str, Any], new_search: bool) -> None:
    """Make `paths.tuner` ready for the search `record` describes (single process or chief):
    refuse a foreign run folder or another search, discard the old one with `new_search`, write
    the record (first: it marks the folder as a search of ours), check KerasTuner's state files
    and remove a killed search's leftovers."""
    check_run_folder_is_ours(paths)
    _check_same_search(paths, record, new_search)
    atomic_write_json(paths.tuner / SEARCH_RECORD, record)
    _check_tuner_state(paths.tuner)
    rows = (paths.tuner / DEFAULT_DIR, *paths.tuner.glob("trial_*"), *paths.tuner.glob(f"{CONFIRM_DIR}/*"))
    for folder in (paths.tuner, *rows):
        remove_stale_temporaries(folder)  # a row's half-written files or half-copied run of a killed search


def wait_for_chief(paths: RunPaths, timeout: float = 600.0) -> None:
    """A worker of a distributed search writes into the run folder only once the chief has marked
    it as a search's (its search record): started at the same moment, a worker that wrote first
    would make the chief refuse the folder as one this project did not write."""
    deadline = time.monotonic() + timeout
    while not (paths.tuner / SEARCH_RECORD).is_file():
        if time.monotonic() > deadline:
            raise PipelineError(
                f"no chief has started the search in {paths.tuner} within {timeout:.0f} s; start the same command "
                "with KERASTUNER_TUNER_ID=chief (on the machine at KERASTUNER_ORACLE_IP)."
            )
        time.sleep(0.2)


def read_result(path: Path) -> dict[str, Any] | None:
    """A row's result.json, or None if it is missing, torn or garbled (`result_problem`): the row is
    then trained again, which resumes its finished runs from their checkpoints and rescores them
    from metrics.jsonl."""
    try:
        result = read_json(path)
    except (OSError, ValueError):
        return None
    return result if result_problem(result) is None else None


def result_problem(result: Any) -> str | None:
    """What makes a row's result.json unusable, or None: a status, the images and seconds it took,
    and for a completed row its numeric score and each execution's scores."""

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not isinstance(result, dict) or result.get("status") not in ("COMPLETED", "FAILED"):
        return "it has no status COMPLETED or FAILED"
    if not number(result.get("seconds")) or not number(result.get("images")):
        return "it does not say how many images and seconds the row took"
    if result["status"] == "FAILED":
        return None if isinstance(result.get("reason"), str) else "a failed row needs its reason"
    executions = result.get("executions")
    if not number(result.get(OBJECTIVE)) or not isinstance(executions, list) or not executions:
        return f"a completed row needs its {OBJECTIVE} and executions"
    if not all(isinstance(score, dict) and all(map(number, score.values())) and OBJECTIVE in score for score in executions):
        return "an execution's scores are not numbers"
    return None


def read_probes(tuner_dir: Path) -> dict[str, dict[str, Any]]:
    """The speed probes on file (`PROBE_RECORD`): trial id -> its "hyperparameters", "cost" (its
    step's cost per image against the default's) and the "seconds" the probe took. A torn file
    reads as none and an entry of another form is left out: those trials are probed again."""
    try:
        probes = read_json(tuner_dir / PROBE_RECORD)
    except (OSError, ValueError):
        return {}

    def positive(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")

    if not isinstance(probes, dict):
        return {}
    return {
        trial_id: probe
        for trial_id, probe in probes.items()
        if isinstance(probe, dict)
        and isinstance(probe.get("hyperparameters"), dict)
        and positive(probe.get("cost"))
        and positive(probe.get("seconds"))
    }


# What KerasTuner's state files must hold for it to reload them: a JSON object with these keys.
_TUNER_STATE_KEYS = {"oracle.json": ("ongoing_trials", "tried_so_far"), "trial.json": ("trial_id", "hyperparameters", "status")}


def _check_tuner_state(tuner_dir: Path) -> None:
    """KerasTuner's own state files (it writes them in place, not atomically) must parse to what it
    reloads, or reloading them would fail deep inside KerasTuner: name a damaged one instead."""
    for path in [tuner_dir / "oracle.json", *tuner_dir.glob("tuner*.json"), *tuner_dir.glob("trial_*/trial.json")]:
        if not path.is_file():
            continue
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            problem = None if isinstance(state, dict) else f"it holds a {type(state).__name__}, not an object"
        except (OSError, ValueError) as err:
            problem = f"{err}"
        missing = [key for key in _TUNER_STATE_KEYS.get(path.name, ()) if problem is None and key not in state]
        if problem or missing:
            raise PipelineError(
                f"{path}, KerasTuner's record of the search, is damaged (a write cut short by a crash?): "
                f"{problem or 'no ' + missing[0]}. Pass `overwrite_search` to start the search again."
            )


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
        problem = None if isinstance(saved, dict) else f"it holds a {type(saved).__name__}, not an object"
    except (OSError, ValueError) as err:
        problem = str(err)
    if problem:
        raise PipelineError(f"{path} is damaged ({problem}); pass `overwrite_search` to start the search again.")
    changes = changed_settings(saved, json.loads(json.dumps(record)))  # the record as JSON sees it
    if changes:
        raise PipelineError(
            f"{paths.tuner} holds a search with other settings ({path}): "
            + "; ".join(changes)
            + ". Re-run with the same settings to resume it (only `max_trials` may change), "
            "choose another run folder, or pass `overwrite_search` to discard it."
        )
