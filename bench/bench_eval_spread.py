"""Benchmark: how far one evaluation's swd_avg moves with its seed, and generators compared on the
mean over many evaluation seeds.

An evaluation's seed picks the latents and which half of the held-out reals is the reference (the
other half gives the floor), so one evaluation of one generator is one draw. Each `--model
NAME=DIR` (repeat a NAME for several trainings of one recipe, e.g. its seeds) is scored with
evaluation seeds 0..--seeds-1, every model on the same seeds; the report gives each evaluation,
each model's mean and spread, each NAME's mean over its models and seeds, each NAME's ratio to the
first NAME's, and the spread over seeds of that difference (paired: both sides scored on the same
seed's halves). Evaluations already in --work are reused (the run resumes after a kill).

    python -m bench.bench_eval_spread --data DATA --model default=RUN_S0 --model default=RUN_S1 \\
        --model v2=V2_S0 --model v2=V2_S1
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

from bench.common import OUT_DIR, emit


def levels(metrics: dict[str, float]) -> list[str]:
    """swd_avg, then each pyramid level's swd_<res>, finest first (the levels follow the image size)."""
    sizes = sorted((int(match[1]) for match in map(re.compile(r"swd_([0-9]+)").fullmatch, metrics) if match), reverse=True)
    return ["swd_avg", *(f"swd_{size}" for size in sizes)]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="an ingested data folder (its eval split is the reference)")
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="an exported generator (SavedModel version folder, its parent or a run folder); repeat a NAME for its seeds",
    )
    parser.add_argument("--seeds", type=int, default=10, help="evaluation seeds 0..N-1 per model (default: %(default)s)")
    parser.add_argument("--eval-num", type=int, default=1024, help="generated images per evaluation (default: %(default)s)")
    parser.add_argument("--generate-batch", type=int, default=256, help="images per generator call (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=OUT_DIR / "bench_eval_spread_work", help="one eval JSON per evaluation")
    parser.add_argument("--out", help="result JSON (default: bench/out/eval_spread.json)")
    args = parser.parse_args(argv)
    if not 1 <= args.seeds <= 1000:
        parser.error(f"--seeds must be 1..1000, got {args.seeds}")
    args.models = [parse_model(item, parser) for item in args.model]
    return args


def parse_model(item: str, parser: argparse.ArgumentParser) -> tuple[str, Path]:
    name, separator, folder = item.partition("=")
    if not (separator and re.fullmatch(r"[A-Za-z0-9_.]+", name) and folder):
        parser.error(f"--model wants NAME=DIR (NAME of letters, digits, _ and .), got {item!r}")
    if not Path(folder).exists():
        parser.error(f"--model {item}: no such folder")
    return name, Path(folder)


def evaluate(model: Path, data: Path, seed: int, eval_num: int, generate_batch: int, output: Path) -> dict[str, float]:
    """One evaluation (memorisation skipped: only the distances matter here), reused if current."""
    from components.evaluate_options import EvaluateOptions
    from components.evaluation import evaluate_model

    options = EvaluateOptions(eval_num=eval_num, seed=seed, train_limit=0, skip_if_done=True, generate_batch=generate_batch)
    return evaluate_model(model, data, options, output=output).metrics


def spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def main(argv=None) -> None:
    from components.errors import PipelineError

    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        runs = evaluate_all(args)
    except PipelineError as error:  # a folder that is no generator, data of another size...
        sys.exit(f"error: {error}")
    report(args, runs)


def evaluate_all(args: argparse.Namespace) -> list[tuple[str, Path, list[dict]]]:
    """Each model's evaluations, one row per evaluation seed: (name, model, rows) in --model order."""
    runs = []  # (name, model, one row per evaluation seed)
    for index, (name, model) in enumerate(args.models):
        rows = []
        for seed in range(args.seeds):
            metrics = evaluate(
                model, args.data, seed, args.eval_num, args.generate_batch, args.work / f"{name}#{index}-seed{seed}.json"
            )
            rows.append({"seed": seed, **{key: metrics[key] for key in (*levels(metrics), "swd_avg_floor")}})
            print(f"{name} {model}: evaluation seed {seed}: swd_avg {metrics['swd_avg']:.2f}", flush=True)
        runs.append((name, model, rows))
    return runs


def report(args: argparse.Namespace, runs: list[tuple[str, Path, list[dict]]]) -> None:
    """Means, spreads, ratios and paired differences; printed and written as JSON."""
    names = list(dict.fromkeys(name for name, _, _ in runs))
    per_name = {
        name: spread([row["swd_avg"] for run_name, _, rows in runs if run_name == name for row in rows]) for name in names
    }
    first = per_name[names[0]]["mean"]

    def seed_means(name: str) -> list[float]:
        """Per evaluation seed, the mean swd_avg of NAME's models."""
        columns = [[row["swd_avg"] for row in rows] for run_name, _, rows in runs if run_name == name]
        return [statistics.fmean(values) for values in zip(*columns)]

    # Every model is scored on the same seeds, so each seed's difference shares its reference half.
    paired = {name: spread([a - b for a, b in zip(seed_means(name), seed_means(names[0]))]) for name in names[1:]}
    emit(
        "eval_spread",
        {
            "data": str(args.data),
            "eval_num": args.eval_num,
            "seeds": args.seeds,
            "evaluations": {f"{name}#{index}": rows for index, (name, _, rows) in enumerate(runs)},
            "per_model": {
                f"{name}#{index}": {
                    "model": str(model),
                    **{level: spread([row[level] for row in rows]) for level in levels(rows[0])},
                }
                for index, (name, model, rows) in enumerate(runs)
            },
            "per_name_swd_avg": per_name,
            f"ratio_to_{names[0]}": {name: per_name[name]["mean"] / first for name in names[1:]},
            f"paired_difference_to_{names[0]}": paired,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
