"""Benchmark: SWD speed (4,096 vs 4,096 at 64x64 within 30 s), the trainer's per-evaluation cost,
and the real-vs-real SWD floor of an image folder.

    python -m bench.bench_swd                                  # full: 4096 vs 4096
    python -m bench.bench_swd --images ../shared/data/anime-faces-2k   # plus the floor, 1000 vs 1000
    python -m bench.bench_swd --quick                          # smoke run: 512 vs 512
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.common import emit, peak_rss_mb, timer

BUDGET_SECONDS = 30.0
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def synthetic_images(count: int, size: int, seed: int) -> np.ndarray:
    """Smooth random colour fields plus noise: enough structure for every pyramid level."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (count, size // 8, size // 8, 3))
    smooth = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
    return np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)


def load_folder(folder: Path, size: int) -> np.ndarray:
    """Every image of a folder as uint8 RGB, resized to size x size where needed (Pillow)."""
    from PIL import Image

    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    images = []
    for path in paths:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BICUBIC)
            images.append(np.asarray(image))
    return np.stack(images)


def time_swd(num: int, size: int, seed: int) -> dict:
    from components.metrics.swd import sliced_wasserstein

    a, b = synthetic_images(num, size, seed), synthetic_images(num, size, seed + 1)
    with timer() as t:
        result = sliced_wasserstein(a, b, seed=seed)
    return {
        "num": num,
        "size": size,
        "seconds": t["seconds"],
        "swd_avg": result["swd_avg"],
        "budget_seconds": BUDGET_SECONDS,
        "within_budget": t["seconds"] <= BUDGET_SECONDS,
    }


def time_trainer_evaluation(num: int, size: int, seed: int) -> dict:
    """What the trainer pays: the one-off real-side set-up, then each call's scoring of `num` images."""
    from components.evaluator import Evaluator

    real, train = synthetic_images(2 * num, size, seed), synthetic_images(2000, size, seed + 1)
    with timer() as setup:
        evaluator = Evaluator(real, train, num=num, seed=seed)
    with timer() as score:
        evaluator.score(synthetic_images(num, size, seed + 2))
    return {
        "num": num,
        "size": size,
        "train_images": len(train),
        "setup_seconds": setup["seconds"],
        "score_seconds": score["seconds"],
    }


def real_floor(folder: Path, num: int, size: int, seed: int) -> dict:
    """SWD between two disjoint random halves of a folder's images: what a perfect model would score."""
    from components.metrics.swd import sliced_wasserstein

    images = load_folder(folder, size)
    num = min(num, len(images) // 2)
    order = np.random.default_rng(seed).permutation(len(images))
    with timer() as t:
        result = sliced_wasserstein(images[order[:num]], images[order[num : 2 * num]], seed=seed)
    return {"folder": str(folder), "num": num, "size": size, "seconds": t["seconds"], **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few seconds")
    parser.add_argument("--num", type=int, default=4096, help="images per set for the speed test")
    parser.add_argument("--size", type=int, default=64, help="image size")
    parser.add_argument("--images", type=Path, default=None, help="an image folder to report the real-vs-real floor of")
    parser.add_argument("--floor-num", type=int, default=1000, help="images per half for the floor")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    num, floor_num, trainer_num = (512, 500, 256) if args.quick else (args.num, args.floor_num, 1024)

    results = {
        "quick": args.quick,
        "swd": time_swd(num, args.size, args.seed),
        "trainer_evaluation": time_trainer_evaluation(trainer_num, args.size, args.seed),
    }
    if args.images is not None:
        results["floor"] = real_floor(args.images, floor_num, args.size, args.seed)
    results["peak_rss_mb"] = peak_rss_mb()
    emit("bench_swd", results)


if __name__ == "__main__":
    main()
