"""`--config FILE`: one TOML file (a table per stage) or an artifact's own record drives a command;
flags override the file; a wrong key, type or value is one error line naming the file, table and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.artifacts import read_json
from pipeline import _config, ingest, train
from tests.helpers import TINY, cli, ingest_tiny, no_traceback, train_tiny, write_synthetic_faces


def parse_train(*argv: str):
    return _config.parse_command_line(train.build_parser(), list(argv), records=train.recorded_settings)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_toml_file_sets_every_kind_of_setting_and_flags_override_it(tmp_path):
    config = write(
        tmp_path / "pipeline.toml",
        """
[train]
data = "tfrecords/faces"
images = 1000
g_lr = 0.001
d_spectral_norm = false
augment = "color,translation"
precision = "float32"
no_export = true

[search]
tuner = "random"
max_trials = 5
search = ["g_filters=16,32"]

[sample]
num = 3
""",
    )  # other stages' tables ([sample]) are for the other commands
    args = parse_train("--config", str(config))
    options, hparams = train.options_from_args(args), train.config_from_args(args)
    assert (args.data, options.images, options.precision, options.no_export) == ("tfrecords/faces", 1000, "float32", True)
    assert (hparams.g_lr, hparams.model.d_spectral_norm, hparams.augment) == (0.001, False, "color,translation")
    assert (args.tuner, args.max_trials, args.search) == ("random", 5, ["g_filters=16,32"])
    assert args.eval_num == 1024 and hparams.batch_size == 16  # neither flag nor file: the defaults

    args = parse_train("--config", str(config), "--images", "2000", "--d-spectral-norm", "--search", "d_lr=1e-3")
    assert (args.images, args.d_spectral_norm, args.g_lr) == (2000, True, 0.001)
    assert args.search == ["g_filters=16,32", "d_lr=1e-3"]  # a repeatable flag adds to the file's list


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nepoch = 3\n", "[train] epoch: no such setting"),
        ("[search]\nmax_trial = 3\n", "[search] max_trial: no such setting"),
        ('[train]\nimages = "many"\n', "[train] images: must be a whole number, got 'many'"),
        ("[train]\nimages = 0\n", "[train] images: must be at least 1, got 0"),
        ("[train]\ng_lr = true\n", "[train] g_lr: must be a number, got True"),
        ('[train]\nprecision = "float64"\n', "[train] precision: must be one of auto, float32"),
        ("[train]\nno_export = 1\n", "[train] no_export: must be true or false, got 1"),
        ("[trian]\nimages = 3\n", "[trian] is not a stage's table"),
        ("[train\nimages = 3\n", "is not valid TOML"),
    ],
)
def test_a_wrong_key_type_or_value_is_one_error_naming_the_file_table_and_key(tmp_path, text, message):
    config = write(tmp_path / "bad.toml", text)
    result = cli("train", "--data", str(tmp_path / "data"), "--config", str(config))
    assert result.returncode == 2 and result.stderr.count("error:") == 1, result.stderr
    assert str(config) in result.stderr and message in result.stderr, result.stderr
    no_traceback(result)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.toml"]  # refused before anything was written


def test_a_required_flag_may_come_from_the_file(tmp_path):
    config = write(tmp_path / "c.toml", f'[evaluate]\nmodel = "{tmp_path / "model"}"\ndata = "{tmp_path / "data"}"\n')
    result = cli("evaluate", "--config", str(config))
    assert result.returncode == 2 and "--data" in result.stderr and "does not exist" in result.stderr, result.stderr


def test_a_search_s_best_file_is_a_training_configuration(tmp_path):
    best = tmp_path / "best_hyperparameters.json"
    best.write_text(json.dumps({"hyperparameters": {"g_lr": 0.001, "batch_size": 32}, "chosen": "trial 3"}))
    args = parse_train("--data", "d", "--config", str(best))
    assert args.hparams == best
    config = train.config_from_best_file(train.config_from_args(args), args.hparams, quiet=True)
    assert (config.g_lr, config.batch_size) == (0.001, 32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("config")
    write_synthetic_faces(root / "faces", 24, size=32)
    data = ingest_tiny(root / "faces", root / "data")
    return data, train_tiny(data, root / "run", 16)


def test_a_run_is_repeated_from_its_hparams_json_alone(trained, tmp_path):
    _, run = trained
    record = read_json(run / "hparams.json")
    assert record["options"]["images"] == 16 and record["options"]["precision"] == "float32"
    again = cli("train", "--config", str(run / "hparams.json"), "--run", str(tmp_path / "again"), "--quiet")
    assert again.returncode == 0, again.stderr[-2000:]
    repeated = read_json(tmp_path / "again" / "hparams.json")
    assert repeated["hparams"] == record["hparams"] and repeated["options"] == record["options"]
    assert repeated["data"] == record["data"]


def test_every_artifact_records_the_settings_it_was_made_with_and_repeats_from_them(trained, tmp_path):
    data, run = trained
    args = _config.parse_command_line(
        ingest.build_parser(), ["--config", str(data / "manifest.json")], records=ingest.recorded_settings
    )
    assert (args.input, args.output, args.image_size, args.eval_fraction) == (str(data.parent / "faces"), str(data), 32, 0.25)
    card = next(run.glob("export/generator/*/model_card.json"))
    assert read_json(card)["settings"]["export"] == {"run": str(run.resolve()), "checkpoint": "latest"}
    exported = cli("export", "--config", str(card), "--quiet")
    assert exported.returncode == 0 and exported.stdout.strip().startswith(str(run.resolve())), exported.stderr[-2000:]

    samples = tmp_path / "samples"
    assert cli("sample", "--model", str(run), "--num", "3", "--output", str(samples), "--quiet").returncode == 0
    again = cli("sample", "--config", str(samples / "samples.json"))
    assert again.returncode == 0 and "(0 generated, 3 already there)" in again.stdout, again.stderr[-2000:]

    scored = tmp_path / "eval.json"
    evaluate = cli("evaluate", "--model", str(run), "--data", str(data), "--eval-num", "4", "--output", str(scored), "--quiet")
    assert evaluate.returncode == 0 and evaluate.stdout.strip() == str(scored), evaluate.stderr[-2000:]
    assert read_json(scored)["settings"]["evaluate"]["eval_num"] == 4
    args = _config.parse_command_line(__import__("pipeline.evaluate").evaluate.build_parser(), ["--config", str(scored)])
    assert (args.eval_num, args.output, args.model) == (4, scored, str(run))


def test_one_toml_file_drives_pipeline_run_and_paths_may_start_with_a_dash(tmp_path, monkeypatch):
    write_synthetic_faces(tmp_path / "faces", 24, size=32)
    tiny = dict(zip(TINY[::2], TINY[1::2]))
    write(
        tmp_path / "pipeline.toml",
        f"""
[ingest]
input = "faces"
image_size = 32
eval_fraction = 0.25

[train]
images = 16
eval_num = 4
latent_dim = {tiny["--latent-dim"]}
g_filters = {tiny["--g-filters"]}
d_filters = {tiny["--d-filters"]}
batch_size = {tiny["--batch-size"]}
precision = "float32"

[evaluate]
eval_num = 4

[sample]
num = 2
""",
    )
    monkeypatch.chdir(tmp_path)
    result = cli("run", "--config", "pipeline.toml", "--data=-records", "--run=-run", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_json(Path("-records", "manifest.json"))["image_size"] == 32
    record = read_json(Path("-run", "hparams.json"))
    assert record["hparams"]["model"]["latent_dim"] == 8 and record["options"]["images"] == 16
    assert record["options"]["eval_every"] == 3  # a fifth of the budget, as pipeline.run evaluates
    assert sorted(path.name for path in Path("-run", "export", "samples").glob("*.png")) == ["000000.png", "000001.png"]
    evaluation = read_json(next(Path("-run", "export", "generator").glob("*/eval.json")))
    assert evaluation["num_requested"] == 4  # the training's last evaluation, which the evaluate stage found current
    assert Path("-run", "export", "grid.png").is_file()


def test_a_toml_file_and_the_equivalent_flags_give_pipeline_run_the_same_stages(tmp_path, monkeypatch):
    from pipeline import run

    write_synthetic_faces(tmp_path / "faces", 8, size=32)
    write(
        tmp_path / "pipeline.toml",
        '[ingest]\ninput = "faces"\nimage_size = 32\neval_fraction = 0.25\n\n[train]\nimages = 16\neval_num = 4\nseed = 3\n\n'
        "[evaluate]\neval_num = 4\nseed = 3\n\n[sample]\nnum = 2\nseed = 3\n",
    )
    monkeypatch.chdir(tmp_path)
    flags = ["--input", "faces", "--image-size", "32", "--eval-fraction", "0.25", "--images", "16", "--eval-num", "4"]
    from_flags, data, run_dir = run.plan_command([*flags, "--num", "2", "--seed", "3"], [])
    from_file, file_data, file_run = run.plan_command(["--config", "pipeline.toml"], [])
    assert (file_data, file_run) == (data, run_dir) == ("tfrecords/faces", Path("artifacts/faces"))
    assert [(stage.name, stage.tables) for stage in from_file] == [(stage.name, stage.tables) for stage in from_flags]
    train_table = {"images": 16, "eval_num": 4, "seed": 3, "data": data, "run": str(run_dir), "eval_every": 3}
    assert from_file[1].tables["train"] == train_table  # a fifth of the budget between evaluations, as pipeline.run sets
