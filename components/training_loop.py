"""What a training run does between Keras executions: the NaN guard, logs, grids, evaluations, checkpoints.

Keras' `fit` runs `steps_per_execution` training steps per call into the graph and then calls
back; `TrainingLoop` reads the step and images-seen counters once (components.gan keeps them in
the graph), and does whatever fell due since the last call, each when its interval was crossed:
a metrics.jsonl line and TensorBoard scalars, a sample grid, an evaluation (which keeps the best
checkpoint and its grid), a checkpoint. A NaN or Inf running mean stops training before anything
is saved over the last good checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.artifacts import RunPaths, append_jsonl
from components.checkpoints import BEST, CheckpointState
from components.config import TrainConfig
from components.errors import PipelineError
from components.runfolder import EVAL_OBJECTIVE, last_record, metric_values

IMAGES_SEEN_TAG = "by_images_seen"  # TensorBoard scalars whose x-axis ("step") is the images seen

if TYPE_CHECKING:
    from components.train_options import TrainOptions

EvaluateFn = Callable[[Any], dict[str, float]]


class TrainingDiverged(PipelineError):
    """A loss became NaN or Inf; the run stopped without saving over the last good checkpoint."""


class TrainingLoop:
    """Everything a run does between Keras executions: the NaN guard, logs, grids, evaluations and
    checkpoints, each when its interval has been crossed.

    Only the chief writes files; every process counts, checks and takes part in checkpoints.
    """

    def __init__(
        self,
        *,
        gan,
        state: CheckpointState,
        paths: RunPaths,
        config: TrainConfig,
        chief: bool,
        total_steps: int,
        intervals: TrainOptions,
        evaluate_fn: EvaluateFn | None,
        eval_every: int | None,
        eval_at: tuple[int, ...] = (),
        show_progress: bool,
    ):
        import tensorflow as tf
        from tqdm.auto import tqdm

        from components.latents import grid_latents
        from components.model import build_generator

        self.gan, self.state, self.paths, self.chief, self.intervals = gan, state, paths, chief, intervals
        self.evaluate_fn, self.eval_every, self.eval_at = evaluate_fn, eval_every, eval_at
        self.latents = grid_latents(gan.latent_dim)
        self.sampler = build_generator(config.model, "float32")  # what restore_generator gives back
        self.sampler_step = -1
        self.writer = tf.summary.create_file_writer(str(paths.logs)) if chief else None
        self.progress = tqdm(
            total=total_steps * config.batch_size,
            initial=state.images_seen_now,
            unit="img",
            unit_scale=True,
            dynamic_ncols=True,
            disable=not show_progress,
        )
        self.step, self.images = state.step_now, state.images_seen_now  # at the last boundary
        self.logged_step, self.logged_images = self.step, self.images
        self.train_seconds = 0.0
        self.execution_started = 0.0
        # What was logged before a resumption, so a finished run still reports its metrics.
        self.last_train = metric_values(last_record(paths.metrics, "train", self.step))
        self.last_eval = metric_values(last_record(paths.metrics, "eval", self.step))
        self.sampled_step = self.evaluated_step = -1
        self.diverged: TrainingDiverged | None = None

    # called by the Keras callback
    def begin_execution(self) -> None:
        self.execution_started = time.perf_counter()

    def end_execution(self, logs: dict) -> bool:
        """Account for the steps of one execution; False stops training (a loss is not finite)."""
        import numpy as np

        means = {name: float(np.mean(value)) for name, value in logs.items()}
        if not all(math.isfinite(value) for value in means.values()):
            self.diverged = self._divergence(means, self.state.step_now)
            return False
        self.train_seconds += time.perf_counter() - self.execution_started
        before_step, before_images = self.step, self.images
        self.step, self.images = self.state.step_now, self.state.images_seen_now
        self.progress.update(self.images - before_images)

        def crossed(every: int, before: int, now: int) -> bool:
            return now // every > before // every

        if crossed(self.intervals.log_every, before_step, self.step):
            self.log(means)
        if crossed(self.intervals.sample_every, before_step, self.step):
            self.sample()
        if (self.eval_every and crossed(self.eval_every, before_images, self.images)) or any(
            before_images < point <= self.images for point in self.eval_at
        ):
            self.evaluate()
        if crossed(self.intervals.checkpoint_every, before_step, self.step):
            self.state.save()
        return True

    def _divergence(self, means: dict[str, float], step: int) -> TrainingDiverged:
        saved = self.state.saved_step
        where = f"at step {step}" if step == self.step + 1 else f"between steps {self.step + 1} and {step}"
        kept = (
            f"the last good checkpoint (step {saved}) is kept in {self.paths.checkpoints}; re-run unchanged to retry from it"
            if saved >= 0
            else "no checkpoint had been written yet"
        )
        return TrainingDiverged(
            f"training diverged {where}: "
            + ", ".join(f"{name}={value:.4g}" for name, value in sorted(means.items()))
            + f"; {kept}, or lower the learning rates (`g_lr`, `d_lr`) with `overwrite`."
        )

    def finish(self) -> None:
        """The end of the budget: log the partial interval, sample, evaluate and save once more."""
        if self.step > self.logged_step:
            self.log({name: float(value) for name, value in self._tracker_means().items()})
        if self.sampled_step != self.step:
            self.sample()
        if self.evaluate_fn is not None and self.evaluated_step != self.step:
            self.evaluate()
        if self.state.saved_step != self.step:
            self.state.save()

    def close(self) -> None:
        self.progress.close()
        if self.writer is not None:
            self.writer.close()

    def last_metrics(self) -> dict[str, float]:
        return {**self.last_train, **self.last_eval}

    # the scheduled work
    def log(self, means: dict[str, float]) -> None:
        """Log the running means since the last log (and reset them), with the images/s."""
        means = dict(means)
        means["images_per_sec"] = (self.images - self.logged_images) / max(self.train_seconds, 1e-9)
        for tracker in self.gan.metrics:
            tracker.reset_state()
        self.logged_step, self.logged_images, self.train_seconds = self.step, self.images, 0.0
        self.last_train = means
        self.progress.set_postfix({name: f"{means[name]:.3f}" for name in ("d_loss", "g_loss") if name in means})
        self._record("train", means)

    def _tracker_means(self) -> dict[str, float]:
        return {name: float(value[0]) for name, value in self.gan.step_outputs().items()}

    def sample(self) -> None:
        """A grid of the EMA generator's images 0..63 (of `pipeline.sample --seed 0`): PNG and TensorBoard."""
        self.sampled_step = self.step
        if not self.chief:
            return
        self._write_grid(self.paths.samples / f"step-{self.step:07d}.png", tensorboard=True)

    def _write_grid(self, path: Path, tensorboard: bool = False) -> None:
        import tensorflow as tf

        from components.grid import make_grid, save_grid
        from components.latents import to_uint8_array

        images = to_uint8_array(self._sampling_generator()(self.latents, training=False))
        save_grid(path, images)
        if tensorboard:
            with self.writer.as_default(step=self.step):
                tf.summary.image("samples", make_grid(images)[None])

    def evaluate(self) -> None:
        """Score the EMA generator; keep the checkpoint (and its grid, samples/best.png) if it has
        the lowest swd_avg so far."""
        self.evaluated_step = self.step
        if not self.chief:
            return
        metrics = {name: float(value) for name, value in self.evaluate_fn(self._sampling_generator()).items()}
        self.last_eval = metrics
        self._record("eval", metrics, evaluation=getattr(self.evaluate_fn, "request", None))
        if EVAL_OBJECTIVE in metrics and self.state.save_if_best(metrics[EVAL_OBJECTIVE]):
            self._write_grid(self.paths.samples / f"{BEST}.png")

    def _sampling_generator(self):
        """The EMA generator as `restore_generator` would return it now (refreshed once per step)."""
        from components.model import use_standing_statistics

        if self.sampler_step != self.step:
            use_standing_statistics(self.sampler, source=self.gan.ema_generator)
            self.sampler_step = self.step
        return self.sampler

    def _record(self, kind: str, metrics: dict[str, float], evaluation: dict | None = None) -> None:
        """One metrics.jsonl line and the TensorBoard scalars `<kind>/<name>` against the step, and
        again as `by_images_seen/<kind>/<name>` against the images seen: runs of different batch
        sizes line up on those (a step of batch 32 sees twice the images of one of batch 16)."""
        if not self.chief:
            return
        import tensorflow as tf

        line = {"kind": kind, "step": self.step, "images_seen": self.images, "time": time.time(), **metrics}
        if evaluation:
            line["evaluation"] = evaluation  # what was scored, so an export can reuse the figures
        append_jsonl(self.paths.metrics, line)
        with self.writer.as_default(step=self.step):
            for name, value in metrics.items():
                tf.summary.scalar(f"{kind}/{name}", value)
        with self.writer.as_default(step=self.images):
            for name, value in metrics.items():
                tf.summary.scalar(f"{IMAGES_SEEN_TAG}/{kind}/{name}", value)
        self.writer.flush()


def execution_callback(loop: TrainingLoop):
    """A Keras callback handing each execution's results to `loop`; it stops `fit` when `loop` says so.

    Defined here rather than at module level so that importing this module (for `TrainConfig`,
    e.g. to build a CLI's --help) does not load TensorFlow.
    """
    import keras

    class ExecutionCallback(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            loop.begin_execution()

        def on_train_batch_end(self, batch, logs=None):
            if not loop.end_execution(logs or {}):
                self.model.stop_training = True

    return ExecutionCallback()
