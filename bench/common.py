"""What every benchmark shares: timing, peak memory, and JSON + table output."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from components.artifacts import atomic_write_json, flatten_dict, read_json

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

OUT_DIR = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parents[1]
ANIME_2K = ROOT.parent / "shared" / "data" / "anime-faces-2k"  # real faces for benchmarks only
ANIME_MLDS_10K = ROOT.parent / "shared" / "data" / "anime-faces-mlds-10k"  # 10,000 real faces of another style, 64x64


def add_data_arguments(
    parser: argparse.ArgumentParser, image_size: int, images: Path = ANIME_2K, eval_fraction: float = 0.25
) -> None:
    """--images FOLDER (ingested by the real CLI, default `images`: real faces) or --data FOLDER."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", type=Path, default=images, help="image folder to ingest (default: %(default)s)")
    source.add_argument("--data", type=Path, help="an already ingested data folder (skips the ingest)")
    parser.add_argument("--image-size", type=int, default=image_size, help="training size when ingesting --images")
    parser.add_argument("--eval-fraction", type=float, default=eval_fraction, help="held-out share when ingesting --images")


def ingested_data(args: argparse.Namespace) -> Path:
    """The data folder: --data as given, or --images ingested into `args.work` by the real CLI."""
    if args.data is not None:
        return args.data
    if not args.images.is_dir():
        sys.exit(f"error: {args.images} does not exist; pass --images FOLDER or --data DATA_FOLDER.")
    data = args.work / "data"
    command = [
        sys.executable,
        "-m",
        "pipeline.ingest",
        "--input",
        str(args.images),
        "--output",
        str(data),
        "--image-size",
        str(args.image_size),
        "--eval-fraction",
        str(args.eval_fraction),
        "--quiet",
    ]
    subprocess.run(command, check=True, cwd=ROOT)
    return data


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def timer() -> Iterator[dict]:
    """`with timer() as t: ...` then `t["seconds"]`."""
    result: dict = {}
    start = time.perf_counter()
    try:
        yield result
    finally:
        result["seconds"] = time.perf_counter() - start


def ledgered(work: Path, run: Path, config: dict, measure: Callable[[], dict]) -> dict:
    """One run of a resumable study: what `<work>/ledger.json` holds for `run` if it was made with
    `config`, else `measure()`'s figures, timed, written to the ledger as soon as they exist and
    returned (with `config` and `seconds`). A study killed half-way and started again redoes only
    the runs its ledger lacks (a run cut short resumes from its own checkpoints; its seconds then
    count the resumed part only)."""
    key = str(run.relative_to(work))
    entry = read_ledger(work).get(key)
    if entry is None or entry.get("config") != config:
        with timer() as t:
            figures = measure()
        entry = {"config": config, **figures, "seconds": t["seconds"]}
        atomic_write_json(work / "ledger.json", {**read_ledger(work), key: entry})
        print(
            f"{key}: {', '.join(f'{name} {value:.4g}' for name, value in figures.items() if isinstance(value, float))} "
            f"in {t['seconds']:.0f} s",
            flush=True,
        )
    return entry


def read_ledger(work: Path) -> dict:
    """The finished runs of the study in `work`: run folder (relative) -> config, figures, seconds."""
    path = work / "ledger.json"
    return read_json(path) if path.is_file() else {}


def forget_runs(work: Path) -> None:
    """Start a study over: its runs and its ledger go."""
    import shutil

    shutil.rmtree(work / "runs", ignore_errors=True)
    (work / "ledger.json").unlink(missing_ok=True)


def emit(name: str, results: dict, out: str | os.PathLike | None = None) -> Path:
    """Print `results` as an aligned table and write them as JSON (default bench/out/<name>.json)."""
    path = Path(out) if out else OUT_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **results}
    path.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    flat = flatten_dict(results)
    width = max((len(k) for k in flat), default=0)
    print(f"\n{name}")
    for key, value in flat.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"  {key.ljust(width)}  {shown}")
    print(f"  -> {path}", file=sys.stderr)
    return path
