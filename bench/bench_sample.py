"""Benchmark: batch sampling to PNG files from the exported SavedModel vs the Keras generator.

Two claims of issue 6, measured in one run on one machine with the default (seed) generator at
64x64 (random weights: speed does not depend on training):
- throughput: writing N PNG files through `components.sampler` from the SavedModel runs at
  >= 0.8x the images/s of `generator.predict` that discards its output;
- memory: the peak RSS of `python -m pipeline.sample` for N_large images is within 10% of that for
  N_small (each run in a fresh process, measured with os.wait4's ru_maxrss).

    python -m bench.bench_sample            # full: 10,000 images; memory at 10,000 vs 100,000
    python -m bench.bench_sample --quick    # a smoke run with small N
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench.common import emit, timer

ROOT = Path(__file__).resolve().parents[1]
SPEED_TARGET = 0.8
MEMORY_TARGET = 0.10


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small N, for checking the benchmark runs")
    parser.add_argument("--num", type=int, default=10_000, help="images for the throughput comparison")
    parser.add_argument("--memory-nums", type=int, nargs=2, default=(10_000, 100_000), help="N_small N_large")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args(argv)
    if args.quick:
        args.num, args.memory_nums = 512, (256, 2048)
    return args


def time_keras_predict(generator, num: int, batch_size: int) -> dict:
    """Wall and CPU seconds for `predict` over `num` latents (after a warm-up that builds its function)."""
    latent_dim = generator.input_shape[1]
    z = np.random.default_rng(0).standard_normal((num, latent_dim)).astype(np.float32)
    generator.predict(z[:batch_size], batch_size=batch_size, verbose=0)
    with cpu_and_wall_timer() as elapsed:
        generator.predict(z, batch_size=batch_size, verbose=0)
    return elapsed


def time_savedmodel_png(version: Path, out: Path, num: int, batch_size: int) -> dict:
    """Wall and CPU seconds for `sample_to_folder` to write `num` PNGs (after loading and a warm-up batch)."""
    from components.sampler import SampleOptions, SavedModelGenerator, sample_to_folder

    loaded = SavedModelGenerator(version)
    loaded.images(np.arange(batch_size), seed=1)
    with cpu_and_wall_timer() as elapsed:
        sample_to_folder(loaded, out, SampleOptions(num=num, generate_batch=batch_size), progress=False)
    if len(list(out.glob("*.png"))) != num:
        raise RuntimeError(f"expected {num} PNG files in {out}")
    return elapsed


@contextlib.contextmanager
def cpu_and_wall_timer() -> Iterator[dict]:
    """Wall seconds (the claim) and this process's CPU seconds over all threads: on a shared
    machine the CPU figure shows the work each path costs when the wall clock is noisy."""
    cpu = time.process_time()
    with timer() as elapsed:
        yield elapsed
    elapsed["cpu_seconds"] = time.process_time() - cpu


def sample_cli_peak_rss_mb(version: Path, out: Path, num: int, batch_size: int) -> dict:
    """Run `python -m pipeline.sample` in a fresh process; return its peak RSS and run time."""
    command = [sys.executable, "-m", "pipeline.sample", "--model", str(version), "--output", str(out)]
    command += ["--num", str(num), "--generate-batch", str(batch_size), "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with timer() as elapsed:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed with status {status}")
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "seconds": elapsed["seconds"]}


def main(argv=None) -> None:
    args = parse_args(argv)
    from components.exporter import export_generator
    from components.model import ModelConfig, build_generator

    generator = build_generator(ModelConfig(image_size=args.image_size))
    with tempfile.TemporaryDirectory(prefix="bench_sample.") as work:
        work = Path(work)
        version = export_generator(generator, work / "generator", {"benchmark": "bench_sample"})
        keras = time_keras_predict(generator, args.num, args.batch_size)
        savedmodel = time_savedmodel_png(version, work / "png", args.num, args.batch_size)
        small, large = args.memory_nums
        memory = {n: sample_cli_peak_rss_mb(version, work / f"memory-{n}", n, args.batch_size) for n in (small, large)}

    speed_ratio = keras["seconds"] / savedmodel["seconds"]
    growth = memory[large]["peak_rss_mb"] / memory[small]["peak_rss_mb"] - 1
    emit(
        "bench_sample",
        {
            "quick": args.quick,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "generator_parameters": generator.count_params(),
            "throughput": {
                "num": args.num,
                "keras_predict_images_per_s": args.num / keras["seconds"],
                "savedmodel_png_images_per_s": args.num / savedmodel["seconds"],
                "ratio": speed_ratio,
                "keras_predict_cpu_ms_per_image": 1000 * keras["cpu_seconds"] / args.num,
                "savedmodel_png_cpu_ms_per_image": 1000 * savedmodel["cpu_seconds"] / args.num,
                "cpu_ratio": keras["cpu_seconds"] / savedmodel["cpu_seconds"],
                "target": SPEED_TARGET,
                "pass": speed_ratio >= SPEED_TARGET,
            },
            "memory": {
                f"n{small}_peak_rss_mb": memory[small]["peak_rss_mb"],
                f"n{large}_peak_rss_mb": memory[large]["peak_rss_mb"],
                f"n{large}_cli_seconds": memory[large]["seconds"],
                "growth": growth,
                "target": MEMORY_TARGET,
                "pass": growth <= MEMORY_TARGET,
            },
        },
    )


if __name__ == "__main__":
    main()
