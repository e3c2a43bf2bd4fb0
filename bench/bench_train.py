"""Training throughput: images/s through one D+G update, our step vs the seed tutorial's.

Both sides train the default (seed) architecture at 64x64, batch 128, on one in-memory batch of
images (the input pipeline has its own benchmark), through `keras.Model.train_on_batch`:

- seed: the tutorial's `train_step` (`--train-step seed`: two rounds of D-on-fakes, D-on-reals and
  G, each its own tape) in float32, as the tutorial ran; each round counts as one update, so one
  step is two updates of `batch` images;
- ours: the default recipe (`TrainConfig()`) at batch 128: the default step (one D update on reals
  and fakes in one pass, one G update on the same fakes, the EMA) at `--precision auto` (bfloat16
  mixed on CPUs with bf16 instructions), with the recipe's networks (k4 up-sampling, minibatch
  standard deviation, no dropout, ...);
- ours_seed_recipe: the same step and precision on the seed recipe's networks and losses (the
  trainer's default before issue 8), which shows what the default recipe costs or saves;
- ours_d_kernel_4: the default recipe with `--d-kernel 4` (the DCGAN paper's discriminator kernel
  instead of the seed's 5): faster on this CPU, but worse at equal images seen (README, Results),
  so it is not the default; it shows what the kernel alone is worth.
- default_as_trained / previous_default_as_trained: the default recipe at its own batch (16, no
  spectral norm) against the default before issue 15 at its own (32, spectral norm): what a user
  of `pipeline.train` gets in images/s from the change (smaller batches cost per image, the
  missing spectral norm saves a little).
- v2_as_trained: the default before today's (`--recipe v2`: D of 64 filters) at its batch (16),
  which bench_time_to_quality times beside default_as_trained;
- default_remapper_on: default_as_trained with Grappler's remapper left on, which gives up on
  steps with R1's second-order gradient (`components.precision.step_graph_options`, which the
  trainer and every other side use, switches it off there): the two sides show what that costs.

Each side runs in its own child process so that peak memory (RSS) is its own; `--rounds` repeats
the pair and keeps each side's best round, which damps noise from other work on the machine.

    python -m bench.bench_train            # full: 20 timed steps per side, 2 rounds
    python -m bench.bench_train --quick    # 3 timed steps, 1 round
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from bench.common import emit, peak_rss_mb

SIDES = {
    # side: (recipe, train_step variant, precision, updates per step, TrainConfig overrides;
    # without a batch_size override a side trains at --batch-size)
    "seed": ("seed", "seed", "float32", 2, {}),
    "ours": ("default", "dcgan", "auto", 1, {}),
    "ours_seed_recipe": ("seed", "dcgan", "auto", 1, {}),
    "ours_d_kernel_4": ("default", "dcgan", "auto", 1, {"model": {"d_kernel": 4}}),
    "default_as_trained": ("default", "dcgan", "auto", 1, {"batch_size": 16}),
    "previous_default_as_trained": ("v1", "dcgan", "auto", 1, {"batch_size": 32}),
    "default_remapper_on": ("default", "dcgan", "auto", 1, {"batch_size": 16}),
    "v2_as_trained": ("v2", "dcgan", "auto", 1, {"batch_size": 16}),
}
REMAPPER_ON = {"default_remapper_on"}  # sides timed without step_graph_options


def measure(side: str, batch_size: int, image_size: int, steps: int, warmup: int) -> dict:
    """Time `steps` training steps of one side in this process (after `warmup` untimed ones)."""
    import numpy as np
    import tensorflow as tf

    from components.config import recipe_config
    from components.precision import resolve_precision, step_graph_options
    from components.trainer import build_gan, compile_gan

    recipe, variant, precision, updates_per_step, overrides = SIDES[side]
    model = {"image_size": image_size, **overrides.get("model", {})}
    config = recipe_config(recipe, **{"batch_size": batch_size, **overrides, "model": model, "train_step": variant})
    batch_size = config.batch_size
    policy = resolve_precision(precision)
    gan = build_gan(config, policy)
    compile_gan(gan, config, policy)
    images = tf.random.uniform((batch_size, image_size, image_size, 3), -1.0, 1.0, seed=0)

    with step_graph_options(second_order=config.r1_gamma > 0 and side not in REMAPPER_ON):
        started = time.perf_counter()
        for _ in range(warmup):
            gan.train_on_batch(images)
        warmup_seconds = time.perf_counter() - started
        wall, cpu = [], []
        for _ in range(steps):
            started, cpu_started = time.perf_counter(), time.process_time()
            gan.train_on_batch(images)  # returns host values, so the step has finished
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
    step_seconds, step_cpu_seconds = float(np.median(wall)), float(np.median(cpu))
    return {
        "dtype_policy": policy,
        "updates_per_step": updates_per_step,
        "step_seconds_median": step_seconds,
        "images_per_sec": batch_size * updates_per_step / step_seconds,
        # CPU time of this process: less sensitive than wall time to other work on the machine.
        "step_cpu_seconds_median": step_cpu_seconds,
        "images_per_cpu_sec": batch_size * updates_per_step / step_cpu_seconds,
        # The mean counts the steps a lazy regulariser (R1 every `r1_every` D updates) makes
        # slower, which the median skips: time a multiple of `r1_every` steps to compare recipes.
        "images_per_sec_mean": batch_size * updates_per_step * steps / float(np.sum(wall)),
        "warmup_seconds": warmup_seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_child(side: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        "-m",
        "bench.bench_train",
        "--child",
        side,
        "--batch-size",
        str(args.batch_size),
        "--image-size",
        str(args.image_size),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 timed steps per side, 1 round")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per side and round (default 20, quick 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (tracing, allocator warm-up)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of all sides to run, best kept (default 2, quick 1)")
    parser.add_argument("--only", default="", help="comma-separated sides to time (default all); a ratio needs both its sides")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (3 if args.quick else 20)
    rounds = args.rounds or (1 if args.quick else 2)
    if args.child:
        print(json.dumps(measure(args.child, args.batch_size, args.image_size, args.steps, args.warmup)))
        return

    sides = [side for side in SIDES if not args.only or side in args.only.split(",")]
    best: dict[str, dict] = {}
    for _ in range(rounds):
        for side in sides:
            result = run_child(side, args)
            if side not in best or result["images_per_sec"] > best[side]["images_per_sec"]:
                best[side] = result
    emit(
        "bench_train",
        {
            "config": {
                "batch_size": args.batch_size,
                "image_size": args.image_size,
                "steps": args.steps,
                "rounds": rounds,
                "quick": args.quick,
                "sides": sides,
            },
            **best,
            **ratios(best),
            "target_speedup": 2.5,
        },
    )


# ratio name -> (side, baseline side, figure): each reported when both sides ran
RATIOS = {
    "speedup_images_per_sec": ("ours", "seed", "images_per_sec"),
    "speedup_images_per_cpu_sec": ("ours", "seed", "images_per_cpu_sec"),
    # the default recipe against the seed recipe's networks, same step
    "recipe_speed_ratio_per_cpu_sec": ("ours", "ours_seed_recipe", "images_per_cpu_sec"),
    "speedup_d_kernel_4_images_per_sec": ("ours_d_kernel_4", "seed", "images_per_sec"),
    # the default as trained (batch 16) against the previous default as trained (batch 32)
    "default_vs_previous_default_images_per_cpu_sec": ("default_as_trained", "previous_default_as_trained", "images_per_cpu_sec"),
    "default_vs_previous_default_images_per_sec": ("default_as_trained", "previous_default_as_trained", "images_per_sec"),
    # the mean counts R1's steps, where the remapper's option matters
    "remapper_off_vs_on_images_per_sec_mean": ("default_as_trained", "default_remapper_on", "images_per_sec_mean"),
    "remapper_off_vs_on_images_per_cpu_sec": ("default_as_trained", "default_remapper_on", "images_per_cpu_sec"),
}


def ratios(best: dict[str, dict]) -> dict[str, float]:
    ran = RATIOS.items()
    return {name: best[side][figure] / best[base][figure] for name, (side, base, figure) in ran if side in best and base in best}


if __name__ == "__main__":
    main()
