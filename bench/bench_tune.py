"""Benchmark: does `--tune` pay for itself? What a user gets from it against the untuned default.

For each seed of `--seeds`, in one work folder:

1. the untuned default trained for `--full-images` images at the data's size, scored at its
   end by the evaluator at that size; its measured time is the final training's time that
   `--tune-budget` multiplies (`pipeline.train --tune-budget` estimates it with a speed probe);
2. the search, as `python -m pipeline.train --tune` runs it (`components.search_run.run_search` on the
   default recipe with that seed): the default configuration with two seeds, then tuned trials
   of `--trial-images` images at `--trial-image-size`, each scored by the mean swd_avg of its
   last `--score-last` evaluations, until `--max-trials` or the budget; the chosen
   configuration is the best trial only if it beats the default by more than the noise, and,
   when the trials are smaller or shorter than 1., again at the data's size for `--full-images`;
3. the chosen configuration trained like 1. (what `--tune` trains and exports). When the search
   kept the default, 3. is 1. (same configuration and seed), so it is trained once.

Resumable: every final training's figures and seconds go to `<work>/ledger.json` as it ends, and
a search resumes from its own folder (its cost is the seconds its rows recorded, over all its
runs); `--fresh` starts over.

Reported per seed: the search's cost (seconds, trainings, images), the final trainings' seconds,
swd_avg of tuned vs default at the full budget, their ratio (below 1: --tune helped), whether
the default was kept; then the mean ratio over the seeds.

    python -m bench.bench_tune --images ../shared/data/anime-faces-2k --eval-fraction 0.25 --full-images 16870 \
        --trial-image-size 32 --trial-images 4218 --tune-budget 2 --work /tmp/tune2k   # the small-data regime
    python -m bench.bench_tune                       # full: ../shared/data/anime-faces-mlds-10k at 64x64
                                                     # (eval 20%), 10 trials of 20,000 images at 32x32, then
                                                     # 100,000 images at 64x64, seeds 0 and 1 (hours on 2 cores)
    python -m bench.bench_tune --data /tmp/faces64   # an ingested data folder instead
    python -m bench.bench_tune --quick               # smoke run: 3 tiny trials of 64 images, 128 final
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.common import ANIME_MLDS_10K, OUT_DIR, add_data_arguments, emit, forget_runs, ingested_data, ledgered, peak_rss_mb

QUICK_SPACE = ["g_filters=8,16", "d_filters=16,32", "g_lr=1e-4..1e-3:log", "d_lr=1e-4..1e-3:log", "beta_1=0.5"]
QUICK_MODEL = {"batch_size": 16, "model": {"latent_dim": 32, "g_filters": 8, "d_filters": 16}}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser, image_size=64, images=ANIME_MLDS_10K, eval_fraction=0.2)
    parser.add_argument("--tuner", default="bayesian", help="bayesian, random or hyperband")
    parser.add_argument(
        "--max-trials",
        type=int,
        help="the search's budget: the default's 2 trainings + N-2 tuned trials (default 10, or no cap but --tune-budget's)",
    )
    parser.add_argument(
        "--tune-budget", type=float, help="the search's budget as a multiple of the default's final training's measured time"
    )
    parser.add_argument("--trial-images", type=int, default=20_000, help="images seen by every trial (and the default's row)")
    parser.add_argument("--trial-image-size", type=int, default=32, help="trials' image size (0: the data's)")
    parser.add_argument("--full-images", type=int, default=100_000, help="images of the final trainings, tuned and default")
    add_shared_arguments(parser, "bench_tune_work", quick="3 trials of 64 images, 128 final images, tiny networks")
    args = parse_shared(parser, argv)
    if args.quick:
        args.max_trials, args.trial_images, args.full_images, args.eval_num = 3, 64, 128, 64
    return args


def add_shared_arguments(parser: argparse.ArgumentParser, work: str, quick: str) -> None:
    """The flags of this benchmark that bench_tune_fidelity shares: seeds, scoring as trials score,
    evaluation size, precision, work folder, --quick."""
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds; every training is run once per seed")
    parser.add_argument("--score-last", type=int, default=2, help="a trial scores the mean of its last K evaluations")
    parser.add_argument(
        "--eval-num", type=int, default=1024, help="generated images per evaluation (capped by half the eval split)"
    )
    parser.add_argument("--precision", default="auto", help="as pipeline.train --precision")
    parser.add_argument("--work", type=Path, default=OUT_DIR / work, help="work folder (a re-run resumes the runs it holds)")
    parser.add_argument("--fresh", action="store_true", help="start over: forget the finished runs of --work")
    parser.add_argument("--quick", action="store_true", help=f"tiny smoke run: {quick}")


def parse_shared(parser: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """The parsed flags, --seeds as a list of ints."""
    args = parser.parse_args(argv)
    args.seeds = [int(seed) for seed in args.seeds.split(",")]
    return args


def final_training(args: argparse.Namespace, config, data: Path, run: Path, evaluate) -> dict:
    """One training from scratch as `--tune`'s last step runs it (same seeding), scored at its end;
    taken from the ledger when a resumed benchmark already ran it."""
    import keras

    from components.train_options import TrainOptions
    from components.trainer import train

    def measure() -> dict:
        keras.utils.set_random_seed(config.seed)
        result = train(config, data, run, TrainOptions(images=args.full_images), evaluate_fn=evaluate, verbose=False)
        return {name: result.metrics.get(name) for name in ("swd_avg", "swd_avg_floor", "msssim")}

    return ledgered(args.work, run, {**config.to_dict(), "images": args.full_images}, measure)


def search_cost(rows: list[dict], tuner_dir: Path, budget_seconds: float | None) -> dict:
    """What the search spent (the seconds its rows' result.json files record, over every run of a
    resumed search), its trainings and images (a row's budget per execution), and its budget."""
    from components.search_cost import search_spending

    trainings = sum(len(row["executions"] or [None]) for row in rows)
    images = sum(row["images"] * len(row["executions"] or [None]) for row in rows)
    trial_dirs = [tuner_dir / f"trial_{row['trial_id']}" for row in rows if row["trial_id"] != "default"]
    seconds = search_spending(tuner_dir, trial_dirs).seconds
    return {"seconds": seconds, "trainings": trainings, "images": images, "budget_seconds": budget_seconds}


def confirm_speeds(args: argparse.Namespace, base, data: Path) -> tuple[float, float] | None:
    """The default's images/s at the trial size and at the data's, from the speed probes
    `pipeline.train --tune` runs (the search keeps the time a confirmation at the data's size takes)."""
    from components.records import read_manifest
    from components.search_cost import measure_speed

    if not args.trial_image_size:
        return None
    size = int(read_manifest(data)["image_size"])
    return measure_speed(base, args.trial_image_size, precision=args.precision), measure_speed(
        base, size, precision=args.precision
    )


def bench_seed(
    args: argparse.Namespace, seed: int, data: Path, evaluators: dict, space: dict, speeds: tuple[float, float] | None = None
) -> dict:
    """Search with `seed`, then train the chosen configuration and the default at the full budget."""
    from components.config import recipe_config
    from components.search_report import config_from_best, format_table
    from components.search_space import SearchSettings
    from components.search_run import run_search

    base = recipe_config("default", seed=seed, **(QUICK_MODEL if args.quick else {}))
    runs = args.work / "runs" / f"seed-{seed}"
    # The default first: its measured time is what --tune-budget multiplies (the CLI estimates it).
    default = final_training(args, base, data, runs / "default", evaluators["full"])
    budget = args.tune_budget * default["seconds"] if args.tune_budget else None
    settings = SearchSettings(
        tuner=args.tuner,
        max_trials=args.max_trials or (1000 if budget else 10),
        trial_images=args.trial_images,
        seed=seed,
        score_last=args.score_last,
        trial_image_size=args.trial_image_size or None,
        budget_seconds=budget,
        final_images=args.full_images,
    )
    search = run_search(
        base,
        space,
        data,
        runs / "search",
        settings,
        evaluate_fn=evaluators["trial"],
        confirm_evaluate_fn=evaluators["full"],
        confirm_speeds=speeds,
        evaluation={"num": args.eval_num, "seed": 0},
        train_options={"precision": args.precision},
    )
    if search.best is None:
        sys.exit("error: neither the default nor any trial completed; see the table above.")
    print(format_table(search.rows, search.best["trial_id"]))
    kept = search.best["chosen"] == "default"
    tuned = (
        default
        if kept
        else final_training(args, config_from_best(base, search.best_path)[0], data, runs / "tuned", evaluators["full"])
    )
    cost = search_cost(search.rows, runs / "search" / "tuner", budget)
    return {
        "seed": seed,
        "search": {
            **cost,
            "chosen": search.best["chosen"],
            "reason": search.best["reason"],
            "default_row": search.best["default"],
            "best_trial": search.best["best_trial"],
            "times_final_training": cost["seconds"] / default["seconds"],
        },
        "tuned": {**tuned, "hyperparameters": search.best["hyperparameters"]},
        "default": default,
        "final_seconds": default["seconds"] + (0.0 if kept else tuned["seconds"]),
        "ratio": tuned["swd_avg"] / default["swd_avg"],
        "default_kept": kept,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    from components.config import recipe_config
    from components.evaluator import TrainingEvaluator
    from components.search_space import make_space, parse_space_override

    if args.fresh:
        forget_runs(args.work)
    data = ingested_data(args)
    full = TrainingEvaluator(data, num=args.eval_num, seed=0, train_limit=0)  # memorisation plays no part here
    trial = (
        TrainingEvaluator(data, num=args.eval_num, seed=0, train_limit=0, image_size=args.trial_image_size)
        if args.trial_image_size
        else full
    )
    base = recipe_config("default", **(QUICK_MODEL if args.quick else {}))  # every seed's base but for the seed
    space = make_space(base, None, [parse_space_override(entry) for entry in QUICK_SPACE] if args.quick else [])
    speeds = confirm_speeds(args, base, data)
    seeds = [bench_seed(args, seed, data, {"full": full, "trial": trial}, space, speeds) for seed in args.seeds]
    mean_ratio = sum(result["ratio"] for result in seeds) / len(seeds)

    emit(
        "bench_tune_quick" if args.quick else "bench_tune",
        {
            "config": {
                "data": str(data),
                "tuner": args.tuner,
                "max_trials": args.max_trials,
                "tune_budget": args.tune_budget,
                "trial_images": args.trial_images,
                "trial_image_size": args.trial_image_size or None,
                "score_last": args.score_last,
                "full_images": args.full_images,
                "seeds": args.seeds,
                "eval_num": args.eval_num,
                "quick": args.quick,
            },
            "seeds": seeds,
            "mean_ratio": mean_ratio,
            "mean_swd_avg": {
                side: sum(result[side]["swd_avg"] for result in seeds) / len(seeds) for side in ("tuned", "default")
            },
            "swd_avg_floor": seeds[0]["default"]["swd_avg_floor"],
            "mean_search_seconds": sum(result["search"]["seconds"] for result in seeds) / len(seeds),
            "mean_final_seconds": sum(result["final_seconds"] for result in seeds) / len(seeds),
            "default_kept": sum(result["default_kept"] for result in seeds),
            "tune_beats_default": mean_ratio < 1.0,
            "peak_rss_mb": peak_rss_mb(),
        },
    )


if __name__ == "__main__":
    main()
