"""Long runs: swd_avg against images seen, for the default and the seed recipe, as a PNG plot.

Each recipe trains from scratch through `pipeline.train` (its own process, resumable: run the
same command again after a kill and it continues), evaluated every `--eval-every` images by the
trainer's evaluator (SWD beside its real-vs-real floor, MS-SSIM, copy fraction), with a sample
grid at each evaluation. The report reads the runs' `metrics.jsonl`, so `--plot-only` turns runs
that are still going (or were stopped early) into the same table and plot.

Runs: "default" (the default recipe), "seed_step" (the seed recipe through the tutorial's own
two-round step, `--train-step seed`: the fair seed baseline; our fused step collapses on it) and,
with `--only`, "v4" (the default before today's), "v2", "previous_default" (`--recipe v1`) and
"default_without_decay_r1" (v2 with constant learning rates and no R1: what the long-run
stabilisers fix). `--compare NAME=FILE` adds a finished run's curve from a committed report (its
`evaluations`, the records of its metrics.jsonl), so a plot can show runs whose folders are gone.
Outputs in bench/out: bench_long.json, bench_long_curves.png (swd_avg vs images seen, the floor
dashed) and bench_long_grids.png (one row per recipe, one grid per budget in `--grid-at`, same
latents: images 0..63 of `pipeline.sample --seed 0`).

    python -m bench.bench_long                                  # 208,000 images, eval every 16,000
    python -m bench.bench_long --only default --train-images 64000
    python -m bench.bench_long --plot-only                      # report the runs as they are
    python -m bench.bench_long --quick                          # smoke run: 32x32, tiny budget
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.common import ANIME_MLDS_10K, OUT_DIR, ROOT, add_data_arguments, emit, ingested_data

RUNS = {  # name -> pipeline.train flags
    "default": [],
    "v4": ["--recipe", "v4"],  # the default before today's
    "seed_step": ["--recipe", "seed", "--train-step", "seed"],
    "v2": ["--recipe", "v2"],
    "default_without_decay_r1": ["--recipe", "v2", "--lr-hold", "1", "--r1-gamma", "0"],  # v2 without its long-run stabilisers
    "previous_default": ["--recipe", "v1"],
}
COLOURS = {
    "default": (31, 119, 180),
    "v4": (23, 190, 207),
    "v2": (148, 103, 189),
    "seed_step": (214, 39, 40),
    "previous_default": (255, 127, 14),
    "default_without_decay_r1": (44, 160, 44),
}
PLOT_SIZE, MARGIN = (720, 420), 60


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser, image_size=64, images=ANIME_MLDS_10K, eval_fraction=0.2)
    parser.add_argument("--train-images", type=int, default=208_000, help="real images seen by each run")
    parser.add_argument("--eval-every", type=int, default=16_000, help="images between evaluations (and grids)")
    parser.add_argument("--eval-num", type=int, default=1024, help="generated images per evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="default,seed_step", help=f"comma-separated runs to train (of {', '.join(RUNS)})")
    parser.add_argument("--grid-at", default="16000,64000,208000", help="images seen of the grids in bench_long_grids.png")
    parser.add_argument("--plot-only", action="store_true", help="train nothing: report the runs in --work as they are")
    parser.add_argument("--work", type=Path, default=OUT_DIR / "bench_long_work", help="work folder (runs resume in it)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 32x32, 1,024 images, eval every 512 of 64")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="also plot this finished run: a JSON report whose `evaluations` are its metrics.jsonl records (repeatable)",
    )
    args = parser.parse_args(argv)
    args.compare = dict(parse_compare(item, parser) for item in args.compare)
    if args.quick:
        args.image_size, args.train_images, args.eval_every, args.eval_num, args.grid_at = 32, 1024, 512, 64, "512,1024"
    return args


def train_run(name: str, data: Path, args: argparse.Namespace) -> None:
    """Train (or resume) one run through the real CLI, a grid at every evaluation."""
    from pipeline.train import build_parser, config_from_args

    flags = RUNS[name]
    batch = config_from_args(build_parser().parse_args(["--data", str(data), *flags])).batch_size  # as the CLI will train
    command = [
        sys.executable,
        "-m",
        "pipeline.train",
        "--data",
        str(data),
        "--run",
        str(args.work / name),
        *flags,
        "--images",
        str(args.train_images),
        "--eval-every",
        str(args.eval_every),
        "--eval-num",
        str(args.eval_num),
        "--seed",
        str(args.seed),
        "--sample-every",
        str(max(1, args.eval_every // batch)),
    ]
    print(f"training {name}: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, check=True, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def evaluations(run: Path) -> list[dict]:
    """The run's evaluation records in order of images seen (a torn last line is skipped)."""
    from components.artifacts import read_jsonl

    metrics = run / "metrics.jsonl"
    records = read_jsonl(metrics) if metrics.is_file() else []
    return sorted((r for r in records if r.get("kind") == "eval"), key=lambda r: r["images_seen"])


def parse_compare(item: str, parser: argparse.ArgumentParser) -> tuple[str, Path]:
    name, separator, file = item.partition("=")
    if not (separator and name and file):
        parser.error(f"--compare wants NAME=FILE, got {item!r}")
    if not Path(file).is_file():
        parser.error(f"--compare {item}: no such file")
    return name, Path(file)


def recorded_evaluations(report: Path) -> list[dict]:
    """A finished run's evaluation records from its committed report, in order of images seen."""
    from components.artifacts import read_json

    records = read_json(report).get("evaluations")
    if not isinstance(records, list) or not all(isinstance(r, dict) and {"images_seen", "swd_avg"} <= set(r) for r in records):
        sys.exit(f"error: {report} has no list of `evaluations` with images_seen and swd_avg.")
    return sorted(records, key=lambda r: r["images_seen"])


def summary(evals: list[dict]) -> dict:
    """Final, best and the trend of the last three evaluations (negative: still improving)."""
    swd = [r["swd_avg"] for r in evals]
    last = evals[-1]
    return {
        "images_seen": last["images_seen"],
        "final_swd_avg": last["swd_avg"],
        "best_swd_avg": min(swd),
        "best_at_images": evals[int(np.argmin(swd))]["images_seen"],
        "last_three_trend": swd[-1] - swd[-3] if len(swd) >= 3 else None,
        "final_msssim": last.get("msssim"),
        "final_copy_fraction": last.get("memorisation_copy_fraction"),
    }


def plot_curves(path: Path, curves: dict[str, list[tuple[int, float]]], floor: float) -> None:
    """swd_avg against images seen, one polyline per run and the floor dashed, drawn with Pillow."""
    from PIL import Image, ImageDraw

    from components.artifacts import atomic_write_bytes
    from components.grid import encode_png

    width, height = PLOT_SIZE
    image = Image.new("RGB", PLOT_SIZE, "white")
    draw = ImageDraw.Draw(image)
    max_x = max(x for points in curves.values() for x, _ in points)
    max_y = max(y for points in curves.values() for _, y in points) * 1.05

    def xy(x: float, y: float) -> tuple[float, float]:
        return (MARGIN + x / max_x * (width - 1.5 * MARGIN), height - MARGIN - y / max_y * (height - 1.5 * MARGIN))

    draw.line([xy(0, 0), xy(max_x, 0)], fill="black")
    draw.line([xy(0, 0), xy(0, max_y)], fill="black")
    for tick in np.linspace(0, max_x, 5):
        x, y = xy(tick, 0)
        draw.line([(x, y), (x, y + 4)], fill="black")
        draw.text((x - 12, y + 8), f"{tick / 1000:.0f}k", fill="black")
    for tick in np.linspace(0, max_y, 5):
        x, y = xy(0, tick)
        draw.line([(x - 4, y), (x, y)], fill="black")
        draw.text((x - 40, y - 6), f"{tick:.0f}", fill="black")
    for x in range(0, int(max_x), max(1, int(max_x) // 60)):  # the floor, dashed
        if (x // max(1, int(max_x) // 60)) % 2 == 0:
            draw.line([xy(x, floor), xy(min(max_x, x + max_x / 60), floor)], fill=(120, 120, 120))
    for row, (name, points) in enumerate(curves.items()):
        colour = COLOURS.get(name, (0, 0, 0))
        if len(points) > 1:
            draw.line([xy(x, y) for x, y in points], fill=colour, width=2)
        for x, y in points:
            cx, cy = xy(x, y)
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
        draw.text((width - 190, 20 + 16 * row), f"-- {name}", fill=colour)
    draw.text((width - 190, 20 + 16 * len(curves)), f"-- real-vs-real floor {floor:.1f}", fill=(120, 120, 120))
    draw.text((MARGIN, 10), "swd_avg (x1e3, lower is better) against images seen", fill="black")
    atomic_write_bytes(path, encode_png(np.asarray(image)))


def grid_sheet(path: Path, runs: dict[str, Path], budgets: list[int]) -> list[str]:
    """One row per run, one column per budget: the run's sample grid nearest at or below it."""
    from PIL import Image

    from components.artifacts import atomic_write_bytes, read_json
    from components.grid import encode_png

    rows, shown = [], []
    for name, run in runs.items():
        batch = read_json(run / "hparams.json")["hparams"]["batch_size"]
        grids = {int(p.stem.split("-")[1]) * batch: p for p in (run / "samples").glob("step-*.png")}
        row = []
        for budget in budgets:
            seen = max((images for images in grids if images <= budget), default=None)
            if seen is None or f"{name} at {seen:,} images" in shown:
                continue
            row.append(np.asarray(Image.open(grids[seen]).convert("RGB")))
            shown.append(f"{name} at {seen:,} images")
        if row:
            rows.append(np.concatenate([np.pad(g, ((4, 4), (4, 4), (0, 0)), constant_values=255) for g in row], axis=1))
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    atomic_write_bytes(path, encode_png(sheet))
    return shown


def main(argv=None) -> None:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    names = [n for n in RUNS if n in args.only.split(",")]
    if not args.plot_only:
        data = ingested_data(args)
        for name in names:
            train_run(name, data, args)
    evals = {name: found for name in RUNS if (found := evaluations(args.work / name))}
    if not evals:
        sys.exit(f"error: no run in {args.work} has an evaluation yet.")
    runs = {name: args.work / name for name in evals}
    evals.update({name: recorded_evaluations(report) for name, report in args.compare.items()})
    curves = {name: [(r["images_seen"], r["swd_avg"]) for r in records] for name, records in evals.items()}
    floor = next(iter(evals.values()))[-1]["swd_avg_floor"]
    suffix = "_quick" if args.quick else ""
    plot_path, grids_path = OUT_DIR / f"bench_long{suffix}_curves.png", OUT_DIR / f"bench_long{suffix}_grids.png"
    plot_curves(plot_path, curves, floor)
    shown = grid_sheet(grids_path, runs, [int(b) for b in args.grid_at.split(",")])
    emit(
        "bench_long" + suffix,
        {
            "config": {
                "train_images": args.train_images,
                "eval_every": args.eval_every,
                "eval_num": args.eval_num,
                "seed": args.seed,
                "compare": {name: str(report) for name, report in args.compare.items()},
            },
            "swd_avg_floor": floor,
            "curves": {name: [{"images_seen": x, "swd_avg": y} for x, y in points] for name, points in curves.items()},
            **{name: summary(records) for name, records in evals.items()},
            "curves_png": str(plot_path),
            "grids_png": str(grids_path),
            "grids": shown,
        },
    )


if __name__ == "__main__":
    main()
