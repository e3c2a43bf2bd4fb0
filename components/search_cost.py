"""What a search will cost, said before it starts, and what it has spent, counted as it goes.

`--tune` prints `estimate_cost(...).describe()` before its first training, so a user sees the
hour a search takes before spending it. The speeds come from `measure_speed`, a short probe of
the base configuration's training step on this machine (one at the trial image size, one more
at the data's size for the final training when the two differ: a probe is cheap, and scaling
by pixels would miss how a step's cost changes with the size). Trials of other filter counts
run slower or faster than the base configuration; evaluations, start-up and Hyperband's
shorter trials are not counted (for Hyperband the figure is an upper bound: every trial at its
longest).

As it goes: `search_spending` adds up the seconds that the rows' result.json files and the
leaders' speed probes record (a resumed search counts what its earlier runs paid) and the
seconds per image the rows took; the tuner stops a search before a trial that would take it past
`--tune-budget` (components.tuner).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from components.config import DEFAULT_TRAININGS, TrainConfig
from components.search_folder import CONFIRM_DIR, DEFAULT_DIR, read_probes, read_result
from components.search_report import TRIAL_RESULT
from components.search_settings import SearchSettings


@dataclass(frozen=True)
class CostEstimate:
    """Trainings of a search and its final training, in images and seconds at measured speeds."""

    trainings: int
    images_per_training: int
    trial_images_per_sec: float
    final_images: int | None  # None: no final training to estimate
    final_images_per_sec: float | None
    confirmation_seconds: float = 0.0  # a winner confirmed as the final training runs (trials smaller or shorter)

    @property
    def search_seconds(self) -> float:
        return self.trainings * self.images_per_training / self.trial_images_per_sec

    @property
    def final_seconds(self) -> float | None:
        return None if self.final_images is None else self.final_images / self.final_images_per_sec

    def describe(self, settings: SearchSettings, final: bool = True) -> str:
        """The search (within its budget in time, if it has one; what confirming a winner keeps, and a
        note when the budget cannot pay for that), then the final training (unless `final` is False:
        --tune-only trains none)."""
        tuned = settings.tuned_trials * settings.executions_per_trial
        per_training = self.images_per_training / self.trial_images_per_sec
        kept = self.confirmation_seconds
        if settings.budget_seconds is not None:
            trial_seconds = per_training * settings.executions_per_trial
            left = settings.budget_seconds - DEFAULT_TRAININGS * per_training - kept
            fit = max(0, int(left // trial_seconds))
            confirm = f", keeping {_duration(kept)} to confirm a winner as the final training runs" if kept else ""
            lines = [
                f"estimate: the search trains the default {DEFAULT_TRAININGS} times, then tuned trials, each "
                f"{self.images_per_training:,} images at ~{self.trial_images_per_sec:,.0f} img/s "
                f"(about {_duration(per_training)}), "
                f"until its budget of {_duration(settings.budget_seconds)}"
                + (f" ({settings.budget_seconds / self.final_seconds:.3g} x the final training)" if self.final_seconds else "")
                + f"{confirm}: about {min(fit, settings.tuned_trials)} tuned trial(s)"
                + (" or more (hyperband's first trials are shorter)" if settings.tuner == "hyperband" else "")
            ]
            if kept and fit == 0:
                lines.append(self._unconfirmable(DEFAULT_TRAININGS * per_training + kept + trial_seconds))
        else:
            lines = [
                f"estimate: the search trains {DEFAULT_TRAININGS} default + {tuned} tuned = {self.trainings} times "
                f"{self.images_per_training:,} images at ~{self.trial_images_per_sec:,.0f} img/s: "
                f"about {_duration(self.search_seconds)}" + (" at most (hyperband)" if settings.tuner == "hyperband" else "")
            ]
            if kept:
                lines.append(f"estimate: and {_duration(kept)} more if a trial wins, to confirm it as the final training runs")
        if final and self.final_images is not None:
            lines.append(
                f"estimate: then the final training, {self.final_images:,} images at ~{self.final_images_per_sec:,.0f} img/s: "
                f"about {_duration(self.final_seconds)} (evaluations not counted)"
            )
        return "\n".join(lines)

    def _unconfirmable(self, needed_seconds: float) -> str:
        """Why a budget too small to confirm a winner buys nothing, and what would."""
        multiple = f"about {needed_seconds / self.final_seconds:.2g} x the final training" if self.final_seconds else "more"
        return (
            "note: the budget cannot pay for confirming a winner (two seeds each of it and the default, at the data's "
            "size for the final training's images), so the search will keep the default; a budget of "
            f"{multiple} buys one tuned trial, and trials at the data's size for the final training's images "
            "need no confirmation"
        )


@dataclass(frozen=True)
class ConfirmationCost:
    """What confirming a winner as the final training runs takes, when trials train smaller or
    shorter than it: two seeds each of the trial and the default at the data's size (`image_size`)
    for the final training's images (`images_per_training`), at the default's cost per image at
    the trial size plus what its step costs more at the data's size. That difference comes from
    the base configuration's speed probes at both sizes (`speeds`, images/s at the trial size and
    at the data's); without probes the whole cost is scaled by the ratio of pixels
    (`pixel_ratio`), which overestimates it on a CPU."""

    images_per_training: int
    image_size: int  # the data's, where the confirmation trains
    pixel_ratio: float
    speeds: tuple[float, float] | None = None

    @property
    def images(self) -> int:
        """Images of the whole confirmation: the default's trainings and as many of the trial's."""
        return 2 * DEFAULT_TRAININGS * self.images_per_training

    def seconds(self, default_seconds_per_image: float, trial_factor: float = 1.0) -> float:
        """The default's two trainings at `default_seconds_per_image` (at the trial size, start-up
        and evaluations included) moved to the data's size, and the trial's two at `trial_factor`
        times that (its step's cost against the default's)."""
        if self.speeds is None:
            at_data_size = default_seconds_per_image * self.pixel_ratio
        else:
            at_trial_size_speed, at_data_size_speed = self.speeds
            at_data_size = default_seconds_per_image + 1 / at_data_size_speed - 1 / at_trial_size_speed
        return self.images / 2 * at_data_size * (1 + trial_factor)


def confirmation_cost(
    settings: SearchSettings, data_size: int, speeds: tuple[float, float] | None = None
) -> ConfirmationCost | None:
    """The confirmation a search with `settings` runs on data of `data_size` pixels a side: None
    when its trials train as the final training does, at the data's size for its images (a
    trial's score is then the final training's own figure, there is nothing to confirm)."""
    trial_size = settings.trial_image_size or data_size
    if trial_size == data_size and settings.final_length == settings.trial_images:
        return None
    return ConfirmationCost(settings.final_length, data_size, (data_size / trial_size) ** 2, speeds)


def estimate_cost(
    settings: SearchSettings,
    trial_images_per_sec: float,
    final_images: int | None = None,
    final_images_per_sec: float | None = None,
    *,
    confirmation: ConfirmationCost | None = None,
) -> CostEstimate:
    """The whole search's trainings (the default's two, then every execution of every tuned
    trial) of `trial_images` each, and the final training, at the given speeds; and the
    `confirmation`'s, if the trials train at a smaller size, for a trial that costs what the
    default does."""
    trainings = DEFAULT_TRAININGS + settings.tuned_trials * settings.executions_per_trial
    confirming = confirmation.seconds(1 / trial_images_per_sec) if confirmation else 0.0
    return CostEstimate(trainings, settings.trial_images, trial_images_per_sec, final_images, final_images_per_sec, confirming)


def measure_speed(
    config: TrainConfig, image_size: int, *, precision: str = "auto", jit: bool | None = None, steps: int = 20, warmup: int = 3
) -> float:
    """Images per second of `config`'s training step at `image_size` on this machine, from the mean
    of timed steps on one in-memory batch after `warmup` untimed ones (tracing). The timed steps
    are `steps`, or two periods of lazy R1 when that is more: R1's slower steps belong to the
    cost, and a median would skip them. The input pipeline is left out: it reads several times
    faster than a step trains."""
    import time

    import keras
    import numpy as np

    from components.precision import resolve_jit, resolve_precision, step_graph_options
    from components.trainer import build_gan, compile_gan

    keras.backend.clear_session()
    sized = config.with_image_size(image_size)
    policy = resolve_precision(precision)
    gan = build_gan(sized, policy)
    compile_gan(gan, sized, policy, jit_compile=resolve_jit(jit))
    images = np.random.default_rng(0).uniform(-1, 1, (config.batch_size, image_size, image_size, 3)).astype("float32")
    if config.r1_gamma > 0:
        steps = max(steps, 2 * config.r1_every)
    with step_graph_options(second_order=config.r1_gamma > 0):  # as the trainer builds the step
        for _ in range(warmup):
            gan.train_on_batch(images)  # returns host values: the step has finished
        started = time.perf_counter()
        for _ in range(steps):
            gan.train_on_batch(images)
    return config.batch_size * steps / (time.perf_counter() - started)


def _duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3.4 h`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


@dataclasses.dataclass(frozen=True)
class Spending:
    """What a search has cost so far: seconds of all its rows, and seconds per image trained."""

    seconds: float
    seconds_per_image: float


def search_spending(project_dir: Path, trial_dirs: Sequence[str | os.PathLike]) -> Spending:
    """The seconds recorded in the result.json of the default's row, of `trial_dirs` and of the
    confirmation's rows (failed rows count: their time is spent) and by the leaders' speed probes,
    and the seconds per image of the completed rows at the trial size (the confirmation trains at
    the data's size and the final training's length)."""
    seconds = sum(probe["seconds"] for probe in read_probes(project_dir).values())
    images = completed_seconds = 0.0
    confirmation = sorted(path for path in (project_dir / CONFIRM_DIR).glob("*") if path.is_dir())
    for row_dir in [project_dir / DEFAULT_DIR, *map(Path, trial_dirs), *confirmation]:
        result = read_result(row_dir / TRIAL_RESULT)
        if not isinstance(result, dict) or not isinstance(result.get("seconds"), (int, float)):
            continue
        seconds += result["seconds"]
        if result.get("status") == "COMPLETED" and row_dir not in confirmation:
            completed_seconds += result["seconds"]
            images += result["images"] * len(result["executions"])
    return Spending(seconds, completed_seconds / images if images else 0.0)
