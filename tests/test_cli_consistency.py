"""Every command speaks one language: a concept has one flag name and one default wherever it
appears, no abbreviation is accepted, and a bad command line is a short usage and one error."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import types

import pytest

from components.errors import PipelineError
from pipeline import _cli
from tests.helpers import cli

COMMANDS = ("ingest", "train", "export", "evaluate", "sample", "run")

# Flags whose default differs on purpose: pipeline.run evaluates its training every fifth of the
# budget (so its export is the best checkpoint), a bare pipeline.train only when asked.
DIFFERENT_ON_PURPOSE = {"--eval-every"}

# Names that meant the same as another command's flag; each is now an error where it was a flag.
RENAMED = [
    ("evaluate", "--num", "--eval-num"),
    ("run", "--num-samples", "--num"),
    ("evaluate", "--batch-size", "--generate-batch"),
    ("sample", "--batch-size", "--generate-batch"),
    ("evaluate", "--out", "--output"),
    ("sample", "--out", "--output"),
    ("train", "--new-run", "--overwrite"),
    ("train", "--new-search", "--overwrite-search"),
]


# What each command requires, so that the flag under test is the only thing wrong.
REQUIRED = {
    "train": ["--data", "d"],
    "export": ["--run", "r"],
    "evaluate": ["--model", "m", "--data", "d"],
    "sample": ["--model", "m"],
}


def parser(command: str) -> argparse.ArgumentParser:
    return importlib.import_module(f"pipeline.{command}").build_parser()


def flags(command: str) -> dict[str, argparse.Action]:
    """Every long flag of `command` and its action (the negative form of a --x/--no-x pair aside)."""
    return {name: action for action in parser(command)._actions for name in action.option_strings if name.startswith("--")}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_quiet_and_refuses_abbreviations(command):
    assert "--quiet" in flags(command)
    assert parser(command).allow_abbrev is False


def test_an_abbreviated_flag_is_an_error():
    result = cli("train", "--data", "d", "--epoch", "3")
    assert result.returncode == 2 and "unrecognized arguments: --epoch 3" in result.stderr, result.stderr


def test_one_flag_name_has_one_default_everywhere():
    defaults: dict[str, dict[str, object]] = {}
    for command in COMMANDS:
        for name, action in flags(command).items():
            if name != "--help":
                defaults.setdefault(name, {})[command] = action.default
    differing = {name: by_command for name, by_command in defaults.items() if len(set(map(repr, by_command.values()))) > 1}
    assert set(differing) <= DIFFERENT_ON_PURPOSE, differing
    shared = {name for name, by_command in defaults.items() if len(by_command) > 1}
    assert {"--eval-num", "--eval-fraction", "--max-trials", "--images", "--seed", "--quiet", "--output"} <= shared


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_says_what_it_does(command):
    undocumented = [name for name, action in flags(command).items() if not (action.help or "").strip()]
    assert undocumented == []


@pytest.mark.parametrize(("command", "old", "new"), RENAMED)
def test_renamed_flags_exist_and_the_old_names_are_errors(command, old, new):
    assert new in flags(command) and old not in flags(command)
    result = cli(command, *REQUIRED.get(command, []), old, "1")
    assert result.returncode == 2 and f"unrecognized arguments: {old}" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("ingest", ["--bogus"]),
        ("train", []),
        ("export", []),
        ("evaluate", ["--model", "m"]),
        ("sample", ["--model", "m", "--num", "zero"]),
        ("run", ["--images", "0"]),
    ],
)
def test_a_bad_command_line_is_a_short_usage_and_one_error_line(command, argv):
    result = cli(command, *argv)
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) <= 3, result.stderr
    assert lines[0].startswith(f"usage: python -m pipeline.{command} ") and "--help" in lines[0]
    assert sum(line.startswith("error: ") for line in lines) == 1, result.stderr
    assert result.stdout == ""


def test_the_train_flags_are_the_configurations_fields():
    """Every setting of the training's configurations has its flag, of the same default."""
    from components.config import TrainConfig
    from components.model import ModelConfig
    from components.search_space import SearchSettings
    from components.train_options import TrainOptions

    actions = {action.dest: action for action in parser("train")._actions}
    assert {field.name: field.default for field in dataclasses.fields(TrainOptions)} == {
        field.name: actions[field.name].default for field in dataclasses.fields(TrainOptions)
    }
    hyperparameters = {field.name for field in dataclasses.fields(TrainConfig)} - {"model"}
    hyperparameters |= {field.name for field in dataclasses.fields(ModelConfig)} - {"image_size"}  # the data's
    # --seed, --tune-budget, and --images / --epochs (the final training's images):
    search = {field.name for field in dataclasses.fields(SearchSettings)} - {"seed", "budget_seconds", "final_images"}
    assert hyperparameters | search <= set(actions)


def test_a_setting_in_backticks_is_printed_as_a_flag_of_the_command_being_run(monkeypatch):
    """A message names settings the library's way (components.errors); the command line prints each
    that is a flag of its command as that flag, looked up by the option's `dest`."""

    def build_parser():
        parser = argparse.ArgumentParser()
        parser.add_argument("--overwrite", action="store_true")
        parser.add_argument("--no-dedupe", dest="dedupe", action="store_false")  # a dest that is not the flag's name
        parser.add_argument("--mirror", action=argparse.BooleanOptionalAction)
        return parser

    def main(argv=None):
        return 0

    monkeypatch.setitem(sys.modules, "a_command", types.SimpleNamespace(build_parser=build_parser))
    main.__module__ = "a_command"
    flags = _cli.flags_of(main)
    message = "pass `overwrite`, `dedupe`, `mirror`; `eval_num` is not a flag; run `python -m pipeline.ingest --input <dir>`"
    assert _cli.name_flags(message, flags) == (
        "pass --overwrite, --no-dedupe, --mirror; `eval_num` is not a flag; run `python -m pipeline.ingest --input <dir>`"
    )
    sample = _cli.flags_of(importlib.import_module("pipeline.sample").main)
    assert _cli.name_flags("`output` and `overwrite`", sample) == "--output and `overwrite`"  # sample has no --overwrite


def test_a_library_error_names_the_setting_and_the_command_line_names_the_flag(tmp_path):
    from components.sampler import check_outputs, claim_output_folder

    model, out = tmp_path / "model", tmp_path / "samples"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"")  # found as a SavedModel; the outputs are refused before it loads
    grid = out / "grid.png"
    with pytest.raises(PipelineError) as refused:
        check_outputs(model, out, grid)
    assert str(refused.value).startswith(f"`grid` {grid} lies inside `output` {out}, which holds only sample files")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"mine")
    with pytest.raises(PipelineError, match=r"^`output` .* exists and was not written by pipeline\.sample") as refused:
        claim_output_folder(tmp_path / "photos", {}, set())
    assert "--" not in str(refused.value)

    result = cli("sample", "--model", str(model), "--output", str(out), "--grid", str(grid))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: --grid {grid} lies inside --output {out}, which holds only sample files")
