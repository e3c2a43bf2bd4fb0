"""`python -m bench [--quick] [--only NAME ...] [--gather]`: run every benchmark and report.

Each benchmark runs in its own process (a fresh TensorFlow, its own peak memory) and writes
`bench/out/<name>.json`; this runner then gathers them into `bench/results.json` and a Markdown
table, `bench/results.md`, that the README embeds: each figure beside its baseline (the seed
tutorial's way, or a plain loop) measured in the same run, and their ratio against the target.
`--quick` runs small sizes to check that everything runs and writes `bench/results-quick.*`
instead. Run the full set on a quiet machine: the ratios are robust to a steady load, not to a
changing one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import ANIME_2K, OUT_DIR
from components.artifacts import atomic_write_json, atomic_write_text

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Row:
    """One line of the report: our figure, its baseline, and the target their ratio must meet."""

    benchmark: str
    what: str
    ours: float
    baseline: float | None
    unit: str
    ratio: float | None
    target: str
    passed: bool | None


def _ingest(r: dict) -> list[Row]:
    size = max(int(k[1:]) for k in r if k.startswith("n") and k[1:].isdigit())
    at = r[f"n{size}"]
    return [
        Row(
            "ingest",
            f"Beam ingest vs plain loop, {size:,} images",
            at["beam"]["images_per_s"],
            at["loop"]["images_per_s"],
            "img/s",
            at["ratio"],
            ">= 1.0x",
            at["ratio"] >= 1.0,
        )
    ]


def _reader(r: dict) -> list[Row]:
    ours, seed = r["make_dataset"]["images_per_s_mean"], r["seed_tf_dataset"]["images_per_s_mean"]
    return [
        Row(
            "reader",
            f"TFRecord reader vs seed JPEG tf_dataset, {r['images']:,} images",
            ours,
            seed,
            "img/s",
            r["ratio"],
            ">= 5x",
            r["ratio"] >= 5.0,
        )
    ]


def _train(r: dict) -> list[Row]:
    ours, seed = r["ours"], r["seed"]
    return [
        Row(
            "train",
            f"D+G updates vs seed train_step, batch {r['config']['batch_size']}, {ours['dtype_policy']}",
            ours["images_per_sec"],
            seed["images_per_sec"],
            "img/s",
            r["speedup_images_per_sec"],
            ">= 2.5x",
            r["speedup_images_per_sec"] >= r["target_speedup"],
        ),
        Row(
            "train",
            "peak memory (ours vs seed)",
            ours["peak_rss_mb"],
            seed["peak_rss_mb"],
            "MiB",
            ours["peak_rss_mb"] / seed["peak_rss_mb"],
            "report",
            None,
        ),
        Row(
            "train",
            "same, default recipe with --d-kernel 4 (not the default: worse SWD)",
            r["ours_d_kernel_4"]["images_per_sec"],
            seed["images_per_sec"],
            "img/s",
            r["speedup_d_kernel_4_images_per_sec"],
            "report",
            None,
        ),
    ] + _train_as_trained(r)


def _train_as_trained(r: dict) -> list[Row]:
    """The rows of the recipes at the batch each trains at (absent from results of older benchmark versions)."""
    if "v2_as_trained" not in r:
        return []
    default = r["default_as_trained"]
    return [
        Row(
            "train",
            "default recipe at its batch 16 vs the previous default at its batch 32 (per CPU second)",
            default["images_per_cpu_sec"],
            r["previous_default_as_trained"]["images_per_cpu_sec"],
            "img/cpu-s",
            r["default_vs_previous_default_images_per_cpu_sec"],
            ">= 0.85x",
            r["default_vs_previous_default_images_per_cpu_sec"] >= 0.85,
        ),
        Row(
            "train",
            "default recipe as pipeline.train runs it (batch 16) vs --recipe v2 (its D twice as wide), wall clock",
            default["images_per_sec"],
            r["v2_as_trained"]["images_per_sec"],
            "img/s",
            default["images_per_sec"] / r["v2_as_trained"]["images_per_sec"],
            "report",
            None,
        ),
        Row(
            "train",
            "same, Grappler's remapper switched off for the step (no E-line) vs left on",
            default["images_per_sec"],
            r["default_remapper_on"]["images_per_sec"],
            "img/s",
            default["images_per_sec"] / r["default_remapper_on"]["images_per_sec"],
            ">= 0.97x",
            default["images_per_sec"] / r["default_remapper_on"]["images_per_sec"] >= 0.97,
        ),
    ]


def _swd(r: dict) -> list[Row]:
    swd = r["swd"]
    rows = [
        Row(
            "evaluator",
            f"SWD {swd['num']:,} vs {swd['num']:,} at {swd['size']}x{swd['size']}",
            swd["seconds"],
            None,
            "s",
            None,
            f"<= {swd['budget_seconds']:.0f} s",
            swd["within_budget"],
        )
    ]
    if "floor" in r:
        rows.append(
            Row(
                "evaluator",
                f"real-vs-real SWD floor, {r['floor']['num']:,} vs {r['floor']['num']:,}",
                r["floor"]["swd_avg"],
                None,
                "x1e3",
                None,
                "report",
                None,
            )
        )
    return rows


def _loop(r: dict) -> list[Row]:
    rows = []
    for key in sorted(k for k in r if k.startswith("size_")):
        size, side = key.split("_")[1], r[key]
        target = ">= 1.1x" if size == "32" else "report"
        met = side["speedup"] >= r["target_speedup_32"] if size == "32" else None
        rows.append(
            Row(
                "loop",
                f"steps_per_execution vs a host sync every step, default recipe, {size}x{size}",
                side["executions"]["images_per_sec"],
                side["per_step"]["images_per_sec"],
                "img/s",
                side["speedup"],
                target,
                met,
            )
        )
    return rows


def _sample(r: dict) -> list[Row]:
    t, m = r["throughput"], r["memory"]
    return [
        Row(
            "sample",
            f"SavedModel to PNG vs Keras predict, {t['num']:,} images",
            t["savedmodel_png_images_per_s"],
            t["keras_predict_images_per_s"],
            "img/s",
            t["ratio"],
            ">= 0.8x",
            t["pass"],
        ),
        Row(
            "sample",
            "peak memory, large N vs small N",
            max(v for k, v in m.items() if k.endswith("peak_rss_mb")),
            min(v for k, v in m.items() if k.endswith("peak_rss_mb")),
            "MiB",
            1 + m["growth"],
            "<= 1.1x",
            m["pass"],
        ),
    ]


def _quality(r: dict) -> list[Row]:
    mean, images, seeds = r["mean"], r["config"]["train_images"], len(r["config"]["seeds"])
    default = mean["default"]
    where = f"{images:,} images, mean of {seeds} seed(s), floor {default['swd_avg_floor']:.1f}"
    rows = []
    if "v2" in mean:
        ratio = r["swd_avg_ratio_to_v2"]
        rows.append(
            Row(
                "quality",
                f"swd_avg, default vs the previous default (--recipe v2), {where}",
                default["swd_avg"],
                mean["v2"]["swd_avg"],
                "x1e3",
                ratio,
                "<= 0.75x",
                ratio <= r["goal_ratio_to_v2"],
            )
        )
    if "swd_avg_ratio_to_best_seed_baseline" in r:
        best = min(mean[n]["swd_avg"] for n in ("seed_fused", "seed_step") if n in mean)
        ratio = r["swd_avg_ratio_to_best_seed_baseline"]
        rows.append(
            Row(
                "quality",
                "swd_avg, default vs the better seed baseline (fused step / tutorial step)",
                default["swd_avg"],
                best,
                "x1e3",
                ratio,
                "<= 0.5x",
                ratio <= r["goal_ratio_to_best_seed_baseline"],
            )
        )
    rows.append(
        Row(
            "quality",
            f"MS-SSIM diversity, default vs real (real + {r['goal_msssim_minus_real']})",
            default["msssim"],
            default["msssim_real"],
            "",
            default["msssim"] / default["msssim_real"],
            "<= real + 0.05",
            r["msssim_minus_real"] <= r["goal_msssim_minus_real"],
        )
    )
    if "images_per_sec_ratio_to_v2" in r:
        ratio = r["images_per_sec_ratio_to_v2"]
        rows.append(
            Row(
                "quality",
                "training images/s, default vs the previous default (--recipe v2)",
                default["images_per_sec"],
                mean["v2"]["images_per_sec"],
                "img/s",
                ratio,
                ">= 0.85x",
                ratio >= 0.85,
            )
        )
    return rows


def _tune(r: dict) -> list[Row]:
    config, mean = r["config"], r["mean_swd_avg"]
    size = f" at {config['trial_image_size']}px" if config["trial_image_size"] else ""
    return [
        Row(
            "tune",
            f"--tune vs untuned default, {config['full_images']:,} images, mean of {len(config['seeds'])} seeds "
            f"(search: 2 default + {config['max_trials'] - 2} {config['tuner']} trials "
            f"of {config['trial_images']:,} images{size}; "
            f"default kept {r['default_kept']}x; floor {r['swd_avg_floor']:.1f})",
            mean["tuned"],
            mean["default"],
            "swd_avg",
            r["mean_ratio"],
            "< 1x",
            r["tune_beats_default"],
        ),
        Row(
            "tune",
            "search time vs the final training's (mean over seeds)",
            r["mean_search_seconds"],
            r["mean_final_seconds"],
            "s",
            r["mean_search_seconds"] / r["mean_final_seconds"],
            "report",
            None,
        ),
    ]


def _time_to_quality(r: dict) -> list[Row]:
    config, base = r["config"], r["baseline"]["mean"]
    seeds = f"mean of {len(config['seeds'])} seed(s)"
    rows = []
    if r["reached_at_images"]:
        reached = r["candidate"][str(r["reached_at_images"])]["mean"]
        rows.append(
            Row(
                "time to quality",
                f"images x seconds per image until the {config['baseline']} recipe's swd_avg at "
                f"{config['baseline_images']:,} images ({r['target_swd_avg']:.1f}, {seeds}) is reached: default at "
                f"{r['reached_at_images']:,} images ({reached['swd_avg']:.1f})",
                r["time_to_quality_ratio"],
                1.0,
                "x",
                r["time_to_quality_ratio"],
                "<= 0.5x",
                r["time_to_quality_ratio"] <= r["goal_time_to_quality_ratio"],
            )
        )
    at = r["candidate"].get(str(config["baseline_images"]))
    if at:
        ratio = r["swd_avg_ratio_at_baseline_images"]
        rows.append(
            Row(
                "time to quality",
                f"swd_avg at {config['baseline_images']:,} images, default vs {config['baseline']} "
                f"({seeds}; floor {base['swd_avg_floor']:.1f})",
                at["mean"]["swd_avg"],
                base["swd_avg"],
                "x1e3",
                ratio,
                "<= 0.75x",
                ratio <= r["goal_swd_avg_ratio_at_baseline_images"],
            )
        )
    return rows


@dataclass(frozen=True)
class Benchmark:
    name: str
    module: str
    args: Callable[[bool], list[str]]
    rows: Callable[[dict], list[Row]]


def _real_faces(quick: bool) -> list[str]:
    return ["--images", str(ANIME_2K)] if ANIME_2K.is_dir() else []


BENCHMARKS = [
    Benchmark("ingest", "bench.bench_ingest", lambda quick: ["--quick"] if quick else [], _ingest),
    Benchmark(
        "reader",
        "bench.bench_reader",
        lambda quick: (["--quick"] if quick else []) + ([] if ANIME_2K.is_dir() else ["--source", "synthetic"]),
        _reader,
    ),
    Benchmark("train", "bench.bench_train", lambda quick: ["--quick"] if quick else [], _train),
    Benchmark("loop", "bench.bench_loop", lambda quick: ["--quick"] if quick else [], _loop),
    Benchmark("swd", "bench.bench_swd", lambda quick: (["--quick"] if quick else []) + _real_faces(quick), _swd),
    Benchmark("sample", "bench.bench_sample", lambda quick: ["--quick"] if quick else [], _sample),
    Benchmark("quality", "bench.bench_quality", lambda quick: ["--quick"] if quick else [], _quality),
    Benchmark("tune", "bench.bench_tune", lambda quick: ["--quick"] if quick else [], _tune),
    Benchmark("time_to_quality", "bench.bench_time_to_quality", lambda quick: ["--quick"] if quick else [], _time_to_quality),
]


def output_of(bench: Benchmark, quick: bool) -> Path:
    """Where a benchmark writes its JSON (some keep quick runs apart from full ones)."""
    quick_file = OUT_DIR / f"bench_{bench.name}_quick.json"
    keeps_quick_apart = ("quality", "tune", "loop", "time_to_quality")
    return quick_file if quick and bench.name in keeps_quick_apart else OUT_DIR / f"bench_{bench.name}.json"


def run_benchmark(bench: Benchmark, quick: bool) -> dict:
    """Run one benchmark in a fresh process; return its JSON (an `error` entry when it failed)."""
    out = output_of(bench, quick)
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", bench.module, *bench.args(quick)]
    print(f"\n=== {bench.name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    status = subprocess.run(command, cwd=BENCH_DIR.parent, check=False).returncode
    if status != 0 or not out.is_file():
        return {"error": f"exit status {status}", "seconds": time.perf_counter() - started}
    return json.loads(out.read_text())


def markdown_table(rows: list[Row]) -> str:
    def number(value: float | None) -> str:
        return "" if value is None else f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"

    lines = ["| stage | measure | ours | baseline | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        met = {True: "yes", False: "**no**", None: ""}[row.passed]
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        lines.append(
            f"| {row.benchmark} | {row.what} | {number(row.ours)} {row.unit} | "
            f"{number(row.baseline)}{' ' + row.unit if row.baseline is not None else ''} | {ratio} | {row.target} | {met} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes everywhere: checks every benchmark runs (< 5 min)")
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHMARKS], help="run only these benchmarks")
    parser.add_argument(
        "--gather",
        action="store_true",
        help="run nothing: rebuild the report from the JSON each benchmark last wrote in bench/out/",
    )
    args = parser.parse_args(argv)
    if args.gather:
        args.only = [b.name for b in BENCHMARKS if output_of(b, args.quick).is_file()]

    # Quick runs only check that everything runs: they never overwrite the real figures.
    stem = "results-quick" if args.quick else "results"
    results_path = BENCH_DIR / f"{stem}.json"
    # --only refreshes some benchmarks and keeps the others' last figures (each carries its time).
    results = json.loads(results_path.read_text()) if args.only and results_path.is_file() else {}
    for bench in BENCHMARKS:
        if args.gather and bench.name in args.only:
            results[bench.name] = {**json.loads(output_of(bench, args.quick).read_text()), "quick": args.quick}
        elif not args.only or bench.name in args.only:
            results[bench.name] = {**run_benchmark(bench, args.quick), "quick": args.quick}
    rows = [row for bench in BENCHMARKS if "benchmark" in results.get(bench.name, {}) for row in bench.rows(results[bench.name])]
    table = markdown_table(rows)
    atomic_write_json(results_path, results)
    atomic_write_text(BENCH_DIR / f"{stem}.md", table)
    print("\n" + table)
    failed = [name for name, r in results.items() if "error" in r]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
