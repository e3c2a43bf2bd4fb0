"""Benchmark: a real KerasTuner search, and whether its best trial beats the seed's recipe.

Steps, all in one work folder (its runs started afresh every time):

1. ingest the image folder with `python -m pipeline.ingest` (or take an already ingested --data);
2. search (`components.tuner.run_search`) over the default space (G/D base filters, both learning
   rates, beta_1) on top of the default recipe, `--max-trials` trials of `--trial-images` images
   each, ranked by swd_avg on the eval split;
3. train, for the same images, with the same seed and scored by the same evaluator (same num,
   same seed): the seed tutorial's recipe (`recipe_config("seed")`) and the default recipe as it
   is, untuned (the search's base);
4. with `--confirm-seeds N`: train the best configuration and the seed recipe N more times with
   other seeds, so "beats the seed" is not just the luck of the best of several noisy trials.

    python -m bench.bench_tune                       # full: ../shared/data/anime-faces-2k at 32x32,
                                                     # 8 trials x 25,000 images (~20-30 min on 2 cores)
    python -m bench.bench_tune --data /tmp/faces32   # an ingested data folder instead
    python -m bench.bench_tune --quick               # smoke run: 2 tiny trials of 256 images
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

from bench.common import OUT_DIR, add_data_arguments, emit, ingested_data, peak_rss_mb, timer

QUICK_SPACE = ["g_filters=8,16", "d_filters=16,32", "g_lr=1e-4..1e-3:log", "d_lr=1e-4..1e-3:log", "beta_1=0.5"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser, image_size=32)
    parser.add_argument("--tuner", default="bayesian", help="bayesian, random or hyperband")
    parser.add_argument("--max-trials", type=int, default=8)
    parser.add_argument("--trial-images", type=int, default=25_000, help="images seen by every trial and every baseline")
    parser.add_argument("--confirm-seeds", type=int, default=1, help="extra seeds to retrain the best and the seed recipe with")
    parser.add_argument("--eval-num", type=int, default=1024, help="generated images per evaluation (capped by half the eval split)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=OUT_DIR / "bench_tune_work", help="work folder (emptied first)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 2 trials of 256 images, tiny filters")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_trials, args.trial_images, args.confirm_seeds, args.eval_num = 2, 256, 0, 64
    return args


def train_and_score(config, data: Path, run: Path, images: int, evaluate) -> dict:
    """One training run from scratch, as a trial trains (same seeding), scored by its best swd_avg."""
    import keras

    from components.trainer import train

    keras.utils.set_random_seed(config.seed)
    with timer() as t:
        result = train(config, data, run, images=images, evaluate_fn=evaluate, verbose=False)
    floor = result.metrics.get("swd_avg_floor")  # real vs real: what a perfect generator would score
    return {"seed": config.seed, "swd_avg": result.best_swd, "swd_avg_floor": floor, "seconds": t["seconds"]}


def main(argv=None) -> None:
    args = parse_args(argv)
    from components.config import recipe_config
    from components.evaluator import TrainingEvaluator
    from components.search_report import format_table
    from components.search_space import SearchSettings, apply_values, make_space, parse_space_override
    from components.tuner import run_search

    shutil.rmtree(args.work / "runs", ignore_errors=True)
    data = ingested_data(args)
    shrink = {"batch_size": 32, "model": {"latent_dim": 32}} if args.quick else {}
    base = recipe_config("default", seed=args.seed, **shrink)
    seed_recipe = recipe_config("seed", seed=args.seed, **shrink)
    space = make_space(base, None, [parse_space_override(entry) for entry in QUICK_SPACE] if args.quick else [])
    settings = SearchSettings(tuner=args.tuner, max_trials=args.max_trials, trial_images=args.trial_images, seed=args.seed)
    evaluation = {"num": args.eval_num, "seed": 0}
    evaluate = TrainingEvaluator(data, **evaluation)
    runs = args.work / "runs"

    with timer() as search_time:
        search = run_search(base, space, data, runs / "search", settings, evaluate_fn=evaluate, evaluation=evaluation)
    if search.best is None:
        sys.exit("error: no trial completed; see the table above.")
    print(format_table(search.rows, search.best["trial_id"]))

    best_config = apply_values(base, search.best["hyperparameters"])
    default_recipe = train_and_score(base, data, runs / "default-recipe", args.trial_images, evaluate)
    by_seed = {"best": [{"seed": args.seed, "swd_avg": search.best["swd_avg"]}], "seed_recipe": []}
    by_seed["seed_recipe"].append(train_and_score(seed_recipe, data, runs / "seed-recipe-0", args.trial_images, evaluate))
    for k in range(1, args.confirm_seeds + 1):
        for name, config in (("best", best_config), ("seed_recipe", seed_recipe)):
            run = runs / f"{name}-{k}"
            by_seed[name].append(train_and_score(dataclasses.replace(config, seed=args.seed + k), data, run, args.trial_images, evaluate))
    mean = {name: sum(r["swd_avg"] for r in results) / len(results) for name, results in by_seed.items()}

    emit(
        "bench_tune_quick" if args.quick else "bench_tune",
        {
            "config": {"data": str(data), "tuner": args.tuner, "max_trials": args.max_trials, "trial_images": args.trial_images,
                       "eval_num": args.eval_num, "seed": args.seed, "confirm_seeds": args.confirm_seeds, "quick": args.quick},
            "search_seconds": search_time["seconds"],
            "trials": [{k: row[k] for k in ("trial_id", "status", "swd_avg", "seconds", "images", "hyperparameters", "reason")}
                       for row in search.rows],
            "best": {"trial_id": search.best["trial_id"], "hyperparameters": search.best["hyperparameters"],
                     "swd_avg": search.best["swd_avg"]},
            "seed_recipe": by_seed["seed_recipe"][0],
            "default_recipe_untuned": default_recipe,
            "swd_avg_floor": default_recipe["swd_avg_floor"],
            "best_beats_seed_recipe_same_seed": search.best["swd_avg"] < by_seed["seed_recipe"][0]["swd_avg"],
            "best_beats_default_recipe_same_seed": search.best["swd_avg"] < default_recipe["swd_avg"],
            "by_seed": by_seed,
            "mean_swd_avg": mean,
            "best_beats_seed_recipe_mean": mean["best"] < mean["seed_recipe"],
            "peak_rss_mb": peak_rss_mb(),
        },
    )  # fmt: skip


if __name__ == "__main__":
    main()
