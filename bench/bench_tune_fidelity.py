"""Study: do cheap trials rank configurations as the full budget does? (rank correlation and noise)

A search can only pay for itself if its short trials put configurations in the order their full
trainings would. For each configuration (`--configs FILE`, a JSON list of `TrainConfig`
overrides such as `{"g_lr": 1e-4, "model": {"g_filters": 16}}`; by default `CONFIGS`: the default
recipe and three neighbours spanning filters and learning rates) and each seed of `--seeds`:

- train it at the full budget (`--full-images` at the data's size), and
- train it at each fidelity of `--fidelities` (`IMAGES` or `IMAGES@SIZE`: 20000@32 is 20,000
  images at 32x32, downscaled as `--trial-image-size` does),

every run scored exactly as a search trial is (`components.search_hypermodel.DCGANHyperModel.fit`: the mean
swd_avg of its last `--score-last` evaluations in the run's second half). Reported per fidelity:
the Spearman rank correlation between the configurations' mean scores (over seeds) there and at
the full budget, and the seed-to-seed noise (mean over configurations of the spread of its
seeds' scores, the search's own noise measure; also relative to the mean score); per
configuration, every score and the seconds spent.

The study is resumable: every finished run's score and seconds go to `<work>/ledger.json` as it
ends, and a re-run with the same flags trains only the runs missing there (a run killed half-way
resumes from its last checkpoint; its seconds then count the resumed part only). `--fresh`
starts over.

    python -m bench.bench_tune_fidelity                # full: ../shared/data/anime-faces-mlds-10k at 64x64,
                                                       # 4 configs x 2 seeds, 100,000 images vs 20000@32 and 20000
    python -m bench.bench_tune_fidelity --configs my.json --fidelities 10000@32,20000@32,40000
    python -m bench.bench_tune_fidelity --quick        # smoke run: 3 tiny configs, 128 images vs 64@32 and 64
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.bench_tune import add_shared_arguments, parse_shared
from bench.common import ANIME_MLDS_10K, add_data_arguments, emit, forget_runs, ingested_data, ledgered, peak_rss_mb

CONFIGS = [
    {},  # the default recipe: g_filters 32, d_filters 32, g_lr 4e-4, d_lr 8e-4, batch 16, R1 0.1
    {"g_lr": 2e-4, "d_lr": 4e-4},  # learning rates x0.5
    {"g_lr": 8e-4, "d_lr": 1.6e-3},  # learning rates x2
    {"batch_size": 32},
    {"augment": "color,translation,cutout"},  # DiffAugment
    {"r1_gamma": 1.0},
]
QUICK_CONFIGS = [{}, {"model": {"g_filters": 4, "d_filters": 8}}, {"g_lr": 1e-3, "d_lr": 1e-3}]
QUICK_MODEL = {"batch_size": 16, "model": {"latent_dim": 32, "g_filters": 8, "d_filters": 16}}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser, image_size=64, images=ANIME_MLDS_10K, eval_fraction=0.2)
    parser.add_argument("--configs", type=Path, help="JSON list of TrainConfig overrides (default: the built-in four)")
    parser.add_argument("--full-images", type=int, default=100_000, help="the full budget, at the data's size")
    parser.add_argument(
        "--fidelities", default="20000@32,20000", help="comma-separated IMAGES or IMAGES@SIZE of the cheap trials"
    )
    add_shared_arguments(parser, "bench_tune_fidelity_work", quick="3 tiny configs, 128 images vs 64@32 and 64")
    args = parse_shared(parser, argv)
    if args.quick:
        args.full_images, args.fidelities, args.eval_num = 128, "64@32,64", 64
    args.fidelities = [parse_fidelity(text) for text in args.fidelities.split(",")]
    args.config_list = json.loads(args.configs.read_text()) if args.configs else QUICK_CONFIGS if args.quick else CONFIGS
    return args


def parse_fidelity(text: str) -> tuple[int, int | None]:
    """`20000@32` -> (20000, 32); `20000` -> (20000, None: the data's size)."""
    images, _, size = text.partition("@")
    return int(images), int(size) if size else None


def fidelity_name(images: int, size: int | None) -> str:
    return f"{images}@{size}" if size else str(images)


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of two equally long lists (nan when one is constant)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def score_runs(args, data: Path, configs: list, images: int, size: int | None, evaluators: dict) -> list[dict]:
    """Every configuration at one budget, once per seed, each scored as a search trial is; runs the
    ledger already holds are taken from it."""
    from components.config import recipe_config
    from components.search_hypermodel import DCGANHyperModel
    from components.search_space import SearchSettings

    settings = SearchSettings(trial_images=images, trial_image_size=size, score_last=args.score_last)
    if size not in evaluators:
        from components.evaluator import TrainingEvaluator

        evaluators[size] = TrainingEvaluator(data, num=args.eval_num, seed=0, train_limit=0, image_size=size)
    train_options = {"precision": args.precision, "keep_checkpoints": 1}
    hypermodel = DCGANHyperModel(recipe_config("default"), {}, data, evaluators[size], settings, train_options=train_options)
    results = []
    for index, overrides in enumerate(configs):
        model = {**(QUICK_MODEL["model"] if args.quick else {}), **overrides.get("model", {})}
        shrink = {key: value for key, value in (QUICK_MODEL if args.quick else {}).items() if key != "model"}
        scores, seconds = [], 0.0
        for seed in args.seeds:
            config = recipe_config("default", **{**shrink, **overrides, "model": model, "seed": seed})
            run = args.work / "runs" / fidelity_name(images, size) / f"config-{index}" / f"seed-{seed}"

            def fit(config=config, run=run) -> dict:
                return {"swd_avg": hypermodel.fit(None, config, run_dir=run, images=images, verbose=False)["swd_avg"]}

            entry = ledgered(args.work, run, config.to_dict(), fit)
            scores.append(entry["swd_avg"])
            seconds += entry["seconds"]
        results.append(
            {
                "config": overrides,
                "scores": scores,
                "mean": sum(scores) / len(scores),
                "spread": max(scores) - min(scores),
                "seconds": seconds,
            }
        )
    return results


def summary(results: list[dict], full: list[dict] | None) -> dict:
    """The budget's noise (mean spread of the seeds, absolute and relative) and, against the full
    budget's means, its rank correlation."""
    noise = sum(result["spread"] for result in results) / len(results)
    mean = sum(result["mean"] for result in results) / len(results)
    figures = {
        "noise": noise,
        "relative_noise": noise / mean,
        "seconds": sum(result["seconds"] for result in results),
        "configs": results,
    }
    if full is not None:
        figures["spearman_vs_full"] = spearman([result["mean"] for result in results], [result["mean"] for result in full])
    return figures


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.fresh:
        forget_runs(args.work)
    data = ingested_data(args)
    evaluators: dict = {}
    full = score_runs(args, data, args.config_list, args.full_images, None, evaluators)
    fidelities = {
        fidelity_name(images, size): summary(score_runs(args, data, args.config_list, images, size, evaluators), full)
        for images, size in args.fidelities
    }
    emit(
        "bench_tune_fidelity_quick" if args.quick else "bench_tune_fidelity",
        {
            "config": {
                "data": str(data),
                "configs": args.config_list,
                "full_images": args.full_images,
                "seeds": args.seeds,
                "score_last": args.score_last,
                "eval_num": args.eval_num,
                "quick": args.quick,
            },
            "full": summary(full, None),
            "fidelities": fidelities,
            "peak_rss_mb": peak_rss_mb(),
        },
    )


if __name__ == "__main__":
    main()
