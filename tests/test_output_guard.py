"""Every path a command writes goes through one guard (components.guard): a file or folder is written
only when it is absent or provably ours; links, paths under files, folders where files are expected
and outputs inside inputs are one `error:` line (exit 2), and nothing on disk changes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components import guard, remote_data
from components.artifacts import RunPaths, append_jsonl, saved_model_versions
from components.data_folder import remove_leftovers
from components.errors import PipelineError
from components.exporter import next_version
from components.runfolder import remove_trainer_outputs
from tests.helpers import TINY, cli, ingest_tiny, no_traceback, snapshot, train_tiny, write_synthetic_faces


def refused(result, *words: str) -> None:
    """Exit 2 with one `error:` line that says each of `words`, and no traceback."""
    no_traceback(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert all(word in errors[0] for word in words), errors[0]


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("user") / "faces"
    write_synthetic_faces(folder, 24, size=32)
    return folder


@pytest.fixture(scope="module")
def data(faces, tmp_path_factory) -> Path:
    return ingest_tiny(faces, tmp_path_factory.mktemp("tfrecords") / "faces")


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """A tiny trained run with its export (the model of `pipeline.sample` and `pipeline.evaluate`)."""
    return train_tiny(data, tmp_path_factory.mktemp("artifacts") / "run", images=16)


# -- the guard itself ------------------------------------------------------------------------------


def never_ours(path: Path) -> bool:
    return False


def test_links_paths_under_files_and_wrong_kinds_are_refused_and_nothing_changes(tmp_path):
    (tmp_path / "file").write_text("mine")
    (tmp_path / "folder").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "file")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone" / "x.json")
    (tmp_path / "broken-parent").symlink_to(tmp_path / "gone")
    before = snapshot(tmp_path)
    cases = [
        (guard.output_file, "link", "symbolic link"),
        (guard.output_file, "dangling", "does not exist"),
        (guard.output_file, "file/eval.json", "is a file, not a folder"),
        (guard.output_file, "broken-parent/eval.json", "broken symbolic link"),
        (guard.output_file, "folder", "is a folder"),
        (guard.output_file, "file", "not a thing of ours"),
        (guard.output_folder, "link", "symbolic link"),
        (guard.output_folder, "file", "is a file, not a folder"),
        (guard.output_folder, "file/deeper/run", "file is a file"),
    ]
    for check, name, words in cases:
        kwargs = {"ours": never_ours, "what": "a thing of ours"} if check is guard.output_file else {}
        with pytest.raises(PipelineError, match=words):
            check("--output", tmp_path / name, **kwargs)
    with pytest.raises(PipelineError, match="not a regular file"):
        guard.output_file("--output", "/dev/null", ours=never_ours, what="a thing of ours")
    assert snapshot(tmp_path) == before and os.readlink(tmp_path / "dangling") == str(tmp_path / "gone" / "x.json")
    guard.output_file("--output", tmp_path / "new" / "eval.json", ours=never_ours, what="-")  # absent: may be written
    guard.output_file("--output", tmp_path / "file", ours=lambda path: path.read_text() == "mine", what="-")  # ours
    guard.output_folder("--output", tmp_path / "folder")
    guard.output_folder("--output", "s3://bucket/out")


def test_an_output_inside_an_input_is_refused_and_check_apart_keeps_its_rules(tmp_path):
    inputs = [("--data", tmp_path / "data"), ("--model", None)]
    with pytest.raises(PipelineError, match="lies inside --data"):
        guard.output_file("--output", tmp_path / "data" / "manifest.json", ours=never_ours, what="-", inputs=inputs)
    for output in (tmp_path / "data", tmp_path / "data" / "run", tmp_path):
        with pytest.raises(PipelineError, match="must be separate folders"):
            guard.output_folder("--run", output, inputs=inputs)
    with pytest.raises(PipelineError, match="are the same folder"):
        guard.check_apart("--input", "s3://b/faces/", "--output", "s3://b/faces")
    guard.check_apart("--input", tmp_path / "a", "--output", tmp_path / "ab")


def test_a_png_we_mark_stays_a_valid_png_and_is_told_from_others(tmp_path):
    from components.grid import encode_png

    ours, theirs = tmp_path / "ours.png", tmp_path / "theirs.png"
    ours.write_bytes(guard.mark_png(encode_png(np.full((3, 5, 3), 7, np.uint8))))
    theirs.write_bytes(encode_png(np.full((3, 5, 3), 7, np.uint8)))
    with Image.open(ours) as image:
        assert image.size == (5, 3) and np.asarray(image).max() == 7
    assert guard.is_marked_png(ours) and not guard.is_marked_png(theirs) and not guard.is_marked_png(tmp_path / "none.png")


# -- every command ---------------------------------------------------------------------------------


def test_a_grid_we_did_not_write_is_kept_and_one_we_wrote_is_replaced(run, tmp_path):
    theirs = tmp_path / "p.png"
    theirs.write_bytes(b"a user's picture")
    refused(cli("sample", "--model", str(run), "--grid", str(theirs)), "--grid", "not a contact sheet")
    assert theirs.read_bytes() == b"a user's picture"

    ours = tmp_path / "grid.png"
    for count in ("4", "9"):
        result = cli("sample", "--model", str(run), "--grid", str(ours), "--grid-count", count)
        assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(ours) as image:
        assert image.size == (3 * 34 + 2, 3 * 34 + 2)  # the second sheet, of 9 images


def test_evaluate_out_replaces_only_an_evaluation_of_ours(run, data, tmp_path):
    before = snapshot(data)
    note, dangling = tmp_path / "note.txt", tmp_path / "eval.json"
    note.write_text("mine")
    dangling.symlink_to(tmp_path / "elsewhere" / "eval.json")
    evaluate = ("evaluate", "--model", str(run), "--data", str(data), "--eval-num", "4", "--train-limit", "0")
    refused(cli(*evaluate, "--output", str(data / "manifest.json")), "lies inside --data")
    refused(cli(*evaluate, "--output", str(note)), "not an evaluation")
    refused(cli(*evaluate, "--output", str(tmp_path)), "is a folder")
    refused(cli(*evaluate, "--output", str(dangling)), "symbolic link")
    assert snapshot(data) == before and note.read_text() == "mine" and not (tmp_path / "elsewhere").exists()

    ours = tmp_path / "ours.json"
    for _ in range(2):  # the second run replaces the first's eval.json
        result = cli(*evaluate, "--output", str(ours))
        assert result.returncode == 0, result.stderr[-2000:]


def test_outputs_in_or_as_the_model_are_refused(run, data, tmp_path):
    version = max((run / "export" / "generator").iterdir(), key=lambda path: int(path.name))
    before = snapshot(run)
    refused(cli("sample", "--model", str(run), "--grid", str(version / "grid.png")), "lies inside --model")
    refused(cli("sample", "--model", str(run), "--output", str(run), "--num", "2"), "must be separate folders")
    refused(cli("sample", "--model", str(run), "--output", str(data), "--num", "2"), "not written by pipeline.sample")
    refused(cli("evaluate", "--model", str(run), "--data", str(data), "--output", str(version)), "is a folder")
    assert snapshot(run) == before


def test_a_users_file_in_the_data_cache_stops_an_overwrite_and_nothing_is_deleted(data, faces, tmp_path):
    copy = Path(shutil.copytree(data, tmp_path / "data"))
    (copy / "cache").mkdir(exist_ok=True)
    (copy / "cache" / "notes.txt").write_text("mine")
    before = snapshot(copy)
    result = cli("ingest", "--input", str(faces), "--output", str(copy), "--image-size", "32", "--overwrite", "--quiet")
    refused(result, "cache/notes.txt")
    assert snapshot(copy) == before


def test_a_run_folder_inside_the_data_s_image_folder_is_refused(data, faces):
    before = snapshot(faces)
    train = cli("train", "--data", str(data), "--run", str(faces / "run"), "--images", "8", *TINY)
    refused(train, "--data's input folder", "must be separate folders")
    whole = cli("run", "--input", str(faces), "--run", str(faces / "run"), "--image-size", "32")
    refused(whole, "--input", "must be separate folders")
    assert snapshot(faces) == before and not (faces / "run").exists()


def test_a_linked_output_is_refused_and_a_leftover_link_does_not_stop_a_rebuild(data, faces, tmp_path):
    link = tmp_path / "linked"
    link.symlink_to(data)
    before = snapshot(data)
    ingest = ("ingest", "--input", str(faces), "--image-size", "32", "--eval-fraction", "0.25", "--quiet")
    refused(cli(*ingest, "--output", str(link), "--overwrite"), "symbolic link")
    assert link.is_symlink() and snapshot(data) == before

    leftover = tmp_path / ".out.old-0badc0de"  # what a rebuild through a link used to leave beside the output
    leftover.symlink_to(data)
    assert remove_leftovers(str(tmp_path / "out")) == []
    assert leftover.is_symlink() and snapshot(data) == before


@pytest.mark.parametrize(
    "module, argv",
    [
        ("train", ["--data", "{data}", "--run", "{file}/run", "--images", "8"]),
        ("ingest", ["--input", "{faces}", "--output", "{file}/out"]),
        ("evaluate", ["--model", "{run}", "--data", "{data}", "--output", "{file}/eval.json"]),
        ("sample", ["--model", "{run}", "--grid", "{file}/grid.png"]),
        ("sample", ["--model", "{run}", "--output", "{file}/samples"]),
        ("run", ["--demo", "--data", "{file}/data"]),
        ("run", ["--demo", "--run", "{file}/run"]),
        ("export", ["--run", "{copy}"]),
    ],
)
def test_every_output_under_a_file_is_one_error_line(module, argv, data, faces, run, tmp_path):
    file = tmp_path / "file"
    file.write_text("mine")
    copy = Path(shutil.copytree(run, tmp_path / "copy", ignore=shutil.ignore_patterns("export")))
    (copy / "export").write_text("mine")  # the export target's parent
    names = {"data": data, "faces": faces, "run": run, "file": file, "copy": copy}
    refused(cli(module, *(arg.format(**names) for arg in argv)), "not a folder")
    assert file.read_text() == "mine" and (copy / "export").read_text() == "mine"


@pytest.mark.parametrize(
    "entry, kind", [("samples", "file"), ("checkpoints", "file"), ("metrics.jsonl", "folder"), ("hparams.json", "link")]
)
def test_a_run_folder_with_an_entry_of_the_wrong_kind_is_one_error_line(data, run, tmp_path, entry, kind):
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    path = copy / entry
    shutil.rmtree(path) if path.is_dir() else path.rename(tmp_path / "moved")
    if kind == "file":
        path.write_text("mine")
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "moved")
    before = snapshot(copy)
    refused(cli("train", "--data", str(data), "--run", str(copy), "--images", "32", *TINY), str(path), "of ours goes there")
    assert snapshot(copy) == before


def test_pipeline_run_refuses_a_grid_it_did_not_write_before_any_stage(tmp_path):
    grid = tmp_path / "run" / "export" / "grid.png"
    grid.parent.mkdir(parents=True)
    grid.write_bytes(b"a user's picture")
    refused(cli("run", "--demo", "--data", str(tmp_path / "data"), "--run", str(tmp_path / "run")), "not a contact sheet")
    assert grid.read_bytes() == b"a user's picture" and not (tmp_path / "data").exists()


# -- a run folder's own layout, trainer outputs, appends, odd names -------------------------------


@pytest.mark.parametrize("entry", ["samples", "logs", "checkpoints", "checkpoints/best", "tuner", "export", "export/generator"])
def test_a_link_in_a_run_folder_s_layout_is_one_error_line_and_its_target_is_untouched(data, run, tmp_path, entry):
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    user = tmp_path / "user"
    user.mkdir()
    (user / "step-0000004.png").write_text("keep")
    (user / "events.out.tfevents.1.h").write_text("keep")
    path = copy / entry
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(user)
    before, user_before = snapshot(copy), snapshot(user)
    train = ("train", "--data", str(data), "--run", str(copy), "--images", "32", *TINY)
    refused(cli(*train, "--overwrite"), str(path), "symbolic link")
    if entry.startswith("export"):
        refused(cli("export", "--run", str(copy)), str(path), "symbolic link")
    assert sorted(p.name for p in user.iterdir()) == ["events.out.tfevents.1.h", "step-0000004.png"]  # no lock, no export
    assert snapshot(user) == user_before and snapshot(copy) == before


def test_new_run_removes_only_the_trainer_s_own_entries_and_never_follows_links(run, tmp_path):
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    paths = RunPaths(copy)
    mine = tmp_path / "mine.png"
    mine.write_text("keep")
    (paths.samples / ".backup.tmp").mkdir()
    (paths.samples / ".backup.tmp" / "photo.jpg").write_text("keep")
    (paths.samples / "step-0000099.png").symlink_to(mine)
    (paths.checkpoints / ".old-1").mkdir()
    (paths.checkpoints / ".old-1" / "ckpt-1.index").write_text("keep")
    (paths.checkpoints / "ckpt-99_temp").mkdir()  # what TensorFlow leaves of a save cut short
    (paths.checkpoints / "ckpt-99_temp" / "part").write_text("theirs")
    left = remove_trainer_outputs(paths)
    assert sorted(p.relative_to(copy).as_posix() for p in left) == [
        "checkpoints/.old-1",
        "samples/.backup.tmp",
        "samples/step-0000099.png",
    ]
    assert (paths.samples / ".backup.tmp" / "photo.jpg").read_text() == "keep"
    assert (paths.checkpoints / ".old-1" / "ckpt-1.index").read_text() == "keep"
    assert mine.read_text() == "keep" and (paths.samples / "step-0000099.png").is_symlink()
    assert not (paths.checkpoints / "ckpt-99_temp").exists() and not paths.metrics.exists() and not paths.hparams.exists()
    assert sorted(p.name for p in paths.samples.iterdir()) == [".backup.tmp", "step-0000099.png"] and not paths.logs.exists()


def test_an_append_to_a_hard_linked_log_leaves_its_other_name_as_it_was(tmp_path):
    log, backup = tmp_path / "metrics.jsonl", tmp_path / "backup.jsonl"
    log.write_text('{"step": 1}\n')
    os.link(log, backup)
    append_jsonl(log, {"step": 2})
    assert backup.read_text() == '{"step": 1}\n'
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n' and log.stat().st_nlink == 1
    inode = log.stat().st_ino
    append_jsonl(log, {"step": 3})  # a file of one name is appended to in place
    assert log.stat().st_ino == inode and log.read_text().endswith('{"step": 3}\n')


def test_ingest_into_the_current_folder_by_dot_works_and_rebuilds(tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    first = cli("ingest", "--synthetic", "12", "--image-size", "32", "--eval-fraction", "0.25", "--output", ".", "--quiet")
    assert first.returncode == 0, first.stderr[-2000:]
    assert (here / "manifest.json").is_file()
    monkeypatch.chdir(here)  # the folder was replaced as a whole: enter the new one
    again = cli(
        "ingest",
        "--synthetic",
        "12",
        "--image-size",
        "32",
        "--eval-fraction",
        "0.25",
        "--output",
        ".",
        "--quiet",
        "--overwrite",
        "--seed",
        "3",
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert (here / "manifest.json").is_file()


def test_a_version_folder_named_with_a_non_ascii_digit_is_not_a_version(tmp_path):
    root = tmp_path / "generator"
    for name in ("1", "²", "٣"):
        (root / name).mkdir(parents=True)
        (root / name / "saved_model.pb").write_bytes(b"")
    assert next_version(root) == 2
    assert saved_model_versions(root) == [root / "1"]


def test_a_cache_folder_that_is_a_file_is_one_error(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.write_text("mine")
    monkeypatch.setenv(remote_data.CACHE_VARIABLE, str(cache))
    with pytest.raises(PipelineError, match=remote_data.CACHE_VARIABLE):
        remote_data._download("s3://bucket/faces", {"splits": {}}, b"{}", remote_data.cache_root() / "data" / "0123")
    assert cache.read_text() == "mine"


@pytest.mark.parametrize("kind", ["folder", "link", "broken link"])
def test_something_else_at_a_lock_file_s_place_is_one_accurate_error_line(run, tmp_path, kind):
    lock = tmp_path / ".samples.lock"
    target = tmp_path / "target"
    target.write_text("mine")
    if kind == "folder":
        lock.mkdir()
    else:
        lock.symlink_to(target if kind == "link" else tmp_path / "gone")
    result = cli("sample", "--model", str(run), "--num", "4", "--output", str(tmp_path / "samples"))
    refused(result, str(lock), "a folder" if kind == "folder" else "a symbolic link", "lock file")
    assert target.read_text() == "mine" and not (tmp_path / "samples").exists()


def test_a_newline_in_a_path_stays_inside_the_one_error_line(data, tmp_path):
    result = cli("train", "--data", str(tmp_path / "no\nsuch"), "--run", str(tmp_path / "run"), "--images", "8", *TINY)
    refused(result, "no\\nsuch")
