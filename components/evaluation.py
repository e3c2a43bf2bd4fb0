"""One evaluation of an exported generator, written to `eval.json`: `evaluate_model`.

`pipeline.evaluate` is this function behind a command line: it parses the flags, makes a data URI
local and prints the report. The steps, in order: the SavedModel is loaded and checked to generate
images of the data's size; the output path is checked (components.guard); with `skip_if_done`, an
`eval.json` that already holds the figures of this model, data and settings is returned as it is;
otherwise the real side is computed (or read from the data folder's cache), images 0..n-1 of the
seed are generated and scored (components.evaluator), and the figures are written with what
identifies them (`evaluation_request`, the model's fingerprint) and the settings that repeat them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components import guard, locks
from components.artifacts import atomic_write_json, resolve_saved_model, tool_versions
from components.errors import PipelineError
from components.evaluate_options import EvaluateOptions
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
from components.exporter import EVAL_FILE
from components.metrics.inception import load_inception
from components.records import read_manifest
from components.saved_generator import SavedModelGenerator
from components.settings import settings_dict


@dataclass(frozen=True)
class EvaluationResult:
    """What `evaluate_model` found: the figures and the file that holds them."""

    metrics: dict[str, float]
    path: Path  # the eval.json written, or found up to date
    up_to_date: bool  # the file already held these figures: nothing was scored or written
    notes: tuple[str, ...]  # the metrics left out, and why (the file's "notes")


def _silent(_line: str) -> None:
    """The default `say`: no messages."""


def evaluate_model(
    model: str | os.PathLike,
    data: str | os.PathLike,
    options: EvaluateOptions,
    *,
    output: str | os.PathLike | None = None,
    inception_weights: str | os.PathLike | None = None,
    settings: dict[str, Any] | None = None,
    say: Callable[[str], object] = _silent,
    progress: bool = False,
) -> EvaluationResult:
    """Score the SavedModel `model` (a version folder, the folder of versions above it, or a run folder)
    against the local ingested data folder `data`, and write the figures to `output` (by default
    eval.json in the model's version folder).

    `inception_weights`, a local Keras InceptionV3 weights file, adds FID and KID. `settings` is what
    the file records as the evaluation's settings, which `pipeline.evaluate --config eval.json` reads
    back: by default this call's arguments (a command records its flags as given instead). `say`
    receives one line per step and note; `progress` shows a bar of the generation on stderr.
    The data folder is held for reading until its images and cached figures are read, so no ingest
    replaces it meanwhile.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    notes = skipped_notes(options, inception_weights)
    with locks.reading(data, "`data`"):
        generator = load_generator_for(model, data)
        say(f"model: {generator.describe()}")
        out = Path(output) if output is not None else generator.path / EVAL_FILE
        guard.output_file(
            "`output`",
            out,
            ours=replaceable_evaluation,
            what="an evaluation written by this project",
            inputs=guard.data_inputs("`data`", data),
        )
        request = evaluation_request(
            data,
            options.split,
            options.eval_num,
            options.seed,
            train_limit=options.train_limit,
            inception_weights=inception_weights,
        )
        request["model_fingerprint"] = generator.fingerprint()
        done = read_evaluation(out) if options.skip_if_done else None
        if done is not None and evaluation_is_current(done, request, out, generator.path):
            return EvaluationResult(done["metrics"], out, up_to_date=True, notes=notes)
        real, train = load_evaluation_images(data, options.split, options.train_limit)
        for note in notes:
            say(f"note: {note}")
        inception = load_inception(inception_weights) if inception_weights else None

        say(f"scoring {len(real)} real '{options.split}' images (floor and baselines)...")
        cache = baseline_cache(data, options.split, options.eval_num, options.seed, options.train_limit, inception_weights)
        evaluator = Evaluator(real, train, num=options.eval_num, seed=options.seed, inception=inception, cache=cache)
        if evaluator.num < options.eval_num:
            say(
                f"note: the split holds {len(real)} images: comparing {evaluator.num} generated with {evaluator.num} "
                f"real (the other {evaluator.num} give the floor)."
            )
    with tqdm(total=evaluator.num, desc="generating", unit="img", file=sys.stderr, disable=not progress) as bar:
        # Image i of a seed has the latent `components.latents` gives it, as when sampling.
        images = generate_images(
            lambda indices: generator.images(indices, options.seed),
            np.arange(evaluator.num),
            options.generate_batch,
            progress=bar.update,
        )
    say("scoring the generated images...")
    metrics = evaluator.score(images)

    atomic_write_json(
        out,
        {
            "metrics": metrics,
            "model": str(generator.path),
            "data": str(data),
            **request,
            "train_images_searched": 0 if train is None else len(train),
            "inception_weights": str(inception_weights) if inception_weights else None,
            "notes": list(notes),
            "settings": {"evaluate": settings or call_settings(model, data, options, output, inception_weights)},
            "seconds": round(time.perf_counter() - started, 1),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "tool_versions": tool_versions(),
        },
    )
    return EvaluationResult(metrics, out, up_to_date=False, notes=notes)


def call_settings(
    model: str | os.PathLike,
    data: str | os.PathLike,
    options: EvaluateOptions,
    output: str | os.PathLike | None,
    inception_weights: str | os.PathLike | None,
) -> dict[str, Any]:
    """The settings of a library call of `evaluate_model`, as the command's flags name them: what
    eval.json records for `pipeline.evaluate --config eval.json` to repeat the evaluation."""
    paths = {"model": model, "data": data, "output": output, "inception_weights": inception_weights}
    return {**{name: None if path is None else str(path) for name, path in paths.items()}, **settings_dict(options)}


def load_generator_for(model: str | os.PathLike, data: str | os.PathLike) -> SavedModelGenerator:
    """The SavedModel `model` points at, checked to generate images of the data's size."""
    size = int(read_manifest(data)["image_size"])
    model_dir = resolve_saved_model(model)  # a wrong path fails here, before TensorFlow loads
    generator = SavedModelGenerator(model_dir)
    if generator.image_shape[:2] != (size, size):
        height, width = generator.image_shape[:2]
        raise PipelineError(
            f"{generator.path} generates {height}x{width} images but {data} holds {size}x{size} ones; "
            "evaluate it on data of its own size."
        )
    return generator


def skipped_notes(options: EvaluateOptions, inception_weights: str | os.PathLike | None) -> tuple[str, ...]:
    """One line per metric left out, and why: a figure that silently goes missing misleads. The
    training images are searched for copies unless `train_limit` is 0 or the split scored is the
    training split itself (components.evaluator.load_evaluation_images)."""
    notes = []
    if inception_weights is None:
        notes.append("FID/KID skipped: no --inception-weights given (they are never downloaded).")
    if options.train_limit == 0:
        notes.append("memorisation skipped: --train-limit 0.")
    elif options.split == "train":
        notes.append("memorisation skipped: --split train leaves no held-out images.")
    return tuple(notes)
