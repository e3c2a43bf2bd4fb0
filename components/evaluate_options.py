"""How an exported generator is scored: `EvaluateOptions`, declared once (components.settings).

`pipeline.evaluate` builds its flags from these fields and records them in eval.json's
"settings", which `pipeline.evaluate --config eval.json` reads back; the number of images is the
training's own setting (components.train_options.eval_num_setting), so one name means one thing.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.config import MAX_SEED
from components.evaluator import DEFAULT_TRAIN_LIMIT
from components.sampler import generate_batch_setting
from components.settings import check_settings, setting
from components.train_options import eval_num_setting

MAX_TRAIN_LIMIT = 100_000  # training images held in memory to search for copies: 4.9 GB at 128x128


@dataclass(frozen=True)
class EvaluateOptions:
    """What is compared with what, and how many: the settings of one evaluation of a SavedModel."""

    split: str = setting(
        "eval", "the real images to compare with; use the held-out eval split", kind=str, choices=("eval", "train")
    )
    eval_num: int = eval_num_setting()
    seed: int = setting(0, "fixes the latents, the real halves and all sampling", kind=int, low=0, high=MAX_SEED)
    generate_batch: int = generate_batch_setting()
    train_limit: int = setting(
        DEFAULT_TRAIN_LIMIT,
        "training images searched for copies (the first ones of the train split); 0 skips memorisation",
        kind=int,
        low=0,
        high=MAX_TRAIN_LIMIT,
    )
    skip_if_done: bool = setting(
        False,
        "do nothing when the output already holds an evaluation of this model on the same data, split, --eval-num "
        "and --seed (pipeline.run uses it)",
        kind=bool,
    )

    def __post_init__(self) -> None:
        check_settings(self)
