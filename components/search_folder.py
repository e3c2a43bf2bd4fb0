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
from pathlib import Path
from typing import Any

from components.artifacts import RunPaths, atomic_write_json, changed_settings, read_json, remove_stale_temporaries
from components.errors import PipelineError
from components.runfolder import check_run_folder_is_ours

SEARCH_RECORD = "search.json"
DEFAULT_DIR = "baseline"  # tuner/baseline/: the default configuration's row, beside KerasTuner's trial_<id>/


def prepare_search_folder(paths: RunPaths, record: dict[str, Any], new_search: bool) -> None:
    """Make `paths.tuner` ready for the search `record` describes (single process or chief):
    refuse a foreign run folder or another search, discard the old one with `new_search`, write
    the record (first: it marks the folder as a search of ours), check KerasTuner's state files
    and remove a killed search's leftovers."""
    check_run_folder_is_ours(paths)
    _check_same_search(paths, record, new_search)
    atomic_write_json(paths.tuner / SEARCH_RECORD, record)
    _check_tuner_state(paths.tuner)
    for folder in (paths.tuner, paths.tuner / DEFAULT_DIR, *paths.tuner.glob("trial_*")):
        remove_stale_temporaries(folder)  # a row's half-written files or half-copied run of a killed search


def read_result(path: Path) -> dict[str, Any] | None:
    """A row's result.json, or None if it is missing or torn (the row is then trained again, which
    resumes its finished runs from their checkpoints and rescores them from metrics.jsonl)."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


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
