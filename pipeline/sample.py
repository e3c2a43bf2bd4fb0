"""`python -m pipeline.sample`: batch-sample images from an exported generator SavedModel alone."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from components.sampler import SampleOptions
from pipeline._cli import (  # sets TensorFlow's log level before it loads (tests/test_code_layout.py)
    add_setting,
    make_parser,
    options_from_args,
    run_main,
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
    parser.add_argument("--output", type=Path, metavar="DIR", help="folder for the image files (created; resumable)")
    parser.add_argument("--grid", type=Path, help="also write a PNG contact sheet of the first --grid-count images")
    for name in ("num", "format", "seed", "generate_batch", "truncation", "grid_count", "workers"):
        add_setting(parser, SampleOptions, name)
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
    return {
        "sample": {"model": document["model_path"], "output": str(path.parent), **{name: document.get(name) for name in names}}
    }


def main(argv: Sequence[str] | None = None, tables=None) -> int:
    parser = build_parser()
    args = parse_command_line(parser, sys.argv[1:] if argv is None else argv, tables=tables, records=recorded_settings)
    if args.output is None and args.grid is None:
        parser.error("nothing to write: give --output DIR, --grid FILE.png, or both")
    if args.grid is not None and args.grid.suffix.lower() != ".png":
        parser.error(f"--grid must name a .png file, got {args.grid}")

    options = options_from_args(SampleOptions, args)

    from components.artifacts import resolve_saved_model
    from components.sampler import SavedModelGenerator, check_outputs, sample_to_folder, save_first_grid

    check_outputs(resolve_saved_model(args.model), args.output, args.grid)  # before anything loads or is generated
    generator = SavedModelGenerator(args.model)
    say = _silent if args.quiet else print
    say(f"model: {generator.describe()}")
    if args.output is not None:
        summary = sample_to_folder(generator, args.output, options, progress=not args.quiet)
        print(
            f"{summary.out_dir}: {options.num} images in {summary.files} {options.format} file(s) "
            f"({summary.written} generated, {summary.skipped} already there)"
        )
    if args.grid is not None:
        if args.output is not None:  # the sheet shows the first of the images written
            options = dataclasses.replace(options, grid_count=min(options.grid_count, options.num))
        save_first_grid(generator, args.grid, options)
        print(f"{args.grid}: contact sheet of images 0..{options.grid_count - 1}")
    return 0


def console_script() -> None:
    """`python -m pipeline.sample` and the `animegan-sample` command: `main` with the exit codes and the one
    `error:` line every command shares."""
    run_main(main)


if __name__ == "__main__":
    console_script()
