"""Choosing numeric precision and XLA for the machine at hand.

Mixed precision keeps weights in float32 and computes in 16 bits. `auto` picks what is fastest
without hurting training: float16 on GPUs (with loss scaling, as float16's narrow range needs),
bfloat16 on CPUs with native bf16 instructions (AVX-512 BF16 or AMX; same range as float32, so no
loss scaling), float32 elsewhere. XLA is worth it on GPUs and much slower on CPUs, so `jit=None`
means "on only with a GPU".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
_CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def cpu_supports_bfloat16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when the CPU advertises native bf16 arithmetic (Linux; False where unknown)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & _CPU_BF16_FLAGS)


def resolve_precision(precision: str = "auto") -> str:
    """The Keras dtype policy name ("float32", "mixed_bfloat16", "mixed_float16") for a choice."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if has_gpu():
            precision = "float16"
        elif cpu_supports_bfloat16():
            precision = "bfloat16"
        else:
            precision = "float32"
    return _POLICIES[precision]


def resolve_jit(jit: bool | None = None) -> bool:
    return has_gpu() if jit is None else bool(jit)


def with_loss_scaling(optimizer, dtype_policy: str):
    """Wrap `optimizer` in dynamic loss scaling when the policy computes in float16."""
    import keras

    if dtype_policy == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def unwrap(optimizer):
    """The optimiser that owns the Adam state (inside a loss-scale wrapper, if any).

    Checkpoints store this one, so a run can resume under another precision.
    """
    return getattr(optimizer, "inner_optimizer", optimizer)


@contextlib.contextmanager
def step_graph_options(second_order: bool) -> Iterator[None]:
    """Grappler's options while a training step's graph is built and first run (when Grappler
    rewrites it), restored afterwards.

    Grappler's remapper fuses D's Conv2D + BiasAdd + LeakyRelu into one node, but the R1 penalty's
    second-order gradient reads the BiasAdd output the fusion removes (LeakyReluGrad's input): the
    remapper then abandons the whole step's graph and prints an E-level "remapper failed" line.
    For a step with a second-order gradient it is switched off (it had changed nothing there);
    every other step keeps it.
    """
    import tensorflow as tf

    if not second_order:
        yield
        return
    before = tf.config.optimizer.get_experimental_options().get("remapping")
    tf.config.optimizer.set_experimental_options({"remapping": False})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"remapping": True if before is None else before})
