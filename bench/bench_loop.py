"""Training loop: images/s with the host syncing every step vs every `steps_per_execution` steps.

Both sides run the real trainer (`components.trainer.train`, default recipe, `--precision auto`)
on the same generated data folder, for the same images, at 32x32 and at 64x64:

- per_step: `steps_per_execution=1`: Keras hands control back after every step and the loop
  reads the running means and counters (a device-to-host sync) each time, as a loop without
  executions would;
- executions: `steps_per_execution=None`, the trainer's default: one sync per `--log-every`
  steps (here 50), the steps in between run inside one graph call.

Images/s is the median over the log intervals after the first (which holds graph tracing). Each
side runs in its own child process; `--rounds` alternates the pair and keeps each side's best.

    python -m bench.bench_loop            # 32x32 and 64x64, 3,200 images per run, 2 rounds
    python -m bench.bench_loop --quick    # 32x32 only, 800 images, 1 round
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import emit

SIDES = {"per_step": 1, "executions": None}
LOG_EVERY = 50


def write_random_records(folder: Path, count: int, size: int) -> Path:
    """A data folder of `count` smooth random images (speed does not depend on what they show)."""
    import numpy as np

    from components.artifacts import atomic_write_json
    from components.shards import serialize_example, shard_name, write_shard

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (count, 4, 4, 3)).astype(np.uint8)
    images = np.repeat(np.repeat(blocks, size // 4, axis=1), size // 4, axis=2)
    splits = {}
    for split, chunk in (("train", images[: count - 64]), ("eval", images[count - 64 :])):
        entry = write_shard(
            folder / shard_name(split, 0, 1), (serialize_example(image, f"{i}.png", "0" * 64) for i, image in enumerate(chunk))
        )
        splits[split] = {"count": len(chunk), "shards": [entry]}
    atomic_write_json(
        folder / "manifest.json", {"image_size": size, "channels": 3, "splits": splits, "fingerprint": f"random-{size}"}
    )
    return folder


def measure(side: str, data: Path, images: int) -> dict:
    import numpy as np

    from components.artifacts import read_jsonl
    from components.config import TrainConfig
    from components.train_options import TrainOptions
    from components.trainer import train

    with tempfile.TemporaryDirectory() as run:
        options = TrainOptions(
            images=images, steps_per_execution=SIDES[side], log_every=LOG_EVERY, checkpoint_every=10**9, sample_every=10**9
        )
        result = train(TrainConfig(), data, run, options, verbose=False)
        speeds = [line["images_per_sec"] for line in read_jsonl(Path(run) / "metrics.jsonl") if line["kind"] == "train"]
    return {"images_per_sec": float(np.median(speeds[1:] or speeds)), "intervals": len(speeds), "steps": result.steps}


def run_child(side: str, data: Path, images: int) -> dict:
    command = [sys.executable, "-m", "bench.bench_loop", "--child", side, "--data", str(data), "--images", str(images)]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="32x32 only, 800 images, 1 round")
    parser.add_argument("--images", type=int, default=None, help="images per run (default 3,200; quick 800)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of both sides, best kept (default 2; quick 1)")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    images = args.images or (800 if args.quick else 3200)
    if args.child:
        print(json.dumps(measure(args.child, args.data, images)))
        return
    rounds = args.rounds or (1 if args.quick else 2)
    report: dict = {"config": {"images": images, "rounds": rounds, "log_every": LOG_EVERY, "quick": args.quick}}
    with tempfile.TemporaryDirectory() as work:
        for size in (32,) if args.quick else (32, 64):
            data = write_random_records(Path(work, f"data{size}"), 2112, size)
            best: dict[str, dict] = {}
            for _ in range(rounds):
                for side in SIDES:
                    result = run_child(side, data, images)
                    if side not in best or result["images_per_sec"] > best[side]["images_per_sec"]:
                        best[side] = result
            report[f"size_{size}"] = {
                **best,
                "speedup": best["executions"]["images_per_sec"] / best["per_step"]["images_per_sec"],
            }
    report["target_speedup_32"] = 1.1
    emit("bench_loop" + ("_quick" if args.quick else ""), report)


if __name__ == "__main__":
    main()
