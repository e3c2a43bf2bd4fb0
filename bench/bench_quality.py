"""Benchmark: picture quality of the seed recipe vs the default recipe at equal images seen.

Both recipes (`components.trainer.recipe_config`) train from scratch on the same data folder for
the same number of real images (default 16,870), with the same seed, and are scored at the end by
the same evaluator (`components.evaluator.TrainingEvaluator`, same num and seed): SWD (avg and per
level) beside its real-vs-real floor, MS-SSIM diversity beside the real figure. Training images/s
is the median over log intervals after the first (which holds the graph tracing). One PNG puts the
two final grids side by side (seed left, default right), same latents.

`--ablation` instead trains the default recipe and, for every switch, the default with that one
switch flipped (same budget, seed and evaluator), which shows what each switch is worth.

    python -m bench.bench_quality                     # full: ../shared/data/anime-faces-2k at 64x64
    python -m bench.bench_quality --ablation --image-size 32
    python -m bench.bench_quality --data /tmp/faces64 # an ingested data folder instead
    python -m bench.bench_quality --quick             # smoke run: tiny budget at 32x32
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from bench.common import OUT_DIR, add_data_arguments, emit, ingested_data, peak_rss_mb, timer

GAP = 8  # pixels between the two grids

# switch name -> TrainConfig overrides giving the default recipe with that one switch changed
# (a string names a switch with two settings in FLIPS: the one the default does not use).
ABLATION = {
    "no_ema": {"ema_decay": 0.0},
    "equal_lr_2e-4": {"g_lr": 2e-4, "d_lr": 2e-4},
    "loss_flipped": "loss",
    "bce_label_smoothing_0.1": {"loss": "bce", "label_smoothing": 0.1},  # smoothing only acts on BCE
    "spectral_norm_flipped": "d_spectral_norm",
    "diffaugment_flipped": "augment",
    "r1_flipped": "r1_gamma",
    "upsample_transpose5": {"model": {"g_upsample": "transpose5"}},
    "upsample_resize": {"model": {"g_upsample": "resize"}},
    "d_kernel_4": {"model": {"d_kernel": 4}},  # the DCGAN paper's discriminator kernel (default: the seed's 5)
    "d_kernel_3": {"model": {"d_kernel": 3}},
    "dropout_flipped": "d_dropout",
    "minibatch_std_flipped": "d_minibatch_std",
    "batch_128": {"batch_size": 128},  # the seed's batch: 4x fewer, larger steps for the same images
}
FLIPS = {
    "loss": ("bce", "hinge"),
    "d_spectral_norm": (False, True),
    "augment": ("", "color,translation,cutout"),
    "r1_gamma": (0.0, 0.1),
    "d_dropout": (0.0, 0.3),
    "d_minibatch_std": (False, True),
}
MODEL_FIELDS = {"d_spectral_norm", "d_dropout", "d_minibatch_std", "g_upsample"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser, image_size=64)
    parser.add_argument("--train-images", type=int, default=16_870, help="real images seen by every run")
    parser.add_argument("--eval-num", type=int, default=1024, help="generated images per evaluation (capped by half the eval split)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto", help="training precision of every run")
    parser.add_argument("--ablation", action="store_true", help="flip each switch of the default recipe instead")
    parser.add_argument("--only", default="", help="with --ablation: comma-separated variant names to run (default all)")
    parser.add_argument("--work", type=Path, default=OUT_DIR / "bench_quality_work", help="work folder (its runs are replaced)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 32x32, 512 images, 64 evaluated")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.train_images, args.eval_num = 32, 512, 64
    return args


def variants(ablation: bool, only: str) -> dict[str, object]:
    """Name -> TrainConfig of every run, for the comparison or the ablation."""
    from components.config import TrainConfig, recipe_config

    if not ablation:
        return {"seed": recipe_config("seed"), "default": recipe_config("default")}
    default = TrainConfig()
    runs = {"default": default}
    for name, change in ABLATION.items():
        if only and name not in only.split(","):
            continue
        if isinstance(change, str):
            settings = FLIPS[change]
            current = getattr(default.model if change in MODEL_FIELDS else default, change)
            flipped = settings[1] if current == settings[0] else settings[0]
            change = {"model": {change: flipped}} if change in MODEL_FIELDS else {change: flipped}
        runs[name] = recipe_config("default", **change)
    return runs


def train_and_score(name: str, config, data: Path, work: Path, args: argparse.Namespace, evaluate) -> dict:
    """One run from scratch, evaluated once at the end; its grid images and figures."""
    import dataclasses

    import keras

    from components.artifacts import read_jsonl
    from components.latents import grid_latents, to_uint8_array
    from components.runfolder import restore_generator
    from components.trainer import train

    config = dataclasses.replace(config, seed=args.seed)
    run = work / "runs" / name
    shutil.rmtree(run, ignore_errors=True)
    keras.utils.set_random_seed(config.seed)
    with timer() as t:
        result = train(
            config, data, run, images=args.train_images, evaluate_fn=evaluate, precision=args.precision,
            log_every=10, sample_every=10**9, checkpoint_every=10**9, verbose=False,
        )  # fmt: skip
    speeds = [record["images_per_sec"] for record in read_jsonl(run / "metrics.jsonl") if record["kind"] == "train"]
    generator, _ = restore_generator(run)
    figures = {key: value for key, value in result.metrics.items() if key.startswith(("swd", "msssim"))}
    figures.update(
        images_seen=result.images_seen,
        images_per_sec=float(np.median(speeds[1:] or speeds)),
        seconds=t["seconds"],
    )
    return {"figures": figures, "grid": to_uint8_array(generator(grid_latents(config.model.latent_dim), training=False))}


def side_by_side(path: Path, left: np.ndarray, right: np.ndarray) -> None:
    """Two contact sheets in one PNG with a white gap between them."""
    from components.artifacts import atomic_write_bytes
    from components.grid import encode_png, make_grid

    sheets = [make_grid(left), make_grid(right)]
    gap = np.full((sheets[0].shape[0], GAP, 3), 255, np.uint8)
    atomic_write_bytes(path, encode_png(np.concatenate([sheets[0], gap, sheets[1]], axis=1)))


def main(argv=None) -> None:
    args = parse_args(argv)
    from components.evaluator import TrainingEvaluator

    args.work.mkdir(parents=True, exist_ok=True)
    data = ingested_data(args)
    evaluate = TrainingEvaluator(data, num=args.eval_num, seed=0)
    results = {}
    for name, config in variants(args.ablation, args.only).items():
        print(f"training {name} ...", flush=True)
        results[name] = train_and_score(name, config, data, args.work, args, evaluate)
        print(f"  {name}: swd_avg {results[name]['figures'].get('swd_avg'):.4g}", flush=True)

    report = {
        "config": {"data": str(data), "train_images": args.train_images, "eval_num": args.eval_num, "seed": args.seed,
                   "precision": args.precision, "ablation": args.ablation, "quick": args.quick},
        **{name: result["figures"] for name, result in results.items()},
        "peak_rss_mb": peak_rss_mb(),
    }  # fmt: skip
    suffix = ("_ablation" if args.ablation else "") + ("_quick" if args.quick else "")
    if not args.ablation:
        grid_path = OUT_DIR / f"bench_quality{suffix}_grids.png"
        side_by_side(grid_path, results["seed"]["grid"], results["default"]["grid"])
        seed, default = results["seed"]["figures"], results["default"]["figures"]
        report.update(
            grids_png=str(grid_path),
            swd_avg_ratio_default_to_seed=default["swd_avg"] / seed["swd_avg"],
            images_per_sec_ratio_default_to_seed=default["images_per_sec"] / seed["images_per_sec"],
            goal_swd_ratio=0.55,
        )
    else:
        base = results["default"]["figures"]["swd_avg"]
        report["swd_avg_vs_default"] = {name: r["figures"]["swd_avg"] / base for name, r in results.items()}
    emit("bench_quality" + suffix, report)


if __name__ == "__main__":
    main()
