"""`python -m pipeline.sample`: batch-sample images from an exported generator SavedModel alone."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from components.sampler import FORMATS, MAX_BATCH_SIZE, MAX_GRID_COUNT, MAX_NUM, MAX_TRUNCATION
from pipeline._cli import (  # sets TensorFlow's log level before it loads (tests/test_code_layout.py)
    bounded_float,
    bounded_int,
    make_parser,
    run_main,
    seed,
)
from pipeline._config import parse_command_line

DESCRIPTION = """\
Generate images with an exported generator (a TF SavedModel; no training code is used).

Image i of a seed is always the same image, so files are named by index (000000.png, or
000000-000999.npz / .tfrecord chunks of 1,000 images), two runs with one seed write
byte-identical files whatever --generate-batch is, and re-running skips the files that exist.
The output folder is marked as ours (samples.json); a folder with other contents is refused.

examples:
  python -m pipeline.sample --model artifacts/run1 --num 10000 --output artifacts/run1/samples-10k
  python -m pipeline.sample --model artifacts/run1/export/generator/3 --num 64 --grid faces.png
"""


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        "python -m pipeline.sample", DESCRIPTION, "--model DIR (--output DIR | --grid FILE.png) [options]", tables=("sample",)
    )
    parser.add_argument(
        "--model",
        required=True,
        type=Path,
        help="a SavedModel version folder, the folder of versions above it (newest is used), or a run folder "
        "(its export/generator/, newest version)",
    )
    parser.add_argument(
        "--num", type=bounded_int(1, MAX_NUM), default=64,
        help="number of images (indices 0..N-1); refused when the disk has not room for them",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, metavar="DIR", help="folder for the image files (created; resumable)")
    parser.add_argument(
        "--format",
        choices=sorted(FORMATS),
        default="png",
        help="png: one file per image; npz: arrays 'images' uint8[n,H,W,3] and 'indices'; "
        "tfrecord: Examples in the ingest schema",
    )
    parser.add_argument("--seed", type=seed, default=0, help="the seed: same seed, same images")
    parser.add_argument(
        "--generate-batch", type=bounded_int(1, MAX_BATCH_SIZE), default=256, metavar="N",
        help="images per generator call (memory, not results: the images are the same whatever it is)",
    )  # fmt: skip
    parser.add_argument(
        "--truncation",
        type=bounded_float(0, MAX_TRUNCATION, low_included=False),
        default=None,
        help="clip every latent value to [-T, T] (smaller: more typical, less varied faces); unset: no clipping",
    )
    parser.add_argument("--grid", type=Path, help="also write a PNG contact sheet of the first --grid-count images")
    parser.add_argument(
        "--grid-count", type=bounded_int(1, MAX_GRID_COUNT), default=64, help="images on the --grid contact sheet"
    )
    parser.add_argument("--workers", type=bounded_int(1, 64), default=2, help="threads encoding and writing files")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages: only errors and what was written")
    return parser


def _silent(*_args, **_kwargs) -> None:
    """`print` under --quiet."""


def recorded_settings(path: Path, document: object) -> dict[str, dict] | None:
    """`--config` of a sample folder's samples.json: what the folder holds (model, num, seed,
    truncation, format), to sample it again or further; nothing else changes which images it holds."""
    if not isinstance(document, dict) or "model_path" not in document:
        return None
    names = ("num", "seed", "truncation", "format")
    return {"sample": {"model": document["model_path"], "output": str(path.parent), **{name: document.get(name) for name in names}}}


def main(argv: Sequence[str] | None = None, tables=None) -> int:
    parser = build_parser()
    args = parse_command_line(parser, sys.argv[1:] if argv is None else argv, tables=tables, records=recorded_settings)
    if args.output is None and args.grid is None:
        parser.error("nothing to write: give --output DIR, --grid FILE.png, or both")
    if args.grid is not None and args.grid.suffix.lower() != ".png":
        parser.error(f"--grid must name a .png file, got {args.grid}")

    from components.artifacts import resolve_saved_model
    from components.sampler import SavedModelGenerator, check_outputs, sample_to_folder, save_first_grid

    check_outputs(resolve_saved_model(args.model), args.output, args.grid)  # before anything loads or is generated
    generator = SavedModelGenerator(args.model)
    say = _silent if args.quiet else print
    say(f"model: {generator.describe()}")
    if args.output is not None:
        summary = sample_to_folder(
            generator,
            args.output,
            args.num,
            seed=args.seed,
            batch_size=args.generate_batch,
            output_format=args.format,
            truncation=args.truncation,
            workers=args.workers,
            progress=not args.quiet,
        )
        print(
            f"{summary.out_dir}: {args.num} images in {summary.files} {args.format} file(s) "
            f"({summary.written} generated, {summary.skipped} already there)"
        )
    if args.grid is not None:
        count = min(args.grid_count, args.num) if args.output is not None else args.grid_count
        save_first_grid(generator, args.grid, count, args.seed, args.truncation, args.generate_batch)
        print(f"{args.grid}: contact sheet of images 0..{count - 1}")
    return 0


def console_script() -> None:
    """`python -m pipeline.sample` and the `animegan-sample` command: `main` with the exit codes and the one
    `error:` line every command shares."""
    run_main(main)


if __name__ == "__main__":
    console_script()
