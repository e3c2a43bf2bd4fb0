"""Benchmark: the TFRecord reader (records.make_dataset) vs the seed tutorial's JPEG-folder pipeline.

The seed's `tf_dataset` (glob + shuffle + map(read_file, decode_jpeg, resize_with_crop_or_pad,
scale) + batch(128) + prefetch) reads N JPEG files; `make_dataset` reads the same N images as
ingested shards (raw pixels: no decoding) with the same batch size and shuffling. Both yield
float32 NHWC batches in [-1, 1]. Each pipeline runs one untimed warm-up epoch (page cache, graph
tracing), then `--epochs` timed ones. Claim (issue 2): the reader reaches at least 5x the seed's
images/s.

    python -m bench.bench_reader            # full: 20,000 images, 3 timed epochs each
    python -m bench.bench_reader --quick    # a smoke run: 2,000 images, 1 epoch
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from glob import glob
from pathlib import Path

from bench.bench_ingest import CACHE, linked_copies, synthetic_jpegs
from bench.common import ANIME_2K, emit, peak_rss_mb, timer

TARGET = 5.0
BATCH_SIZE = 128  # the seed's


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 images and one epoch, to check the benchmark runs")
    parser.add_argument("--num", type=int, default=20_000, help="images per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per pipeline")
    parser.add_argument("--source", choices=["anime2k", "synthetic"], default="anime2k", help="what the JPEG files are")
    parser.add_argument("--anime2k", type=Path, default=ANIME_2K, help="folder of the real faces for --source anime2k")
    args = parser.parse_args(argv)
    if args.quick:
        args.num, args.epochs = 2_000, 1
    return args


def seed_tf_dataset(folder: Path, batch_size: int = BATCH_SIZE, size: int = 64):
    """The seed tutorial's input pipeline, as written there (TF 2.2 names kept where still valid)."""
    import tensorflow as tf

    def load_image(image_path):
        img = tf.io.read_file(image_path)
        img = tf.io.decode_jpeg(img)
        img = tf.image.resize_with_crop_or_pad(img, size, size)
        img = tf.cast(img, tf.float32)
        img = (img - 127.5) / 127.5
        return img

    images_path = sorted(glob(os.path.join(folder, "*")))
    dataset = tf.data.Dataset.from_tensor_slices(images_path)
    dataset = dataset.shuffle(buffer_size=10240)
    dataset = dataset.map(load_image, num_parallel_calls=tf.data.experimental.AUTOTUNE)
    dataset = dataset.batch(batch_size)
    dataset = dataset.prefetch(buffer_size=tf.data.experimental.AUTOTUNE)
    return dataset


def ingested(folder: Path, name: str) -> Path:
    """The same images as shards, all in `train`; cached (the ingest's up-to-date check)."""
    from components.example_gen import IngestOptions
    from components.ingester import ingest
    from components.sources import FolderSource

    output = CACHE / f"records-{name}"
    ingest(FolderSource(str(folder)), output, IngestOptions(image_size=64, eval_fraction=0.0, dedupe=False))
    return output


def time_epochs(dataset, epochs: int) -> dict:
    """Images/s of full passes over `dataset`, after one untimed warm-up pass."""
    images, rates = sum(int(batch.shape[0]) for batch in dataset), []
    for _ in range(epochs):
        with timer() as elapsed:
            count = sum(int(batch.shape[0]) for batch in dataset)
        rates.append(count / elapsed["seconds"])
    return {"images_per_epoch": images, "images_per_s_best": max(rates), "images_per_s_mean": statistics.mean(rates)}


def main(argv=None) -> None:
    args = parse_args(argv)
    from components.records import make_dataset

    if args.source == "synthetic":
        folder, name = synthetic_jpegs(args.num), f"synthetic-{args.num}"
    else:
        folder, name = linked_copies(args.anime2k, args.num), f"{args.anime2k.name}-{args.num}"
    data_dir = ingested(folder, name)

    seed = time_epochs(seed_tf_dataset(folder), args.epochs)
    print(f"seed tf_dataset: {seed['images_per_s_best']:,.0f} images/s", file=sys.stderr)
    with timer() as built:  # includes reading every shard once to check its CRCs
        reader = make_dataset(data_dir, "train", BATCH_SIZE, repeat=False, drop_remainder=False)
    ours = time_epochs(reader, args.epochs) | {"construction_seconds": built["seconds"]}
    print(f"records.make_dataset: {ours['images_per_s_best']:,.0f} images/s", file=sys.stderr)
    if seed["images_per_epoch"] != ours["images_per_epoch"]:
        raise RuntimeError(f"the pipelines read different counts: {seed['images_per_epoch']} vs {ours['images_per_epoch']}")

    ratio = ours["images_per_s_mean"] / seed["images_per_s_mean"]
    emit(
        "bench_reader",
        {
            "source": args.source,
            "images": args.num,
            "epochs": args.epochs,
            "batch_size": BATCH_SIZE,
            "seed_tf_dataset": seed,
            "make_dataset": ours,
            "ratio": ratio,
            "target_ratio": TARGET,
            "meets_target": ratio >= TARGET,
            "peak_rss_mb": peak_rss_mb(),
        },
    )


if __name__ == "__main__":
    main()
