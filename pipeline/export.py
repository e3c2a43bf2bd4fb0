"""`python -m pipeline.export`: write a run's EMA generator as a new versioned SavedModel."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline._cli import (  # sets TensorFlow's log level before it loads (tests/test_code_layout.py)
    add_setting,
    make_parser,
    options_from_args,
    run_main,
)
from pipeline._config import parse_command_line

DESCRIPTION = """\
Export the EMA generator of a training run as a TensorFlow SavedModel, in the TF Serving layout:
<run>/export/generator/<version>/ (saved_model.pb, variables/, model_card.json), where <version>
is one more than the newest. The folder appears only once complete and checked: the export is
loaded back and must match the in-memory generator within 1 grey level.

Signatures (no project code needed: tf.saved_model.load(path)):
  serving_default  z: float32[None, latent_dim]  -> images: uint8[None, H, W, 3]
  sample           num: int32, seed: int64        -> images (same seed, same images)

example:
  python -m pipeline.export --run artifacts/run1 --checkpoint best
"""


def build_parser() -> argparse.ArgumentParser:
    from components.exporter import ExportOptions

    parser = make_parser("python -m pipeline.export", DESCRIPTION, "--run DIR [options]", tables=("export",))
    parser.add_argument("--run", required=True, type=Path, help="the training run folder (artifacts/<run>)")
    add_setting(parser, ExportOptions, "checkpoint")
    parser.add_argument("--quiet", action="store_true", help="print only errors and the path of the new version")
    return parser


def main(argv: Sequence[str] | None = None, tables=None) -> int:
    args = parse_command_line(build_parser(), sys.argv[1:] if argv is None else argv, tables=tables)

    from components.artifacts import read_json
    from components.errors import PipelineError
    from components.exporter import MODEL_CARD, ExportOptions, export_run

    options = options_from_args(ExportOptions, args)
    if not args.run.is_dir():
        raise PipelineError(f"--run {args.run} is not a folder; pass a training run folder (artifacts/<run>).")
    version, _ = export_run(args.run, options)
    card = read_json(version / MODEL_CARD)
    metrics = card.get("metrics") or {}
    if args.quiet:
        print(version)
        return 0
    print(
        f"exported {options.checkpoint} checkpoint (step {card.get('step')}, {card.get('images_seen')} images seen) to {version}"
    )
    print(f"  signatures: {', '.join(card['signatures'])}; swd_avg: {metrics.get('swd_avg', 'not evaluated')}")
    return 0


def console_script() -> None:
    """`python -m pipeline.export` and the `animegan-export` command: `main` with the exit codes and the one
    `error:` line every command shares."""
    run_main(main)


if __name__ == "__main__":
    console_script()
