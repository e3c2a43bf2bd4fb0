"""A search that pays for itself (issue 16): the default measured with two seeds, the noise rule,
trials scored by their last evaluations, trials at a smaller image size, the cost estimate and
the HParams dashboard.

The searches here train tiny networks (4 filters, latent 8, batch 8) for 64 images, evaluated
after 48 and 64 images; a scripted evaluator hands out fixed scores in call order, so which
configuration wins is decided by the test, not by chance.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from components.artifacts import RunPaths, read_json, read_jsonl
from components.config import TrainConfig
from components.errors import PipelineError
from components.model import ModelConfig
from components.search_cost import confirmation_cost, estimate_cost
from components.search_report import choose, config_from_best, format_table, winners
from components.search_space import SearchSettings, make_space, parse_space_override
from components.search_run import check_trial_image_size, run_search

BASE = TrainConfig(model=ModelConfig(latent_dim=8, g_filters=4, d_filters=4), batch_size=8)
SPACE = [
    "g_filters=4",
    "d_filters=4",
    "d_lr=2e-4",
    "beta_1=0.5",
    "g_lr=1e-4,3e-4,5e-4",
    "batch_size=8",
    "d_spectral_norm=false",
    "r1_gamma=0.1",
    "augment=",
]
# Steps of 2 between the loop's turns, so a 64-image run is evaluated at 48 and 64 images.
TRAIN_OPTIONS = {"precision": "float32", "log_every": 2, "sample_every": 4}
SETTINGS = SearchSettings(tuner="random", max_trials=4, trial_images=64, seed=1)
DEFAULT_SCORES = [10.0, 10.0, 12.0, 12.0]  # seed 0: 10 at 48 and 64 images; seed 1: 12 and 12 -> mean 11, noise 2


class ScriptedEvaluator:
    """Returns the next score of `scores` at each call (a KeyboardInterrupt at call `interrupt_at`)."""

    def __init__(self, scores: list[float], interrupt_at: int | None = None):
        self.scores, self.interrupt_at, self.calls = list(scores), interrupt_at, 0

    def __call__(self, generator) -> dict[str, float]:
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return {"swd_avg": self.scores.pop(0), "swd_avg_floor": 1.0, "msssim": 0.25}


def search(data, run, evaluate, settings=SETTINGS, **kwargs):
    space = make_space(BASE, None, [parse_space_override(entry) for entry in SPACE])
    return run_search(
        BASE, space, data, run, settings, evaluate_fn=evaluate, train_options=TRAIN_OPTIONS, verbose=False, **kwargs
    )


@pytest.fixture(scope="module")
def kept_default(tmp_path_factory, tiny_records):
    """A search interrupted during the default's second seed, then resumed: its trials (9.5 and
    10.5) come no more than the noise (2) under the default's 11, so the default is kept."""
    run = tmp_path_factory.mktemp("payoff") / "run"
    with pytest.raises(KeyboardInterrupt):
        search(tiny_records, run, ScriptedEvaluator(DEFAULT_SCORES, interrupt_at=3))
    resumed = ScriptedEvaluator(DEFAULT_SCORES[2:] + [9.0, 10.0, 10.0, 11.0])
    return run, search(tiny_records, run, resumed), resumed


def test_the_default_trains_with_two_seeds_resumes_and_leads_the_table(kept_default):
    run, result, resumed = kept_default
    assert resumed.calls == 6  # seed 1 of the default again (seed 0 had finished), then two trials
    baseline = RunPaths(run).tuner / "baseline"
    assert [read_json(baseline / f"execution-{k}" / "hparams.json")["hparams"]["seed"] for k in (0, 1)] == [0, 1]
    default, *trials = result.rows
    assert default["trial_id"] == "default" and default["status"] == "COMPLETED"
    assert default["executions"] == [10.0, 12.0] and default["swd_avg"] == 11.0
    assert default["hyperparameters"] == {
        "g_filters": 4,
        "d_filters": 4,
        "d_lr": BASE.d_lr,
        "beta_1": BASE.beta_1,
        "g_lr": BASE.g_lr,
        "batch_size": 8,
        "d_spectral_norm": False,
        "r1_gamma": 0.1,
        "augment": "",
    }  # BASE's
    assert [row["swd_avg"] for row in trials] == [9.5, 10.5]  # the mean of each trial's last two evaluations
    evals = [r for r in read_jsonl(RunPaths(run).tuner / "trial_0" / "execution-0" / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["images_seen"] for r in evals] == [48, 64]

    table = format_table(result.rows, result.best["trial_id"])
    assert table.splitlines()[1].startswith("*default  COMPLETED  11")
    assert "default: swd_avg 10 and 12 with its two seeds, noise 2" in table


def test_no_trial_beyond_the_noise_keeps_the_default_and_hparams_trains_it(kept_default, tiny_records, tmp_path, capsys):
    run, result, _ = kept_default
    best = read_json(RunPaths(run).best_hyperparameters)
    assert best == result.best
    assert best["chosen"] == "default" and best["trial_id"] == "default" and best["hyperparameters"] == {}
    assert (
        best["reason"]
        == "no configuration beat the default by more than the noise (best trial 0: swd_avg 9.5 vs default 11 ± noise 2)"
    )
    assert best["default"] == {"swd_avg": 11.0, "executions": [10.0, 12.0], "noise": 2.0, "seed": 0}
    assert best["best_trial"]["trial_id"] == "0" and best["best_trial"]["swd_avg"] == 9.5
    assert best["ratio_to_default"] == 1.0 and best["search"]["score_last"] == 2

    config, notes = config_from_best(BASE, RunPaths(run).best_hyperparameters)
    assert config == BASE and notes[0].startswith("the search chose its default configuration (no configuration beat")

    from pipeline.train import main

    final = tmp_path / "final"
    flags = ["--latent-dim", "8", "--g-filters", "4", "--d-filters", "4", "--batch-size", "8", "--precision", "float32"]
    assert (
        main(
            [
                "--data",
                str(tiny_records),
                "--run",
                str(final),
                "--hparams",
                str(RunPaths(run).best_hyperparameters),
                "--images",
                "16",
                "--no-export",
                *flags,
            ]
        )
        == 0
    )
    assert "note: the search chose its default configuration" in capsys.readouterr().out
    assert read_json(RunPaths(final).hparams)["hparams"] == BASE.with_image_size(32).to_dict()


def test_the_hparams_dashboard_has_the_experiment_and_one_run_per_row(kept_default):
    import tensorflow as tf

    run, result, _ = kept_default
    logs = RunPaths(run).tuner / "logs"

    def summaries(folder):
        found = {}
        for path in folder.glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for value in event.summary.value:
                    found[value.tag] = (value.metadata.plugin_data.plugin_name, value)
        return found

    assert summaries(logs)["_hparams_/experiment"][0] == "hparams"
    assert {"0", "1", "default"} <= {path.name for path in logs.iterdir() if path.is_dir()}
    default = summaries(logs / "default")
    assert default["_hparams_/session_start_info"][0] == "hparams"
    assert tf.make_ndarray(default["swd_avg"][1].tensor) == pytest.approx(11.0)
    assert {"swd_avg", "swd_avg_floor", "msssim"} <= set(summaries(logs / "0"))


def test_a_trial_beyond_the_noise_is_chosen_and_the_default_is_not_trained_again(kept_default, tiny_records):
    run, _, _ = kept_default
    counting = ScriptedEvaluator([5.0, 6.0])  # a third trial, far ahead of the default
    result = search(tiny_records, run, counting, settings=SearchSettings(tuner="random", max_trials=5, trial_images=64, seed=1))
    assert counting.calls == 2  # only the new trial: not the default's row, not the earlier trials
    best = result.best
    assert best["chosen"] == "trial" and best["trial_id"] == "2" and best["swd_avg"] == 5.5
    assert best["reason"] == "trial 2 beat the default by more than the noise (best trial 2: swd_avg 5.5 vs default 11 ± noise 2)"
    assert best["hyperparameters"] == result.rows[-1]["hyperparameters"] and best["ratio_to_default"] == pytest.approx(0.5)


def test_choose_with_a_failed_default_or_no_completed_trial():
    def row(row_id, status, score=None, executions=None):
        return {"trial_id": row_id, "status": status, "swd_avg": score, "executions": executions, "reason": "diverged"}

    default = row("default", "COMPLETED", 11.0, [10.0, 12.0])
    assert choose([default, row("0", "FAILED")]) == (default, "no tuned trial completed; the default configuration is chosen")
    trial = row("0", "COMPLETED", 10.99)
    assert choose([default, trial])[0] is default
    assert choose([row("default", "COMPLETED", 11.0, [11.0, 11.0]), trial])[0] is trial  # no noise: any gain wins
    chosen, reason = choose([row("default", "FAILED"), trial])
    assert chosen is trial and reason == "the default configuration failed (diverged); best trial 0 chosen"
    assert choose([row("default", "FAILED"), row("0", "FAILED")])[0] is None


# -- trials at a smaller image size -----------------------------------------------------------------


@pytest.fixture(scope="module")
def records_64(tmp_path_factory):
    """A 64x64 data folder of 24 train and 8 eval random images (4x4 blocks of one colour plus noise)."""
    from tests.conftest import write_tiny_records

    rng = np.random.default_rng(1)
    images = np.repeat(np.repeat(rng.integers(0, 256, (32, 16, 16, 3)), 4, axis=1), 4, axis=2)
    images = np.clip(images + rng.integers(-20, 21, images.shape), 0, 255).astype(np.uint8)
    return write_tiny_records(tmp_path_factory.mktemp("records64"), images[:24], images[24:])


def test_downscaled_images_are_the_same_for_training_and_the_evaluator(records_64):
    from components.evaluator import TrainingEvaluator
    from components.records import downscale_images, load_images, make_dataset

    full = load_images(records_64, "train")
    small = load_images(records_64, "train", image_size=32)
    assert small.shape == (24, 32, 32, 3) and small.dtype == np.uint8
    assert np.array_equal(small, downscale_images(full, 2))
    assert small[0, 0, 0, 0] == (full[0, :2, :2, 0].astype(int).sum() + 2) // 4  # 2x2 area mean, rounded

    batches = make_dataset(records_64, "train", batch_size=8, image_size=32, shuffle=False, repeat=False)
    trained_on = np.concatenate([np.rint((batch.numpy() + 1.0) * 127.5).astype(np.uint8) for batch in batches])
    assert np.array_equal(trained_on, small)  # byte for byte what the evaluator compares with

    assert TrainingEvaluator(records_64, num=4, seed=0, image_size=32).evaluator.image_shape == (32, 32, 3)
    with pytest.raises(PipelineError, match="a smaller size must divide 64"):
        make_dataset(records_64, image_size=24)
    with pytest.raises(PipelineError, match="one of the models' sizes"):
        check_trial_image_size(records_64, 16)  # 64 / 4, but no model is built for 16x16


def test_a_search_at_a_smaller_trial_image_size_trains_and_scores_at_that_size(records_64, tmp_path):
    from components.evaluator import TrainingEvaluator

    sizes = []
    evaluate = TrainingEvaluator(records_64, num=4, seed=0, image_size=32, train_limit=0)

    def recording(generator):
        sizes.append(int(generator.output_shape[1]))
        return evaluate(generator)

    settings = SearchSettings(tuner="random", max_trials=3, trial_images=16, trial_image_size=32, score_last=1)
    result = search(records_64, tmp_path / "run", recording, settings=settings)
    assert sizes == [32, 32, 32] and [row["status"] for row in result.rows] == ["COMPLETED"] * 2
    record = read_json(RunPaths(tmp_path / "run").tuner / "trial_0" / "execution-0" / "hparams.json")
    assert record["hparams"]["model"]["image_size"] == 32 and record["data"]["image_size"] == 64
    assert read_json(RunPaths(tmp_path / "run").tuner / "search.json")["settings"]["trial_image_size"] == 32


class SizeRecording(ScriptedEvaluator):
    """A scripted evaluator that also records the size of each generator it scores."""

    def __init__(self, scores: list[float]):
        super().__init__(scores)
        self.sizes = []

    def __call__(self, generator) -> dict[str, float]:
        self.sizes.append(int(generator.output_shape[1]))
        return super().__call__(generator)


def test_a_trial_that_wins_in_small_short_trials_but_not_as_the_final_training_runs_is_not_chosen(records_64, tmp_path):
    at_32 = SizeRecording([10.0, 12.0, 5.0])  # the default's two seeds (noise 2), then a trial far ahead
    at_64 = SizeRecording([10.0, 12.0, 20.0, 21.0])  # confirmation: the default again, then the trial, behind
    settings = SearchSettings(tuner="random", max_trials=3, trial_images=16, trial_image_size=32, score_last=1, final_images=32)
    result = search(records_64, tmp_path / "run", at_32, settings=settings, confirm_evaluate_fn=at_64)

    assert at_32.sizes == [32, 32, 32] and at_64.sizes == [64, 64, 64, 64]
    best = result.best
    assert best["chosen"] == "default" and best["hyperparameters"] == {}
    assert best["reason"] == (
        "trial 0 beat the default in the trials (best trial 0: swd_avg 5 vs default 11 ± noise 2) "
        "but not as the final training runs (at 64x64 for 32 images: swd_avg 20.5 vs default 11 ± noise 2)"
    )
    confirmation = best["confirmation"]
    assert (confirmation["image_size"], confirmation["images"], confirmation["confirmed"]) == (64, 32, False)
    assert confirmation["default"]["executions"] == [10.0, 12.0] and confirmation["trial"]["executions"] == [20.0, 21.0]
    confirm = RunPaths(tmp_path / "run").tuner / "confirm"
    trained = read_json(confirm / "trial_0" / "execution-1" / "hparams.json")
    assert trained["hparams"]["model"]["image_size"] == 64 and trained["hparams"]["seed"] == 1
    assert trained["options"]["images"] == 32  # the final training's length, not the trials' 16
    assert trained["hparams"]["g_lr"] == result.rows[1]["hyperparameters"]["g_lr"]  # the trial's values

    again = SizeRecording([])  # resumed: every row, the confirmation's too, is on file
    assert search(records_64, tmp_path / "run", again, settings=settings, confirm_evaluate_fn=again).best == best
    assert again.calls == 0


def test_trials_shorter_than_the_final_training_confirm_their_winner_for_its_images(tiny_records, tmp_path):
    # Trials at the data's size for 32 images, the final training 64: the trial's lead (5 against
    # 11 ± 2) is checked at 64 images, scored by the trials' own evaluator (it scores at the data's size).
    scores = ScriptedEvaluator([10.0, 12.0, 5.0] + [10.0, 12.0, 6.0, 7.0])
    settings = SearchSettings(tuner="random", max_trials=3, trial_images=32, score_last=1, final_images=64)
    best = search(tiny_records, tmp_path / "run", scores, settings=settings).best
    assert scores.calls == 7 and best["chosen"] == "trial"
    assert best["reason"].endswith("confirmed at 32x32 for 64 images: swd_avg 6.5 vs default 11 ± noise 2)")
    trained = read_json(RunPaths(tmp_path / "run").tuner / "confirm" / "default" / "execution-0" / "hparams.json")
    assert trained["options"]["images"] == 64 and trained["hparams"]["seed"] == BASE.seed
    # Trials as long as the final training at the data's size: a trial's score is the final figure, no confirmation.
    same = dataclasses.replace(settings, final_images=32)
    rerun = ScriptedEvaluator([10.0, 12.0, 5.0])
    best = search(tiny_records, tmp_path / "again", rerun, settings=same).best
    assert rerun.calls == 3 and best["chosen"] == "trial" and best["confirmation"] is None


def test_a_confirmation_row_starts_only_if_the_budget_holds_it(monkeypatch):
    from types import MethodType, SimpleNamespace

    import components.tuner
    from components.search_cost import Spending
    from components.tuner import DCGANTuner

    tuner = SimpleNamespace(settings=SearchSettings(budget_seconds=100.0), directory="run", oracle=None)
    tuner.hypermodel = SimpleNamespace(base=BASE, space={})
    tuner._table = MethodType(DCGANTuner._table, tuner)
    tuner._spending = lambda: Spending(60.0, 0.01)  # 40 s left
    trial = {"trial_id": "3"}
    tuner.confirmation_seconds = lambda seconds_per_image, priced: 50.0 if priced is trial else None
    unaffordable = MethodType(DCGANTuner._unaffordable, tuner)
    assert unaffordable(trial, None) == "the budget has 40 s left, it needs ~50 s"  # the whole estimate, before the default's row
    # After the default's row there: the trial's two trainings at its measured 30 s times the trial's step cost.
    default_row = {"trial_id": "default", "status": "COMPLETED", "seconds": 2.0, "images": 100, "executions": [10.0, 12.0]}
    monkeypatch.setattr(components.tuner, "search_rows", lambda *args: [default_row])
    tuner._cost_factor = lambda priced, default_cost: 1.5 if priced is trial else None
    assert unaffordable(trial, {"status": "COMPLETED", "seconds": 30.0}) == "the budget has 40 s left, it needs ~45 s"
    tuner._cost_factor = lambda priced, default_cost: 1.0
    assert unaffordable(trial, {"status": "COMPLETED", "seconds": 30.0}) is None
    assert unaffordable(trial, {"status": "FAILED", "seconds": 3.0}) == "the budget has 40 s left, it needs ~50 s"
    tuner.settings = SearchSettings()  # no budget: always
    assert unaffordable(trial, None) is None


def test_choose_keeps_a_trial_only_if_the_confirmation_at_the_data_size_agrees():
    def row(row_id, status, score=None, executions=None):
        return {"trial_id": row_id, "status": status, "swd_avg": score, "executions": executions, "reason": "diverged"}

    rows = [row("default", "COMPLETED", 11.0, [10.0, 12.0]), row("3", "COMPLETED", 5.0)]
    where = {"trial_id": "3", "image_size": 64, "images": 16870}
    agrees = {**where, "default": row("default", "COMPLETED", 30.0, [29.0, 31.0]), "trial": row("3", "COMPLETED", 25.0)}
    chosen, reason = choose(rows, agrees)
    assert chosen is rows[1] and reason.endswith("confirmed at 64x64 for 16,870 images: swd_avg 25 vs default 30 ± noise 2)")
    within_noise = {**agrees, "trial": row("3", "COMPLETED", 29.0)}
    assert choose(rows, within_noise)[0] is rows[0]
    # The default's seeds agreeing by chance (noise 0.03) do not make a lead of 0.5 real when the
    # trial's own seeds lie 3 apart: the larger spread is the noise.
    lucky = {
        **where,
        "default": row("default", "COMPLETED", 19.72, [19.74, 19.71]),
        "trial": row("3", "COMPLETED", 19.26, [20.82, 17.69]),
    }
    assert choose(rows, lucky)[0] is rows[0] and choose(rows, lucky)[1].endswith("swd_avg 19.26 vs default 19.72 ± noise 3.1)")
    skipped = {**where, "skipped": "the budget has 10 s left, it needs ~40 s"}
    assert choose(rows, skipped)[1].endswith("(at 64x64 for 16,870 images: not run, the budget has 10 s left, it needs ~40 s)")
    assert choose(rows, skipped)[0] is rows[0]
    failed = {**agrees, "trial": row("3", "FAILED")}
    assert choose(rows, failed) == (
        rows[0],
        "trial 3 beat the default in the trials (best trial 3: swd_avg 5 vs default 11 ± noise 2) "
        "but not as the final training runs (at 64x64 for 16,870 images: the trial failed (diverged))",
    )
    # The best's confirmation did not fit the budget and a runner-up's did: the runner-up is chosen if it wins there.
    rows.append(row("4", "COMPLETED", 7.0))
    runner_up = {**agrees, "trial_id": "4", "trial": row("4", "COMPLETED", 26.0)}
    assert choose(rows, runner_up) == (
        rows[2],
        "trial 4 beat the default by more than the noise (trial 4: swd_avg 7 vs default 11 ± noise 2; "
        "confirmed at 64x64 for 16,870 images: swd_avg 26 vs default 30 ± noise 2)",
    )
    assert [winner["trial_id"] for winner in winners(rows)] == ["3", "4"]
    assert winners([rows[0], row("5", "COMPLETED", 9.5)]) == [] and winners([row("default", "FAILED"), rows[1]]) == []


def test_a_winner_whose_confirmation_the_budget_cannot_hold_gives_way_to_the_next_one():
    from types import SimpleNamespace

    from components.tuner import DCGANTuner

    def row(row_id, score):
        return {"trial_id": row_id, "status": "COMPLETED", "swd_avg": score, "executions": [score], "reason": None}

    rows = [{**row("default", 11.0), "executions": [10.0, 12.0]}, row("0", 8.0), row("1", 5.0), row("2", 10.5)]
    tried = []

    def confirm(trial, full_size, image_size):  # trial 1's confirmation costs more than the budget has left
        tried.append(trial["trial_id"])
        skipped = {"skipped": "the budget has 40 s left, it needs ~90 s"} if trial["trial_id"] == "1" else {}
        return {"trial_id": trial["trial_id"], "image_size": image_size, "images": 100, **skipped}

    tuner = SimpleNamespace(confirm=confirm, verbose=False)
    confirmation = DCGANTuner.confirm_a_winner(tuner, rows, None, 64)
    assert tried == ["1", "0"] and confirmation["trial_id"] == "0" and "skipped" not in confirmation  # 2 is within the noise
    tuner.confirm = lambda trial, full_size, image_size: {"trial_id": trial["trial_id"], "skipped": "no time"}
    assert DCGANTuner.confirm_a_winner(tuner, rows, None, 64) == {"trial_id": "1", "skipped": "no time"}  # the best's
    assert DCGANTuner.confirm_a_winner(tuner, rows[:1] + rows[3:], None, 64) is None  # no winner: nothing to confirm


# -- settings and the cost estimate -----------------------------------------------------------------


def test_score_points_lie_in_the_second_half_and_the_budget_counts_the_default():
    assert SearchSettings(score_last=2).score_points(64) == [48, 64]
    assert SearchSettings(score_last=1).score_points(64) == [64]
    assert SearchSettings(score_last=4).score_points(800) == [500, 600, 700, 800]
    assert SearchSettings(max_trials=10).tuned_trials == 8
    with pytest.raises(PipelineError, match="^max_trials must be at least 3"):
        SearchSettings(max_trials=2)
    assert SearchSettings(trial_images=500).final_length == 500 and SearchSettings(final_images=9).final_length == 9
    for bad in (0, 1.5, True, "16870"):
        with pytest.raises(PipelineError, match="^final_images must be a whole number from 1 to"):
            SearchSettings(final_images=bad)


def test_the_cost_estimate_is_trainings_times_images_over_the_measured_speed():
    settings = SearchSettings(max_trials=10, trial_images=20_000, executions_per_trial=2)
    estimate = estimate_cost(settings, trial_images_per_sec=400.0, final_images=100_000, final_images_per_sec=100.0)
    assert estimate.trainings == 2 + 8 * 2
    assert estimate.search_seconds == pytest.approx(18 * 20_000 / 400) and estimate.final_seconds == pytest.approx(1000)
    first, second = estimate.describe(settings).splitlines()
    assert first == "estimate: the search trains 2 default + 16 tuned = 18 times 20,000 images at ~400 img/s: about 15 min"
    assert second == "estimate: then the final training, 100,000 images at ~100 img/s: about 17 min (evaluations not counted)"
    assert estimate_cost(settings, 400.0).final_seconds is None
    assert "at most (hyperband)" in estimate_cost(SearchSettings(tuner="hyperband"), 400.0).describe(
        SearchSettings(tuner="hyperband")
    )


# -- a budget in time and a space centred on the default ------------------------------------------


def test_a_budget_estimate_says_how_many_trials_fit_and_what_multiple_of_the_final_training_it_is():
    settings = SearchSettings(max_trials=1000, trial_images=20_000, budget_seconds=2000.0)
    estimate = estimate_cost(settings, trial_images_per_sec=400.0, final_images=100_000, final_images_per_sec=100.0)
    first, second = estimate.describe(settings).splitlines()
    # 50 s a training: the default's two take 100 s, then 38 tuned trials fit in the remaining 1,900 s.
    assert first == (
        "estimate: the search trains the default 2 times, then tuned trials, each 20,000 images at ~400 img/s (about 50 s), "
        "until its budget of 33 min (2 x the final training): about 38 tuned trial(s)"
    )
    assert second.startswith("estimate: then the final training, 100,000 images")
    assert len(estimate.describe(settings, final=False).splitlines()) == 1  # --tune-only trains no final model
    # Trials at a smaller size: four trainings of 20,000 images at 100 img/s (800 s) are kept to
    # confirm a winner at the data's size, so 22 tuned trials fit in the remaining 1,100 s.
    confirmation = confirmation_cost(dataclasses.replace(settings, trial_image_size=32), 64, (400.0, 100.0))
    confirming = estimate_cost(settings, 400.0, 100_000, 100.0, confirmation=confirmation).describe(settings).splitlines()[0]
    assert confirming.endswith(
        "(2 x the final training), keeping 13 min to confirm a winner as the final training runs: about 22 tuned trial(s)"
    )
    # Trials shorter than the final training: the confirmation trains 100,000 images four times (4,000 s),
    # more than the budget; the estimate says so and what budget buys a trial (100 + 4,000 + 50 s).
    short = dataclasses.replace(settings, trial_image_size=32, final_images=100_000)
    unconfirmable = estimate_cost(short, 400.0, 100_000, 100.0, confirmation=confirmation_cost(short, 64, (400.0, 100.0)))
    lines = unconfirmable.describe(short).splitlines()
    assert lines[0].endswith("keeping 67 min to confirm a winner as the final training runs: about 0 tuned trial(s)")
    assert lines[1].startswith("note: the budget cannot pay for confirming a winner") and "about 4.2 x the final" in lines[1]
    no_budget = dataclasses.replace(short, budget_seconds=None, max_trials=4)
    assert unconfirmable.describe(no_budget).splitlines()[1] == (
        "estimate: and 67 min more if a trial wins, to confirm it as the final training runs"
    )
    with pytest.raises(PipelineError, match="budget must be a positive number of seconds"):
        SearchSettings(budget_seconds=0.0)


def test_the_search_stops_itself_at_its_budget_and_counts_what_a_resumed_search_spent(tiny_records, tmp_path):
    from components.search_cost import search_spending

    settings = dataclasses.replace(SETTINGS, max_trials=1000, budget_seconds=1e-6)
    result = search(tiny_records, tmp_path / "run", ScriptedEvaluator(DEFAULT_SCORES), settings=settings)
    assert [row["trial_id"] for row in result.rows] == ["default"]  # the default's row alone spent the budget
    assert (
        result.best["chosen"] == "default" and result.best["reason"] == "no tuned trial ran; the default configuration is chosen"
    )

    tuner_dir = RunPaths(tmp_path / "run").tuner
    spent = search_spending(tuner_dir, [])
    default = read_json(tuner_dir / "baseline" / "result.json")
    assert spent.seconds == pytest.approx(default["seconds"]) and spent.seconds_per_image == pytest.approx(
        default["seconds"] / (2 * 64)
    )

    # Resumed with a budget that buys trials: it goes on from the default's row and stops at max_trials.
    roomy = dataclasses.replace(SETTINGS, budget_seconds=1e6)
    resumed = search(tiny_records, tmp_path / "run", ScriptedEvaluator([9.0, 9.0, 12.0, 12.0]), settings=roomy)
    assert [row["trial_id"] for row in resumed.rows] == ["default", "0", "1"]
    trial_dirs = [tuner_dir / f"trial_{trial_id}" for trial_id in ("0", "1")]
    assert search_spending(tuner_dir, trial_dirs).seconds == pytest.approx(
        sum(read_json(path / "result.json")["seconds"] for path in [tuner_dir / "baseline", *trial_dirs])
    )


@pytest.mark.parametrize(
    "base",
    [
        TrainConfig(),
        TrainConfig(
            model=ModelConfig(g_filters=64, d_filters=16, d_spectral_norm=True),
            batch_size=32,
            g_lr=1e-3,
            r1_gamma=0.0,
            beta_1=0.9,
            augment="translation",
        ),
    ],
)
def test_the_default_space_is_centred_on_the_configuration_being_tuned(base):
    from components.search_space import apply_values, default_space

    space = make_space(base)
    assert set(space) == {
        "g_filters",
        "d_filters",
        "g_lr",
        "d_lr",
        "batch_size",
        "d_spectral_norm",
        "r1_gamma",
        "beta_1",
        "augment",
    }
    assert space["g_lr"] == {"min": base.g_lr / 2, "max": base.g_lr * 2, "sampling": "log"}
    assert space["d_lr"] == {"min": base.d_lr / 2, "max": base.d_lr * 2, "sampling": "log"}
    assert space["g_filters"] == [base.model.g_filters // 2, base.model.g_filters, base.model.g_filters * 2]
    assert space["batch_size"] == [base.batch_size // 2, base.batch_size, base.batch_size * 2]
    assert sorted(space["d_spectral_norm"]) == [False, True] and len(space["augment"]) == 2
    # The base itself is a point of the space: every choice holds its value.
    at_base = {name: spec[0] if isinstance(spec, list) else base.g_lr for name, spec in space.items()}
    for name, spec in space.items():
        if isinstance(spec, list):
            value = getattr(base.model, name) if hasattr(base.model, name) else getattr(base, name)
            assert value in spec, name
            at_base[name] = value
    at_base["d_lr"] = base.d_lr
    assert apply_values(base, at_base) == base
    seed = dataclasses.replace(base, train_step="seed", loss="bce", r1_gamma=0.0, augment="")
    assert "r1_gamma" not in default_space(seed) and "augment" not in default_space(seed)


def test_the_first_trials_step_from_the_default_one_dimension_at_a_time(tiny_records, tmp_path):
    from components.search_space import base_values, neighbours

    default = TrainConfig()
    space = make_space(default)
    centre = base_values(default, list(space))
    steps = neighbours(default, space)
    moved = [[name for name in centre if step[name] != centre[name]] for step in steps]
    assert all(len(names) == 1 for names in moved)
    # Every dimension takes one step (the larger value first) before any takes a second, but
    # wider networks (slower steps) come last.
    unchanged_cost = [name for name in space if name not in ("g_filters", "d_filters")]
    assert [names[0] for names in moved[:7]] == unchanged_cost and len(steps) == 15
    assert steps[0]["g_lr"] == 8e-4 and steps[3]["d_spectral_norm"] and steps[7]["g_filters"] == 16
    assert (steps[-2]["g_filters"], steps[-1]["d_filters"]) == (64, 64)
    # A dimension that leaves out the base's value has no centre: the oracle draws as it would.
    assert neighbours(default, make_space(default, None, [("g_lr", [1e-4, 2e-4])])) == []

    # A search proposes them first, in that order (the other dimensions are fixed, some away from BASE).
    centred = [entry if not entry.startswith("g_lr=") else "g_lr=2e-4,4e-4,8e-4" for entry in SPACE]
    run_space = make_space(BASE, None, [parse_space_override(entry) for entry in centred])
    scores = ScriptedEvaluator(DEFAULT_SCORES + [9.0, 9.0, 10.0, 10.0])
    rows = run_search(
        BASE, run_space, tiny_records, tmp_path / "run", SETTINGS, evaluate_fn=scores, train_options=TRAIN_OPTIONS, verbose=False
    ).rows
    assert [row["hyperparameters"]["g_lr"] for row in rows[1:]] == [8e-4, 2e-4]
    assert {row["hyperparameters"]["beta_1"] for row in rows[1:]} == {0.5}  # fixed by the space, not BASE's 0


def test_a_text_setting_can_be_fixed_empty_from_the_command_line():
    assert parse_space_override("augment=") == ("augment", "")
    with pytest.raises(PipelineError, match="has no value"):
        parse_space_override("g_lr=")


def test_a_trials_values_come_back_as_their_fields_types():
    from components.search_space import tuned_values

    # KerasTuner hands a choice of booleans back as 0/1; the best file must say False/True to be read back.
    assert tuned_values({"d_spectral_norm": 0, "batch_size": 16.0, "tuner/epochs": 2}) == {
        "d_spectral_norm": False,
        "batch_size": 16,
    }


def test_the_confirmation_s_cost_is_the_default_s_measured_cost_plus_the_probed_step_difference(monkeypatch, tmp_path):
    from types import MethodType, SimpleNamespace

    import components.search_cost
    import components.tuner
    from components.tuner import DCGANTuner

    # The default's row: 2 trainings of 100 images in 2 s at the trial size, 0.01 s per image.
    default = {"trial_id": "default", "status": "COMPLETED", "swd_avg": 11.0, "executions": [10.0, 12.0], "images": 100}
    rows = [{**default, "seconds": 2.0, "reason": None}]
    monkeypatch.setattr(components.tuner, "search_rows", lambda *args: rows)
    tuner = SimpleNamespace(directory="run", oracle=None, settings=SearchSettings(trial_images=100))
    tuner.hypermodel = SimpleNamespace(base=BASE, space={})
    tuner._table = MethodType(DCGANTuner._table, tuner)
    tuner._cost_factor = MethodType(DCGANTuner._cost_factor, tuner)
    probed = []
    tuner.step_cost = lambda trial: probed.append(trial["trial_id"]) or 2.0  # the winner's step: twice the default's
    # Trials of 100 images at 32x32 on 64x64 data: 400 images to confirm, the step 2 ms per image
    # at the trial size and 10 ms at the data's.
    trials_at_32 = SearchSettings(trial_images=100, trial_image_size=32)
    tuner.confirmation = confirmation_cost(trials_at_32, 64, (500.0, 100.0))
    assert tuner.confirmation.images == 400 and tuner.confirmation.image_size == 64
    # No winner yet: 200 images of the default at 0.01 + 0.010 - 0.002 s, 200 of one to come at that cost.
    assert DCGANTuner.confirmation_seconds(tuner, 0.5) == pytest.approx(200 * 0.018 * 2) and probed == []
    # A trial beyond the noise (5 against 11 ± 2), 0.015 s per image at the trial size: its step is
    # probed at the data's size, and the reserve prices it at that (2x), not at the trial size's 1.5x.
    rows.append({**default, "trial_id": "3", "swd_avg": 5.0, "executions": [5.0], "seconds": 1.5, "reason": None})
    assert DCGANTuner.confirmation_seconds(tuner, 0.5) == pytest.approx(200 * 0.018 * 3) and probed == ["3"]
    # A runner-up is priced at its own step's cost when asked for.
    runner_up = {**rows[1], "trial_id": "4", "swd_avg": 7.0}
    assert DCGANTuner.confirmation_seconds(tuner, 0.5, runner_up) == pytest.approx(200 * 0.018 * 3) and probed[-1] == "4"
    # No probes: the ratio of pixels on the whole measured cost, the winner at its cost at the trial size.
    tuner.confirmation, tuner.step_cost = confirmation_cost(trials_at_32, 64), lambda trial: None
    assert DCGANTuner.confirmation_seconds(tuner, 0.5) == pytest.approx(200 * 0.04 * 2.5)
    # Trials at the data's size: nothing to confirm.
    assert confirmation_cost(SearchSettings(trial_images=100, trial_image_size=64), 64) is None
    assert confirmation_cost(SearchSettings(trial_images=100), 64) is None
    tuner.confirmation = None
    assert DCGANTuner.confirmation_seconds(tuner, 0.5) == 0.0

    # The probe runs once per trial, on the trial's configuration at the data's size; its record
    # (with its seconds, which the search's spending counts) is trusted only for the same values.
    from components.search_cost import search_spending

    calls = []
    monkeypatch.setattr(
        components.search_cost, "measure_speed", lambda config, size, **kw: calls.append((config.g_lr, size)) or 50.0
    )
    prober = SimpleNamespace(confirmation=confirmation_cost(trials_at_32, 64, (500.0, 100.0)), project_dir=str(tmp_path))
    prober.hypermodel = SimpleNamespace(base=BASE, train_options={})
    trial = {"trial_id": "3", "hyperparameters": {"g_lr": 1e-3}}
    assert DCGANTuner.step_cost(prober, trial) == 2.0 and DCGANTuner.step_cost(prober, trial) == 2.0
    assert calls == [(1e-3, 64)]
    probe = read_json(tmp_path / "step_probes.json")["3"]
    assert probe["cost"] == 2.0 and probe["hyperparameters"] == {"g_lr": 1e-3}
    assert search_spending(tmp_path, []).seconds == pytest.approx(probe["seconds"]) and probe["seconds"] > 0
    assert DCGANTuner.step_cost(prober, {**trial, "hyperparameters": {"g_lr": 2e-3}}) == 2.0 and len(calls) == 2
    (tmp_path / "step_probes.json").write_text('{"3": {"cost": "fast"')  # torn: probed again
    assert DCGANTuner.step_cost(prober, trial) == 2.0 and len(calls) == 3
