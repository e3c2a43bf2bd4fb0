"""One trial of the search: the DCGAN as a KerasTuner hypermodel, and how a trained run is scored.

`DCGANHyperModel.build(hp)` turns a trial's values into a `TrainConfig` (a light object: the
trainer builds the networks itself, so a GAN built here would be thrown away), and
`DCGANHyperModel.fit` trains that configuration with `components.trainer.train` and returns
`run_score`. This is what a trial *is*; `components.tuner` decides which trials run, records their
rows and drives KerasTuner's search, and benchmarks score runs through this module exactly as a
trial is scored without running a search.
"""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras_tuner

from components.artifacts import RunPaths
from components.config import TrainConfig
from components.errors import PipelineError
from components.runfolder import EVAL_OBJECTIVE as OBJECTIVE
from components.runfolder import read_metrics
from components.search_space import SearchSettings, apply_values, declare

EvaluateFn = Callable[[Any], dict[str, float]]


class DCGANHyperModel(keras_tuner.HyperModel):
    """The DCGAN as a search space: `build(hp)` gives a `TrainConfig`, `fit` trains and scores it."""

    def __init__(
        self,
        base: TrainConfig,
        space: Mapping[str, Any],
        data_dir: str | os.PathLike,
        evaluate_fn: EvaluateFn | None,
        settings: SearchSettings,
        *,
        train_options: Mapping[str, Any] | None = None,
    ):
        super().__init__(name="dcgan")
        self.base, self.space, self.data_dir = base, dict(space), Path(data_dir)
        self.evaluate_fn, self.settings = evaluate_fn, settings
        self.train_options = dict(train_options or {})

    def build(self, hp: keras_tuner.HyperParameters) -> TrainConfig:
        return apply_values(self.base, {name: declare(hp, name, spec) for name, spec in self.space.items()})

    def fit(self, hp, config: TrainConfig, *, run_dir: Path, images: int, verbose: bool = True) -> dict[str, float]:
        """Train `config` in `run_dir` (resuming what is there) to `images` images at the trial
        image size, evaluated at `SearchSettings.score_points`; its `run_score`."""
        import keras

        from components.train_options import TrainOptions
        from components.trainer import train

        if self.evaluate_fn is None:
            raise PipelineError("a search needs an evaluator: the trials are ranked by swd_avg on the eval split.")
        keras.backend.clear_session()  # each trial builds new networks; free the last one's graphs
        gc.collect()
        keras.utils.set_random_seed(config.seed)  # same seed, same initial weights: trials compare
        train(
            config,
            self.data_dir,
            run_dir,
            TrainOptions(**{**self.train_options, "images": images}),
            evaluate_fn=self.evaluate_fn,
            eval_at=tuple(self.settings.score_points(images)[:-1]),  # the end is always evaluated
            image_size=self.settings.trial_image_size,
            verbose=verbose,
        )
        return run_score(run_dir, self.settings.score_last)


def run_score(run_dir: Path, last: int) -> dict[str, float]:
    """A trained run's score from its metrics.jsonl: the means of swd_avg and msssim over its last
    `last` evaluations (fewer if a short run had fewer), the newest swd_avg floor, images seen.

    The mean of a few evaluations late in a run varies less from seed to seed than the best or
    the last single one, which is what makes trials (and the default's row) comparable. A
    Hyperband trial that continues an earlier one counts that trial's evaluations as its own.
    """
    evaluations = [record for record in read_metrics(RunPaths(run_dir).metrics) if record["kind"] == "eval"][-last:]
    if not evaluations or not all(math.isfinite(record.get(OBJECTIVE, math.nan)) for record in evaluations):
        raise PipelineError(f"the evaluator gave no finite {OBJECTIVE} for {run_dir}.")
    scores = {
        name: sum(record[name] for record in evaluations) / len(evaluations)
        for name in (OBJECTIVE, "msssim")
        if all(name in record for record in evaluations)
    }
    if f"{OBJECTIVE}_floor" in evaluations[-1]:
        scores[f"{OBJECTIVE}_floor"] = float(evaluations[-1][f"{OBJECTIVE}_floor"])
    return {**scores, "evaluations": float(len(evaluations)), "images_seen": float(evaluations[-1]["images_seen"])}
