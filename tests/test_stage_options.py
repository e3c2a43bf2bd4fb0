"""Every stage's settings are one typed object (components.settings): its flags are built from the
object's fields, a configuration file's table fills the same object, a library call names the
setting it refuses and the command line names the flag of it."""

from __future__ import annotations

import argparse
import importlib

import pytest

from components.errors import PipelineError
from components.evaluate_options import EvaluateOptions
from components.exporter import ExportOptions
from components.ingest_options import IngestOptions
from components.sampler import SampleOptions
from components.search_settings import SearchSettings
from components.settings import setting_fields, settings_dict
from components.train_options import TrainOptions
from pipeline import _cli, _config, ingest, run
from tests.helpers import cli, no_traceback

# Each command's flags that are not settings of its options: paths, the source, what it prints.
NOT_SETTINGS = {
    "ingest": {"config", "input", "synthetic", "seed", "output", "no_dedupe", "overwrite", "quiet"},
    "export": {"config", "run", "quiet"},
    "evaluate": {"config", "model", "data", "inception_weights", "output", "quiet"},
    "sample": {"config", "model", "output", "grid", "quiet"},
}
OPTIONS = {"ingest": IngestOptions, "export": ExportOptions, "evaluate": EvaluateOptions, "sample": SampleOptions}
REQUIRED = {"ingest": [], "export": ["--run", "r"], "evaluate": ["--model", "m", "--data", "d"], "sample": ["--model", "m"]}


def actions(command: str) -> dict[str, argparse.Action]:
    parser = importlib.import_module(f"pipeline.{command}").build_parser()
    return {action.dest: action for action in parser._actions if action.option_strings and action.dest != "help"}


def defaults(options: type) -> dict[str, object]:
    return {field.name: field.default for field in setting_fields(options)}


@pytest.mark.parametrize("command", OPTIONS)
def test_a_stage_s_flags_are_its_options_fields(command):
    flags = actions(command)
    fields = defaults(OPTIONS[command])
    if command == "ingest":  # --no-dedupe switches the setting dedupe off
        assert fields.pop("dedupe") is True and flags["no_dedupe"].default is False
    assert set(flags) - NOT_SETTINGS[command] == set(fields)
    assert {name: flags[name].default for name in fields} == fields
    helps = {field.name: field.metadata["setting"]["help"] for field in setting_fields(OPTIONS[command])}
    assert {name: flags[name].help for name in fields} == {name: helps[name] for name in fields}  # declared once


def test_the_search_flags_are_the_search_settings_fields():
    flags = actions("train")
    fields = defaults(SearchSettings)
    assert set(fields) == {
        "tuner",
        "trial_images",
        "trial_image_size",
        "score_last",
        "executions_per_trial",
        "hyperband_max_epochs",
        "hyperband_factor",
    }
    assert {name: flags[name].default for name in fields} == fields
    assert flags["max_trials"].default is None  # its default depends on --tune-budget (pipeline._search)


@pytest.mark.parametrize(
    ("make", "setting"),
    [
        (lambda: IngestOptions(eval_fraction=1.0), "eval_fraction must be in [0, 1), got 1.0"),
        (lambda: IngestOptions(image_size=2), "image_size must be a whole number from 4 to 4,096, got 2"),
        (lambda: ExportOptions(checkpoint="first"), "checkpoint must be one of latest, best, got 'first'"),
        (lambda: EvaluateOptions(eval_num=2), "eval_num must be a whole number from 4 to 100,000, got 2"),
        (lambda: SampleOptions(num=0), "num must be a whole number from 1 to"),
        (lambda: SampleOptions(truncation=0.0), "truncation must be in (0, 100], got 0.0"),
        (lambda: SearchSettings(score_last=0), "score_last must be a whole number from 1 to 100, got 0"),
        (lambda: SearchSettings(max_trials=2), "max_trials must be at least 3"),
        (lambda: TrainOptions(eval_num=2), "eval_num must be a whole number from 4"),
    ],
)
def test_a_library_call_with_a_bad_value_names_the_setting_not_a_flag(make, setting):
    with pytest.raises(PipelineError) as raised:
        make()
    assert str(raised.value).startswith(setting) and "--" not in str(raised.value), raised.value


@pytest.mark.parametrize(
    ("command", "argv", "line"),
    [
        ("ingest", ["--synthetic", "5", "--eval-fraction", "1"], "error: --eval-fraction must be in [0, 1), got 1.0."),
        ("ingest", ["--synthetic", "5", "--image-size", "2"], "error: argument --image-size: must be at least 4, got 2"),
        ("export", ["--run", "r", "--checkpoint", "first"], "error: argument --checkpoint: invalid choice: 'first'"),
        ("evaluate", ["--model", "m", "--data", "d", "--eval-num", "2"], "error: argument --eval-num: must be at least 4, got 2"),
        ("sample", ["--model", "m", "--output", "o", "--num", "0"], "error: argument --num: must be at least 1, got 0"),
        ("sample", ["--model", "m", "--grid", "g.png", "--truncation", "0"], "error: argument --truncation: must be in (0, 100]"),
        ("train", ["--data", "d", "--score-last", "0"], "error: argument --score-last: must be at least 1, got 0"),
    ],
)
def test_the_command_line_names_the_flag_in_one_error_line(command, argv, line, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli(command, *argv)
    errors = [text for text in result.stderr.splitlines() if text.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and errors[0].startswith(line), result.stderr
    no_traceback(result)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_a_setting_error_from_a_file_names_the_flag_too(tmp_path, monkeypatch):
    """A value every flag check allows but the options refuse (an eval split of everything)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text("[ingest]\nsynthetic = 5\neval_fraction = 1.0\n")
    result = cli("ingest", "--config", "c.toml")
    assert result.returncode == 2 and result.stderr.strip() == "error: --eval-fraction must be in [0, 1), got 1.0.", result.stderr


# Every setting of each stage at a value other than its default, as a configuration file's table.
TABLES = {
    "ingest": {
        "image_size": 32,
        "resize": "pad",
        "min_size": 8,
        "eval_fraction": 0.25,
        "shards": 3,
        "max_pixels": 1000,
        "no_dedupe": True,
    },
    "export": {"checkpoint": "best"},
    "evaluate": {"split": "train", "eval_num": 8, "seed": 3, "generate_batch": 16, "train_limit": 0, "skip_if_done": True},
    "sample": {"num": 5, "format": "npz", "seed": 2, "generate_batch": 4, "truncation": 1.5, "grid_count": 4, "workers": 1},
}


@pytest.mark.parametrize("command", TABLES)
def test_a_stage_s_toml_table_round_trips_through_its_options(command, tmp_path):
    table = TABLES[command]
    lines = [f"{key} = {str(value).lower() if isinstance(value, bool) else repr(value)}" for key, value in table.items()]
    config = tmp_path / "pipeline.toml"
    config.write_text(f"[{command}]\n" + "\n".join(lines).replace("'", '"') + "\n")
    parser = importlib.import_module(f"pipeline.{command}").build_parser()
    args = _config.parse_command_line(parser, [*REQUIRED[command], "--config", str(config)])
    options = ingest.ingest_options(args) if command == "ingest" else _cli.options_from_args(OPTIONS[command], args)
    expected = {key: value for key, value in table.items() if key != "no_dedupe"}
    if command == "ingest":
        expected["dedupe"] = not table["no_dedupe"]
    assert settings_dict(options) == expected
    assert options == OPTIONS[command](**expected)


def stage_options(stage: run.Stage) -> dict[str, object]:
    """The typed options a stage of `pipeline.run` makes of the settings it is handed."""
    module = importlib.import_module(stage.main.__module__)
    args = _config.parse_command_line(module.build_parser(), [], tables=stage.tables)
    command = stage.main.__module__.rsplit(".", 1)[1]
    if command == "train":
        return {"train": _cli.options_from_args(TrainOptions, args), "data": args.data, "run": args.run}
    options = ingest.ingest_options(args) if command == "ingest" else _cli.options_from_args(OPTIONS[command], args)
    return {command: options, **vars(args)}


def test_pipeline_run_hands_each_stage_its_typed_options_and_dash_paths_stay_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "faces").mkdir()
    argv = ["--input", "faces", "--data=-records", "--run=-run", "--epochs", "2.5", "--eval-num", "8", "--eval-fraction", "0.2"]
    stages, data, run_dir = run.plan_command(argv, [])
    ingest, train, evaluate, sample = (stage_options(stage) for stage in stages)
    assert ingest["ingest"] == IngestOptions(eval_fraction=0.2) and (ingest["input"], ingest["output"]) == ("faces", "-records")
    assert train["train"] == TrainOptions(epochs=2.5, eval_num=8)  # --epochs: no --images budget, no default eval_every
    assert (train["data"], str(train["run"])) == ("-records", "-run")
    assert evaluate["evaluate"] == EvaluateOptions(eval_num=8, skip_if_done=True)
    assert (evaluate["data"], evaluate["model"]) == ("-records", "-run")
    assert sample["sample"] == SampleOptions() and str(sample["output"]) == "-run/export/samples"
    assert (data, str(run_dir)) == ("-records", "-run")


def test_pipeline_run_hands_the_search_its_budget_in_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "faces").mkdir()
    stages, _, _ = run.plan_command(["--input", "faces", "--tune", "--tune-budget", "6", "--trial-images", "500"], [])
    assert stages[1].tables["search"] == {"tune_budget": 6.0, "trial_images": 500}
    for bad in ("0", "101", "nan"):
        result = cli("run", "--input", "faces", "--tune", "--tune-budget", bad)
        assert result.returncode == 2 and "--tune-budget" in result.stderr, result.stderr


def test_pipeline_run_takes_the_budget_as_images_or_epochs_not_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text("[train]\nimages = 1000\n")
    stages, _, _ = run.plan_command(["--demo", "--config", "c.toml", "--epochs", "3"], [])
    assert stage_options(stages[1])["train"].budget(100) == 300  # the flag's budget replaces the file's
    result = cli("run", "--demo", "--images", "10", "--epochs", "3")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr, result.stderr
