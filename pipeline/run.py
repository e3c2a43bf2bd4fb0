"""`python -m pipeline.run`: the whole pipeline in one command, each stage skipped when up to date."""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from components import locks
from components.config import MAX_IMAGES, SEARCH_LIMITS
from components.model import IMAGE_SIZES
from components.sampler import MAX_NUM
from pipeline import _cli
from pipeline._search import DEFAULT_MAX_TRIALS
from pipeline.train import DEFAULT_IMAGES

DESCRIPTION = """\
Run ingest -> [tune] -> train (with evaluation and export) -> evaluate -> sample, in order. Each
stage is the stage's own CLI (python -m pipeline.<stage>), so everything it does is documented
there, and each skips work that is already done: the ingest when its manifest matches the
inputs and options, training when the run already reached its budget (a killed run resumes),
the export when the newest version holds the same checkpoint, evaluation when the version has its
eval.json, and sampling for files that exist. Re-running the same command is cheap.

examples:
  python -m pipeline.run --demo                       # built-in faces, small budget, < 10 min on 2 cores
  python -m pipeline.run --input data --images 400000 # your images (e.g. the anime-faces data set in data/)
  python -m pipeline.run --input data --tune --max-trials 8 --trial-images 20000 --images 400000"""

# The demo: built-in procedural faces and a budget that finishes in under 10 minutes on 2 CPU cores.
DEMO_FACES = 2000
DEMO_IMAGE_SIZE = 32
DEMO_IMAGES = 60_000


def build_parser() -> argparse.ArgumentParser:
    parser = _cli.make_parser("python -m pipeline.run", DESCRIPTION, "[--input DIR | --demo] [options]")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", default="data", help="image folder to ingest (recursive): a path or a URI (gs://, s3://, ...)")
    source.add_argument("--demo", action="store_true",
                        help=f"use {DEMO_FACES:,} built-in faces at {DEMO_IMAGE_SIZE}px and a {DEMO_IMAGES:,}-image budget")
    parser.add_argument("--data", help="TFRecords folder, a path or a URI (default: tfrecords/<input name>, or tfrecords/demo)")
    parser.add_argument("--run", type=Path, help="run folder (default: artifacts/<data folder name>)")
    parser.add_argument("--image-size", type=int, choices=IMAGE_SIZES, default=64, help="training image size")
    parser.add_argument("--eval-fraction", type=_cli.finite_float, default=0.1, help="share of images held out in the eval split")
    parser.add_argument(
        "--images", type=_cli.bounded_int(1, MAX_IMAGES), help=f"training budget: real images seen (default: {DEFAULT_IMAGES})"
    )
    parser.add_argument("--eval-every", type=_cli.bounded_int(1, MAX_IMAGES), default=None, metavar="IMAGES",
                        help="evaluate (SWD) and keep the best checkpoint every this many images (default: budget / 5)")
    parser.add_argument(
        "--eval-num", type=_cli.eval_num, default=1024, metavar="N",
        help="generated (and as many real) images scored in each evaluation of the training and by the evaluate stage",
    )  # fmt: skip
    parser.add_argument("--tune", action="store_true", help="search hyperparameters with KerasTuner before training")
    parser.add_argument(
        "--max-trials",
        type=_cli.bounded_int(*SEARCH_LIMITS["max_trials"]),
        metavar="N",
        help=f"with --tune: the search's budget, 2 default trainings + N-2 tuned trials (default: {DEFAULT_MAX_TRIALS})",
    )
    parser.add_argument(
        "--trial-images",
        type=_cli.bounded_int(*SEARCH_LIMITS["trial_images"]),
        default=20_000,
        help="with --tune: images seen by one trial",
    )
    parser.add_argument(
        "--trial-image-size", type=int, choices=IMAGE_SIZES, help="with --tune: train the trials at this divisor of --image-size"
    )
    parser.add_argument(
        "--num", type=_cli.bounded_int(1, MAX_NUM), default=64, help="images to sample from the exported SavedModel"
    )
    parser.add_argument(
        "--seed", type=_cli.seed, default=0,
        help="seeds the training (initial weights, data order), the evaluations and the sampled images",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bars, only stage headers and the summary")
    parser.epilog = ("Beam options: everything after `--` goes to the ingest's pipeline and, when --data is a URI, configures "
                     "the file system train and evaluate read it through (see python -m pipeline.ingest --help).")
    return parser


def flag(name: str, value: object) -> str:
    """One `--name=value` argument: a value that starts with `-` (a folder named `-faces`) stays the
    flag's value instead of being read as another flag."""
    return f"{name}={value}"


@dataclass
class Stage:
    name: str
    main: Callable[[Sequence[str]], int]
    argv: list[str]


def plan(args: argparse.Namespace, beam_args: list[str]) -> tuple[list[Stage], str, Path]:
    """The stages to run, as the argument lists of their CLIs; and the data and run folders.

    The outputs are checked up front (components.guard): no two of input, data and run may be one
    inside another, no output may be a link, a file or under a file, and the sample stage's grid
    must be absent or ours.
    """
    from components import guard
    from components.artifacts import RunPaths
    from components.sampler import check_outputs
    from pipeline import evaluate, ingest, sample, train

    if args.demo:
        args.image_size, args.images = DEMO_IMAGE_SIZE, DEMO_IMAGES
        data = args.data or str(Path("tfrecords", "demo"))
        source = [flag("--synthetic", DEMO_FACES), flag("--seed", args.seed)]
    else:
        data = args.data or str(Path("tfrecords", _cli.data_name(args.input)))
        source = [flag("--input", args.input)]
    run = args.run or Path("artifacts", _cli.data_name(data))
    images = None if args.demo else args.input
    guard.output_folder("--data", data, inputs=[("--input", images)])
    guard.output_folder("--run", run, inputs=[("--input", images), ("--data", data)])
    samples, grid = run / "export" / "samples", run / "export" / "grid.png"
    check_outputs(RunPaths(run).export, samples, grid)  # the last stage's outputs: refused now, not after the training
    fs_flags = ["--", *beam_args] if "://" in data else []
    quiet = ["--quiet"] if args.quiet else []
    budget = args.images or DEFAULT_IMAGES
    eval_every = args.eval_every or max(budget // 5, 1)
    training = [flag("--data", data), flag("--run", run), flag("--images", budget), flag("--seed", args.seed),
                flag("--eval-every", eval_every), flag("--eval-num", args.eval_num), *quiet]
    if args.tune:
        training += ["--tune", flag("--trial-images", args.trial_images)]
        training += [flag("--max-trials", args.max_trials)] if args.max_trials else []
        training += [flag("--trial-image-size", args.trial_image_size)] if args.trial_image_size else []
    training += fs_flags
    stages = [
        Stage("ingest", ingest.main, [*source, flag("--output", data), flag("--image-size", args.image_size),
                                      flag("--eval-fraction", args.eval_fraction), *quiet, "--", *beam_args]),
        Stage("train" + (" (after a search)" if args.tune else ""), train.main, training),
        Stage("evaluate", evaluate.main, [flag("--model", run), flag("--data", data), flag("--eval-num", args.eval_num),
                                          flag("--seed", args.seed), "--skip-if-done", *quiet, *fs_flags]),
        Stage("sample", sample.main, [flag("--model", run), flag("--num", args.num), flag("--seed", args.seed),
                                      flag("--output", samples), flag("--grid", grid), *quiet]),
    ]
    return stages, data, run


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    from pipeline._cli import split_beam_args

    ours, beam_args = split_beam_args(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(ours)
    stages, data, run = plan(args, beam_args)
    started = time.perf_counter()
    with locks.writing(run, "--run"):  # from the start: a second pipeline.run on this run stops before it ingests
        for number, stage in enumerate(stages, 1):
            command = shlex.join(["python", "-m", stage.main.__module__, *stage.argv])
            print(f"\n[{number}/{len(stages)}] {stage.name}: {command}", flush=True)
            stage_started = time.perf_counter()
            stage.main(stage.argv)
            print(f"[{number}/{len(stages)}] {stage.name} done in {time.perf_counter() - stage_started:.0f} s", flush=True)
    print(final_summary(data, run, time.perf_counter() - started))
    return 0


def final_summary(data: Path, run: Path, seconds: float) -> str:
    """Where everything was written and how good the model is, in a few lines."""
    from components.artifacts import RunPaths, read_json, resolve_saved_model

    model = resolve_saved_model(run)
    metrics = read_json(model / "eval.json")["metrics"] if (model / "eval.json").is_file() else {}
    swd = metrics.get("swd_avg")
    floor = metrics.get("swd_avg_floor")
    quality = f"swd_avg {swd:.2f} (real-vs-real floor {floor:.2f}; lower is better)" if swd is not None else "not evaluated"
    return "\n".join([
        f"\npipeline finished in {seconds / 60:.1f} min",
        f"  data        {data}  (manifest.json, rejects.jsonl)",
        f"  run         {run}  (checkpoints/, samples/, logs/ for TensorBoard, metrics.jsonl)",
        f"  SavedModel  {model}  (model_card.json, eval.json)",
        f"  quality     {quality}",
        f"  samples     {run / 'export' / 'samples'}",
        f"  grid        {run / 'export' / 'grid.png'}",
        f"  TensorBoard tensorboard --logdir {RunPaths(run).logs}",
    ])


def console_script() -> None:
    """`python -m pipeline.run` and the `animegan-run` command: `main` with the exit codes and the one
    `error:` line every command shares."""
    _cli.run_main(main)


if __name__ == "__main__":
    console_script()
