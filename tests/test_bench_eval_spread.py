"""`python -m bench.bench_eval_spread` on tiny SavedModels: every model scored on the same seeds."""

from __future__ import annotations

import json

import pytest

from bench.bench_eval_spread import main
from tests.test_evaluate_cli import save_tiny_generator


def test_models_are_scored_on_the_same_seeds_and_compared_paired(tmp_path, tiny_records):
    model = save_tiny_generator(tmp_path / "model" / "1")
    work, out = tmp_path / "work", tmp_path / "spread.json"
    args = ["--data", str(tiny_records), "--model", f"a={model}", "--model", f"b={model}", "--model", f"b={model}"]
    args += ["--seeds", "3", "--eval-num", "8", "--generate-batch", "4", "--work", str(work), "--out", str(out)]
    main(args)

    result = json.loads(out.read_text())
    assert sorted(result["evaluations"]) == ["a#0", "b#1", "b#2"]
    assert [row["seed"] for row in result["evaluations"]["a#0"]] == [0, 1, 2]
    scores = [row["swd_avg"] for row in result["evaluations"]["a#0"]]
    assert len(set(scores)) == 3  # each seed draws other latents and other real halves
    # The same generator under both names: equal on every seed, so the ratio is 1 and the
    # paired difference 0, however far one evaluation moves with its seed.
    assert result["evaluations"]["b#1"] == result["evaluations"]["a#0"]
    assert result["ratio_to_a"]["b"] == pytest.approx(1.0)
    assert result["paired_difference_to_a"]["b"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert result["per_model"]["a#0"]["swd_avg"]["std"] > 0
    assert result["per_name_swd_avg"]["b"]["mean"] == pytest.approx(sum(scores) / 3)
    assert len(list(work.glob("*.json"))) == 9

    stamps = {path: path.stat().st_mtime_ns for path in work.glob("*.json")}
    main(args)  # a second run reuses every evaluation
    assert {path: path.stat().st_mtime_ns for path in work.glob("*.json")} == stamps


def test_mistakes_are_one_line_errors(tmp_path, tiny_records, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["--data", str(tiny_records), "--model", f"a b={tmp_path}"])
    assert raised.value.code == 2
    assert "NAME=DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit) as raised:  # a folder that holds no generator
        main(["--data", str(tiny_records), "--model", f"a={tmp_path}", "--seeds", "1", "--work", str(tmp_path / "w")])
    assert str(raised.value.code).startswith("error: ")
