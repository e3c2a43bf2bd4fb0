"""`python -m pipeline.evaluate`: score an exported generator against held-out real images."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

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
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="a SavedModel version folder, its parent (newest version is used) or a run folder")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="an ingested data folder (tfrecords/<name>), or its URI on a Beam file system (options after --)")
    for name in ("split", "eval_num", "seed", "generate_batch", "train_limit"):
        add_setting(parser, EvaluateOptions, name)
    parser.add_argument("--inception-weights", type=Path, default=None, metavar="FILE",
                        help="local Keras InceptionV3 weights file (.h5 / .weights.h5) to add FID and KID")
    add_setting(parser, EvaluateOptions, "skip_if_done")
    parser.add_argument("--output", type=Path, default=None, metavar="FILE",
                        help="where to write the JSON (default: eval.json inside the model's version folder)")
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
    lines.append(f"(n = {metrics['num_images']} generated vs {metrics['num_images']} real; "
                 "'real' = real vs real: the floor for SWD/FID/KID, the real baseline otherwise)")
    return "\n".join(lines)


def load_generator_for(model: str, data: str):
    """The SavedModel `model` points at, checked to generate images of the data's size."""
    from components.artifacts import resolve_saved_model
    from components.records import read_manifest

    size = int(read_manifest(data)["image_size"])
    model_dir = resolve_saved_model(model)  # a wrong path fails here, before TensorFlow loads

    from components.sampler import SavedModelGenerator

    generator = SavedModelGenerator(model_dir)
    if generator.image_shape[:2] != (size, size):
        height, width = generator.image_shape[:2]
        raise PipelineError(
            f"{generator.path} generates {height}x{width} images but {data} holds {size}x{size} ones; "
            "evaluate it on data of its own size."
        )
    return generator


def skipped_notes(args: argparse.Namespace, searching_train: bool) -> list[str]:
    """One line per metric left out, and why: a figure that silently goes missing misleads."""
    notes = []
    if args.inception_weights is None:
        notes.append("FID/KID skipped: no --inception-weights given (they are never downloaded).")
    if not searching_train:
        why = "--train-limit 0." if args.options.train_limit == 0 else "--split train leaves no held-out images."
        notes.append(f"memorisation skipped: {why}")
    return notes


def _silent(*_args, **_kwargs) -> None:
    """`print` under --quiet."""


def main(argv: Sequence[str] | None = None, tables=None) -> int:
    args = parse_args(argv, tables)

    from tqdm import tqdm

    from components import guard, locks
    from components.artifacts import atomic_write_json, tool_versions
    from components.evaluator import (
        Evaluator,
        baseline_cache,
        evaluation_is_current,
        evaluation_request,
        generate_images,
        load_evaluation_images,
        read_evaluation,
        replaceable_evaluation,
    )
    from components.metrics.inception import load_inception

    options = args.options
    say = _silent if args.quiet else print
    started = time.perf_counter()
    with locks.reading(args.data, "--data"):  # no ingest replaces the data while it is read and its cache written
        generator = load_generator_for(args.model, args.data)
        say(f"model: {generator.describe()}", file=sys.stderr)
        out = args.output or generator.path / "eval.json"
        guard.output_file("--output", out, ours=replaceable_evaluation, what="an evaluation written by this project",
                          inputs=guard.data_inputs("--data", args.data))  # fmt: skip
        request = {
            **evaluation_request(args.data, options.split, options.eval_num, options.seed, train_limit=options.train_limit,
                                 inception_weights=args.inception_weights),
            "model_fingerprint": generator.fingerprint(),
        }  # fmt: skip
        done = read_evaluation(out) if options.skip_if_done else None
        if done is not None and evaluation_is_current(done, request, out, generator.path):
            say(format_report(done["metrics"]))
            say(f"{out} is up to date; nothing to do.", file=sys.stderr)
            if args.quiet:
                print(out)
            return 0
        real, train = load_evaluation_images(args.data, options.split, options.train_limit)
        notes = skipped_notes(args, train is not None)
        for note in notes:
            say(f"note: {note}", file=sys.stderr)
        inception = load_inception(args.inception_weights) if args.inception_weights else None

        say(f"scoring {len(real)} real '{options.split}' images (floor and baselines)...", file=sys.stderr)
        cache = baseline_cache(
            args.data, options.split, options.eval_num, options.seed, options.train_limit, args.inception_weights
        )
        evaluator = Evaluator(real, train, num=options.eval_num, seed=options.seed, inception=inception, cache=cache)
        if evaluator.num < options.eval_num:
            say(f"note: the split holds {len(real)} images: comparing {evaluator.num} generated with {evaluator.num} "
                  f"real (the other {evaluator.num} give the floor).", file=sys.stderr)
    with tqdm(total=evaluator.num, desc="generating", unit="img", file=sys.stderr, disable=args.quiet) as bar:
        # Image i of a seed has the latent `components.latents` gives it, as when sampling.
        images = generate_images(lambda indices: generator.images(indices, options.seed), np.arange(evaluator.num),
                                 options.generate_batch, progress=bar.update)
    say("scoring the generated images...", file=sys.stderr)
    metrics = evaluator.score(images)

    atomic_write_json(out, {
        "metrics": metrics,
        "model": str(generator.path),
        "data": str(args.data),
        **request,
        "train_images_searched": 0 if train is None else len(train),
        "inception_weights": str(args.inception_weights) if args.inception_weights else None,
        "notes": notes,
        "settings": {"evaluate": args.settings},
        "seconds": round(time.perf_counter() - started, 1),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "tool_versions": tool_versions(),
    })
    say(format_report(metrics))
    if args.quiet:
        print(out)
    else:
        print(f"wrote {out}", file=sys.stderr)
    return 0


def console_script() -> None:
    """`python -m pipeline.evaluate` and the `animegan-evaluate` command: `main` with the exit codes and the one
    `error:` line every command shares."""
    run_main(main)


if __name__ == "__main__":
    console_script()
