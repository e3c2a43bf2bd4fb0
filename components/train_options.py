"""How a training run goes, beside what it trains: `TrainOptions`.

`TrainConfig` holds the hyperparameters (what a resumed run must match); `TrainOptions` holds
the rest of a run's settings: its budget, its evaluations, precision and XLA, the training
loop's intervals and whether it starts over. Each is declared once here (components.settings):
`components.trainer.train` takes the object, `pipeline.train` builds its flags from the fields,
and the run records them in its hparams.json under "options", so `pipeline.train --config
<run>/hparams.json` repeats the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from components.config import INTERVAL_LIMITS, MAX_IMAGES
from components.errors import PipelineError
from components.precision import PRECISIONS
from components.settings import check_settings, setting, settings_dict

DEFAULT_IMAGES = 400_000  # the budget when neither images nor epochs is set
MAX_EPOCHS = 10**6  # passes over the train split; images are capped alike (components.config.MAX_IMAGES)
# The generated (and as many real) images of one evaluation. Fewer than 4 leave no pairs to
# measure diversity; 100,000 generated 128x128 images are 5 GB in memory, and the evaluator uses
# at most half of the real split anyway.
EVAL_NUM_LIMITS = (4, 100_000)
DEFAULT_EVAL_NUM = 1024


def eval_num_setting() -> Any:
    """The images of one evaluation: one setting of the training's evaluations and of the evaluate stage's."""
    return setting(
        DEFAULT_EVAL_NUM,
        "generated (and as many real) images per evaluation; at most half the eval split (the other half "
        "gives the real-vs-real floor)",
        kind=int,
        low=EVAL_NUM_LIMITS[0],
        high=EVAL_NUM_LIMITS[1],
        metavar="N",
    )


def _interval(default: int | None, help: str, metavar: str = "STEPS", *, name: str) -> Any:
    return setting(default, help, kind=int, low=1, high=INTERVAL_LIMITS[name], metavar=metavar)


@dataclass(frozen=True)
class TrainOptions:
    """The settings of a training run that are not hyperparameters (those are `TrainConfig`)."""

    images: int | None = setting(
        None,
        f"real images to train on; steps = ceil(images / batch size) (default: {DEFAULT_IMAGES} unless epochs)",
        kind=int,
        low=1,
        high=MAX_IMAGES,
    )
    epochs: float | None = setting(
        None,
        "passes over the train split instead of images (fractions allowed)",
        kind=float,
        low=0,
        high=MAX_EPOCHS,
        low_included=False,
    )
    eval_every: int = setting(
        0,
        "score the EMA generator (SWD beside its real-vs-real floor, diversity, ...) every this many images seen and "
        "at the end, log it, and keep the lowest-swd_avg checkpoint in checkpoints/best/ (0: off; with a search every "
        "trial and the final training are scored at their end anyway)",
        kind=int,
        low=0,
        high=MAX_IMAGES,
        metavar="IMAGES",
    )
    eval_num: int = eval_num_setting()
    precision: str = setting(
        "auto",
        "compute precision; auto = float16 mixed on GPU, bfloat16 mixed on CPUs with bf16 instructions, else float32",
        kind=str,
        choices=PRECISIONS,
    )
    jit: bool | None = setting(
        None, "compile steps with XLA (default: on with a GPU, off on CPU, where XLA is much slower)", kind=bool
    )
    checkpoint_every: int = _interval(200, "save a checkpoint every this many steps (and at the end)", name="checkpoint_every")
    keep_checkpoints: int = _interval(3, "how many periodic checkpoints to keep", "N", name="keep_checkpoints")
    sample_every: int = _interval(500, "write a sample grid every this many steps (and at the end)", name="sample_every")
    log_every: int = _interval(50, "average metrics over and log every this many steps", name="log_every")
    steps_per_execution: int | None = _interval(
        None,
        "training steps per call into the TensorFlow graph, between which the host reads counters and metrics "
        "(default: the gcd of log_every, sample_every and checkpoint_every; 1 syncs every step)",
        name="steps_per_execution",
    )
    overwrite: bool = setting(
        False, "discard the run folder's checkpoints, samples, logs and metrics and start at step 0", kind=bool
    )
    no_export: bool = setting(False, "do not export the trained generator as a SavedModel at the end", kind=bool)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.images is not None and self.epochs is not None:
            raise PipelineError("give the training budget as images or as epochs, not both.")

    @property
    def execution(self) -> int:
        """Training steps per call into the graph."""
        return self.steps_per_execution or math.gcd(self.log_every, self.sample_every, self.checkpoint_every)

    def budget(self, train_count: int) -> int:
        """Real images to train on, for a train split of `train_count` images."""
        if self.epochs is not None:
            return round(self.epochs * train_count)
        return self.images if self.images is not None else DEFAULT_IMAGES

    def to_dict(self) -> dict[str, Any]:
        return settings_dict(self)
