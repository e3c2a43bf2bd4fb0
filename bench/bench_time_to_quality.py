"""Benchmark: training time until a recipe's model reaches the quality a baseline reaches.

The baseline recipe (`--baseline`, default the previous default) trains for `--baseline-images`
(16,000: two passes over the 8,030 training faces of anime-faces-mlds-10k) with every seed; the
mean of its final swd_avg is the target. The candidate recipe (`--candidate`, default today's
default) trains from scratch at every budget of `--budgets` with every seed (each budget its own
run: the learning-rate schedule spans the budget, so a longer run's midpoint is not a shorter
run's end). The candidate's time to quality is the training time of the smallest budget whose
mean swd_avg is at or below the target; the ratio divides it by the baseline's training time
(both as below).

Time is images seen times the seconds per image of each recipe's training step, the two steps
timed side by side in alternating rounds (`bench/bench_train.py`'s sides for the two recipes at
their batch, a multiple of R1's interval so that its slower steps count): a ratio that work
elsewhere on the machine affects alike on both sides. Each run's own wall-clock training time
(without evaluation: every model is scored after its training by the same evaluator,
`components.evaluator.TrainingEvaluator`) is reported beside it.

Resumable: every finished run goes into `<work>/ledger.json` as it ends, and a re-run with the
same flags trains only what is missing (`--fresh` starts over). One PNG puts the first seed's
grids side by side: the baseline, then the candidate at each budget.

    python -m bench.bench_time_to_quality                    # anime-faces-mlds-10k at 64x64, seeds 0,1
    python -m bench.bench_time_to_quality --budgets 8000,16000 --seeds 0
    python -m bench.bench_time_to_quality --quick            # smoke run: tiny networks and budgets
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.bench_quality import mean_over_seeds, side_by_side
from bench.common import ANIME_MLDS_10K, OUT_DIR, add_data_arguments, emit, forget_runs, ingested_data, ledgered, timer

QUICK_MODEL = {"batch_size": 16, "model": {"latent_dim": 32, "g_filters": 8, "d_filters": 16}}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser, image_size=64, images=ANIME_MLDS_10K, eval_fraction=0.2)
    parser.add_argument("--baseline", default="v2", help="the recipe to reach (components.config.RECIPES)")
    parser.add_argument("--baseline-images", type=int, default=16_000, help="the baseline's training budget")
    parser.add_argument("--candidate", default="default", help="the recipe timed until it reaches the baseline")
    parser.add_argument("--budgets", default="4000,6000,8000,12000,16000", help="the candidate's budgets")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds; every run is trained once per seed")
    parser.add_argument("--eval-num", type=int, default=1024, help="generated images per evaluation (<= half the eval split)")
    parser.add_argument("--work", type=Path, default=OUT_DIR / "bench_time_to_quality_work", help="work folder (re-runs resume)")
    parser.add_argument("--fresh", action="store_true", help="start over: forget the finished runs of --work")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny networks, 64 and 128 images, 64 evaluated")
    args = parser.parse_args(argv)
    args.seeds = [int(seed) for seed in args.seeds.split(",")]
    args.budgets = sorted(int(budget) for budget in args.budgets.split(","))
    if args.quick:
        args.baseline_images, args.budgets, args.eval_num, args.image_size = 128, [64, 128], 64, 32
    return args


def train_and_score(args: argparse.Namespace, recipe: str, images: int, seed: int, data: Path, evaluate) -> dict:
    """One run from scratch (from the ledger when a resumed benchmark already ran it): its training
    seconds, then the figures of its final EMA generator."""
    import keras

    from components.runfolder import restore_generator
    from components.train_options import TrainOptions
    from components.trainer import train

    config = recipe_of(args, recipe, seed)
    run = run_folder(args, recipe, images, seed)

    def measure() -> dict:
        keras.utils.set_random_seed(seed)
        with timer() as t:
            result = train(config, data, run, TrainOptions(images=images), verbose=False)
        generator, _ = restore_generator(run)
        figures = evaluate(generator)
        return {
            "train_seconds": t["seconds"],
            "images": result.images_seen,
            **{name: value for name, value in figures.items() if name.startswith(("swd", "msssim"))},  # every level
            "copy_fraction": figures.get("memorisation_copy_fraction"),
        }

    entry = ledgered(args.work, run, {**config.to_dict(), "images": images}, measure)
    return {name: value for name, value in entry.items() if isinstance(value, (int, float))}  # the figures, not the config


def recipe_of(args: argparse.Namespace, recipe: str, seed: int):
    from components.config import recipe_config

    return recipe_config(recipe, seed=seed, **(QUICK_MODEL if args.quick else {}))


def run_folder(args: argparse.Namespace, recipe: str, images: int, seed: int) -> Path:
    """A run's folder, named by what it trains: a recipe whose settings changed trains anew."""
    from components.artifacts import fingerprint

    return args.work / "runs" / f"{recipe}-{images}-s{seed}-{fingerprint(recipe_of(args, recipe, seed).to_dict())[:8]}"


def seconds_per_image(args: argparse.Namespace) -> dict[str, float]:
    """Each recipe's training step, timed in child processes in alternating rounds (best round)."""
    from bench.bench_train import SIDES, run_child

    sides = {"v2": "v2_as_trained", "default": "default_as_trained"}
    if args.baseline not in sides or args.candidate not in sides:
        raise SystemExit(f"error: step timing knows the recipes {', '.join(sides)} only.")
    timing = argparse.Namespace(
        batch_size=16, image_size=args.image_size if args.quick else 64, steps=4 if args.quick else 32, warmup=2
    )
    best: dict[str, float] = {}
    for _ in range(1 if args.quick else 3):
        for recipe in (args.baseline, args.candidate):
            assert SIDES[sides[recipe]][0] == recipe
            rate = run_child(sides[recipe], timing)["images_per_sec_mean"]
            best[recipe] = max(best.get(recipe, 0.0), rate)
    return {recipe: 1.0 / rate for recipe, rate in best.items()}


def grid_of(args: argparse.Namespace, recipe: str, images: int, seed: int) -> np.ndarray:
    from components.latents import grid_latents, to_uint8_array
    from components.runfolder import restore_generator

    generator, info = restore_generator(run_folder(args, recipe, images, seed))
    return to_uint8_array(generator(grid_latents(info["latent_dim"]), training=False))


def main(argv=None) -> None:
    args = parse_args(argv)
    from components.evaluator import TrainingEvaluator

    if args.fresh:
        forget_runs(args.work)
    args.work.mkdir(parents=True, exist_ok=True)
    data = ingested_data(args)
    evaluate = TrainingEvaluator(data, num=args.eval_num, seed=0)

    baseline = {seed: train_and_score(args, args.baseline, args.baseline_images, seed, data, evaluate) for seed in args.seeds}
    baseline_mean = mean_over_seeds(baseline)
    target = baseline_mean["swd_avg"]
    candidate: dict[int, dict] = {}
    for images in args.budgets:
        candidate[images] = {seed: train_and_score(args, args.candidate, images, seed, data, evaluate) for seed in args.seeds}
    means = {images: mean_over_seeds(per_seed) for images, per_seed in candidate.items()}
    reached = [images for images in args.budgets if means[images]["swd_avg"] <= target]
    first = reached[0] if reached else None
    cost = seconds_per_image(args)
    speed_ratio = cost[args.baseline] / cost[args.candidate]  # > 1: the candidate's step is cheaper per image
    report = {
        "config": {
            "data": str(data),
            "baseline": args.baseline,
            "baseline_images": args.baseline_images,
            "candidate": args.candidate,
            "budgets": args.budgets,
            "seeds": args.seeds,
            "eval_num": args.eval_num,
            "quick": args.quick,
        },
        "baseline": {"mean": baseline_mean, "per_seed": {str(seed): figures for seed, figures in baseline.items()}},
        "candidate": {
            str(images): {"mean": means[images], "per_seed": {str(s): f for s, f in per_seed.items()}}
            for images, per_seed in candidate.items()
        },
        "target_swd_avg": target,
        "reached_at_images": first,
        "seconds_per_image": cost,
        "speed_ratio": speed_ratio,
        "images_ratio": first / args.baseline_images if first else None,
        "time_to_quality_ratio": first / args.baseline_images / speed_ratio if first else None,
        "wall_seconds_ratio": means[first]["train_seconds"] / baseline_mean["train_seconds"] if first else None,
        "swd_avg_ratio_at_baseline_images": (
            means[args.baseline_images]["swd_avg"] / target if args.baseline_images in means else None
        ),
        "goal_time_to_quality_ratio": 0.5,
        "goal_swd_avg_ratio_at_baseline_images": 0.75,
    }
    grids = [grid_of(args, args.baseline, args.baseline_images, args.seeds[0])]
    grids += [grid_of(args, args.candidate, images, args.seeds[0]) for images in args.budgets]
    grid_path = OUT_DIR / f"bench_time_to_quality{'_quick' if args.quick else ''}_grids.png"
    side_by_side(grid_path, grids)
    report.update(
        grids_png=str(grid_path),
        grids_order=[f"{args.baseline}@{args.baseline_images}"] + [f"{args.candidate}@{images}" for images in args.budgets],
    )
    emit("bench_time_to_quality" + ("_quick" if args.quick else ""), report)


if __name__ == "__main__":
    main()
