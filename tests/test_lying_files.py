"""Files that lie: shards damaged after they were checked, records of another model or another size,
and every file we write or read with content that parses but is wrong.

Each case ends in one `error:` line naming the file (exit 2), or the damage is redone; never a
traceback, never the figures of another model, never a changed input.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from components import locks
from components.artifacts import read_json, read_small_file
from components.errors import PipelineError
from components.evaluator import _read_cache
from tests.conftest import write_tiny_records
from tests.helpers import TINY, cli, no_traceback, snapshot, time_limit


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """32x32 smooth random images: 48 train in 2 shards, 16 eval in 2 shards."""
    rng = np.random.default_rng(21)
    images = np.repeat(np.repeat(rng.integers(0, 256, (64, 4, 4, 3)), 8, axis=1), 8, axis=2).astype(np.uint8)
    return write_tiny_records(tmp_path_factory.mktemp("lying") / "data", images[:48], images[48:])


def train(data: Path, run: Path, *extra: str):
    return cli("train", "--data", str(data), "--run", str(run), "--images", "16", *TINY, "--checkpoint-every", "1", *extra)


@pytest.fixture(scope="module")
def model(data) -> Path:
    """A run trained for 2 steps and exported (version 1)."""
    run = data.parent / "run"
    result = train(data, run)
    assert result.returncode == 0, result.stderr[-2000:]
    return run


@pytest.fixture
def copy(tmp_path):
    """`copy(folder)`: a copy of a fixture's folder for one test to damage."""
    return lambda folder: Path(shutil.copytree(folder, tmp_path / folder.name))


def one_error(result, *names: str) -> None:
    """Exit 2 with exactly one `error:` line that names each of `names`, and no traceback."""
    no_traceback(result)
    assert result.returncode == 2 and result.stderr.count("error:") == 1, result.stderr[-2000:]
    line = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert all(name in line for name in names), line


def flip_byte(path: Path, offset: int = 5000) -> None:
    """Damage one byte in place, keeping the modification time: what a size+mtime cache cannot see."""
    stat = path.stat()
    content = bytearray(path.read_bytes())
    content[offset] ^= 0xFF
    path.write_bytes(bytes(content))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


# -- shards damaged after they were checked ----------------------------------------------------------


def test_a_shard_damaged_after_a_clean_read_is_named_by_training_and_evaluation(data, model, copy):
    damaged, run = copy(data), copy(model)
    assert train(damaged, run, "--no-export").returncode == 0  # read once intact (nothing left to train)
    for shard in ("train-00000-of-00002.tfrecord", "eval-00001-of-00002.tfrecord"):
        flip_byte(damaged / shard)
    checkpoints = snapshot(run / "checkpoints")
    one_error(train(damaged, run, "--images", "48", "--no-export"), "train-00000-of-00002.tfrecord", "--overwrite")
    assert snapshot(run / "checkpoints") == checkpoints  # the last checkpoint is kept
    one_error(
        cli("evaluate", "--model", str(run), "--data", str(damaged), "--eval-num", "4", "--output", str(run / "e.json")),
        "eval-00001-of-00002.tfrecord",
    )


def test_damage_the_start_up_check_missed_is_named_at_read_time(data, model, copy, monkeypatch):
    """A shard damaged between the reader's check and its read: TensorFlow's DataLossError names
    no file; the reader finds the shard and names it."""
    from components import records

    damaged, run = copy(data), copy(model)
    flip_byte(damaged / "train-00001-of-00002.tfrecord")
    flip_byte(damaged / "eval-00000-of-00002.tfrecord")
    honest = records.verify_shard
    monkeypatch.setattr(records, "verify_shard", lambda *a, **k: honest(*a, **k) if k.get("every_record") else None)
    one_error(train(damaged, run, "--images", "48", "--no-export"), "train-00001-of-00002.tfrecord")  # an epoch reads it
    resumed = train(data, run, "--images", "48", "--no-export")  # the intact data again
    assert "resumed from step" in resumed.stdout, resumed.stderr[-2000:]  # training stopped with its checkpoints kept
    with pytest.raises(records.DamagedData, match="eval-00000-of-00002.tfrecord"):
        records.load_images(damaged, "eval")


def test_a_damaged_shard_stops_a_search_without_recording_a_failed_row(data, copy):
    damaged = copy(data)
    flip_byte(damaged / "train-00000-of-00002.tfrecord")
    run = damaged.parent / "search"
    result = cli(
        "train",
        "--data",
        str(damaged),
        "--run",
        str(run),
        "--tune-only",
        "--tuner",
        "random",
        "--max-trials",
        "3",
        "--trial-images",
        "16",
        "--eval-num",
        "4",
        "--search",
        "g_lr=1e-4",
        *TINY,
    )
    one_error(result, "train-00000-of-00002.tfrecord")
    assert not list(run.glob("tuner/*/result.json"))  # the row trains once the data is mended


@pytest.mark.parametrize("size, complaint", [(64, "holds a 32x32x3 image, the manifest says 64x64x3"), (16, "image size 16")])
def test_a_manifest_whose_image_size_was_edited_is_refused(data, model, copy, size, complaint):
    edited = copy(data)
    manifest = json.loads((edited / "manifest.json").read_text())
    (edited / "manifest.json").write_text(json.dumps({**manifest, "image_size": size}))
    one_error(train(edited, edited.parent / "run", "--no-export"), complaint)
    one_error(
        cli(
            "evaluate", "--model", str(model), "--data", str(edited), "--eval-num", "4", "--output", str(edited.parent / "e.json")
        )
    )


def test_verify_shard_reads_each_record_through_its_crcs(data, tmp_path):
    from components.shards import DamagedData, verify_shard

    shard = data / "train-00000-of-00002.tfrecord"
    verify_shard(shard, 24, image_size=32, every_record=True)
    for name, content in [("cut", shard.read_bytes()[:-3]), ("length", b"\xff" + shard.read_bytes()[1:]), ("empty", b"")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DamagedData, match=name if name != "empty" else "holds 0 records"):
            verify_shard(tmp_path / name, 24, image_size=32) if name != "cut" else verify_shard(
                tmp_path / name, 24, shown_as="cut"
            )


# -- an evaluation on file is reused only for the same model, data and settings ----------------------


def test_skip_if_done_reevaluates_another_models_file_and_reuses_its_own(data, model, tmp_path):
    other = tmp_path / "other"
    assert train(data, other, "--seed", "1", "--images", "8").returncode == 0
    out = tmp_path / "eval.json"
    argv = ["--data", str(data), "--eval-num", "4", "--output", str(out), "--skip-if-done"]
    assert cli("evaluate", "--model", str(model), *argv, "--train-limit", "8").returncode == 0
    first = json.loads(out.read_text())
    again = cli("evaluate", "--model", str(other), *argv, "--train-limit", "8")
    assert again.returncode == 0 and "up to date" not in again.stderr
    second = json.loads(out.read_text())
    assert second["model"] != first["model"] and second["model_fingerprint"] != first["model_fingerprint"]
    assert "up to date" in cli("evaluate", "--model", str(other), *argv, "--train-limit", "8").stderr
    changed = cli("evaluate", "--model", str(other), *argv, "--train-limit", "0")  # other figures: done again
    assert "up to date" not in changed.stderr and json.loads(out.read_text())["train_limit"] == 0


def test_evaluation_is_current_needs_the_models_fingerprint_or_the_exports_own_file(tmp_path):
    from components.evaluator import eval_file_problem, evaluation_is_current

    request = {"data_fingerprint": "d", "split": "eval", "num_requested": 4, "seed": 0, "model_fingerprint": "m"}
    done = {**request, "metrics": {"swd_avg": 1.0, "num_images": 4}}
    version = tmp_path / "1"
    assert eval_file_problem(done) is None and evaluation_is_current(done, request, tmp_path / "x.json", version)
    assert not evaluation_is_current({**done, "model_fingerprint": "other"}, request, tmp_path / "x.json", version)
    exported = {key: value for key, value in done.items() if key != "model_fingerprint"}
    assert not evaluation_is_current(exported, request, version / "eval.json", version)  # no fingerprint, no source
    assert evaluation_is_current({**exported, "source": "the trainer's evaluation"}, request, version / "eval.json", version)
    assert not evaluation_is_current({**exported, "source": "x"}, request, tmp_path / "elsewhere.json", version)
    assert not evaluation_is_current({**done, "seed": 1}, request, tmp_path / "x.json", version)
    for bad in ([], {"metrics": {"swd_avg": "x", "num_images": 4}}, {"metrics": {}}, {"metrics": {"num_images": 4}}):
        assert eval_file_problem(bad)


# -- --hparams files that lie -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, complaint",
    [
        (None, "is a folder"),
        ('{"hyperparameters": {"g_l', "not JSON"),
        ("[1, 2]", "no 'hyperparameters' object"),
        ('{"hyperparameters": {"g_lr": "fast"}}', "g_lr to 'fast'"),
        ('{"hyperparameters": {"g_lr": null}}', "g_lr to None"),
        ('{"hyperparameters": {"batch_size": true}}', "batch_size to True"),
        ('{"hyperparameters": {"batch_size": 16.5}}', "batch_size to 16.5"),
        ('{"hyperparameters": {"g_lr": 1e400}}', "g_lr to inf"),
        ('{"hyperparameters": {"g_filters": 100000000000000000000000}}', "g_filters"),
        ('{"hyperparameters": {"model": {"g_filters": 3}}}', "unknown hyperparameter"),
    ],
)
def test_a_hparams_file_that_lies_is_one_error_naming_it(data, tmp_path, content, complaint):
    path = tmp_path / "best_hyperparameters.json"
    path.mkdir() if content is None else path.write_text(content)
    one_error(train(data, tmp_path / "run", "--hparams", str(path)), str(path), complaint)
    assert not (tmp_path / "run").exists()


# -- every other file we read, with content that parses but lies ---------------------------------------


@pytest.mark.parametrize(
    "change, complaint",
    [
        (lambda m: m["splits"]["train"].update(shards=m["splits"]["train"]["shards"] * 2, count=96), "listed more than once"),
        (lambda m: m["splits"].update(eval=m["splits"]["train"]), "listed more than once"),
        (lambda m: m["splits"]["eval"].update(count=-1), "needs a count"),
        (lambda m: m.update(image_size=0), "image_size is 0"),
        (lambda m: m.update(image_size=10**9), "image_size is 1000000000"),
        (lambda m: m.update(fingerprint=[1]), "fingerprint"),
        (
            lambda m: m["splits"]["train"]["shards"][0].update(count=20) or m["splits"]["train"].update(count=44),
            "holds 24 records",
        ),
    ],
)
def test_a_manifest_that_lies_is_one_error_for_every_reader(data, model, copy, change, complaint):
    lying = copy(data)
    manifest = json.loads((lying / "manifest.json").read_text())
    change(manifest)
    (lying / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(lying)
    one_error(train(lying, lying.parent / "run", "--no-export"), complaint)
    one_error(
        cli("evaluate", "--model", str(model), "--data", str(lying), "--eval-num", "4", "--output", str(lying.parent / "e.json"))
    )
    assert snapshot(lying) == before


def _record(run: Path) -> dict:
    return json.loads((run / "hparams.json").read_text())


@pytest.mark.parametrize(
    "lie, complaint",
    [
        (lambda r: {**r, "hparams": {**r["hparams"], "g_lr": "x"}}, "g_lr must be"),
        (lambda r: {**r, "hparams": {**r["hparams"], "model": []}}, "do not make a configuration"),
        (lambda r: {**r, "data": {**r["data"], "fingerprint": 7}}, "fingerprint"),
        (lambda r: {**r, "data": {**r["data"], "counts": {"train": "48"}}}, "counts"),
        (lambda r: [r], "'hparams' and a 'data' object"),
    ],
)
def test_a_run_record_that_lies_is_one_error_naming_it_for_training_and_export(data, model, copy, lie, complaint):
    run = copy(model)
    (run / "hparams.json").write_text(json.dumps(lie(_record(run))))
    for result in (train(data, run, "--no-export"), cli("export", "--run", str(run))):
        one_error(result, str(run / "hparams.json"), complaint)


LYING_METRICS = [
    {"kind": "eval", "step": "2", "images_seen": 16, "time": 0, "swd_avg": 1.0},
    {"kind": "eval", "step": 2, "images_seen": 16, "swd_avg": 1.0},  # no time
    {"kind": "eval", "step": 2, "images_seen": 16, "time": 0, "swd_avg": "low"},
    {"kind": "eval", "step": 2, "images_seen": 16, "time": 0, "swd_avg": 1.0, "evaluation": [1]},
    {"kind": 3},
]


def test_metrics_lines_that_lie_are_skipped_with_a_note_and_dropped_on_resume(data, model, copy):
    run = copy(model)
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + "".join(json.dumps(line, sort_keys=True) + "\n" for line in LYING_METRICS))
    exported = cli("export", "--run", str(run))
    assert exported.returncode == 0 and exported.stderr.count("is damaged") == len(LYING_METRICS), exported.stderr[-2000:]
    assert json.loads((run / "export" / "generator" / "2" / "model_card.json").read_text())["metrics"] is None
    assert train(data, run, "--images", "24", "--no-export").returncode == 0
    kept = [json.loads(text) for text in metrics.read_text().splitlines()]
    assert kept and all(line not in kept for line in LYING_METRICS)


@pytest.mark.parametrize(
    "content",
    ['{"metr', "[]", '{"metrics": {"swd_avg": "x", "num_images": 4}}', '{"metrics": {}}', '{"metrics": [], "seed": 0}'],
)
def test_an_eval_json_that_lies_is_never_reported(data, model, tmp_path, content):
    out = tmp_path / "eval.json"
    out.write_text(content)
    result = cli(
        "evaluate", "--model", str(model), "--data", str(data), "--eval-num", "4", "--output", str(out), "--skip-if-done"
    )
    no_traceback(result)
    assert "up to date" not in result.stderr
    if result.returncode == 0:  # redone (or, by the output guard, refused as not ours: then untouched)
        assert json.loads(out.read_text())["metrics"]["num_images"] == 4
    else:
        one_error(result, str(out))
        assert out.read_text() == content


@pytest.mark.parametrize("content", ["[]", '"x"', "7", '{"model'])
def test_a_samples_marker_that_lies_is_one_error_naming_it(model, tmp_path, content):
    out = tmp_path / "samples"
    out.mkdir()
    (out / "samples.json").write_text(content)
    result = cli("sample", "--model", str(model), "--num", "2", "--output", str(out), "--quiet")
    one_error(result, str(out / "samples.json"))
    assert [p.name for p in out.iterdir()] == ["samples.json"]


def test_a_model_card_or_saved_model_that_lies_is_redone_or_one_error(data, model, copy):
    run = copy(model)
    version = run / "export" / "generator" / "1"
    (version / "model_card.json").write_text("[]")
    assert cli("export", "--run", str(run)).returncode == 0  # a card that is not ours: a new version
    (run / "export" / "generator" / "2" / "saved_model.pb").write_bytes(b"garbage" * 10)
    for result in (
        cli("sample", "--model", str(run), "--num", "2", "--output", str(run.parent / "s"), "--quiet"),
        cli("evaluate", "--model", str(run), "--data", str(data), "--eval-num", "4"),
    ):
        one_error(result, "saved_model.pb" if "saved_model.pb" in result.stderr else str(run / "export" / "generator" / "2"))


def _tuner_folder(root: Path) -> Path:
    """The files a search leaves that a resumed one reads back, as KerasTuner and the tuner write them."""
    from components.artifacts import RunPaths

    paths = RunPaths(root / "run")
    (paths.tuner / "trial_0").mkdir(parents=True)
    (paths.tuner / "search.json").write_text(json.dumps({"settings": {}, "space": {}}))
    (paths.tuner / "oracle.json").write_text(json.dumps({"ongoing_trials": {}, "tried_so_far": []}))
    (paths.tuner / "trial_0" / "trial.json").write_text(
        json.dumps({"trial_id": "0", "hyperparameters": {}, "status": "COMPLETED"})
    )
    return paths.root


@pytest.mark.parametrize(
    "name, content",
    [
        ("search.json", "[]"),
        ("search.json", '{"settings'),
        ("trial_0/trial.json", "[]"),
        ("trial_0/trial.json", '{"trial_id": "0"}'),
        ("oracle.json", '{"ongoing_trials": {}}'),
        ("tuner0.json", '"x"'),
    ],
)
def test_a_tuner_file_that_lies_is_one_error_naming_it(tmp_path, name, content):
    from components.artifacts import RunPaths
    from components.errors import PipelineError
    from components.search_folder import prepare_search_folder

    paths = RunPaths(_tuner_folder(tmp_path))
    record = {"settings": {}, "space": {}}
    prepare_search_folder(paths, record, new_search=False)  # the intact folder resumes
    (paths.tuner / name).write_text(content)
    with pytest.raises(PipelineError, match="`overwrite_search`") as refused:
        prepare_search_folder(paths, record, new_search=False)
    assert str(paths.tuner / name) in str(refused.value)


def test_a_row_result_that_lies_counts_as_absent(tmp_path):
    from components.search_folder import read_result

    path = tmp_path / "result.json"
    good = {"status": "COMPLETED", "seconds": 1.0, "images": 16, "swd_avg": 2.0, "executions": [{"swd_avg": 2.0}]}
    for content, usable in [
        (good, True),
        ({"status": "FAILED", "seconds": 1, "images": 16, "reason": "diverged"}, True),
        ([], False),
        ({"status": "COMPLETED"}, False),
        ({**good, "swd_avg": "x"}, False),
        ({**good, "executions": [{"swd_avg": None}]}, False),
        ({**good, "status": "DONE"}, False),
    ]:
        path.write_text(json.dumps(content))
        assert (read_result(path) == content) if usable else read_result(path) is None


# -- files that are not files, or far too large: refused before they are read -------------------------


def test_read_small_file_refuses_a_fifo_a_device_and_a_giant_without_reading_them(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with open(tmp_path / "sparse.json", "wb") as handle:
        handle.truncate(2**30)  # a gigabyte that takes no disk space: read whole, it took gigabytes of memory
    (tmp_path / "big.jsonl").write_bytes(b"{}\n" * 400)
    with time_limit(20):
        for path, complaint in [
            (tmp_path / "fifo", "not a regular file"),
            ("/dev/zero", "not a regular file"),
            (tmp_path / "sparse.json", "larger than 64 MB"),
        ]:
            with pytest.raises(PipelineError, match=complaint) as raised:
                read_json(path)
            assert str(path) in str(raised.value)
    with pytest.raises(PipelineError, match="larger than"):
        read_small_file(tmp_path / "big.jsonl", limit=1000)
    assert read_small_file(tmp_path / "big.jsonl", limit=1200) == b"{}\n" * 400
    with pytest.raises(IsADirectoryError):
        read_json(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "absent.json")


def test_a_fifo_or_a_giant_in_place_of_a_file_we_read_is_one_error_naming_it(data, model, copy, tmp_path):
    os.mkfifo(tmp_path / "hparams.json")
    with open(tmp_path / "sparse.json", "wb") as handle:
        handle.truncate(2**30)
    damaged, run = copy(data), copy(model)
    shutil.rmtree(damaged / "cache", ignore_errors=True)  # the caches of other tests' evaluations
    with time_limit(120):
        for hparams in ("hparams.json", "sparse.json"):  # named before any lock is taken
            one_error(train(data, run, "--images", "24", "--hparams", str(tmp_path / hparams)), hparams)
        (run / "metrics.jsonl").unlink()
        os.mkfifo(run / "metrics.jsonl")
        one_error(train(data, run, "--images", "24", "--no-export"), "metrics.jsonl")
        one_error(cli("export", "--run", str(run)), "metrics.jsonl")
        evaluate = (
            "evaluate",
            "--model",
            str(model),
            "--data",
            str(damaged),
            "--eval-num",
            "4",
            "--output",
            str(tmp_path / "e.json"),
        )
        assert cli(*evaluate).returncode == 0
        (cache,) = (damaged / "cache").glob("eval-*.json")
        cache.unlink()
        os.mkfifo(cache)
        one_error(cli(*evaluate), cache.name)
        (damaged / "manifest.json").unlink()
        os.mkfifo(damaged / "manifest.json")
        one_error(cli(*evaluate), "manifest.json")
        one_error(train(damaged, tmp_path / "new-run"), "manifest.json")
        one_error(
            cli("ingest", "--synthetic", "8", "--image-size", "32", "--output", str(damaged), "--overwrite"), "manifest.json"
        )
    assert stat.S_ISFIFO(os.lstat(damaged / "manifest.json").st_mode)  # nothing replaced it


# -- the evaluation cache and the evaluation file ------------------------------------------------------


def test_a_lying_evaluation_cache_is_computed_again_and_rewritten(data, model, copy, tmp_path):
    damaged = copy(data)
    shutil.rmtree(damaged / "cache", ignore_errors=True)  # the caches of other tests' evaluations
    evaluate = (
        "evaluate",
        "--model",
        str(model),
        "--data",
        str(damaged),
        "--eval-num",
        "8",
        "--output",
        str(tmp_path / "e.json"),
    )
    assert cli(*evaluate).returncode == 0
    truth = json.loads((tmp_path / "e.json").read_text())["metrics"]
    (cache,) = (damaged / "cache").glob("eval-*.json")
    honest = json.loads(cache.read_text())
    lie = {**honest, "baseline": {name: -12345.0 for name in honest["baseline"]}, "real_nn": [0.0]}
    cache.write_text(json.dumps(lie))
    assert cli(*evaluate).returncode == 0
    assert json.loads((tmp_path / "e.json").read_text())["metrics"] == truth
    assert json.loads(cache.read_text()) == honest


def test_read_cache_takes_only_figures_an_evaluation_computes(tmp_path):
    real_nn = [0.25, 0.5, 0.125, 0.375]
    baseline = {"swd_16_floor": 3.5, "swd_avg_floor": 3.0, "msssim_real": 0.25, "memorisation_nn_real": 0.3125}
    honest = {"version": 1, "baseline": baseline, "real_nn": real_nn}
    path = tmp_path / "eval-0.json"
    path.write_text(json.dumps(honest))
    baseline, distances = _read_cache(path, 4, inception=False)
    assert baseline == honest["baseline"] and distances.tolist() == real_nn
    for baseline_change, distances, why in [
        ({"swd_avg_floor": -1.0}, real_nn, "a negative distance"),
        ({"swd_16_floor": float("nan")}, real_nn, "not a number"),
        ({"msssim_real": 1.5}, real_nn, "an MS-SSIM above 1"),
        ({"memorisation_nn_real": 0.0}, real_nn, "a median that is not the distances'"),
        ({"made_up": 1.0}, real_nn, "a figure no evaluation computes"),
        ({}, real_nn[:3], "another number of distances"),
        ({}, [0.25, 0.5, 0.125, 3.0], "a distance above 1"),
        ({}, None, "no distances where a training set is searched"),
    ]:
        path.write_text(json.dumps({**honest, "baseline": {**honest["baseline"], **baseline_change}, "real_nn": distances}))
        assert _read_cache(path, 4, inception=False) is None, why
    path.write_text(json.dumps(honest))
    assert _read_cache(path, 4, inception=True) is None  # no FID/KID floors
    assert _read_cache(path, None, inception=False) is None  # distances where none were searched


def test_evaluate_replaces_only_its_own_eval_json_in_the_model_folder(data, model, tmp_path):
    version = Path(shutil.copytree(model / "export" / "generator" / "1", tmp_path / "model"))
    evaluate = ("evaluate", "--model", str(version), "--data", str(data), "--eval-num", "4")
    (version / "eval.json").write_text('{"my": 1}\n')
    one_error(cli(*evaluate), str(version / "eval.json"))
    assert (version / "eval.json").read_text() == '{"my": 1}\n'
    (version / "eval.json").unlink()
    assert cli(*evaluate).returncode == 0
    written = (version / "eval.json").read_bytes()
    (version / "eval.json").write_bytes(written[:40])  # cut short: recognisably ours
    assert cli(*evaluate).returncode == 0
    assert json.loads((version / "eval.json").read_text())["metrics"]["num_images"] == 4


def test_evaluate_holds_its_data_against_writers_while_it_reads_it(data, model, tmp_path, monkeypatch):
    import components.evaluator

    attempts = []
    load = components.evaluator.load_evaluation_images

    def load_and_try_to_write(*args, **kwargs):
        try:
            with locks.writing(data, "--output"):
                attempts.append("an ingest could have replaced the data")
        except PipelineError as err:
            attempts.append(str(err))
        return load(*args, **kwargs)

    monkeypatch.setattr("components.evaluation.load_evaluation_images", load_and_try_to_write)
    result = cli("evaluate", "--model", str(model), "--data", str(data), "--eval-num", "4", "--output", str(tmp_path / "e.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(attempts) == 1 and "reads it" in attempts[0], attempts
