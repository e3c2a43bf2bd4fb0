"""Benchmark: the Beam ingest job vs a plain single-process Python loop doing the same work.

Both read the same JPEG files, decode, validate, resize (components.images), hash pixels for
deduplication, serialize (shards.serialize_example) and write ~32 MB shards split train/eval.
The Beam side is the whole job as `python -m pipeline.ingest` runs it (listing, planning, Beam
start-up, dedupe stage, manifest), on the DirectRunner with one worker per core. Claim (issue 2):
at 100,000 images Beam reaches at least 1.0x the loop's images/s.

Inputs, cached under bench/out/cache/ (made once, untimed; the page cache is warmed first):
- `--source synthetic` (default): N distinct built-in faces saved as JPEG (like the real data set);
- `--source anime2k`: ../shared/data/anime-faces-2k replicated to N by symbolic links. Replicas are
  duplicates by construction, so both sides then run with deduplication off.

    python -m bench.bench_ingest            # full: 20,000 and 100,000 images
    python -m bench.bench_ingest --quick    # a smoke run at 2,000 images
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from multiprocessing import Pool
from pathlib import Path

from bench.common import ANIME_2K, OUT_DIR, emit, peak_rss_mb, timer

CACHE = OUT_DIR / "cache"
TARGET = 1.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 images only, to check the benchmark runs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000], help="image counts to compare at")
    parser.add_argument("--source", choices=["synthetic", "anime2k"], default="synthetic", help="what the images are")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--anime2k", type=Path, default=ANIME_2K, help="folder of the real faces for --source anime2k")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = [2_000]
    return args


# ---------------------------------------------------------------------------------------------
# Inputs (shared with bench_reader)


def _draw_jpeg(job: tuple[Path, int]) -> None:
    from components.synthetic import synthetic_face

    folder, index = job
    synthetic_face(seed=1234, index=index, size=64).save(folder / f"face-{index:06d}.jpg", format="JPEG", quality=92)


def synthetic_jpegs(count: int) -> Path:
    """A cached folder of `count` distinct synthetic faces as 64x64 JPEG files."""
    folder = CACHE / f"synthetic-jpeg-{count}"
    if folder.is_dir() and sum(1 for _ in folder.iterdir()) == count:
        return folder
    partial = CACHE / f".synthetic-jpeg-{count}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    print(f"drawing {count:,} synthetic faces into {folder} (once)...", file=sys.stderr)
    with Pool(len(os.sched_getaffinity(0))) as pool:
        pool.map(_draw_jpeg, [(partial, index) for index in range(count)], chunksize=256)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    return folder


def linked_copies(source: Path, count: int) -> Path:
    """A cached folder of `count` symbolic links cycling over the images in `source`."""
    originals = sorted(p for p in source.iterdir() if p.is_file())
    if not originals:
        raise SystemExit(f"{source} holds no images")
    folder = CACHE / f"{source.name}-links-{count}"
    if folder.is_dir() and sum(1 for _ in folder.iterdir()) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for index in range(count):
        original = originals[index % len(originals)]
        (folder / f"{index:06d}{original.suffix}").symlink_to(original.resolve())
    return folder


def input_folder(args: argparse.Namespace, count: int) -> Path:
    return synthetic_jpegs(count) if args.source == "synthetic" else linked_copies(args.anime2k, count)


def warm_page_cache(folder: Path) -> None:
    for path in folder.iterdir():
        path.read_bytes()


# ---------------------------------------------------------------------------------------------
# The two contenders


def plain_loop(folder: Path, output: Path, options) -> int:
    """The baseline: one process, one file after another, the same per-image work; images written."""
    from components.example_gen import EXAMPLE_OVERHEAD_BYTES, TARGET_SHARD_BYTES, split_of
    from components.images import Rejected, prepare_image, read_file
    from components.shards import serialize_example, write_shard

    output.mkdir(parents=True)
    per_shard = TARGET_SHARD_BYTES // (options.image_size**2 * 3 + EXAMPLE_OVERHEAD_BYTES)
    pending = {"train": [], "eval": []}
    shards, seen_hashes, written = 0, set(), 0
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())
    for name in names:
        try:
            prepared = prepare_image(read_file(folder / name), options.image_size, options.resize, options.effective_min_size)
        except Rejected:
            continue
        if options.dedupe:
            if prepared.pixel_hash in seen_hashes:
                continue
            seen_hashes.add(prepared.pixel_hash)
        split = split_of(name, options.eval_fraction)
        pending[split].append(serialize_example(prepared.pixels, name, prepared.sha256))
        written += 1
        if len(pending[split]) == per_shard:
            write_shard(output / f"{split}-{shards:05d}.tfrecord", pending[split])
            pending[split], shards = [], shards + 1
    for split, records in pending.items():
        if records:
            write_shard(output / f"{split}-{shards:05d}.tfrecord", records)
            shards += 1
    return written


def beam_job(folder: Path, output: Path, options) -> int:
    from components.ingester import ingest
    from components.sources import FolderSource

    report = ingest(FolderSource(str(folder)), output, options)
    return report.manifest["counts"]["written"]


def measure(contender, folder: Path, options, count: int) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=OUT_DIR))
    try:
        with timer() as elapsed:
            written = contender(folder, scratch / "out", options)
        return {"seconds": elapsed["seconds"], "images_per_s": count / elapsed["seconds"], "written": written}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    from components.example_gen import IngestOptions

    options = IngestOptions(image_size=args.image_size, dedupe=args.source == "synthetic")
    results = {
        "source": args.source,
        "dedupe": options.dedupe,
        "workers": len(os.sched_getaffinity(0)),
        "target_ratio_at_largest": TARGET,
    }
    for count in args.sizes:
        folder = input_folder(args, count)
        warm_page_cache(folder)
        loop = measure(plain_loop, folder, options, count)
        beam = measure(beam_job, folder, options, count)
        if loop["written"] != beam["written"]:
            raise RuntimeError(f"the contenders disagree: loop wrote {loop['written']}, Beam {beam['written']}")
        results[f"n{count}"] = {"loop": loop, "beam": beam, "ratio": beam["images_per_s"] / loop["images_per_s"]}
        print(f"{count:,} images: loop {loop['images_per_s']:,.0f}/s, Beam {beam['images_per_s']:,.0f}/s", file=sys.stderr)
    largest = results[f"n{max(args.sizes)}"]["ratio"]
    results["ratio_at_largest"] = largest
    results["meets_target"] = largest >= TARGET
    results["peak_rss_mb_driver"] = peak_rss_mb()
    emit("bench_ingest", results)


if __name__ == "__main__":
    main()
