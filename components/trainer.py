"""One training run of the DCGAN: from ingested TFRecords to a run folder (DESIGN.md).

`train(config, data_dir, run_dir, images=...)` trains until `images` real images have been seen,
and writes, in the layout of `components.artifacts.RunPaths`:

- `hparams.json`: the `TrainConfig` plus the data it trains on (manifest fingerprint and counts);
  a later call with other hyperparameters or other data is an error unless `new_run=True`;
- `checkpoints/`: G, D, the EMA generator, both Adam states, the latents' RNG state, the step and
  images-seen counters, every `checkpoint_every` steps (the last `keep_checkpoints` kept), and
  `checkpoints/best/` when an evaluator runs (lowest `swd_avg`);
- `samples/step-NNNNNNN.png`: grids from the EMA generator on the same fixed latents every time;
  like evaluations and `restore_generator`, they use a float32 copy of the EMA weights with
  BatchNorm statistics measured for those weights (`use_standing_statistics`);
- `logs/`: TensorBoard scalars (losses, D(real), D(fake), images/s, evaluator metrics) and grids;
- `metrics.jsonl`: one line per log interval (`"kind": "train"`) and per evaluation (`"eval"`).

Calling `train` again with the same arguments resumes from the newest checkpoint and ends at the
same step and images-seen count as a run that was never interrupted. A NaN or Inf loss stops the
run with `TrainingDiverged` before anything is saved, so the last good checkpoint stays in place.

`restore_generator(run_dir)` gives back the EMA generator as a plain float32 Keras model, for the
exporter and the evaluator.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from components.artifacts import RunPaths, append_jsonl, atomic_write_json, atomic_write_text, changed_settings, read_json, read_jsonl
from components.errors import PipelineError
from components.model import ModelConfig, build_discriminator, build_generator, known_fields, recalibrate_batchnorm

TRAIN_STEPS = ("dcgan", "seed")
LOSSES = ("bce", "hinge")  # the DCGAN's adversarial losses (components.gan)
SAMPLE_COUNT = 64  # an 8x8 grid
RECALIBRATION_LATENTS = 1024  # latents over which the EMA generator's BatchNorm statistics are measured
CHECKPOINT_NAME = "ckpt"
BEST = "best"
EVAL_OBJECTIVE = "swd_avg"  # lower is better

EvaluateFn = Callable[[Any], dict[str, float]]

# Named recipes: every field that differs from the dataclass defaults ("default" is the defaults).
# "seed" is the trainer as it was before issue 8: the tutorial's networks, losses and optimisers
# (plus the EMA generator the trainer always had).
RECIPES: dict[str, dict[str, Any]] = {
    "seed": {
        "model": {"g_upsample": "transpose5", "d_spectral_norm": False, "d_minibatch_std": False, "d_dropout": 0.3},
        "batch_size": 128,
        "g_lr": 2e-4,
        "d_lr": 2e-4,
        "loss": "bce",
        "label_smoothing": 0.1,
        "ema_decay": 0.999,
        "ema_warmup": 10.0,
        "augment": "",
        "r1_gamma": 0.0,
    },
    "default": {},
}


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a run: what `hparams.json` stores and the tuner searches over.

    Defaults are the measured default recipe (see `RECIPES`; `recipe_config("seed")` is the seed
    tutorial's). A field missing from an older `hparams.json` takes the seed recipe's value, which
    is what that run trained with.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 32  # more, smaller steps for the same images: measured best at equal images seen
    g_lr: float = 2e-4
    d_lr: float = 4e-4
    beta_1: float = 0.5
    loss: str = "hinge"  # "bce": non-saturating with label smoothing (seed); "hinge"
    label_smoothing: float = 0.0
    ema_decay: float = 0.999
    ema_warmup: float = 10.0  # EMA decay = min(ema_decay, (1 + n) / (ema_warmup + n)) at G update n
    augment: str = ""  # DiffAugment policy for D's inputs, e.g. "color,translation,cutout"
    r1_gamma: float = 0.0  # R1 penalty weight on reals (0: off)
    r1_every: int = 16  # lazy R1: applied every this many D updates
    seed: int = 0
    train_step: str = "dcgan"  # "seed": the tutorial's two-round loop (for the benchmark)

    def __post_init__(self) -> None:
        from components.augment import parse_policy

        for name in ("batch_size", "r1_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise PipelineError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        for name in ("g_lr", "d_lr", "ema_warmup"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise PipelineError(f"{name} must be a positive number, got {value!r}.")
        for name in ("beta_1", "label_smoothing", "ema_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise PipelineError(f"{name} must be in [0, 1), got {getattr(self, name)!r}.")
        if not (isinstance(self.r1_gamma, (int, float)) and math.isfinite(self.r1_gamma) and self.r1_gamma >= 0):
            raise PipelineError(f"r1_gamma must be a number >= 0, got {self.r1_gamma!r}.")
        if self.loss not in LOSSES:
            raise PipelineError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}.")
        try:
            parse_policy(self.augment)
        except ValueError as err:
            raise PipelineError(f"augment: {err}.") from err
        if self.train_step not in TRAIN_STEPS:
            raise PipelineError(f"train_step must be one of {', '.join(TRAIN_STEPS)}, got {self.train_step!r}.")
        if self.train_step == "seed" and (self.loss != "bce" or self.augment or self.r1_gamma):
            raise PipelineError("train_step seed trains with loss bce only, without augment or r1_gamma.")
        if not isinstance(self.seed, int):
            raise PipelineError(f"seed must be an integer, got {self.seed!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """A config from `to_dict()` output; absent fields (older files) take the seed recipe's values."""
        seed = RECIPES["seed"]
        values = {**{k: v for k, v in seed.items() if k != "model"}, **values}
        model = ModelConfig.from_dict({**seed["model"], **values.pop("model", {})})
        return cls(model=model, **known_fields(cls, values, "training"))

    def with_image_size(self, image_size: int) -> "TrainConfig":
        """This config for data of `image_size` pixels; a different size already set is an error."""
        if self.model.image_size not in (None, image_size):
            raise PipelineError(
                f"the model is configured for {self.model.image_size}x{self.model.image_size} images "
                f"but the data holds {image_size}x{image_size}."
            )
        return dataclasses.replace(self, model=dataclasses.replace(self.model, image_size=image_size))


def recipe_config(name: str, **overrides: Any) -> TrainConfig:
    """The named recipe ("seed" or "default") with `overrides` (TrainConfig fields; `model` a dict
    of ModelConfig fields merged into the recipe's)."""
    if name not in RECIPES:
        raise PipelineError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}.")
    values = {**RECIPES[name], **overrides}
    model = {**RECIPES[name].get("model", {}), **overrides.get("model", {})}
    values.pop("model", None)
    return TrainConfig(model=ModelConfig(**model), **values)


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
    evaluate_fn: EvaluateFn | None = None,
    eval_every: int | None = None,
    new_run: bool = False,
    verbose: bool = True,
    strategy=None,
) -> TrainResult:
    """Train (or resume training) until `images` real images are seen, or `epochs` passes.

    Steps = ceil(budget / batch_size): every step sees one full batch. `*_every` intervals count
    steps, except `eval_every`, which counts images: `evaluate_fn(generator) -> {name: value}`
    runs each time that many more images have been seen, and at the end (only at the end without
    `eval_every`), on the EMA generator as `restore_generator` would return it at that step; its
    metrics are logged, and the checkpoint with the lowest `swd_avg` is kept in `checkpoints/best/`.
    `strategy` defaults to `components.distribute.choose_strategy()` (TF_CONFIG, GPUs).
    """
    from components.distribute import choose_strategy, discard_worker_checkpoints, is_chief
    from components.precision import resolve_jit, resolve_precision
    from components.records import read_manifest

    strategy = strategy or choose_strategy()  # first: multi-worker set-up must precede other TF work
    chief = is_chief(strategy)
    started = time.perf_counter()
    manifest = read_manifest(data_dir)
    config = config.with_image_size(int(manifest["image_size"]))
    total_steps = _total_steps(images, epochs, int(manifest["splits"]["train"]["count"]), config.batch_size)
    _check_intervals(checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, sample_every=sample_every, log_every=log_every)
    if eval_every is not None and (evaluate_fn is None or eval_every < 1):
        raise PipelineError("eval_every needs an evaluate_fn and must be a positive number of images.")
    if config.batch_size % strategy.num_replicas_in_sync:
        raise PipelineError(
            f"batch size {config.batch_size} does not split evenly over {strategy.num_replicas_in_sync} replicas."
        )

    paths = RunPaths(run_dir)
    _prepare_run_folder(paths, _run_record(config, data_dir, manifest), new_run=new_run, write=chief)
    dtype_policy = resolve_precision(precision)
    with strategy.scope():
        gan = build_gan(config, dtype_policy, sync_batchnorm=strategy.num_replicas_in_sync > 1)
        compile_gan(gan, config, dtype_policy, jit_compile=resolve_jit(jit))
        state = _TrainingState(gan, strategy, paths, keep_checkpoints, chief)
    resumed_from = state.restore()
    say = print if verbose and chief else (lambda *_: None)
    if resumed_from is not None:
        say(f"resumed from step {resumed_from} ({state.images_seen_now} images seen) in {paths.checkpoints}")
        if chief:
            _drop_metrics_after(paths.metrics, resumed_from)

    run = _RunWriter(
        gan=gan, state=state, paths=paths, config=config, chief=chief, total_steps=total_steps,
        checkpoint_every=checkpoint_every, sample_every=sample_every, log_every=log_every,
        evaluate_fn=evaluate_fn, eval_every=eval_every, show_progress=verbose and chief,
    )  # fmt: skip
    remaining = total_steps - state.step_now
    try:
        if remaining > 0:
            dataset = _training_dataset(data_dir, config)
            gan.fit(dataset, epochs=1, steps_per_epoch=remaining, verbose=0, shuffle=False, callbacks=[_step_callback(run)])
            if run.diverged is not None:
                raise run.diverged
            run.finish()
        else:
            say(f"{paths.root} already trained for {state.step_now} steps ({state.images_seen_now} images); nothing to do.")
    finally:
        run.close()
    discard_worker_checkpoints(strategy, paths.checkpoints)
    return TrainResult(
        run_dir=paths.root,
        steps=state.step_now,
        images_seen=state.images_seen_now,
        metrics=run.last_metrics(),
        resumed_from=resumed_from,
        best_swd=state.best_swd_now,
        seconds=time.perf_counter() - started,
        gan=gan,
    )


def restore_generator(run_dir: str | Path, checkpoint: str = "latest"):
    """The EMA generator of a run as a float32 Keras model, and what it is.

    Returns `(generator, info)`: `generator` maps z float32[N, latent_dim] to float32[N, H, W, 3]
    in [-1, 1] whatever precision it trained in, with the BatchNorm statistics of its own weights
    (`use_standing_statistics`), exactly as the trainer's sample grids and evaluations saw it.
    `info` has `hparams`, `step`, `images_seen`, `image_size`, `latent_dim`, `data_dir`,
    `data_fingerprint`, `data_counts`, `checkpoint` (the file prefix) and `metrics` (the last
    evaluation at or before that step, {} if none). `checkpoint` is "latest" or "best" (the
    lowest `swd_avg`, present when an evaluator ran).
    """
    import tensorflow as tf

    if checkpoint not in ("latest", BEST):
        raise PipelineError(f"checkpoint must be 'latest' or 'best', got {checkpoint!r}.")
    paths = RunPaths(run_dir)
    record = _read_run_record(paths)
    if record is None:
        raise PipelineError(f"{paths.root} is not a training run folder: {paths.hparams} does not exist.")
    config = TrainConfig.from_dict(record["hparams"])
    directory = paths.checkpoints / BEST if checkpoint == BEST else paths.checkpoints
    prefix = tf.train.latest_checkpoint(str(directory))
    if prefix is None:
        hint = " (a best checkpoint exists only when training ran with an evaluator)" if checkpoint == BEST else ""
        raise PipelineError(f"{paths.root} has no {checkpoint} checkpoint in {directory}{hint}; train it first.")

    generator = build_generator(config.model, "float32")
    step = tf.Variable(0, dtype=tf.int64)
    images_seen = tf.Variable(0, dtype=tf.int64)
    status = tf.train.Checkpoint(ema_generator=generator, step=step, images_seen=images_seen).restore(prefix)
    try:
        status.expect_partial().assert_existing_objects_matched()
    except AssertionError as err:
        raise PipelineError(f"checkpoint {prefix} does not match the generator in {paths.hparams}: {err}") from err
    use_standing_statistics(generator, config)
    data = record["data"]
    info = {
        "hparams": record["hparams"],
        "step": int(step.numpy()),
        "images_seen": int(images_seen.numpy()),
        "image_size": config.model.image_size,
        "latent_dim": config.model.latent_dim,
        "data_dir": data["dir"],
        "data_fingerprint": data["fingerprint"],
        "data_counts": data["counts"],
        "checkpoint": prefix,
        "metrics": _last_record(paths.metrics, "eval", int(step.numpy())),
    }
    return generator, info


def build_gan(config: TrainConfig, dtype_policy: str = "float32", sync_batchnorm: bool = False):
    """The uncompiled `DCGAN` for `config` (whose image size must be set)."""
    from components.gan import DCGAN

    return DCGAN(
        build_generator(config.model, dtype_policy, sync_batchnorm),
        build_discriminator(config.model, dtype_policy),
        build_generator(config.model, dtype_policy, sync_batchnorm),
        ema_decay=config.ema_decay,
        ema_warmup=config.ema_warmup,
        variant=config.train_step,
        loss=config.loss,
        augment=config.augment,
        r1_gamma=config.r1_gamma,
        r1_every=config.r1_every,
        seed=config.seed,
    )


def compile_gan(gan, config: TrainConfig, dtype_policy: str = "float32", jit_compile: bool = False) -> None:
    """Compile `gan` with the config's two Adam optimisers (loss-scaled under float16) and BCE loss
    (the DCGAN uses it when `config.loss` is "bce")."""
    import keras

    from components.precision import with_loss_scaling

    def adam(learning_rate: float):
        return with_loss_scaling(keras.optimizers.Adam(learning_rate, beta_1=config.beta_1), dtype_policy)

    loss = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)
    gan.compile(adam(config.d_lr), adam(config.g_lr), loss, jit_compile=jit_compile)


def use_standing_statistics(generator, config: TrainConfig) -> None:
    """Give an EMA generator BatchNorm statistics of its own, measured on the run's fixed latents.

    The same latents (from `config.seed`) in the trainer and in `restore_generator` make the same
    weights give the same samples. See `components.model.recalibrate_batchnorm`.
    """
    rng = np.random.default_rng([config.seed, 1])  # a stream apart from the sample grid's latents
    recalibrate_batchnorm(generator, rng.standard_normal((RECALIBRATION_LATENTS, config.model.latent_dim)).astype(np.float32))


# -- budget and run folder ------------------------------------------------------------------------


def _total_steps(images: int | None, epochs: float | None, train_count: int, batch_size: int) -> int:
    if (images is None) == (epochs is None):
        raise PipelineError("give the training budget as exactly one of images or epochs.")
    budget = images if images is not None else round(epochs * train_count)
    if budget < 1:
        raise PipelineError(f"the training budget must be at least one image, got {budget}.")
    return math.ceil(budget / batch_size)


def _training_dataset(data_dir: str | Path, config: TrainConfig):
    """Endless shuffled batches of the train split, sharded by batch across workers (a data
    folder may have fewer shard files than there are workers)."""
    import tensorflow as tf

    from components.records import make_dataset

    dataset = make_dataset(data_dir, "train", batch_size=config.batch_size, image_size=config.model.image_size)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _check_intervals(**intervals: int) -> None:
    for name, value in intervals.items():
        if not isinstance(value, int) or value < 1:
            raise PipelineError(f"{name} must be a positive integer, got {value!r}.")


def _run_record(config: TrainConfig, data_dir: str | Path, manifest: dict) -> dict:
    """hparams.json: the hyperparameters, and which data they were trained on."""
    return {
        "hparams": config.to_dict(),
        "data": {
            "dir": str(Path(data_dir).resolve()),
            "fingerprint": manifest.get("fingerprint"),
            "counts": {split: int(entry["count"]) for split, entry in manifest["splits"].items()},
            "image_size": int(manifest["image_size"]),
        },
    }


def _read_run_record(paths: RunPaths) -> dict | None:
    if not paths.hparams.is_file():
        return None
    try:
        record = read_json(paths.hparams)
        TrainConfig.from_dict(record["hparams"]), record["data"]["fingerprint"]
    except (ValueError, KeyError, TypeError) as err:
        raise PipelineError(f"{paths.hparams} is not a valid run record ({err}); pass --new-run to start over.") from err
    return record


def _prepare_run_folder(paths: RunPaths, record: dict, *, new_run: bool, write: bool) -> None:
    """Check that an existing run folder belongs to this configuration and data, or start afresh.

    `new_run` deletes what a previous run of the trainer wrote (checkpoints, samples, logs,
    metrics, hparams.json) and nothing else in the folder.
    """
    if new_run:
        if write:
            for directory in (paths.checkpoints, paths.samples, paths.logs):
                shutil.rmtree(directory, ignore_errors=True)
            for file in (paths.metrics, paths.hparams):
                file.unlink(missing_ok=True)
    else:
        saved = _read_run_record(paths)
        if saved is None and paths.checkpoints.exists() and any(paths.checkpoints.iterdir()):
            raise PipelineError(f"{paths.checkpoints} holds checkpoints but {paths.hparams} is missing; pass --new-run to start over.")
        if saved is not None:
            _check_same_run(paths, saved, record)
    if write and not paths.hparams.exists():
        atomic_write_json(paths.hparams, record)


def _check_same_run(paths: RunPaths, saved: dict, record: dict) -> None:
    changes = changed_settings(TrainConfig.from_dict(saved["hparams"]).to_dict(), record["hparams"], then="in the run")
    if saved["data"]["fingerprint"] != record["data"]["fingerprint"]:
        changes.append(
            f"data: {saved['data']['dir']} (fingerprint {saved['data']['fingerprint']}) in the run, "
            f"{record['data']['dir']} (fingerprint {record['data']['fingerprint']}) now"
        )
    if changes:
        raise PipelineError(
            f"{paths.root} was trained with other settings ({paths.hparams}): " + "; ".join(changes)
            + ". Re-run with the run's settings to resume it, choose another run folder, or pass --new-run to discard it."
        )


def _drop_metrics_after(path: Path, step: int) -> None:
    """Forget metric lines a killed run wrote after its last checkpoint: they will be redone."""
    records = read_jsonl(path)
    kept = [record for record in records if record["step"] <= step]
    if len(kept) != len(records):
        import json

        atomic_write_text(path, "".join(json.dumps(record, sort_keys=True) + "\n" for record in kept))


def _last_record(path: Path, kind: str, step: int) -> dict[str, float]:
    """The metrics of the last metrics.jsonl line of `kind` ("train" or "eval") at or before `step`."""
    records = [record for record in read_jsonl(path) if record.get("kind") == kind and record["step"] <= step]
    if not records:
        return {}
    return {key: value for key, value in records[-1].items() if key not in ("kind", "step", "images_seen", "time")}


# -- model, optimisers, checkpoints ---------------------------------------------------------------


class _TrainingState:
    """The checkpointed state of a run and the two checkpoint managers (periodic and best)."""

    def __init__(self, gan, strategy, paths: RunPaths, keep: int, chief: bool):
        import tensorflow as tf

        from components.distribute import checkpoint_write_dir
        from components.precision import unwrap

        # The optimisers' slots already exist (DCGAN.compile builds them), so a restore fills them.
        self.paths = paths
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.images_seen = tf.Variable(0, dtype=tf.int64, trainable=False, name="images_seen")
        self.best_swd = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_swd")
        self.checkpoint = tf.train.Checkpoint(
            generator=gan.generator,
            discriminator=gan.discriminator,
            ema_generator=gan.ema_generator,
            g_optimizer=unwrap(gan.g_optimizer),
            d_optimizer=unwrap(gan.d_optimizer),
            latent_rng=gan.latent_seeds.state,
            # Only runs that augment have this state, so checkpoints from before it existed still load.
            **({"augment_rng": gan.augment_seeds.state} if gan.augment else {}),
            step=self.step,
            images_seen=self.images_seen,
            best_swd=self.best_swd,
        )
        self.periodic = tf.train.CheckpointManager(
            self.checkpoint, str(checkpoint_write_dir(strategy, paths.checkpoints)), max_to_keep=keep, checkpoint_name=CHECKPOINT_NAME
        )
        self.best = (
            tf.train.CheckpointManager(self.checkpoint, str(paths.checkpoints / BEST), max_to_keep=1, checkpoint_name=BEST)
            if chief
            else None
        )
        self.saved_step = -1

    @property
    def step_now(self) -> int:
        return int(self.step.numpy())

    @property
    def images_seen_now(self) -> int:
        return int(self.images_seen.numpy())

    @property
    def best_swd_now(self) -> float | None:
        value = float(self.best_swd.numpy())
        return value if math.isfinite(value) else None

    def restore(self) -> int | None:
        """Load the chief's newest checkpoint, if any; return its step (None for a fresh start)."""
        import tensorflow as tf

        prefix = tf.train.latest_checkpoint(str(self.paths.checkpoints))
        if prefix is None:
            return None
        try:
            self.checkpoint.restore(prefix).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            raise PipelineError(f"cannot resume from {prefix} ({err}); pass --new-run to start over.") from err
        best_prefix = tf.train.latest_checkpoint(str(self.paths.checkpoints / BEST))
        if best_prefix is not None:
            # A killed run may have kept a better "best" after its last periodic checkpoint.
            best = tf.train.load_variable(best_prefix, "best_swd/.ATTRIBUTES/VARIABLE_VALUE")
            self.best_swd.assign(min(float(self.best_swd.numpy()), float(best)))
        self.saved_step = self.step_now
        return self.saved_step

    def advance(self, images: int) -> None:
        self.step.assign_add(1)
        self.images_seen.assign_add(images)

    def save(self) -> None:
        self.periodic.save(checkpoint_number=self.step_now)
        self.saved_step = self.step_now

    def save_if_best(self, swd: float) -> bool:
        if swd >= float(self.best_swd.numpy()):
            return False
        self.best_swd.assign(swd)
        if self.best is not None:
            self.best.save(checkpoint_number=self.step_now)
        return True


# -- what happens around each step ----------------------------------------------------------------


class _RunWriter:
    """Everything a run does between steps: counting, the NaN guard, logs, samples, checkpoints.

    Only the chief writes files; every process counts, checks and takes part in checkpoints.
    """

    def __init__(
        self, *, gan, state: _TrainingState, paths: RunPaths, config: TrainConfig, chief: bool, total_steps: int,
        checkpoint_every: int, sample_every: int, log_every: int, evaluate_fn: EvaluateFn | None,
        eval_every: int | None, show_progress: bool,
    ):  # fmt: skip
        import tensorflow as tf
        from tqdm.auto import tqdm

        self.gan, self.state, self.paths, self.chief = gan, state, paths, chief
        self.batch_size = config.batch_size
        self.checkpoint_every, self.sample_every, self.log_every = checkpoint_every, sample_every, log_every
        self.evaluate_fn, self.eval_every = evaluate_fn, eval_every
        self.config = config
        self.latents = np.random.default_rng(config.seed).standard_normal((SAMPLE_COUNT, config.model.latent_dim)).astype(np.float32)
        self.sampler = build_generator(config.model, "float32")  # what restore_generator gives back
        self.sampler_step = -1
        self.writer = tf.summary.create_file_writer(str(paths.logs)) if chief else None
        self.progress = tqdm(
            total=total_steps * config.batch_size, initial=state.images_seen_now, unit="img", unit_scale=True,
            dynamic_ncols=True, disable=not show_progress,
        )  # fmt: skip
        self.sums: dict[str, float] = {}
        self.count = 0
        self.train_seconds = 0.0
        self.step_started = 0.0
        # What was logged before a resumption, so a finished run still reports its metrics.
        self.last_train = _last_record(paths.metrics, "train", state.step_now)
        self.last_eval = _last_record(paths.metrics, "eval", state.step_now)
        self.sampled_step = self.evaluated_step = -1
        self.diverged: TrainingDiverged | None = None

    # called by the Keras callback
    def begin_step(self) -> None:
        self.step_started = time.perf_counter()

    def end_step(self, logs: dict) -> bool:
        """Account for one finished step; False stops training (a loss is not finite)."""
        values = {name: float(np.mean(value)) for name, value in logs.items()}
        if not all(math.isfinite(value) for value in values.values()):
            self.diverged = self._divergence(values)
            return False
        self.train_seconds += time.perf_counter() - self.step_started
        images_before = self.state.images_seen_now
        self.state.advance(self.batch_size)
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1
        self.progress.update(self.batch_size)

        step = self.state.step_now
        if step % self.log_every == 0:
            self.log()
        if step % self.sample_every == 0:
            self.sample()
        if self.eval_every and self.state.images_seen_now // self.eval_every > images_before // self.eval_every:
            self.evaluate()
        if step % self.checkpoint_every == 0:
            self.state.save()
        return True

    def _divergence(self, values: dict[str, float]) -> TrainingDiverged:
        saved = self.state.saved_step
        kept = (
            f"the last good checkpoint (step {saved}) is kept in {self.paths.checkpoints}; re-run unchanged to retry from it"
            if saved >= 0
            else "no checkpoint had been written yet"
        )
        return TrainingDiverged(
            f"training diverged at step {self.state.step_now + 1}: "
            + ", ".join(f"{name}={value:.4g}" for name, value in sorted(values.items()))
            + f"; {kept}, or lower the learning rates (--g-lr, --d-lr) with --new-run."
        )

    def finish(self) -> None:
        """The end of the budget: log the partial interval, sample, evaluate and save once more."""
        step = self.state.step_now
        if self.count:
            self.log()
        if self.sampled_step != step:
            self.sample()
        if self.evaluate_fn is not None and self.evaluated_step != step:
            self.evaluate()
        if self.state.saved_step != step:
            self.state.save()

    def close(self) -> None:
        self.progress.close()
        if self.writer is not None:
            self.writer.close()

    def last_metrics(self) -> dict[str, float]:
        return {**self.last_train, **self.last_eval}

    # the scheduled work
    def log(self) -> None:
        means = {name: total / self.count for name, total in self.sums.items()}
        means["images_per_sec"] = self.count * self.batch_size / max(self.train_seconds, 1e-9)
        self.last_train = means
        self.sums, self.count, self.train_seconds = {}, 0, 0.0
        self.progress.set_postfix({name: f"{means[name]:.3f}" for name in ("d_loss", "g_loss") if name in means})
        self._record("train", means)

    def sample(self) -> None:
        """A grid of the EMA generator's images for the fixed latents: PNG and TensorBoard."""
        import tensorflow as tf

        from components.grid import make_grid, save_grid, to_uint8

        self.sampled_step = step = self.state.step_now
        if not self.chief:
            return
        images = to_uint8(self._sampling_generator()(self.latents, training=False))
        save_grid(self.paths.samples / f"step-{step:07d}.png", images)
        with self.writer.as_default(step=step):
            tf.summary.image("samples", make_grid(images)[None])

    def evaluate(self) -> None:
        """Score the EMA generator; keep the checkpoint if it has the lowest swd_avg so far."""
        self.evaluated_step = self.state.step_now
        if not self.chief:
            return
        metrics = {name: float(value) for name, value in self.evaluate_fn(self._sampling_generator()).items()}
        self.last_eval = metrics
        self._record("eval", metrics)
        if EVAL_OBJECTIVE in metrics:
            self.state.save_if_best(metrics[EVAL_OBJECTIVE])

    def _sampling_generator(self):
        """The EMA generator as `restore_generator` would return it now (refreshed once per step):
        a float32 copy of its weights with BatchNorm statistics of its own."""
        if self.sampler_step != self.state.step_now:
            for target, source in zip(self.sampler.weights, self.gan.ema_generator.weights):
                target.assign(source.value)
            use_standing_statistics(self.sampler, self.config)
            self.sampler_step = self.state.step_now
        return self.sampler

    def _record(self, kind: str, metrics: dict[str, float]) -> None:
        """One metrics.jsonl line and the TensorBoard scalars `<kind>/<name>`."""
        if not self.chief:
            return
        import tensorflow as tf

        step = self.state.step_now
        append_jsonl(
            self.paths.metrics,
            {"kind": kind, "step": step, "images_seen": self.state.images_seen_now, "time": time.time(), **metrics},
        )
        with self.writer.as_default(step=step):
            for name, value in metrics.items():
                tf.summary.scalar(f"{kind}/{name}", value)
        self.writer.flush()


def _step_callback(run: _RunWriter):
    """A Keras callback handing each step's results to `run`; it stops `fit` when `run` says so.

    Defined here rather than at module level so that importing this module (for `TrainConfig`,
    e.g. to build a CLI's --help) does not load TensorFlow.
    """
    import keras

    class StepCallback(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            run.begin_step()

        def on_train_batch_end(self, batch, logs=None):
            if not run.end_step(logs or {}):
                self.model.stop_training = True

    return StepCallback()
