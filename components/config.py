"""Every hyperparameter of a training run, and the named recipes that set them.

`TrainConfig` (with its `ModelConfig`) is what `hparams.json` stores, what a resumed run must
match and what the tuner searches over. Its defaults are the measured default recipe;
`recipe_config("seed")` is the seed tutorial's recipe (README, Results).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from components.errors import PipelineError
from components.augment import AUGMENTS, parse_policy
from components.model import ModelConfig, check_fields
from components.settings import check_settings, setting

TRAIN_STEPS = ("dcgan", "seed")
LOSSES = ("bce", "hinge")  # the DCGAN's adversarial losses (components.gan)
_UNIT_INTERVAL = {"low": 0, "high": 1, "high_included": False}  # [0, 1): a rate, a decay, a share

# Limits of the fields below, shared with the command line's flags (pipeline._cli.bounded_int).
# NumPy's global seeding takes 32 bits, and a search trains seeds seed+1, seed+2...: 31 bits
# leave room for those, and TensorFlow's int64 seeds and Philox keys take any of them.
MAX_SEED = 2**31 - 1
# A batch of 4,096 128x128 images is 0.8 GB of float32 before any activation: beyond every GPU.
MAX_BATCH_SIZE = 4096
MAX_IMAGES = 10**12  # a training budget in images seen: years of training on any machine
MAX_STEPS = 10**9  # any interval counted in steps (checkpoints, logs, lazy R1)
LR_HOLD_IMAGES = 16_000  # the default's minimum of full-rate images (TrainConfig.lr_hold_images)
EMA_WARMUP = 20.0  # the default's EMA warm-up (TrainConfig.ema_warmup)
# The highest of each of the training loop's intervals (components.trainer.Intervals; the lowest is 1).
INTERVAL_LIMITS = {
    "checkpoint_every": MAX_STEPS,
    "keep_checkpoints": 1000,
    "sample_every": MAX_STEPS,
    "log_every": MAX_STEPS,
    "steps_per_execution": MAX_STEPS,
}

# The search (components.search_space.SearchSettings). The default configuration's row is its
# two trainings (seeds seed and seed+1), counted as trials. The (lowest, highest) of each
# whole-number setting: a thousand trials, or ten executions of each, take weeks on any machine.
DEFAULT_TRAININGS = 2
SEARCH_LIMITS = {
    "max_trials": (DEFAULT_TRAININGS + 1, 1000),
    "trial_images": (1, MAX_IMAGES),
    "executions_per_trial": (1, 10),
    "hyperband_max_epochs": (1, 1000),
    "hyperband_factor": (2, 100),
    "score_last": (1, 100),
    "seed": (0, MAX_SEED),
}

# Named recipes: the fields each sets over the dataclass defaults ("default" is the defaults).
# "seed" is the tutorial's networks, losses and optimisers (plus the EMA generator every run has).
# "v4", "v3", "v2" and "v1" are earlier defaults. These five write out every field, so that they stay
# what they were whatever the defaults become: v4 (today's with a longer EMA average: warm-up 10),
# v3 before it (v4 without `lr_hold_images`: its short runs decay too), v2 before that (D of 64
# filters, half the learning rates, Adam beta_2 0.999; batch 16, no spectral norm, Adam beta_1 0,
# held-then-decayed learning rates, lazy R1) and v1 first (batch 32, spectral norm on D, beta_1 0.5).
_V2 = {
    "model": {
        "latent_dim": 128,
        "g_filters": 32,
        "d_filters": 64,
        "d_dropout": 0.0,
        "init_stddev": 0.02,
        "g_upsample": "transpose4",
        "d_kernel": 5,
        "d_spectral_norm": False,
        "d_minibatch_std": True,
    },
    "batch_size": 16,
    "g_lr": 2e-4,
    "d_lr": 4e-4,
    "beta_1": 0.0,
    "beta_2": 0.999,
    "lr_hold": 0.5,
    "lr_hold_images": 0,
    "loss": "hinge",
    "label_smoothing": 0.0,
    "ema_decay": 0.999,
    "ema_warmup": 10.0,
    "augment": "",
    "ada_target": 0.0,
    "ada_images": 10_000,
    "mirror": False,
    "r1_gamma": 0.1,
    "r1_every": 16,
}
_V3 = {
    **_V2,
    "model": {**_V2["model"], "d_filters": 32},
    "g_lr": 4e-4,
    "d_lr": 8e-4,
    "beta_2": 0.99,
}
# The fields no recipe sets: each run's own (the command line's, or their defaults).
RUN_FIELDS = ("seed", "train_step")
RECIPES: dict[str, dict[str, Any]] = {
    "seed": {
        **_V2,
        "model": {**_V2["model"], "d_filters": 64, "g_upsample": "transpose5", "d_minibatch_std": False, "d_dropout": 0.3},
        "batch_size": 128,
        "g_lr": 2e-4,
        "d_lr": 2e-4,
        "beta_1": 0.5,
        "lr_hold": 1.0,
        "loss": "bce",
        "label_smoothing": 0.1,
        "r1_gamma": 0.0,
    },
    "default": {},
    "v4": {**_V3, "lr_hold_images": LR_HOLD_IMAGES},
    "v3": _V3,
    "v2": _V2,
    "v1": {
        **_V2,
        "model": {**_V2["model"], "d_spectral_norm": True},
        "batch_size": 32,
        "beta_1": 0.5,
        "lr_hold": 1.0,
        "r1_gamma": 0.0,
    },
}


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a run: what `hparams.json` stores and the tuner searches over.

    Defaults are the measured default recipe (see `RECIPES`; `recipe_config("seed")` is the seed
    tutorial's). A field missing from an older `hparams.json` takes the seed recipe's value, which
    is what that run trained with.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    # More, smaller steps for the same images: measured best at equal images seen (8 and 32 worse).
    batch_size: int = setting(16, "global batch size (split over replicas)", kind=int, low=1, high=MAX_BATCH_SIZE)
    # Twice v2's: learns faster per image with the narrower D (ModelConfig.d_filters).
    g_lr: float = setting(4e-4, "generator Adam learning rate", kind=float, low=0, low_included=False)
    d_lr: float = setting(8e-4, "discriminator Adam learning rate", kind=float, low=0, low_included=False)
    # Adam's momentum off (as SAGAN and BigGAN train): 27 vs 40 at 16,000 images (README).
    beta_1: float = setting(0.0, "Adam beta_1 (momentum) of both optimisers", kind=float, **_UNIT_INTERVAL)
    # Adam's second-moment decay: the horizon over which it learns the gradients' scale. 0.99 (as
    # StyleGAN2 trains; Keras' default is 0.999) adapts ten times faster, so a sudden large
    # gradient is not divided by a scale learnt from small ones: with the default's learning rates
    # a run with 0.999 blew up after 52,000 images (README, Results).
    beta_2: float = setting(
        0.99, "Adam beta_2 of both optimisers: how fast they learn the gradients' scale", kind=float, **_UNIT_INTERVAL
    )
    # Without the decay, long runs of the default oscillate (README).
    lr_hold: float = setting(
        0.5,
        "fraction of the run's steps at full learning rates; after it both fall linearly to zero at the last step "
        "(1: constant; a resume with a larger budget recomputes the schedule)",
        kind=float,
        low=0,
        high=1,
        metavar="FRACTION",
    )
    # The decay pays once the networks have learnt the faces' layout; started earlier, it costs
    # more learning than it buys averaging (the EMA already averages): README, Results.
    lr_hold_images: int = setting(
        LR_HOLD_IMAGES,
        "images seen at full learning rates at least, whatever the hold fraction, so a run of at most this many "
        "images trains at constant rates (0: the hold fraction alone decides)",
        kind=int,
        low=0,
        high=MAX_IMAGES,
        metavar="IMAGES",
    )
    loss: str = setting("hinge", "adversarial loss: bce (non-saturating) or hinge", kind=str, choices=LOSSES)
    label_smoothing: float = setting(0.0, "BCE label smoothing (targets 1 -> 1 - s/2, 0 -> s/2)", kind=float, **_UNIT_INTERVAL)
    ema_decay: float = setting(
        0.999, "decay of the generator's weight EMA used for samples and export (0: no averaging)", kind=float, **_UNIT_INTERVAL
    )
    # Until ema_decay caps it, the average spans about the last 1/(warmup - 1) of the G updates: 20
    # (about the last 5%; StyleGAN2-ADA ramps its EMA likewise) follows a generator that still
    # improves quickly without mixing in its older, worse weights, and its faces vary like real ones
    # (README, Results).
    ema_warmup: float = setting(
        EMA_WARMUP,
        "EMA warm-up: decay = min(ema-decay, (1+n)/(warmup+n)) at G update n, so the average spans about the last "
        "1/(warmup-1) of the updates until ema-decay caps it",
        kind=float,
        low=0,
        low_included=False,
    )
    augment: str = setting(
        "",
        f"DiffAugment of the discriminator's real and fake inputs: comma-separated subset of {','.join(AUGMENTS)}, "
        "or '' for none",
        kind=str,
        metavar="POLICY",
    )
    # Adaptive augmentation (components.gan): above 0, the share of images augmented follows D's
    # overfitting (its mean sign on reals held near this target).
    ada_target: float = setting(
        0.0,
        "adaptive augmentation: augment a share of images steered so that D's mean sign on reals stays near this "
        "(0.6 is StyleGAN2-ADA's); 0 augments every image",
        kind=float,
        metavar="SIGN",
        **_UNIT_INTERVAL,
    )
    ada_images: int = setting(
        10_000,
        "with ada_target: images seen for the augmented share to move from none to every image",
        kind=int,
        low=1,
        high=MAX_IMAGES,
        metavar="IMAGES",
    )
    mirror: bool = setting(False, "flip each real image left-right with probability 1/2 (twice the distinct faces)", kind=bool)
    # Damps D in long runs (README).
    r1_gamma: float = setting(0.1, "weight of the R1 gradient penalty on real images (0: off)", kind=float, low=0)
    r1_every: int = setting(16, "lazy R1: apply the penalty every this many D updates", kind=int, low=1, high=MAX_STEPS)
    seed: int = setting(
        0,
        "seeds the initial weights, the order of the training data and the training latents; also the evaluator's "
        "latents and the search's oracle (the sample grids always show images 0..63 of seed 0)",
        kind=int,
        low=0,
        high=MAX_SEED,
    )
    train_step: str = setting(
        "dcgan",
        "dcgan: one D and one G update per batch; seed: the tutorial's loop (2 rounds of D-fake, D-real, G)",
        kind=str,
        choices=TRAIN_STEPS,
    )

    def __post_init__(self) -> None:
        check_settings(self)
        if self.ada_target and not self.augment:
            raise PipelineError("ada_target steers the share of augmented images: it needs an augment policy.")
        try:
            parse_policy(self.augment)
        except ValueError as err:
            raise PipelineError(f"augment: {err}.") from err
        if self.train_step == "seed" and (self.loss != "bce" or self.augment or self.r1_gamma or self.mirror):
            raise PipelineError("train_step seed trains with loss bce only, without augment, mirror or r1_gamma.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from `to_dict()` output; absent fields (older files) take the seed recipe's values."""
        seed = RECIPES["seed"]
        values = {**{k: v for k, v in seed.items() if k != "model"}, **values}
        model = ModelConfig.from_dict({**seed["model"], **values.pop("model", {})})
        return cls(model=model, **check_fields(cls, values, "training"))

    def with_image_size(self, image_size: int) -> TrainConfig:
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
