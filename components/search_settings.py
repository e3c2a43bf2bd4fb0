"""How a hyperparameter search runs: `SearchSettings` (oracle, trials, images per trial, Hyperband's
schedule, scoring), declared once (components.settings).

`components.search_run` runs a search with them and `pipeline.train` builds its search flags from these
fields. Kept apart from the search space and the oracle (components.search_space), which import
KerasTuner, so that a command line is parsed without loading it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components.config import DEFAULT_TRAININGS, SEARCH_LIMITS
from components.errors import PipelineError
from components.model import IMAGE_SIZES
from components.settings import SettingError, check_settings, setting

TUNERS = ("bayesian", "random", "hyperband")


def _limited(default: int, help: str, name: str, metavar: str = "N") -> Any:
    """A whole-number search setting within its `SEARCH_LIMITS`."""
    return setting(default, help, kind=int, low=SEARCH_LIMITS[name][0], high=SEARCH_LIMITS[name][1], metavar=metavar)


@dataclass(frozen=True)
class SearchSettings:
    """How to search. Everything but `max_trials` must stay the same when a search is resumed.

    The budget: `max_trials` counts trials of `trial_images` images each, the untuned default
    configuration's row counting as its two trainings (`DEFAULT_TRAININGS`: seeds seed and seed+1,
    which also measure the noise), so KerasTuner runs `tuned_trials` = max_trials - 2 trials. A trial's score is the
    mean swd_avg of its last `score_last` evaluations, taken at evenly spaced points of the
    trial's second half (`score_points`): one evaluation at the end is the noisiest figure a
    trial has. `trial_image_size` (None: the data's size) trains and scores every trial, and the
    default's row, at a divisor of the data's size, on images downscaled by area averaging.
    """

    tuner: str = setting(
        "bayesian",
        "KerasTuner oracle: bayesian (Gaussian process, needs scikit-learn; a third of the trials explore at "
        "random first), random, or hyperband (many short trials, the best continued from their checkpoints)",
        kind=str,
        choices=TUNERS,
    )
    # The default's two trainings, then max_trials - 2 tuned trials. Not a `setting`: its flag's default
    # depends on another flag (pipeline._search: no cap but the time budget's when one is given).
    max_trials: int = 10
    trial_images: int = _limited(
        20_000,
        "images seen by one trial (hyperband: by its longest); fewer than the final training's: a trial that wins is "
        "confirmed for the final training's images, beside the default, before it is chosen",
        "trial_images",
    )
    executions_per_trial: int = _limited(
        1,
        "trainings per tuned trial (seeds --seed, --seed+1, ...), swd_avg averaged; --seed also seeds the oracle",
        "executions_per_trial",
    )
    seed: int = 0  # the oracle's seed (the training's --seed); the trials train with the TrainConfig's own seed
    hyperband_max_epochs: int = _limited(
        9, "hyperband: its longest trial in epochs of trial-images / this images", "hyperband_max_epochs"
    )
    hyperband_factor: int = _limited(3, "hyperband: reduction factor between rounds and brackets", "hyperband_factor")
    score_last: int = _limited(
        2,
        "a trial's score is the mean swd_avg of its last K evaluations, evenly spaced over its second half (2: at 3/4 "
        "and at the end)",
        "score_last",
        "K",
    )
    trial_image_size: int | None = setting(
        None,
        "train and score the trials (and the default's row) at this divisor of the data's image size, on images "
        "downscaled by area averaging (e.g. 32 for 64x64 data: a quarter of the pixels); the final training uses the "
        "data's size",
        kind=int,
        choices=IMAGE_SIZES,
        metavar="PIXELS",
    )
    budget_seconds: float | None = None  # the search stops itself before a trial would cross it (None: trials only)
    # The final training's images (None: as many as a trial's). Trials shorter than it, or smaller than the
    # data, only screen: a trial's lead after few images can vanish by the end of a longer run (a smaller
    # batch takes more steps per image and leads early), so a winner is confirmed as the final training runs.
    final_images: int | None = None

    def __post_init__(self) -> None:
        check_settings(self)
        if isinstance(self.max_trials, int) and self.max_trials <= DEFAULT_TRAININGS:  # the reason, before the bare limits
            raise SettingError(
                "max_trials",
                f"must be at least {DEFAULT_TRAININGS + 1}: the default configuration's {DEFAULT_TRAININGS} "
                f"trainings count as trials, then one tuned trial at least; got {self.max_trials}.",
            )
        unchecked = {"max_trials": "max_trials", "seed": "seed"}  # fields not checked as settings -> their limits
        if self.final_images is not None:
            unchecked["final_images"] = "trial_images"  # a training's images, as a trial's
        for name, limits in unchecked.items():
            low, high = SEARCH_LIMITS[limits]
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise SettingError(name, f"must be a whole number from {low:,} to {high:,}, got {value!r}.")
        if self.budget_seconds is not None and not (math.isfinite(self.budget_seconds) and self.budget_seconds > 0):
            raise PipelineError(f"the search's budget must be a positive number of seconds, got {self.budget_seconds!r}.")

    @property
    def tuned_trials(self) -> int:
        """KerasTuner's trials: the budget less the default configuration's trainings."""
        return self.max_trials - DEFAULT_TRAININGS

    @property
    def final_length(self) -> int:
        """Images of the final training, which a confirmation of a winner trains too."""
        return self.trial_images if self.final_images is None else self.final_images

    def trial_budget(self, values: Mapping[str, Any]) -> int:
        """Images a trial trains to: `trial_images`, or for Hyperband its `tuner/epochs` epochs of
        `trial_images / hyperband_max_epochs` images each (cumulative, as Hyperband counts)."""
        if "tuner/epochs" not in values:
            return self.trial_images
        return math.ceil(int(values["tuner/epochs"]) * self.trial_images / self.hyperband_max_epochs)

    def score_points(self, budget: int) -> list[int]:
        """Images seen at a trial's scored evaluations: `score_last` points evenly spaced over the
        second half of `budget`, the last at its end (2: at 3/4 and 4/4; 1: at the end only)."""
        last = self.score_last
        return [math.ceil(budget * (last + k) / (2 * last)) for k in range(1, last + 1)]

    def record(self) -> dict[str, Any]:
        """What a resumed search must share with the original (all but its budget: max_trials and
        budget_seconds may change between runs)."""
        record = dataclasses.asdict(self)
        del record["max_trials"], record["budget_seconds"]
        if self.tuner != "hyperband":
            del record["hyperband_max_epochs"], record["hyperband_factor"]
        return record
