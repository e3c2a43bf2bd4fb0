"""Benchmark: picture quality of the default recipe against its baselines at equal images seen.

Every run trains from scratch on the same data folder for the same number of real images
(default 16,000: two passes over the 8,000 training faces of anime-faces-mlds-10k), once per seed
in `--seeds`, and is scored at the end by the same evaluator (`components.evaluator.TrainingEvaluator`,
same num and seed): SWD (avg and per level) beside its real-vs-real floor, MS-SSIM diversity
beside the real figure, the copy fraction. The runs:

- default: the default recipe (`recipe_config("default")`);
- v2: the default before it (`--recipe v2`: D of 64 filters, learning rates 2e-4 / 4e-4);
- v1: the default before that (`--recipe v1`: batch 32, spectral norm on D, Adam beta_1 0.5);
- seed_fused: the seed tutorial's recipe through our fused step (one D and one G update per batch);
- seed_step: the seed recipe through the tutorial's own step (`--train-step seed`: two rounds of
  D and G updates per batch, as the tutorial trained), the fair seed baseline.

Training images/s is the median over log intervals after the first (which holds the graph
tracing). One PNG puts the first seed's final grids side by side in the order above, same latents.

`--ablation` instead trains the default recipe and, for every switch, the default with that one
switch flipped (same budget, seed and evaluator), which shows what each switch is worth.

    python -m bench.bench_quality                     # full: anime-faces-mlds-10k at 64x64, seeds 0,1
    python -m bench.bench_quality --only default,seed_step --seeds 0
    python -m bench.bench_quality --images ../shared/data/anime-faces-2k --eval-fraction 0.25  # small-data row
    python -m bench.bench_quality --ablation --seeds 0
    python -m bench.bench_quality --quick             # smoke run: tiny budget at 32x32
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from bench.common import ANIME_MLDS_10K, OUT_DIR, add_data_arguments, emit, ingested_data, peak_rss_mb, timer

GAP = 8  # pixels between the two grids

# switch name -> TrainConfig overrides giving the default recipe with that one switch changed
# (a string names a switch with two settings in FLIPS: the one the default does not use).
ABLATION = {
    "no_ema": {"ema_decay": 0.0},
    "equal_lr_2e-4": {"g_lr": 2e-4, "d_lr": 2e-4},
    "loss_flipped": "loss",
    "bce_label_smoothing_0.1": {"loss": "bce", "label_smoothing": 0.1},  # smoothing only acts on BCE
    "spectral_norm_flipped": "d_spectral_norm",
    "batch_32": {"batch_size": 32},
    "diffaugment_flipped": "augment",
    "r1_flipped": "r1_gamma",
    "upsample_transpose5": {"model": {"g_upsample": "transpose5"}},
    "upsample_resize": {"model": {"g_upsample": "resize"}},
    "d_kernel_4": {"model": {"d_kernel": 4}},  # the DCGAN paper's discriminator kernel (default: the seed's 5)
    "d_kernel_3": {"model": {"d_kernel": 3}},
    "dropout_flipped": "d_dropout",
    "minibatch_std_flipped": "d_minibatch_std",
    "batch_128": {"batch_size": 128},  # the seed's batch: 8x fewer, larger steps for the same images
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
    add_data_arguments(parser, image_size=64, images=ANIME_MLDS_10K, eval_fraction=0.2)
    parser.add_argument("--train-images", type=int, default=16_000, help="real images seen by every run")
    parser.add_argument(
        "--eval-num", type=int, default=1024, help="generated images per evaluation (capped by half the eval split)"
    )
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds; every run is trained once per seed")
    parser.add_argument("--precision", default="auto", help="training precision of every run")
    parser.add_argument("--ablation", action="store_true", help="flip each switch of the default recipe instead")
    parser.add_argument("--only", default="", help="comma-separated run names (default all)")
    parser.add_argument("--work", type=Path, default=OUT_DIR / "bench_quality_work", help="work folder (its runs are replaced)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 32x32, 512 images, 64 evaluated")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.train_images, args.eval_num, args.seeds = 32, 512, 64, "0"
    args.seeds = [int(seed) for seed in args.seeds.split(",")]
    return args


def variants(ablation: bool, only: str) -> dict[str, object]:
    """Name -> TrainConfig of every run, for the comparison or the ablation."""
    from components.config import TrainConfig, recipe_config

    if not ablation:
        runs = {
            "default": recipe_config("default"),
            "v2": recipe_config("v2"),
            "v1": recipe_config("v1"),
            "seed_fused": recipe_config("seed"),
            "seed_step": recipe_config("seed", train_step="seed"),
        }
        return {name: config for name, config in runs.items() if not only or name in only.split(",")}
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


def train_and_score(name: str, config, data: Path, work: Path, args: argparse.Namespace, evaluate, seed: int) -> dict:
    """One run from scratch, evaluated once at the end; its grid images and figures."""
    import dataclasses

    import keras

    from components.artifacts import read_jsonl
    from components.latents import grid_latents, to_uint8_array
    from components.runfolder import restore_generator
    from components.train_options import TrainOptions
    from components.trainer import train

    config = dataclasses.replace(config, seed=seed)
    run = work / "runs" / f"{name}-s{seed}"
    shutil.rmtree(run, ignore_errors=True)
    keras.utils.set_random_seed(config.seed)
    with timer() as t:
        options = TrainOptions(
            images=args.train_images, precision=args.precision, log_every=10, sample_every=10**9, checkpoint_every=10**9
        )
        result = train(config, data, run, options, evaluate_fn=evaluate, verbose=False)
    speeds = [record["images_per_sec"] for record in read_jsonl(run / "metrics.jsonl") if record["kind"] == "train"]
    generator, _ = restore_generator(run)
    figures = {key: value for key, value in result.metrics.items() if key.startswith(("swd", "msssim"))}
    figures.update(
        images_seen=result.images_seen,
        images_per_sec=float(np.median(speeds[1:] or speeds)),
        seconds=t["seconds"],
    )
    return {"figures": figures, "grid": to_uint8_array(generator(grid_latents(config.model.latent_dim), training=False))}


def side_by_side(path: Path, grids: list[np.ndarray]) -> None:
    """Contact sheets in one PNG, left to right, with a white gap between them."""
    from components.artifacts import atomic_write_bytes
    from components.grid import encode_png, make_grid

    sheets = [make_grid(grid) for grid in grids]
    gap = np.full((sheets[0].shape[0], GAP, 3), 255, np.uint8)
    parts = [part for sheet in sheets for part in (sheet, gap)][:-1]
    atomic_write_bytes(path, encode_png(np.concatenate(parts, axis=1)))


def mean_over_seeds(per_seed: dict[int, dict]) -> dict[str, float]:
    """Each figure's mean over the seeds (the acceptance compares two-seed means)."""
    keys = set.intersection(*(set(figures) for figures in per_seed.values()))
    return {key: float(np.mean([figures[key] for figures in per_seed.values()])) for key in sorted(keys)}


def comparison(means: dict[str, dict[str, float]]) -> dict[str, float]:
    """The default's ratios to its baselines, for the runs that were trained."""
    out: dict[str, float] = {}
    default = means.get("default")
    if default is None:
        return out
    for earlier in ("v2", "v1"):
        if earlier in means:
            out[f"swd_avg_ratio_to_{earlier}"] = default["swd_avg"] / means[earlier]["swd_avg"]
            out[f"images_per_sec_ratio_to_{earlier}"] = default["images_per_sec"] / means[earlier]["images_per_sec"]
    seeds = [means[name]["swd_avg"] for name in ("seed_fused", "seed_step") if name in means]
    if seeds:
        out["swd_avg_ratio_to_best_seed_baseline"] = default["swd_avg"] / min(seeds)
    out["msssim_minus_real"] = default["msssim"] - default["msssim_real"]
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    from components.evaluator import TrainingEvaluator

    args.work.mkdir(parents=True, exist_ok=True)
    data = ingested_data(args)
    evaluate = TrainingEvaluator(data, num=args.eval_num, seed=0)
    runs = variants(args.ablation, args.only)
    results: dict[str, dict[int, dict]] = {name: {} for name in runs}
    for seed in args.seeds:
        for name, config in runs.items():
            print(f"training {name}, seed {seed} ...", flush=True)
            results[name][seed] = train_and_score(name, config, data, args.work, args, evaluate, seed)
            print(f"  {name} seed {seed}: swd_avg {results[name][seed]['figures'].get('swd_avg'):.4g}", flush=True)

    means = {name: mean_over_seeds({seed: r["figures"] for seed, r in per_seed.items()}) for name, per_seed in results.items()}
    report = {
        "config": {
            "data": str(data),
            "train_images": args.train_images,
            "eval_num": args.eval_num,
            "seeds": args.seeds,
            "precision": args.precision,
            "ablation": args.ablation,
            "quick": args.quick,
        },
        "mean": means,
        "per_seed": {name: {str(seed): r["figures"] for seed, r in per_seed.items()} for name, per_seed in results.items()},
        "peak_rss_mb": peak_rss_mb(),
    }
    suffix = ("_ablation" if args.ablation else "") + ("_quick" if args.quick else "")
    if not args.ablation:
        grid_path = OUT_DIR / f"bench_quality{suffix}_grids.png"
        side_by_side(grid_path, [per_seed[args.seeds[0]]["grid"] for per_seed in results.values()])
        report.update(
            grids_png=str(grid_path),
            grids_order=list(results),
            **comparison(means),
            goal_ratio_to_v2=0.75,
            goal_ratio_to_best_seed_baseline=0.5,
            goal_msssim_minus_real=0.05,
        )
    elif "default" in means:
        base = means["default"]["swd_avg"]
        report["swd_avg_vs_default"] = {name: m["swd_avg"] / base for name, m in means.items()}
    emit("bench_quality" + suffix, report)


if __name__ == "__main__":
    main()
