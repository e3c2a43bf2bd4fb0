"""Small things a user meets: a quiet search says nothing when it resumes, and an empty split's
hint points the right way."""

from __future__ import annotations

import numpy as np
import pytest

from components.config import TrainConfig
from components.errors import PipelineError
from components.model import ModelConfig
from tests.conftest import write_tiny_records

BASE = TrainConfig(model=ModelConfig(latent_dim=8, g_filters=4, d_filters=4), batch_size=8)


@pytest.mark.parametrize("verbose", [False, True])
def test_a_tuner_resuming_a_search_says_reloading_only_when_verbose(tiny_records, tmp_path, capsys, verbose):
    from components.search_hypermodel import DCGANHyperModel
    from components.search_space import SearchSettings, make_oracle, make_space
    from components.tuner import DCGANTuner

    settings = SearchSettings(tuner="random", max_trials=3, trial_images=32)
    hypermodel = DCGANHyperModel(BASE, make_space(BASE), tiny_records, None, settings)
    DCGANTuner(make_oracle(settings), hypermodel, tmp_path, settings, verbose=verbose)  # saves its state at once
    capsys.readouterr()
    DCGANTuner(make_oracle(settings), hypermodel, tmp_path, settings, verbose=verbose)  # reloads it
    assert ("Reloading Tuner" in capsys.readouterr().out) == verbose


@pytest.mark.parametrize(("empty", "hint"), [("eval", "a larger `eval_fraction`"), ("train", "a smaller `eval_fraction`")])
def test_an_empty_split_asks_for_the_eval_fraction_that_fills_it(tmp_path, empty, hint):
    from components.records import shard_paths

    images = np.zeros((4, 32, 32, 3), np.uint8)
    splits = {"train": images, "eval": images}
    splits[empty] = images[:0]
    data = write_tiny_records(tmp_path / "data", splits["train"], splits["eval"])
    with pytest.raises(PipelineError, match=f"split '{empty}' .* is empty; ingest again with more images or {hint}"):
        shard_paths(data, empty)
