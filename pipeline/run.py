"""`python -m pipeline.run`: the whole pipeline in one command, each stage skipped when up to date."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components import locks
from components.config import MAX_IMAGES
from components.ingest_options import IngestOptions
from components.model import IMAGE_SIZES
from components.sampler import MAX_NUM
from components.train_options import DEFAULT_IMAGES, TrainOptions
from pipeline import _cli, _config, _search

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
  python -m pipeline.run --input data --tune --max-trials 8 --trial-images 50000 --images 50000"""

# The demo: built-in procedural faces and a budget that finishes in under 10 minutes on 2 CPU cores.
DEMO_FACES = 2000
DEMO_IMAGE_SIZE = 32
DEMO_IMAGES = 60_000


def build_parser() -> argparse.ArgumentParser:
    parser = _cli.make_parser(
        "python -m pipeline.run", DESCRIPTION, "[--input DIR | --demo] [options]", tables=_config.STAGE_TABLES
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", default="data", help="image folder to ingest (recursive): a path or a URI (gs://, s3://, ...)")
    source.add_argument(
        "--demo",
        action="store_true",
        help=f"use {DEMO_FACES:,} built-in faces at {DEMO_IMAGE_SIZE}px and a {DEMO_IMAGES:,}-image budget",
    )
    parser.add_argument("--data", help="TFRecords folder, a path or a URI (default: tfrecords/<input name>, or tfrecords/demo)")
    parser.add_argument("--run", type=Path, help="run folder (default: artifacts/<data folder name>)")
    parser.add_argument("--image-size", type=int, choices=IMAGE_SIZES, default=64, help="training image size")
    _cli.add_setting(parser, IngestOptions, "eval_fraction")
    budget = parser.add_mutually_exclusive_group()  # the training's budget, as pipeline.train takes it
    for name in ("images", "epochs"):
        _cli.add_setting(budget, TrainOptions, name)
    parser.add_argument(
        "--eval-every",
        type=_cli.bounded_int(1, MAX_IMAGES),
        default=None,
        metavar="IMAGES",
        help="evaluate (SWD) and keep the best checkpoint every this many images (default: budget / 5)",
    )
    _cli.add_setting(parser, TrainOptions, "eval_num")  # the training's evaluations and the evaluate stage's
    parser.add_argument("--tune", action="store_true", help="search hyperparameters with KerasTuner before training")
    _search.add_budget_arguments(parser, note=" (with --tune)")
    parser.add_argument(
        "--num", type=_cli.bounded_int(1, MAX_NUM), default=64, help="images to sample from the exported SavedModel"
    )
    parser.add_argument(
        "--seed",
        type=_cli.seed,
        default=0,
        help="seeds the training (initial weights, data order), the evaluations and the sampled images",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars, only stage headers and the summary")
    parser.epilog = (
        "Beam options: everything after `--` goes to the ingest's pipeline and, when --data is a URI, configures "
        "the file system train and evaluate read it through (see python -m pipeline.ingest --help)."
    )
    return parser


@dataclass
class Stage:
    name: str
    main: Callable[..., int]
    tables: dict[str, dict[str, Any]]  # the stage's settings, by configuration table
    argv: list[str]  # only `--` and Beam's options


# The commands that read each configuration table (export's table is read by `pipeline.export` alone).
STAGE_MODULES = {
    "pipeline.ingest": ("ingest",),
    "pipeline.train": ("train", "search"),
    "pipeline.evaluate": ("evaluate",),
    "pipeline.sample": ("sample",),
}

# Each flag of pipeline.run is a setting of the stages: (table, key) it sets when given.
FLAG_SETTINGS = {
    "input": [("ingest", "input")],
    "image_size": [("ingest", "image_size")],
    "eval_fraction": [("ingest", "eval_fraction")],
    "images": [("train", "images")],
    "epochs": [("train", "epochs")],
    "eval_every": [("train", "eval_every")],
    "eval_num": [("train", "eval_num"), ("evaluate", "eval_num")],
    "tune": [("train", "tune")],
    "max_trials": [("search", "max_trials")],
    "tune_budget": [("search", "tune_budget")],
    "trial_images": [("search", "trial_images")],
    "trial_image_size": [("search", "trial_image_size")],
    "num": [("sample", "num")],
    "seed": [("train", "seed"), ("evaluate", "seed"), ("sample", "seed")],
    "quiet": [("ingest", "quiet"), ("train", "quiet"), ("sample", "quiet")],  # evaluate's report stays: it is the result
}


def compose(given: dict[str, Any], tables: dict[str, dict[str, Any]], demo: bool) -> tuple[dict[str, dict[str, Any]], str, Path]:
    """The stages' settings: the configuration file's tables, the flags given on the command line
    over them, and what ties the stages together (one data folder, one run folder, the export's
    samples); the data and run folders."""
    tables = {name: dict(tables.get(name, {})) for name in _config.STAGE_TABLES}
    ingest, train, evaluate, sample = (tables[name] for name in ("ingest", "train", "evaluate", "sample"))
    if demo:
        ingest.update(synthetic=DEMO_FACES, image_size=DEMO_IMAGE_SIZE)
        ingest.pop("input", None)
        if "epochs" not in train:
            train.setdefault("images", DEMO_IMAGES)
    for name, value in given.items():
        for table, key in FLAG_SETTINGS.get(name, []):
            tables[table][key] = value
    for budget, other in (("images", "epochs"), ("epochs", "images")):  # a budget given here replaces the file's
        if budget in given:
            train.pop(other, None)
    if demo:
        ingest["seed"] = train.get("seed", 0)  # which built-in faces: the pipeline's seed
    data = given.get("data") or ingest.get("output") or train.get("data")
    data = str(data or Path("tfrecords", "demo" if demo else _cli.data_name(ingest.get("input", "data"))))
    run = Path(given.get("run") or train.get("run") or Path("artifacts", _cli.data_name(data)))
    ingest["output"] = train["data"] = evaluate["data"] = data
    train["run"] = evaluate["model"] = sample["model"] = str(run)
    if "epochs" not in train:
        train.setdefault("eval_every", max(train.get("images", DEFAULT_IMAGES) // 5, 1))
    evaluate["skip_if_done"] = True
    sample.setdefault("output", str(run / "export" / "samples"))
    sample.setdefault("grid", str(run / "export" / "grid.png"))
    return tables, data, run


def plan(args: argparse.Namespace, given: dict[str, Any], tables: dict[str, dict[str, Any]], beam_args: list[str]):
    """The stages to run with their settings; and the data and run folders.

    The outputs are checked up front (components.guard): no two of input, data and run may be one
    inside another, no output may be a link, a file or under a file, and the sample stage's grid
    must be absent or ours. Every stage's settings are checked before any stage runs.
    """
    from components import guard
    from components.artifacts import RunPaths
    from components.sampler import check_outputs
    from pipeline import evaluate, ingest, sample, train

    composed, data, run = compose(given, tables, args.demo)
    images = composed["ingest"].get("input")
    guard.output_folder("--data", data, inputs=[("--input", images)])
    guard.output_folder("--run", run, inputs=[("--input", images), ("--data", data)])
    samples, grid = Path(composed["sample"]["output"]), Path(composed["sample"]["grid"])
    check_outputs(RunPaths(run).export, samples, grid)  # the last stage's outputs: refused now, not after the training
    fs_flags = ["--", *beam_args] if "://" in data else []
    stages = [
        Stage("ingest", ingest.main, {"ingest": composed["ingest"]}, ["--", *beam_args]),
        Stage(
            "train" + (" (after a search)" if composed["train"].get("tune") else ""),
            train.main,
            {"train": composed["train"], "search": composed["search"]},
            fs_flags,
        ),
        Stage("evaluate", evaluate.main, {"evaluate": composed["evaluate"]}, fs_flags),
        Stage("sample", sample.main, {"sample": composed["sample"]}, []),
    ]
    for stage in stages:  # a wrong value in any stage's settings stops the pipeline before it starts
        _config.check_tables(stage.main.__module__, stage.tables, "pipeline.run")
    return stages, data, run


def plan_command(argv: Sequence[str], beam_args: list[str]) -> tuple[list[Stage], str, Path]:
    """`plan` for the command line `argv` (our flags) and its `--config` file."""
    args = build_parser().parse_args(list(argv))
    tables = _config.read_config_file(args.config, _config.STAGE_TABLES) if args.config else {}
    for module, names in STAGE_MODULES.items():  # the file's own mistakes, named by the file
        _config.check_tables(module, {name: tables[name] for name in names if name in tables}, str(args.config))
    given = {name: value for name, value in _config.given_flags(build_parser(), argv).items() if name not in ("config", "demo")}
    return plan(args, given, tables, beam_args)


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    ours, beam_args = _cli.split_beam_args(sys.argv[1:] if argv is None else argv)
    stages, data, run = plan_command(ours, beam_args)
    started = time.perf_counter()
    with locks.writing(run, "--run"):  # from the start: a second pipeline.run on this run stops before it ingests
        for number, stage in enumerate(stages, 1):
            settings = " ".join(f"{key}={value}" for table in stage.tables.values() for key, value in table.items())
            print(f"\n[{number}/{len(stages)}] {stage.name} ({stage.main.__module__}): {settings}", flush=True)
            stage_started = time.perf_counter()
            stage.main(stage.argv, stage.tables)
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
    return "\n".join(
        [
            f"\npipeline finished in {seconds / 60:.1f} min",
            f"  data        {data}  (manifest.json, rejects.jsonl)",
            f"  run         {run}  (checkpoints/, samples/, logs/ for TensorBoard, metrics.jsonl)",
            f"  SavedModel  {model}  (model_card.json, eval.json)",
            f"  quality     {quality}",
            f"  samples     {run / 'export' / 'samples'}",
            f"  grid        {run / 'export' / 'grid.png'}",
            f"  TensorBoard tensorboard --logdir {RunPaths(run).logs}",
        ]
    )


def console_script() -> None:
    """`python -m pipeline.run` and the `animegan-run` command: `main` with the exit codes and the one
    `error:` line every command shares."""
    _cli.run_main(main)


if __name__ == "__main__":
    console_script()
