"""One training run of the DCGAN: from ingested TFRecords to a run folder.

`train(config, data_dir, run_dir, images=...)` trains until `images` real images have been seen,
and writes, in the layout of `components.artifacts.RunPaths` (see `components.runfolder`):
`hparams.json`, `checkpoints/` (and `checkpoints/best/` when an evaluator runs),
`samples/step-NNNNNNN.png` (grids of images 0..63 of `pipeline.sample --seed 0`, from the EMA
generator with BatchNorm statistics of its own) and `samples/best.png`, `logs/` (TensorBoard
scalars and grids) and `metrics.jsonl` (a line per log interval, `"kind": "train"`, and per
evaluation, `"eval"`).

How a run is driven: Keras' `fit` runs `steps_per_execution` training steps per call into the
graph (counters and running means are updated in the graph, components.gan), and hands control
back to `TrainingLoop` between calls, which reads the counters once and does whatever fell due:
logging, sample grids, evaluations (every `eval_every` images), checkpoints. By default the
execution length is the greatest common divisor of the log, sample and checkpoint intervals, so
everything happens exactly on schedule while the host syncs with the device only that often.

Calling `train` again with the same arguments resumes from the newest intact checkpoint and ends
at the same step and images-seen count as a run that was never interrupted. A NaN or Inf loss
stops the run with `TrainingDiverged` before anything is saved, so the last good checkpoint stays.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from components.artifacts import RunPaths, append_jsonl
from components.config import TrainConfig
from components.errors import PipelineError
from components.runfolder import (
    BEST,
    EVAL_OBJECTIVE,
    CheckpointState,
    drop_metrics_after,
    last_record,
    metric_values,
    prepare_run_folder,
    run_record,
)

EvaluateFn = Callable[[Any], dict[str, float]]


@dataclass
class TrainResult:
    """What a run reached. `metrics` holds the last logged training averages and evaluation."""

    run_dir: Path
    steps: int
    images_seen: int
    metrics: dict[str, float]
    resumed_from: int | None
    best_swd: float | None
    seconds: float
    gan: Any = field(default=None, repr=False)  # the trained `DCGAN`, for callers in Python


class TrainingDiverged(PipelineError):
    """A loss became NaN or Inf; the run stopped without saving over the last good checkpoint."""


@dataclass(frozen=True)
class Intervals:
    """When the loop does its work, in steps (evaluations: in images, `eval_every`)."""

    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    sample_every: int = 500
    log_every: int = 50
    steps_per_execution: int | None = None  # None: gcd of the three step intervals

    def __post_init__(self) -> None:
        for name in ("checkpoint_every", "keep_checkpoints", "sample_every", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise PipelineError(f"{name} must be a positive integer, got {value!r}.")
        if self.steps_per_execution is not None and (not isinstance(self.steps_per_execution, int) or self.steps_per_execution < 1):
            raise PipelineError(f"steps_per_execution must be a positive integer, got {self.steps_per_execution!r}.")

    @property
    def execution(self) -> int:
        return self.steps_per_execution or math.gcd(self.log_every, self.sample_every, self.checkpoint_every)


# -- the public entry points ----------------------------------------------------------------------


def train(
    config: TrainConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    *,
    images: int | None = None,
    epochs: float | None = None,
    precision: str = "auto",
    jit: bool | None = None,
    checkpoint_every: int = 200,
    keep_checkpoints: int = 3,
    sample_every: int = 500,
    log_every: int = 50,
    steps_per_execution: int | None = None,
    evaluate_fn: EvaluateFn | None = None,
    eval_every: int | None = None,
    new_run: bool = False,
    verbose: bool = True,
    strategy=None,
) -> TrainResult:
    """Train (or resume training) until `images` real images are seen, or `epochs` passes.

    Steps = ceil(budget / batch_size): every step sees one full batch. `*_every` intervals count
    steps; `steps_per_execution` steps run per call into the graph (None: the gcd of the
    intervals, see the module docstring). `evaluate_fn(generator)
    -> {name: value}` runs every `eval_every` images and at the end (only at the end without
    `eval_every`), on the EMA generator as `restore_generator` would return it at that step; its
    metrics are logged, and the checkpoint with the lowest `swd_avg` is kept in `checkpoints/best/`.
    `strategy` defaults to `components.distribute.choose_strategy()` (TF_CONFIG, GPUs).
    """
    from components.distribute import checkpoint_write_dir, choose_strategy, discard_worker_checkpoints, is_chief
    from components.precision import resolve_jit, resolve_precision
    from components.records import read_manifest

    intervals = Intervals(checkpoint_every, keep_checkpoints, sample_every, log_every, steps_per_execution)
    strategy = strategy or choose_strategy()  # first: multi-worker set-up must precede other TF work
    chief = is_chief(strategy)
    started = time.perf_counter()
    manifest = read_manifest(data_dir)
    config = config.with_image_size(int(manifest["image_size"]))
    total_steps = _total_steps(images, epochs, int(manifest["splits"]["train"]["count"]), config.batch_size)
    if eval_every is not None and (evaluate_fn is None or eval_every < 1):
        raise PipelineError("eval_every needs an evaluate_fn and must be a positive number of images.")
    if config.batch_size % strategy.num_replicas_in_sync:
        raise PipelineError(
            f"batch size {config.batch_size} does not split evenly over {strategy.num_replicas_in_sync} replicas."
        )

    if strategy.num_replicas_in_sync > 1 and intervals.execution > 1:
        # Keras 3.15's multi-step loop fails under MirroredStrategy ("You must feed a value for
        # placeholder tensor ..."; tests/test_multiworker.py), so replicas sync every step.
        intervals = dataclasses.replace(intervals, steps_per_execution=1)
    paths = RunPaths(run_dir)
    prepare_run_folder(paths, run_record(config, data_dir, manifest), new_run=new_run, write=chief)
    say = print if verbose and chief else (lambda *_: None)
    dtype_policy = resolve_precision(precision)
    with strategy.scope():
        gan = build_gan(config, dtype_policy, sync_batchnorm=strategy.num_replicas_in_sync > 1)
        compile_gan(gan, config, dtype_policy, jit_compile=resolve_jit(jit), steps_per_execution=intervals.execution)
        state = CheckpointState(gan, paths, intervals.keep_checkpoints, checkpoint_write_dir(strategy, paths.checkpoints), chief)
    resumed_from = state.restore(say)
    if resumed_from is not None:
        say(f"resumed from step {resumed_from} ({state.images_seen_now} images seen) in {paths.checkpoints}")
    if chief:
        drop_metrics_after(paths.metrics, resumed_from or 0)

    loop = TrainingLoop(
        gan=gan, state=state, paths=paths, config=config, chief=chief, total_steps=total_steps, intervals=intervals,
        evaluate_fn=evaluate_fn, eval_every=eval_every, show_progress=verbose and chief,
    )  # fmt: skip
    remaining = total_steps - state.step_now
    try:
        if remaining > 0:
            dataset = _training_dataset(data_dir, config).take(remaining)
            gan.fit(dataset, epochs=1, verbose=0, shuffle=False, callbacks=[_execution_callback(loop)])
            if loop.diverged is not None:
                raise loop.diverged
            loop.finish()
        else:
            say(f"{paths.root} already trained for {state.step_now} steps ({state.images_seen_now} images); nothing to do.")
    finally:
        loop.close()
    discard_worker_checkpoints(strategy, paths.checkpoints)
    return TrainResult(
        run_dir=paths.root,
        steps=state.step_now,
        images_seen=state.images_seen_now,
        metrics=loop.last_metrics(),
        resumed_from=resumed_from,
        best_swd=state.best_swd_now,
        seconds=time.perf_counter() - started,
        gan=gan,
    )


def build_gan(config: TrainConfig, dtype_policy: str = "float32", sync_batchnorm: bool = False):
    """The uncompiled DCGAN for `config` (whose image size must be set): `components.gan.DCGAN`,
    or the tutorial's loop `components.seed_step.SeedStepDCGAN` for `train_step="seed"`."""
    from components.gan import DCGAN
    from components.model import build_discriminator, build_generator
    from components.seed_step import SeedStepDCGAN

    model_class = SeedStepDCGAN if config.train_step == "seed" else DCGAN
    return model_class(
        build_generator(config.model, dtype_policy, sync_batchnorm),
        build_discriminator(config.model, dtype_policy),
        build_generator(config.model, dtype_policy, sync_batchnorm),
        ema_decay=config.ema_decay,
        ema_warmup=config.ema_warmup,
        adversarial_loss=config.loss,
        augment=config.augment,
        r1_gamma=config.r1_gamma,
        r1_every=config.r1_every,
        seed=config.seed,
    )


def compile_gan(gan, config: TrainConfig, dtype_policy: str = "float32", jit_compile: bool = False, steps_per_execution: int = 1) -> None:
    """Compile `gan` with the config's two Adam optimisers (loss-scaled under float16) and BCE
    (the DCGAN uses it when `config.loss` is "bce")."""
    import keras

    from components.precision import with_loss_scaling

    def adam(learning_rate: float):
        return with_loss_scaling(keras.optimizers.Adam(learning_rate, beta_1=config.beta_1), dtype_policy)

    bce = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)
    gan.compile(adam(config.d_lr), adam(config.g_lr), bce, jit_compile=jit_compile, steps_per_execution=steps_per_execution)


def _total_steps(images: int | None, epochs: float | None, train_count: int, batch_size: int) -> int:
    if (images is None) == (epochs is None):
        raise PipelineError("give the training budget as exactly one of images or epochs.")
    budget = images if images is not None else epochs * train_count
    if not (isinstance(budget, (int, float)) and math.isfinite(budget)) or round(budget) < 1:
        raise PipelineError(f"the training budget must be a finite number of at least one image, got {budget}.")
    return math.ceil(round(budget) / batch_size)


def _training_dataset(data_dir: str | Path, config: TrainConfig):
    """Endless shuffled batches of the train split, sharded by batch across workers (a data
    folder may have fewer shard files than there are workers)."""
    import tensorflow as tf

    from components.records import make_dataset

    dataset = make_dataset(data_dir, "train", batch_size=config.batch_size, image_size=config.model.image_size)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


# -- what happens between executions --------------------------------------------------------------


class TrainingLoop:
    """Everything a run does between Keras executions: the NaN guard, logs, grids, evaluations and
    checkpoints, each when its interval has been crossed.

    Only the chief writes files; every process counts, checks and takes part in checkpoints.
    """

    def __init__(
        self, *, gan, state: CheckpointState, paths: RunPaths, config: TrainConfig, chief: bool, total_steps: int, intervals: Intervals,
        evaluate_fn: EvaluateFn | None, eval_every: int | None, show_progress: bool,
    ):  # fmt: skip
        import tensorflow as tf
        from tqdm.auto import tqdm

        from components.latents import grid_latents
        from components.model import build_generator

        self.gan, self.state, self.paths, self.chief, self.intervals = gan, state, paths, chief, intervals
        self.evaluate_fn, self.eval_every = evaluate_fn, eval_every
        self.latents = grid_latents(gan.latent_dim)
        self.sampler = build_generator(config.model, "float32")  # what restore_generator gives back
        self.sampler_step = -1
        self.writer = tf.summary.create_file_writer(str(paths.logs)) if chief else None
        self.progress = tqdm(
            total=total_steps * config.batch_size, initial=state.images_seen_now, unit="img", unit_scale=True,
            dynamic_ncols=True, disable=not show_progress,
        )  # fmt: skip
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
        if self.eval_every and crossed(self.eval_every, before_images, self.images):
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
            + f"; {kept}, or lower the learning rates (--g-lr, --d-lr) with --new-run."
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
        """One metrics.jsonl line and the TensorBoard scalars `<kind>/<name>`."""
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
        self.writer.flush()


def _execution_callback(loop: TrainingLoop):
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
