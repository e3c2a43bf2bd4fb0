"""Fuzzing with Hypothesis: every CLI's flags, and every reader of a file we write or read, fed
generated bad values. The property everywhere: success, or one `error:` line and a non-zero exit;
never a traceback (`cli` raises it here), never a changed input (hashes before and after).

Flags are fed values no flag should take (huge, negative, nan/inf, empty, not numbers, unicode,
paths to files, folders, missing things and symbolic links), with every other input of the
command missing, so a value the parser lets through stops at the first check instead of starting
work. Files are real ones, written by a tiny ingest, a training (with its evaluation and export)
and a sampling, and a search folder's by the code that writes them (ours, KerasTuner's `Trial`);
then mutated (bytes flipped, cut short, JSON values of wrong types, huge numbers, wrong nesting)
and read back, through the command that reads them where that is cheap. Examples are
derandomized: the same ones run every time. Values that once ended in a traceback are given to
every flag of every command by a test of their own (`EDGE_VALUES`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.artifacts import RunPaths
from pipeline._cli import run_main
from tests.helpers import TINY, Result, cli, snapshot, time_limit

MODULES = ("ingest", "train", "export", "evaluate", "sample", "run")
SECONDS_PER_EXAMPLE = 30  # a generated value that starts real work is a failure, not a hang
TINY_FLAGS = [f"{flag}={value}" for flag, value in zip(TINY[::2], TINY[1::2])]


def fuzz_settings(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def in_process(main: Callable[[list[str]], int], argv: list[str]) -> Result:
    """`main` run as `run_main` runs a CLI, as `cli` does for a module (a traceback raises here)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_main(main, argv, tensorflow=False)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


def assert_clean(result: Result) -> None:
    """Success, or one `error:` line and a non-zero exit; never a traceback."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    if result.returncode:
        assert len(errors) == 1, result.stderr[-3000:]
    else:
        assert errors == [], result.stderr[-3000:]


def assert_kept(before: dict[str, str], after: dict[str, str]) -> None:
    """Every file there was is still there with the same bytes (new files, e.g. a lock beside a
    folder, are not a change to an input)."""
    assert {name: after.get(name) for name in before} == before


def links(folder: Path) -> dict[str, str]:
    """Every symbolic link below `folder` and where it points: a link replaced is a changed input."""
    return {str(p.relative_to(folder)): os.readlink(p) for p in sorted(folder.rglob("*")) if p.is_symlink()}


# -- every CLI's flags ------------------------------------------------------------------------------


def value_flags(module: str) -> list[str]:
    """The flags of `python -m pipeline.<module>` that take a value (its own argparse parser)."""
    import importlib

    parser = importlib.import_module(f"pipeline.{module}").build_parser()
    return sorted(
        max(action.option_strings, key=len)
        for action in parser._actions
        if action.option_strings and action.nargs != 0 and "--help" not in action.option_strings
    )


BAD_SCALARS = [
    "",
    " ",
    "-1",
    "-0",
    "0",
    "-0.5",
    "1e309",
    "-1e309",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e-400",
    "9" * 40,
    "-" + "9" * 40,
    str(2**63),
    str(2**64),
    "1.5",
    "0x10",
    "1_000",
    "abc",
    "12abc",
    "１２",
    "٣",
    "½",
    "😀",
    "ａｂｃ",
    "-",
    "--help-me",
    "true",
    "None",
    "[]",
    "{}",
    "'",
    '"',
    "a b",
]
PATHS = ["file", "folder", "missing", "link-to-file", "link-to-folder", "dangling-link", "file/under", "földer 😀", "-dash", "."]


def user_files(root: Path) -> Path:
    """A user's things the commands are pointed at: a file, folders, links; none may change."""
    user = root / "user"
    (user / "folder").mkdir(parents=True)
    (user / "folder" / "note.txt").write_text("mine")
    (user / "file").write_text("my file")
    (user / "földer 😀").mkdir()
    (user / "földer 😀" / "note.txt").write_text("mine too")
    (user / "-dash").mkdir()
    (user / "link-to-file").symlink_to(user / "file")
    (user / "link-to-folder").symlink_to(user / "folder")
    (user / "dangling-link").symlink_to(user / "nowhere")
    return user


def base_argv(module: str, scratch: Path) -> list[str]:
    """Every input the command reads missing (so nothing heavy can start), outputs in `scratch`."""
    missing = str(scratch / "missing-input")
    return {
        "ingest": [f"--input={missing}", f"--output={scratch / 'out'}", "--quiet"],
        "train": [f"--data={missing}", f"--run={scratch / 'run'}", "--images=8", *TINY_FLAGS, "--quiet"],
        "export": [f"--run={missing}"],
        "evaluate": [f"--model={missing}", f"--data={missing}", f"--output={scratch / 'eval.json'}"],
        "sample": [f"--model={missing}", f"--output={scratch / 'samples'}", "--quiet"],
        "run": [f"--input={missing}", f"--data={scratch / 'data'}", f"--run={scratch / 'run'}", "--images=8", "--quiet"],
    }[module]


def with_flag(argv: list[str], flag: str, value: str) -> list[str]:
    """`argv` (all `--flag=value`) with `flag` given `value` instead, as `--flag=value` so that a
    value starting with `-` is still the flag's; the ingest's --synthetic replaces its --input."""
    drop = {flag, "--input"} if flag == "--synthetic" else {flag}
    return [arg for arg in argv if arg.split("=", 1)[0] not in drop] + [f"{flag}={value}"]


BAD_VALUE = st.one_of(st.sampled_from(BAD_SCALARS), st.sampled_from(PATHS))


@pytest.mark.parametrize("module", MODULES)
def test_every_flag_given_a_bad_value_is_one_error_line_or_success_and_touches_no_user_file(module, tmp_path):
    flags = value_flags(module)

    @fuzz_settings(2 if module in ("ingest", "run") else 4)  # a folder given as --input starts a (short) Beam job
    @given(values=st.fixed_dictionaries({flag: BAD_VALUE for flag in flags}))
    def check(values):
        scratch = Path(tempfile.mkdtemp(dir=tmp_path))
        user = user_files(scratch)
        before, pointing = snapshot(user), links(user)
        for flag, value in values.items():
            argv = with_flag(base_argv(module, scratch), flag, str(user / value) if value in PATHS else value)
            with time_limit(SECONDS_PER_EXAMPLE), contextlib.chdir(scratch):  # an empty path is this folder
                assert_clean(cli(module, *argv))
            assert_kept(before, snapshot(user))
            assert links(user) == pointing, argv

    check()


# Values that once ended in a traceback, given to every flag of every command.
EDGE_VALUES = {
    "--": "Python 3.11's argparse hands `--flag=--` to the flag as [] without calling its type (pipeline/_cli._Parser)",
    "é" * 300: "a name longer than the file system allows: OSError errno 36 wherever the path is first touched "
    "(pipeline/_cli.run_main)",
}


@pytest.mark.parametrize("value", list(EDGE_VALUES), ids=[value[:4] for value in EDGE_VALUES])
@pytest.mark.parametrize("module", MODULES)
def test_every_flag_given_an_edge_value_is_one_error_line(module, value, tmp_path):
    user = user_files(tmp_path)
    before = snapshot(user)
    for flag in value_flags(module):
        with contextlib.chdir(tmp_path):
            assert_clean(cli(module, *with_flag(base_argv(module, tmp_path), flag, value)))
    assert_kept(before, snapshot(user))


# -- pipeline.run hands every value to its stages whole ----------------------------------------------

FOLDER_NAMES = st.text(st.characters(codec="utf-8", exclude_characters="\x00/"), min_size=1, max_size=12).filter(
    lambda name: name not in (".", "..")
)


@fuzz_settings(40)
@given(name=FOLDER_NAMES)
def test_pipeline_run_passes_any_folder_name_to_its_stages_whole(name):
    """A folder named `-faces` (or with spaces, quotes, unicode) reaches each stage whole, as the
    value of its setting (the stages get their settings, not a command line to parse)."""
    import importlib

    from pipeline import _config, run

    stages, data, run_dir = run.plan_command([f"--input={name}", "--tune"], [])
    for stage in stages:
        parser = importlib.import_module(stage.main.__module__).build_parser()
        parsed = _config.parse_command_line(parser, [arg for arg in stage.argv if arg != "--"], tables=stage.tables)
        folders = {
            key: str(value)
            for key, value in vars(parsed).items()
            if key in ("input", "output", "data", "run", "model") and value is not None
        }
        assert set(folders.values()) <= {name, str(data), str(run_dir), str(run_dir / "export" / "samples")}, folders
    assert stages[0].tables["ingest"]["input"] == name


def test_pipeline_run_ingests_a_folder_whose_name_starts_with_a_dash(made):
    """`pipeline.run --input=-faces`: its ingest stage took `-faces` as its input folder (the
    data every reader test below starts from)."""
    manifest = json.loads((made.data / "manifest.json").read_text())
    assert manifest["splits"]["train"]["count"] + manifest["splits"]["eval"]["count"] == 24


# -- every reader of a file we write or read ---------------------------------------------------------


@dataclasses.dataclass
class Made:
    """Real files of each kind, as the commands wrote them."""

    data: Path
    run: Path
    version: Path
    samples: Path
    search: Path


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Made:
    """A tiny ingest (of a folder named `-faces`, as `pipeline.run` hands it to its ingest stage),
    a training of 16 images with one evaluation and its export (with eval.json), sample files; a
    search folder (search.json, a KerasTuner trial.json) and a best_hyperparameters.json written
    by the code that writes them."""
    from pipeline import run as pipeline_run
    from tests.helpers import write_synthetic_faces

    root = tmp_path_factory.mktemp("made")
    data, run = root / "data", root / "run"
    write_synthetic_faces(root / "-faces", 24, size=32)
    with contextlib.chdir(root):  # the ingest stage of `pipeline.run --input=-faces`
        argv = ["--input=-faces", f"--data={data}", "--image-size=32", "--eval-fraction=0.25", "--quiet"]
        ingest = pipeline_run.plan_command(argv, [])[0][0]
        result = in_process(functools.partial(ingest.main, tables=ingest.tables), ingest.argv)
    assert result.returncode == 0, result.stderr[-2000:]
    steps = [
        (
            "train",
            "--data",
            str(data),
            "--run",
            str(run),
            "--images",
            "16",
            *TINY,
            "--checkpoint-every",
            "1",
            "--log-every",
            "1",
            "--eval-every",
            "16",
            "--eval-num",
            "8",
            "--quiet",
        ),
        ("sample", "--model", str(run), "--num", "2", "--output", str(root / "samples"), "--quiet"),
    ]
    for module, *argv in steps:
        result = cli(module, *argv)
        assert result.returncode == 0, result.stderr[-2000:]
    version = max((run / "export" / "generator").iterdir(), key=lambda p: int(p.name))
    return Made(data, run, version, root / "samples", write_search_folder(root / "search"))


def write_search_folder(run: Path) -> Path:
    """A search folder as a search leaves it: search.json, KerasTuner's trial.json, and the
    best_hyperparameters.json of a search that chose a tuned row."""
    import keras_tuner
    from keras_tuner.engine.trial import Trial

    from components.artifacts import atomic_write_json
    from components.config import TrainConfig
    from components.search_folder import prepare_search_folder

    paths = RunPaths(run)
    prepare_search_folder(paths, SEARCH_RECORD, new_search=False)
    hyperparameters = keras_tuner.HyperParameters()
    hyperparameters.Choice("g_lr", [1e-4, TrainConfig().g_lr])
    (paths.tuner / "trial_0").mkdir()
    Trial(hyperparameters, trial_id="0", status="COMPLETED").save(str(paths.tuner / "trial_0" / "trial.json"))
    # the default's learning rate: the file fits the run it sits in
    best = {
        "chosen": "0",
        "reason": "lowest swd_avg",
        "hyperparameters": {"g_lr": TrainConfig().g_lr},
        "config": TrainConfig().to_dict(),
    }
    atomic_write_json(paths.best_hyperparameters, best)
    return run


SEARCH_RECORD = {
    "settings": {"tuner": "random", "max_trials": 3, "trial_images": 64, "executions": 1},
    "space": {"g_lr": [1e-4, 2e-4]},
    "base_config": {"batch_size": 8, "model": {"latent_dim": 8}},
    "evaluation": {"num": 8, "seed": 0},
    "data_fingerprint": "0" * 64,
}


BAD_JSON = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=6),
    st.sampled_from(
        [
            10**400,
            -(10**400),
            1e308,
            -1e308,
            math.nan,
            math.inf,
            -math.inf,
            0.5,
            -1,
            0,
            "",
            "x" * 3000,
            [],
            {},
            [[[]]],
            {"a": {"b": []}},
            [1, "2", None],
            {"": None},
        ]
    ),
)


def node_paths(value: Any, here: tuple = ()) -> Iterator[tuple]:
    """The key path of every node of a JSON value (the root is `()`)."""
    yield here
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from node_paths(child, (*here, key))


def replaced(value: Any, path: tuple, new: Any, delete: bool = False) -> Any:
    """`value` with the node at `path` replaced by `new` (or deleted)."""
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    if delete and len(path) == 1:
        del copy[path[0]]
        return copy
    copy[path[0]] = replaced(copy[path[0]], path[1:], new, delete)
    return copy


@st.composite
def mutated(draw, original: bytes, lines: bool = False) -> bytes:
    """`original` damaged one way: bytes flipped, cut short, or one JSON value (of one line, for
    JSON lines) given a wrong type or value, deleted, or nested one level deeper."""
    how = draw(st.sampled_from(["flip", "truncate", "json", "json", "json"]))
    if how == "flip":
        data = bytearray(original)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if how == "truncate":
        return original[: draw(st.integers(0, len(original) - 1))]
    texts = original.decode().splitlines() if lines else [original.decode()]
    row = draw(st.integers(0, len(texts) - 1))
    value = json.loads(texts[row])
    path = draw(st.sampled_from(list(node_paths(value))))
    change = draw(st.sampled_from(["replace", "replace", "delete", "nest"]))
    if change == "delete" and path:
        value = replaced(value, path, None, delete=True)
    elif change == "nest":
        value = replaced(value, path, [draw(st.sampled_from([{}, []]))])
    else:
        value = replaced(value, path, draw(BAD_JSON))
    texts[row] = json.dumps(value)
    return ("\n".join(texts) + ("\n" if lines else "")).encode()


def fuzz_reader(
    tmp_path: Path,
    source: Path,
    name: str,
    read: Callable[[Path], Result],
    *,
    lines: bool = False,
    ours_may_be_rewritten: bool = False,
    examples: int = 30,
) -> None:
    """Copy the folder `source`, mutate its file `name`, `read` the copy: success or one `error:`
    line, and nothing in the copy changed (on success, a file of ours its command rewrites may
    change: `ours_may_be_rewritten`)."""
    original = (source / name).read_bytes()

    def fresh_copy() -> Path:
        copy = Path(tempfile.mkdtemp(dir=tmp_path)) / source.name
        shutil.copytree(source, copy, symlinks=True)
        return copy

    unharmed = read(fresh_copy())
    assert unharmed.returncode == 0, unharmed.stderr[-2000:]  # the intact file reads: the examples reach the reader

    @fuzz_settings(examples)
    @given(data=st.data())
    def check(data):
        copy = fresh_copy()
        (copy / name).write_bytes(data.draw(mutated(original, lines=lines)))
        before = snapshot(copy)
        with time_limit(SECONDS_PER_EXAMPLE):
            result = read(copy)
        assert_clean(result)
        if not (ours_may_be_rewritten and result.returncode == 0):
            assert_kept(before, snapshot(copy))

    check()


def call(function: Callable[[Path], Any]) -> Callable[[Path], Result]:
    """A reader function run as a command: its `PipelineError` is the one `error:` line."""

    def read(path: Path) -> Result:
        def main(_argv):
            function(path)
            return 0

        return in_process(main, [])

    return read


def test_manifest_json(made, tmp_path):
    from components.records import read_manifest, shard_paths

    fuzz_reader(tmp_path, made.data, "manifest.json", call(lambda data: (read_manifest(data), shard_paths(data, "train"))))


def test_hparams_json(made, tmp_path):
    from components.runfolder import read_run_record

    fuzz_reader(tmp_path, made.run, "hparams.json", call(lambda run: read_run_record(RunPaths(run))))


@pytest.mark.parametrize("name", ["hparams.json", "metrics.jsonl"])
def test_run_files_read_by_export(made, tmp_path, name):
    fuzz_reader(tmp_path, made.run, name, lambda run: cli("export", "--run", str(run)), lines=name.endswith(".jsonl"), examples=2)


def test_metrics_jsonl(made, tmp_path):
    from components.runfolder import last_record, read_metrics

    def read(run: Path):
        read_metrics(run / "metrics.jsonl")
        last_record(run / "metrics.jsonl", "eval", 10**9)

    fuzz_reader(tmp_path, made.run, "metrics.jsonl", call(read), lines=True)


def test_eval_json_read_by_evaluate_skip_if_done(made, tmp_path):
    """pipeline.evaluate --skip-if-done reads the version's eval.json: the same figures are not
    computed again; anything else is computed and written, over an eval.json of ours only."""
    version = made.version.relative_to(made.run)

    def evaluate(run: Path) -> Result:
        return cli("evaluate", "--model", str(run / version), "--data", str(made.data), "--eval-num", "8", "--skip-if-done")

    fuzz_reader(tmp_path, made.run, f"{version}/eval.json", evaluate, ours_may_be_rewritten=True, examples=3)


def test_model_card_json_read_by_export(made, tmp_path):
    """pipeline.export reads the newest version's card to tell whether its checkpoint is exported."""
    version = made.version.relative_to(made.run)
    fuzz_reader(tmp_path, made.run, f"{version}/model_card.json", lambda run: cli("export", "--run", str(run)), examples=2)


def test_samples_json_read_by_sample(made, tmp_path):
    """pipeline.sample resumes into a folder whose samples.json says what it holds."""

    def sample(out: Path) -> Result:
        return cli("sample", "--model", str(made.run), "--num", "2", "--output", str(out), "--quiet")

    fuzz_reader(tmp_path, made.samples, "samples.json", sample, ours_may_be_rewritten=True, examples=8)


def resume_search(run: Path) -> None:
    from components.search_folder import prepare_search_folder

    prepare_search_folder(RunPaths(run), SEARCH_RECORD, new_search=False)


def test_search_json(made, tmp_path):
    fuzz_reader(tmp_path, made.search, "tuner/search.json", call(resume_search), ours_may_be_rewritten=True)


def test_trial_json(made, tmp_path):
    fuzz_reader(tmp_path, made.search, "tuner/trial_0/trial.json", call(resume_search))


def test_best_hyperparameters_json(made, tmp_path):
    from components.config import TrainConfig
    from components.search_report import config_from_best

    fuzz_reader(
        tmp_path,
        made.search,
        "best_hyperparameters.json",
        call(lambda run: config_from_best(TrainConfig(), run / "best_hyperparameters.json")),
    )


def test_best_hyperparameters_json_read_by_train_hparams(made, tmp_path):
    """pipeline.train --hparams FILE on the finished run: a file that does not make this run's
    configuration is refused, else there is nothing more to train."""

    def train(search: Path) -> Result:
        run = shutil.copytree(made.run, search.parent / "run")
        return cli(
            "train",
            "--data",
            str(made.data),
            "--run",
            str(run),
            "--images",
            "16",
            *TINY,
            "--checkpoint-every",
            "1",
            "--log-every",
            "1",
            "--eval-every",
            "16",
            "--eval-num",
            "8",
            "--quiet",
            "--hparams",
            str(search / "best_hyperparameters.json"),
        )

    fuzz_reader(tmp_path, made.search, "best_hyperparameters.json", train, examples=4)
