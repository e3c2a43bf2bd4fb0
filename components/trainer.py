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
stops the run with `components.training_loop.TrainingDiverged` before anything is saved, so the last good checkpoint stays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components import locks
from components.artifacts import RunPaths
from components.checkpoints import CheckpointState
from components.config import TrainConfig
from components.errors import PipelineError
from components.runfolder import drop_metrics_after, prepare_run_folder, run_record
from components.train_options import TrainOptions
from components.training_loop import EvaluateFn, TrainingLoop, execution_callback


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


# -- the public entry points ----------------------------------------------------------------------


def train(
    config: TrainConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    options: TrainOptions | None = None,
    *,
    evaluate_fn: EvaluateFn | None = None,
    eval_at: tuple[int, ...] = (),
    image_size: int | None = None,
    verbose: bool = True,
    strategy=None,
) -> TrainResult:
    """Train (or resume training) until the budget of `options` is seen (`TrainOptions.budget`).

    `options` None: `TrainOptions()`, the defaults. Steps = ceil(budget / batch_size): every step
    sees one full batch. The `*_every` intervals of `options` count steps; `options.execution` steps
    run per call into the graph (see the module docstring); `options.overwrite` starts the run
    folder over. `evaluate_fn(generator) -> {name: value}`, when given, runs every
    `options.eval_every` images (0: only at the end) and at the end, and once the images seen pass
    each count of `eval_at` (the tuner scores a trial by its last few evaluations), on the EMA
    generator as `restore_generator` would return it at that step; its metrics are logged, and the
    checkpoint with the lowest `swd_avg` is kept in `checkpoints/best/`. `image_size` trains at a
    divisor of the data's size, on images downscaled as they are read
    (`components.records.make_dataset`; None: the data's size): the tuner's cheaper trials;
    `hparams.json` records it as the model's image size.
    `strategy` defaults to `components.distribute.choose_strategy()` (TF_CONFIG, GPUs).
    """
    from components.distribute import checkpoint_write_dir, chief_first, choose_strategy, discard_worker_checkpoints, is_chief
    from components.precision import resolve_jit, resolve_precision, step_graph_options
    from components.records import downscale_factor, read_errors_named, read_manifest

    options = options or TrainOptions()
    strategy = strategy or choose_strategy()  # first: multi-worker set-up must precede other TF work
    chief = is_chief(strategy)
    # The run folder has one writer (the chief) and the data folder no writer while this trains (components.locks).
    with locks.reading(data_dir, "`data`"), locks.writing(run_dir, "`run`") if chief else contextlib.nullcontext():
        started = time.perf_counter()
        manifest = read_manifest(data_dir)
        downscale_factor(data_dir, int(manifest["image_size"]), image_size or int(manifest["image_size"]))
        config = config.with_image_size(image_size or int(manifest["image_size"]))
        total_steps = math.ceil(options.budget(int(manifest["splits"]["train"]["count"])) / config.batch_size)
        if total_steps < 1:
            raise PipelineError(f"the training budget of {options.epochs} epochs is less than one image.")
        eval_every = (options.eval_every or None) if evaluate_fn is not None else None
        if eval_at and evaluate_fn is None:
            raise PipelineError("eval_at needs an evaluate_fn.")
        if config.batch_size % strategy.num_replicas_in_sync:
            raise PipelineError(
                f"batch size {config.batch_size} does not split evenly over {strategy.num_replicas_in_sync} replicas."
            )

        intervals = options
        if strategy.num_replicas_in_sync > 1 and options.execution > 1:
            # Keras 3.15's multi-step loop fails under MirroredStrategy ("You must feed a value for
            # placeholder tensor ..."; tests/test_multiworker.py), so replicas sync every step.
            intervals = dataclasses.replace(options, steps_per_execution=1)
        paths = RunPaths(run_dir)
        record = run_record(config, data_dir, manifest, options)
        chief_first(strategy, lambda: prepare_run_folder(paths, record, new_run=options.overwrite, write=chief))
        say = print if verbose and chief else (lambda *_: None)
        dtype_policy = resolve_precision(options.precision)
        with strategy.scope():
            gan = build_gan(config, dtype_policy, sync_batchnorm=strategy.num_replicas_in_sync > 1)
            compile_gan(
                gan,
                config,
                dtype_policy,
                jit_compile=resolve_jit(options.jit),
                steps_per_execution=intervals.execution,
                total_steps=total_steps,
            )
            state = CheckpointState(
                gan, paths, intervals.keep_checkpoints, checkpoint_write_dir(strategy, paths.checkpoints), chief
            )
        resumed_from = state.restore(say)
        if resumed_from is not None:
            say(f"resumed from step {resumed_from} ({state.images_seen_now} images seen) in {paths.checkpoints}")
        if chief:
            drop_metrics_after(paths.metrics, resumed_from or 0)

        loop = TrainingLoop(
            gan=gan,
            state=state,
            paths=paths,
            config=config,
            chief=chief,
            total_steps=total_steps,
            intervals=intervals,
            evaluate_fn=evaluate_fn,
            eval_every=eval_every,
            eval_at=tuple(eval_at),
            show_progress=verbose and chief,
        )
        remaining = total_steps - state.step_now
        try:
            if remaining > 0:
                dataset = _training_dataset(data_dir, config, start=state.images_seen_now).take(remaining)
                # the last checkpoint stays as it was on a read error
                with read_errors_named(data_dir, "train"), step_graph_options(second_order=config.r1_gamma > 0):
                    gan.fit(dataset, epochs=1, verbose=0, shuffle=False, callbacks=[execution_callback(loop)])
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
        ada_target=config.ada_target,
        ada_images=config.ada_images,
        mirror=config.mirror,
        r1_gamma=config.r1_gamma,
        r1_every=config.r1_every,
        seed=config.seed,
    )


def compile_gan(
    gan,
    config: TrainConfig,
    dtype_policy: str = "float32",
    jit_compile: bool = False,
    steps_per_execution: int = 1,
    total_steps: int | None = None,
) -> None:
    """Compile `gan` with the config's two Adam optimisers (loss-scaled under float16) and BCE
    (the DCGAN uses it when `config.loss` is "bce"). With `total_steps`, the learning rates hold for
    `full_rate_steps` of a run of that many steps and then fall; None keeps them constant (one-step
    tests, speed measurements)."""
    import keras

    from components.precision import with_loss_scaling

    def adam(learning_rate: float):
        # Whether the rate is a schedule depends on the config alone, never on the budget: an
        # optimiser with a constant rate checkpoints it as a variable, so a run resumed with
        # another budget must keep the kind it started with.
        if total_steps is not None and config.lr_hold < 1.0:
            learning_rate = hold_then_linear_decay(learning_rate, gan.step, full_rate_steps(config, total_steps), total_steps)
        return with_loss_scaling(keras.optimizers.Adam(learning_rate, beta_1=config.beta_1, beta_2=config.beta_2), dtype_policy)

    bce = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)
    gan.compile(adam(config.d_lr), adam(config.g_lr), bce, jit_compile=jit_compile, steps_per_execution=steps_per_execution)


def full_rate_steps(config: TrainConfig, total_steps: int) -> float:
    """Steps at full learning rates in a run of `total_steps`: the `lr_hold` fraction of them, but
    at least those of `lr_hold_images` images (all of them in a run no longer than that)."""
    return min(float(total_steps), max(config.lr_hold * total_steps, config.lr_hold_images / config.batch_size))


def hold_then_linear_decay(base: float, step, hold_steps: float, total_steps: int):
    """A learning rate for Keras' optimisers (a callable read at every update): `base` for the first
    `hold_steps` of `total_steps` training steps, then falling linearly to zero at the last one.

    It reads the DCGAN's own `step` counter rather than the optimiser's update count, because the
    seed's step updates D four times and G twice per batch; a resumed run restores that counter,
    so it continues the schedule where it stopped. The run's budget (`--images`) sets
    `total_steps`: resuming with a larger budget recomputes the schedule for the new length, so
    the learning rate rises again from where the shorter run had brought it.
    """
    import tensorflow as tf

    decay_steps = total_steps - hold_steps
    if decay_steps <= 0:  # the whole run within the hold: still a schedule, so checkpoints keep their variables
        return lambda: tf.constant(base, tf.float32)

    def learning_rate():
        left = (float(total_steps) - tf.cast(step, tf.float32)) / decay_steps
        return base * tf.clip_by_value(left, 0.0, 1.0)

    return learning_rate


def _training_dataset(data_dir: str | Path, config: TrainConfig, start: int = 0):
    """Endless shuffled batches of the train split in an order fixed by the seed, from record
    `start` on (so a resumed run sees what an uninterrupted one would), sharded by batch across
    workers (a data folder may have fewer shard files than there are workers)."""
    import tensorflow as tf

    from components.records import make_dataset

    dataset = make_dataset(
        data_dir, "train", batch_size=config.batch_size, image_size=config.model.image_size, seed=config.seed, start=start
    )
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
