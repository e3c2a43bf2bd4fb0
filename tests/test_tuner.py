"""The KerasTuner search (components.tuner and `python -m pipeline.train --tune`).

Every search here is tiny: 32x32 images, 4/8 filters, 64-128 images per trial, float32 (exact
and repeatable); a trial takes about two seconds. Every search first trains the default
configuration (`BASE`, the same tiny networks) with two seeds: its row comes first in the table.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
from PIL import Image

from components.artifacts import RunPaths, read_json, read_jsonl
from components.config import TrainConfig, recipe_config
from components.errors import PipelineError
from components.model import ModelConfig
from components.search_report import config_from_best, format_table
from components.search_space import (
    DIFF_AUGMENT,
    SearchSettings,
    apply_values,
    load_space_file,
    make_space,
    parse_space_override,
    search_role,
)
from components.search_run import run_search

BASE = TrainConfig(model=ModelConfig(latent_dim=16, g_filters=4, d_filters=8), batch_size=32)
TINY = [
    "g_filters=4",
    "d_filters=8",
    "d_lr=2e-4",
    "beta_1=0.5",
    "batch_size=32",
    "d_spectral_norm=false",
    "r1_gamma=0.1",
    "augment=",
]
# ^ everything fixed but what a test adds
TRAIN_OPTIONS = {"precision": "float32"}
ABSURD_LR = "1e30"  # Adam moves every weight by ~lr per step: NaN within two steps


class Evaluator:
    """Counts the evaluations (one per trained trial here); can raise Ctrl-C at a given call."""

    def __init__(self, evaluate, interrupt_at: int | None = None):
        self.evaluate, self.interrupt_at, self.calls = evaluate, interrupt_at, 0

    def __call__(self, generator):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return self.evaluate(generator)


@pytest.fixture(scope="module")
def evaluate(tiny_records):
    from components.evaluator import TrainingEvaluator

    return TrainingEvaluator(tiny_records, num=16, seed=0)


def tiny_space(*entries: str) -> dict:
    return make_space(BASE, None, [parse_space_override(entry) for entry in [*TINY, *entries]])


def search(data, run, space, settings, evaluate, **kwargs):
    return run_search(
        BASE, space, data, run, settings, evaluate_fn=evaluate, train_options=TRAIN_OPTIONS, verbose=False, **kwargs
    )


@pytest.fixture(scope="module")
def diverging_search(tmp_path_factory, tiny_records, evaluate):
    """A random search over g_lr in {2e-4, absurd}: the space holds two points, so two trials
    (after the default's two trainings)."""
    run = tmp_path_factory.mktemp("search") / "run"
    space = tiny_space(f"g_lr=2e-4,{ABSURD_LR}")
    settings = SearchSettings(tuner="random", max_trials=5, trial_images=64)
    result = search(tiny_records, run, space, settings, evaluate)
    return run, space, settings, result


# -- the search space -----------------------------------------------------------------------------


def test_space_overrides_parse_choices_ranges_and_fixed_values():
    assert parse_space_override("g_filters=16,32,64") == ("g_filters", [16, 32, 64])
    assert parse_space_override("g-lr=5e-5..1e-3:log") == ("g_lr", {"min": 5e-5, "max": 1e-3, "sampling": "log"})
    assert parse_space_override("beta_1=0.5") == ("beta_1", 0.5)
    assert parse_space_override("train_step=dcgan,seed") == ("train_step", ["dcgan", "seed"])
    assert parse_space_override("d_spectral_norm=true,false") == ("d_spectral_norm", [True, False])
    for bad, message in [
        ("g_filters", "NAME=SPEC"),
        ("seed=1,2", "cannot be searched"),
        ("image_size=32", "cannot be searched"),
        ("g_filters=16,3.5", "not a valid int"),
        ("g_lr=fast", "not a valid float"),
        ("d_minibatch_std=maybe", "not a valid bool"),
    ]:
        with pytest.raises(PipelineError, match=message):
            parse_space_override(bad)


def test_make_space_layers_defaults_file_and_command_line(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(
        '{"g_filters": [8, 16], "beta_1": 0.5, "label_smoothing": {"min": 0.0, "max": 0.2}, '
        '"augment": ["", "color,translation"], "d_spectral_norm": [true, false]}'
    )
    space = make_space(BASE, load_space_file(path), [("g_filters", [4])])
    assert space["g_filters"] == [4]  # the command line beats the file
    assert space["beta_1"] == [0.5]  # a single value is fixed
    assert space["label_smoothing"] == {"min": 0.0, "max": 0.2, "sampling": "linear"}
    assert space["augment"] == ["", "color,translation"] and space["d_spectral_norm"] == [True, False]
    assert space["d_filters"] == [4, 8, 16] and space["g_lr"] == {"min": BASE.g_lr / 2, "max": BASE.g_lr * 2, "sampling": "log"}

    for entries, message in [
        ([("beta_1", 1.5)], "beta_1: 1.5 is not a valid value"),
        ([("g_lr", {"min": 0.0, "max": 1e-3, "sampling": "log"})], "log sampling needs min > 0"),
        ([("d_lr", {"min": 1e-3, "max": 1e-4})], "must be below max"),
        ([("g_filters", [])], "empty"),
        ([("loss", {"min": 0, "max": 1})], "a range is"),
        ([("d_spectral_norm", [1, 0])], "choices must be bools"),
    ]:
        with pytest.raises(PipelineError, match=message):
            make_space(BASE, None, entries)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(PipelineError, match="broken.json is not valid JSON"):
        load_space_file(tmp_path / "broken.json")


def test_hyperband_epochs_are_units_of_trial_images_and_roles_follow_kerastuner_variables():
    settings = SearchSettings(tuner="hyperband", trial_images=900, hyperband_max_epochs=9)
    assert settings.trial_budget({"tuner/epochs": 1}) == 100
    assert settings.trial_budget({"tuner/epochs": 9}) == 900
    assert SearchSettings(trial_images=900).trial_budget({}) == 900
    with pytest.raises(PipelineError, match="tuner must be one of"):
        SearchSettings(tuner="grid")

    assert search_role({}) == "single"
    address = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"}
    assert search_role({**address, "KERASTUNER_TUNER_ID": "chief"}) == "chief"
    assert search_role({**address, "KERASTUNER_TUNER_ID": "tuner1"}) == "worker"
    with pytest.raises(PipelineError, match="KERASTUNER_TUNER_ID"):
        search_role({"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"})


# -- a search -------------------------------------------------------------------------------------


def test_tiny_search_writes_best_file_and_table_matching_the_trials(diverging_search):
    run, _, _, result = diverging_search
    paths = RunPaths(run)
    rows = result.rows
    assert read_json(paths.tuner / "trials.json") == rows
    default, trials = rows[0], rows[1:]
    assert default["trial_id"] == "default" and default["status"] == "COMPLETED" and len(default["executions"]) == 2
    assert sorted(row["status"] for row in trials) == ["COMPLETED", "FAILED"]
    good = next(row for row in trials if row["status"] == "COMPLETED")
    bad = next(row for row in trials if row["status"] == "FAILED")

    # The table's numbers are KerasTuner's (trial.json) and the trial's own result.
    trial_json = read_json(paths.tuner / f"trial_{good['trial_id']}" / "trial.json")
    assert good["swd_avg"] == pytest.approx(trial_json["score"])
    assert good["swd_avg"] == pytest.approx(read_json(paths.tuner / f"trial_{good['trial_id']}" / "result.json")["swd_avg"])
    assert good["hyperparameters"] == {
        "g_filters": 4,
        "d_filters": 8,
        "g_lr": 2e-4,
        "d_lr": 2e-4,
        "beta_1": 0.5,
        "batch_size": 32,
        "d_spectral_norm": False,
        "r1_gamma": 0.1,
        "augment": "",
    }
    assert good["images"] == 64 and good["seconds"] > 0
    evals = [
        r for r in read_jsonl(paths.tuner / f"trial_{good['trial_id']}" / "execution-0" / "metrics.jsonl") if r["kind"] == "eval"
    ]
    assert evals[-1]["images_seen"] == 64 and good["swd_avg"] == pytest.approx(
        sum(r["swd_avg"] for r in evals[-2:]) / len(evals[-2:])
    )
    grid = Image.open(good["grid"])
    assert grid.size == (8 * 34 + 2, 8 * 34 + 2)  # 64 images of 32 px, 2 px apart

    # The diverged trial is failed, with the trainer's reason, and did not stop the search.
    assert bad["hyperparameters"]["g_lr"] == float(ABSURD_LR)
    assert bad["swd_avg"] is None and bad["grid"] is None
    assert "training diverged" in bad["reason"]
    assert read_json(paths.tuner / f"trial_{bad['trial_id']}" / "trial.json")["status"] == "FAILED"

    best = read_json(paths.best_hyperparameters)
    assert best == result.best
    assert best["best_trial"]["trial_id"] == good["trial_id"] and best["best_trial"]["swd_avg"] == good["swd_avg"]
    chosen = good if best["chosen"] == "trial" else default
    assert best["trial_id"] == chosen["trial_id"] and best["swd_avg"] == chosen["swd_avg"]
    expected = apply_values(BASE, best["hyperparameters"])
    assert best["config"] == dataclasses.replace(expected, model=dataclasses.replace(expected.model, image_size=None)).to_dict()

    table = format_table(rows, best["trial_id"]).splitlines()
    assert table[0].split()[:5] == ["trial", "status", "swd_avg", "seconds", "images"]
    assert any(line.startswith(f"*{chosen['trial_id']} ") and "COMPLETED" in line for line in table)
    assert any(line.startswith(f"trial {bad['trial_id']} failed: training diverged") for line in table)


def test_rerunning_a_finished_search_trains_nothing(diverging_search, tiny_records, evaluate):
    run, space, settings, result = diverging_search
    counting = Evaluator(evaluate)
    again = search(tiny_records, run, space, settings, counting)
    assert counting.calls == 0
    assert again.rows == result.rows and again.best == result.best


def test_a_changed_search_is_refused_and_new_search_starts_over(diverging_search, tiny_records, evaluate, tmp_path):
    run, space, settings, _ = diverging_search
    with pytest.raises(PipelineError, match="trial_images: 64 before, 128 now.*`overwrite_search`"):
        search(tiny_records, run, space, dataclasses.replace(settings, trial_images=128), evaluate)
    with pytest.raises(PipelineError, match="space"):
        search(tiny_records, run, tiny_space("g_lr=1e-4"), settings, evaluate)

    fresh = tmp_path / "run"
    fixed = tiny_space("g_lr=2e-4")
    search(tiny_records, fresh, fixed, SearchSettings(tuner="random", max_trials=3, trial_images=32), evaluate)
    result = search(
        tiny_records, fresh, fixed, SearchSettings(tuner="random", max_trials=3, trial_images=64), evaluate, new_search=True
    )
    assert [row["images"] for row in result.rows] == [64, 64]
    assert not (fresh / "tuner" / "trial_0" / "execution-0" / "checkpoints" / "ckpt-1.index").exists()  # the 32-image run is gone


def test_an_interrupted_search_resumes_without_redoing_finished_trials(tiny_records, evaluate, tmp_path):
    run = tmp_path / "run"
    space = tiny_space("g_lr=1e-4,2e-4,3e-4")
    settings = SearchSettings(tuner="bayesian", max_trials=5, trial_images=64, seed=3)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during the second trial's evaluation (after the default's two)
        search(tiny_records, run, space, settings, Evaluator(evaluate, interrupt_at=4))
    tuner = RunPaths(run).tuner
    first = tuner / "trial_0" / "result.json"
    finished = first.read_bytes()
    assert not (tuner / "trial_1" / "result.json").exists()
    interrupted = read_json(tuner / "trial_1" / "trial.json")["hyperparameters"]["values"]

    counting = Evaluator(evaluate)
    result = search(tiny_records, run, space, settings, counting)
    assert counting.calls == 2  # trial 1 again, trial 2; not trial 0, nor the default's row
    assert first.read_bytes() == finished
    assert [row["trial_id"] for row in result.rows] == ["default", "0", "1", "2"]
    assert all(row["status"] == "COMPLETED" for row in result.rows)
    assert result.rows[2]["hyperparameters"] == interrupted  # the same trial was run again


def test_hyperband_continues_the_better_trial_from_its_checkpoint(tiny_records, evaluate, tmp_path):
    run = tmp_path / "run"
    space = tiny_space("g_lr=1e-4,5e-4,1e-3")
    # max_epochs 2, factor 2: two trials of 1 epoch (64 images), then the better one goes on to 2.
    settings = SearchSettings(tuner="hyperband", max_trials=5, trial_images=128, hyperband_max_epochs=2, hyperband_factor=2)
    rows = search(tiny_records, run, space, settings, evaluate).rows[1:]  # the default's row: 128 images
    assert [row["images"] for row in rows] == [64, 64, 128]
    better = min(rows[:2], key=lambda row: row["swd_avg"])
    assert rows[2]["continues"] == better["trial_id"]
    assert rows[2]["hyperparameters"] == better["hyperparameters"]

    tuner = RunPaths(run).tuner
    earlier = read_jsonl(tuner / f"trial_{better['trial_id']}" / "execution-0" / "metrics.jsonl")
    continued = read_jsonl(tuner / "trial_2" / "execution-0" / "metrics.jsonl")
    assert continued[: len(earlier)] == earlier  # picked up where the earlier trial stopped
    assert max(record["images_seen"] for record in continued) == 128
    assert max(record["images_seen"] for record in earlier) == 64  # the earlier trial is untouched


def test_best_file_gives_back_the_best_configuration(diverging_search, tmp_path):
    run, _, _, result = diverging_search
    path = RunPaths(run).best_hyperparameters
    config, notes = config_from_best(BASE, path)
    chose_default = ["the search chose its default configuration"] if result.best["chosen"] == "default" else []
    assert config == apply_values(BASE, result.best["hyperparameters"])
    assert [note.split(" (")[0] for note in notes] == chose_default

    other = dataclasses.replace(BASE, batch_size=64)
    config, notes = config_from_best(other, path)
    assert config.batch_size == 64 and config.g_lr == result.best["config"]["g_lr"]
    assert notes[len(chose_default) :] == ["batch_size is 64 here but 32 in the search's best configuration"]

    (tmp_path / "bad.json").write_text('{"hyperparameters": {"colour": 1}}')
    with pytest.raises(PipelineError, match="bad.json sets unknown hyperparameter"):
        config_from_best(BASE, tmp_path / "bad.json")
    with pytest.raises(PipelineError, match="missing.json does not exist"):
        config_from_best(BASE, tmp_path / "missing.json")


# -- the command line -----------------------------------------------------------------------------


def tune_args(data, run, *extra: str) -> list[str]:
    return [
        "--data",
        str(data),
        "--run",
        str(run),
        "--tuner",
        "random",
        "--max-trials",
        "4",
        "--trial-images",
        "64",
        *[arg for entry in [*TINY, "g_lr=1e-4,2e-4"] for arg in ("--search", entry)],
        "--latent-dim",
        "16",
        "--g-filters",
        "4",
        "--d-filters",
        "8",
        "--batch-size",
        "32",
        "--eval-num",
        "16",
        "--precision",
        "float32",
        *extra,
    ]


@pytest.fixture
def fake_speed(monkeypatch):
    """The cost estimate's speed probe, faked: 1,000 img/s."""
    import components.search_cost

    monkeypatch.setattr(components.search_cost, "measure_speed", lambda config, size, **_: 1000.0)


def test_cli_tune_trains_the_best_exports_it_and_a_rerun_redoes_nothing(tiny_records, tmp_path, capsys, fake_speed):
    from pipeline.train import main

    run = tmp_path / "run"
    assert main(tune_args(tiny_records, run, "--tune", "--images", "96")) == 0
    out = capsys.readouterr().out
    paths = RunPaths(run)
    best = read_json(paths.best_hyperparameters)
    assert "estimate: the search trains 2 default + 2 tuned = 4 times 64 images at ~1,000 img/s: about 0 s" in out
    assert "estimate: then the final training, 96 images at ~1,000 img/s" in out
    assert best["reason"] in out and "search: " in out and "s wall time here" in out and "gain over the default: swd_avg x" in out
    assert [row["trial_id"] for row in read_json(paths.tuner / "trials.json")] == ["default", "0", "1"]
    assert re.search(r"search \d+ s, final training \d+ s: the search cost [\d.]+ x the final training\n", out)

    # The chosen configuration trained for the full budget, evaluated at its end, exported.
    trained = read_json(paths.hparams)["hparams"]
    assert trained["g_lr"] == best["config"]["g_lr"] and trained["model"]["g_filters"] == 4
    assert "done: 3 steps, 96 images seen" in out
    card = read_json(paths.export / "1" / "model_card.json")
    assert card["checkpoint"] == "best" and card["images_seen"] == 96 and card["metrics"]["swd_avg"] > 0

    assert main(tune_args(tiny_records, run, "--tune", "--images", "96")) == 0
    out = capsys.readouterr().out
    assert "Running Trial" not in out and "already trained" in out and "already holds the best checkpoint" in out
    assert "estimate:" not in out  # a resumed search is not estimated again
    assert sorted(path.name for path in paths.export.iterdir()) == ["1"]


def test_cli_tune_budget_is_said_before_kept_by_the_search_and_measured_after(tiny_records, tmp_path, capsys, fake_speed):
    from pipeline.train import main

    run = tmp_path / "run"
    # 96 final images at 1,000 img/s: 0.096 s; a budget of a thousandth of that is spent by the default's row.
    assert main(tune_args(tiny_records, run, "--tune", "--images", "96", "--tune-budget", "0.001")) == 0
    out = capsys.readouterr().out
    # Trials of 64 images and a final training of 96: a winner would be confirmed for 96 images (four trainings).
    assert "until its budget of 0 s (0.001 x the final training), keeping 0 s to confirm a winner" in out
    assert "so the search will keep the default; a budget of about 6 x the final training buys one tuned trial" in out
    assert re.search(
        r"budget: \d+ s of 0 s spent and the next trial would take ~\d+ s \(and ~\d+ s kept to confirm the best trial "
        r"as the final training runs\): the search stops after 0 tuned trial",
        out,
    )
    assert [row["trial_id"] for row in read_json(RunPaths(run).tuner / "trials.json")] == ["default"]
    assert read_json(RunPaths(run).best_hyperparameters)["chosen"] == "default"
    assert re.search(r"the search cost [\d.]+ x the final training \(budget 0.001 x\)", out)

    for bad in ("0", "-1", "inf", "nan", "101", "lots"):
        with pytest.raises(SystemExit) as exit_:
            main(tune_args(tiny_records, tmp_path / "bad", "--tune", "--tune-budget", bad))
        assert exit_.value.code == 2
    assert "--tune-budget" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_cli_tune_only_stops_after_the_search_and_bad_space_is_refused_up_front(tiny_records, tmp_path, capsys, fake_speed):
    from pipeline.train import main

    run = tmp_path / "run"
    with pytest.raises(PipelineError, match="'colour' cannot be searched"):
        main(tune_args(tiny_records, run, "--tune-only", "--search", "colour=1,2"))
    assert not run.exists()

    assert (
        main(
            tune_args(
                tiny_records, run, "--tune-only", "--tuner", "hyperband", "--hyperband-max-epochs", "2", "--hyperband-factor", "2"
            )
        )
        == 0
    )
    rows = read_json(RunPaths(run).tuner / "trials.json")
    assert [row["images"] for row in rows] == [
        64,
        32,
        32,
    ]  # the default's row; hyperband's first round: 1 of 2 epochs of 64 images
    assert RunPaths(run).best_hyperparameters.is_file()
    assert not RunPaths(run).checkpoints.exists() and not RunPaths(run).export.exists()


def test_help_states_the_default_space():
    from pipeline.train import build_parser

    text = next(action.help for action in build_parser()._actions if action.dest == "search")
    stated = re.search(r"for the default recipe: (.*?);", text).group(1).split()
    default = recipe_config("default")
    space = make_space(default)
    assert space.pop("augment") == ["", DIFF_AUGMENT] and f"DiffAugment ({DIFF_AUGMENT})" in text
    assert make_space(default, None, [parse_space_override(entry) for entry in stated]) == {
        **space,
        "augment": ["", DIFF_AUGMENT],
    }
