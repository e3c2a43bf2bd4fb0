"""`python -m pipeline.evaluate`: score an exported generator against held-out real images."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from components.errors import PipelineError
from components.evaluate_options import EvaluateOptions
from pipeline._cli import (  # sets TensorFlow's log level before it loads (tests/test_code_layout.py)
    add_setting,
    make_parser,
    options_from_args,
    resolve_data,
    run_main,
    split_beam_args,
)
from pipeline._config import parse_command_line, settings_record

DESCRIPTION = """\
Score a generator SavedModel against the real images of an ingested data folder and write
eval.json beside the model (inside its version folder, unless --output says otherwise).

Metrics, each beside its real-data reference:
  swd_<res>, swd_avg   sliced Wasserstein distance x1e3 on Laplacian pyramids (ProGAN), lower is
                       better; *_floor is the same between two halves of the real images, what a
                       perfect generator would score at this sample size
  msssim               mean MS-SSIM of random generated pairs; far above msssim_real = mode collapse
  memorisation_*       distance to the nearest training image, generated vs held-out real, and the
                       share of generated images that look like copies
  fid, kid             only with --inception-weights (a local file; nothing is ever downloaded)

The generated images come from fixed latents (--seed), so the same model scores the same.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("python -m pipeline.evaluate", DESCRIPTION, "--model DIR --data DIR [options]", tables=("evaluate",))
    parser.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="a SavedModel version folder, its parent (newest version is used) or a run folder",
    )
    parser.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="an ingested data folder (tfrecords/<name>), or its URI on a Beam file system (options after --)",
    )
    for name in ("split", "eval_num", "seed", "generate_batch", "train_limit"):
        add_setting(parser, EvaluateOptions, name)
    parser.add_argument(
        "--inception-weights",
        type=Path,
        default=None,
        metavar="FILE",
        help="local Keras InceptionV3 weights file (.h5 / .weights.h5) to add FID and KID",
    )
    add_setting(parser, EvaluateOptions, "skip_if_done")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="where to write the JSON (default: eval.json inside the model's version folder)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages: only errors and the path written")
    return parser


def parse_args(argv: Sequence[str] | None, tables=None) -> argparse.Namespace:
    """The command line (over `--config` and `tables`, see `pipeline._config.parse_command_line`), with
    every value checked before TensorFlow loads; `--data` made local, the settings as given in
    `args.settings`, the evaluation's in `args.options`."""
    ours, fs_flags = split_beam_args(sys.argv[1:] if argv is None else argv)
    args = parse_command_line(build_parser(), ours, tables=tables)
    args.settings = settings_record(args)
    args.options = options_from_args(EvaluateOptions, args)
    if args.inception_weights is not None and not args.inception_weights.is_file():
        raise PipelineError(f"--inception-weights {args.inception_weights} does not exist (it is never downloaded).")
    args.data = resolve_data(args.data, fs_flags, quiet=args.quiet)
    return args


def format_report(metrics: dict[str, float]) -> str:
    """The metrics as a two-column table: the model's figure beside the real-data reference."""
    resolutions = sorted((int(k[4:]) for k in metrics if k.startswith("swd_") and k[4:].isdigit()), reverse=True)
    rows = [(f"SWD x1e3, {res}px", f"swd_{res}", f"swd_{res}_floor") for res in resolutions]
    rows += [
        ("SWD x1e3, average", "swd_avg", "swd_avg_floor"),
        ("MS-SSIM of pairs (diversity)", "msssim", "msssim_real"),
        ("nearest-train distance", "memorisation_nn_generated", "memorisation_nn_real"),
        ("copy fraction", "memorisation_copy_fraction", None),
        ("FID", "fid", "fid_floor"),
        ("KID", "kid", "kid_floor"),
    ]

    def cell(key: str | None) -> str:
        return f"{metrics[key]:.4f}" if key in metrics else "-"

    lines = [f"{'metric':<30}{'model':>12}{'real':>12}"]
    lines += [f"{label:<30}{cell(model):>12}{cell(real):>12}" for label, model, real in rows if model in metrics]
    lines.append(
        f"(n = {metrics['num_images']} generated vs {metrics['num_images']} real; "
        "'real' = real vs real: the floor for SWD/FID/KID, the real baseline otherwise)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, tables=None) -> int:
    """Evaluate as `argv` (over `tables`, see `parse_args`) says: the report on stdout, the steps and
    progress on stderr; under --quiet only the path of the eval.json written or found up to date."""
    args = parse_args(argv, tables)

    from components.evaluation import evaluate_model

    result = evaluate_model(
        args.model,
        args.data,
        args.options,
        output=args.output,
        inception_weights=args.inception_weights,
        settings=args.settings,
        say=(lambda _line: None) if args.quiet else _to_stderr,
        progress=not args.quiet,
    )
    if args.quiet:
        print(result.path)
        return 0
    print(format_report(result.metrics))
    print(f"{result.path} is up to date; nothing to do." if result.up_to_date else f"wrote {result.path}", file=sys.stderr)
    return 0


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def console_script() -> None:
    """`python -m pipeline.evaluate` and the `animegan-evaluate` command: `main` with the exit codes and the one
    `error:` line every command shares."""
    run_main(main)


if __name__ == "__main__":
    console_script()
