"""`components.evaluation.evaluate_model` called as a library: no command line, no printing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from components.errors import PipelineError
from components.evaluate_options import EvaluateOptions
from components.evaluation import evaluate_model
from tests.test_evaluate_cli import save_tiny_generator


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run folder whose export/generator/1/ holds a tiny 32x32 generator of the exporter's contract."""
    run = tmp_path_factory.mktemp("run")
    save_tiny_generator(run / "export" / "generator" / "1")
    return run


def test_the_figures_are_returned_written_beside_the_model_and_reused_when_up_to_date(run, tiny_records):
    from pipeline._config import parse_command_line
    from pipeline.evaluate import build_parser

    lines: list[str] = []
    options = EvaluateOptions(eval_num=8, train_limit=20, generate_batch=3, skip_if_done=True)
    result = evaluate_model(run, tiny_records, options, say=lines.append)

    eval_json = run / "export" / "generator" / "1" / "eval.json"
    written = json.loads(eval_json.read_text())
    assert result.path == eval_json and not result.up_to_date
    assert result.metrics == written["metrics"] and result.metrics["num_images"] == 8
    assert {"swd_32", "swd_16", "swd_avg", "swd_avg_floor", "msssim", "msssim_real", "memorisation_copy_fraction"} <= set(
        result.metrics
    )
    assert "fid" not in result.metrics and all(np.isfinite(value) for value in result.metrics.values())
    assert result.notes == ("FID/KID skipped: no --inception-weights given (they are never downloaded).",)
    assert written["notes"] == list(result.notes) and written["train_images_searched"] == 20
    assert lines[0].startswith(f"model: {eval_json.parent}") and lines[-1] == "scoring the generated images..."

    # The call's own settings are recorded, and the command reads them back to repeat it.
    args = parse_command_line(build_parser(), ["--config", str(eval_json)])
    assert (args.model, args.data, args.output, args.eval_num, args.train_limit) == (str(run), str(tiny_records), None, 8, 20)

    # The same request again: the file is returned as it is, nothing is scored or written.
    stamp, lines[:] = eval_json.stat().st_mtime_ns, []
    again = evaluate_model(run, tiny_records, options, say=lines.append)
    assert again.up_to_date and again.path == eval_json and again.metrics == result.metrics and again.notes == result.notes
    assert eval_json.stat().st_mtime_ns == stamp and [line.split(" (")[0] for line in lines] == [f"model: {eval_json.parent}"]


def test_a_model_of_another_image_size_is_a_pipeline_error_and_nothing_is_written(tmp_path, tiny_records):
    model = save_tiny_generator(tmp_path / "small", size=16)
    with pytest.raises(
        PipelineError, match=r"generates 16x16 images but .* holds 32x32 ones; evaluate it on data of its own size"
    ):
        evaluate_model(model, tiny_records, EvaluateOptions(eval_num=4), output=tmp_path / "eval.json")
    assert not (tmp_path / "eval.json").exists() and not (model / "eval.json").exists()
