"""Bounds everywhere: every count, size and seed flag is range-checked at the command line with the
limits the dataclasses check; input files are capped in bytes and pixels; hostile input folders
(links, loops, pipes, huge sparse files, names in any encoding) end as rejects with a reason; and
sampling checks what a generator returns, chunks its calls and checks the disk before writing.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import zlib
from pathlib import Path

import pytest

from components import images, sampler
from components.config import INTERVAL_LIMITS, MAX_BATCH_SIZE, MAX_SEED, SEARCH_LIMITS, TrainConfig
from components.model import MAX_FILTERS, MAX_LATENT_DIM
from components.search_space import SearchSettings
from components.sources import FolderSource
from components.train_options import TrainOptions
from tests.helpers import cli, no_traceback, write_synthetic_faces

LATENT = 4
SIZE = 8  # the mimic generators' image side


# -- the command line: one error line for every value out of range -----------------------------------


@pytest.mark.parametrize(
    "module, argv",
    [
        ("ingest", ["--synthetic", "0"]),
        ("ingest", ["--synthetic", "10000000000"]),
        ("ingest", ["--synthetic", "4", "--seed", str(2**31)]),
        ("ingest", ["--synthetic", "4", "--image-size", "100000"]),
        ("ingest", ["--synthetic", "4", "--max-pixels", str(10**10)]),
        ("ingest", ["--synthetic", "4", "--min-size", "0"]),
        ("ingest", ["--synthetic", "4", "--shards", "0"]),
        ("ingest", ["--synthetic", "4", "--eval-fraction", "1"]),
        ("train", ["--batch-size", "1000000"]),
        ("train", ["--seed", "4294967296"]),
        ("train", ["--images", "0"]),
        ("train", ["--epochs", "1e308"]),
        ("train", ["--latent-dim", "100000"]),
        ("train", ["--g-filters", "0"]),
        ("train", ["--d-filters", "1000000"]),
        ("train", ["--log-every", "0"]),
        ("train", ["--keep-checkpoints", "0"]),
        ("train", ["--r1-every", "0"]),
        ("train", ["--eval-num", "2"]),
        ("train", ["--tune", "--max-trials", "100000"]),
        ("train", ["--tune", "--executions-per-trial", "0"]),
        ("train", ["--tune", "--hyperband-factor", "1"]),
        ("train", ["--tune", "--trial-image-size", "48"]),
        ("sample", ["--seed", "9223372036854775808"]),
        ("sample", ["--num", "0"]),
        ("sample", ["--generate-batch", "1000000"]),
        ("sample", ["--grid-count", "300000"]),
        ("sample", ["--workers", "0"]),
        ("sample", ["--truncation", "1e308"]),
        ("sample", ["--truncation", "0"]),
        ("evaluate", ["--eval-num", "0"]),
        ("evaluate", ["--generate-batch", "100000"]),
        ("evaluate", ["--train-limit", "-1"]),
        ("evaluate", ["--seed", str(2**40)]),
        ("run", ["--image-size", "100000"]),
        ("run", ["--images", "0"]),
        ("run", ["--num", "0"]),
        ("run", ["--max-trials", "100000"]),
        ("run", ["--seed", "9223372036854775808"]),
    ],
)
def test_a_count_size_or_seed_out_of_range_is_one_error_line_naming_the_flag(tmp_path, module, argv):
    base = {
        "ingest": ["--output", str(tmp_path / "out")],
        "train": ["--data", str(tmp_path / "data"), "--run", str(tmp_path / "run")],
        "sample": ["--model", str(tmp_path / "model"), "--output", str(tmp_path / "out")],
        "evaluate": ["--model", str(tmp_path / "model"), "--data", str(tmp_path / "data")],
        "run": ["--demo", "--data", str(tmp_path / "data"), "--run", str(tmp_path / "run")],
    }[module]
    result = cli(module, *base, *argv)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("error:") == 1 and argv[-2] in result.stderr, result.stderr
    no_traceback(result)
    assert os.listdir(tmp_path) == []  # refused before anything was written


def test_the_command_line_limits_are_the_dataclass_limits():
    """A value the flags accept at their extremes makes a valid config: no second, other limit."""
    from pipeline.train import build_parser, config_from_args

    extremes = [
        "--batch-size",
        str(MAX_BATCH_SIZE),
        "--seed",
        str(MAX_SEED),
        "--latent-dim",
        str(MAX_LATENT_DIM),
        "--g-filters",
        str(MAX_FILTERS),
        "--d-filters",
        str(MAX_FILTERS),
    ]
    args = build_parser().parse_args(["--data", "d", *extremes])
    config = config_from_args(args)
    assert (config.batch_size, config.seed, config.model.latent_dim) == (MAX_BATCH_SIZE, MAX_SEED, MAX_LATENT_DIM)
    for field, value in (("batch_size", MAX_BATCH_SIZE + 1), ("seed", MAX_SEED + 1)):
        with pytest.raises(Exception, match=field):
            TrainConfig(**{field: value})
    TrainOptions(**INTERVAL_LIMITS)
    for name, high in INTERVAL_LIMITS.items():
        with pytest.raises(Exception, match=name):
            TrainOptions(**{name: high + 1})
    SearchSettings(**{name: high for name, (_, high) in SEARCH_LIMITS.items()})
    for name, (low, _) in SEARCH_LIMITS.items():
        with pytest.raises(Exception, match=name):  # the library names the setting; the command line its flag
            SearchSettings(**{name: low - 1})


# -- hostile input folders -------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int) -> bytes:
    """A 2 kB PNG declaring `side` x `side` grey pixels (a decompression bomb)."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", zlib.compress(b"\0" * (side + 1) * 64)) + png_chunk(b"IEND", b"")


def with_text_chunk(png: bytes, size: int) -> bytes:
    """`png` with an iTXt chunk of `size` bytes after its header."""
    return png[:33] + png_chunk(b"iTXt", b"k\0\0\0\0\0" + b"x" * size) + png[33:]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[dict, list[dict]]:
    """One ingest of a folder holding everything a user's folder may: its manifest and rejects."""
    root = tmp_path_factory.mktemp("hostile")
    faces = root / "faces"
    paths = write_synthetic_faces(faces, 6, size=32)
    write_synthetic_faces(root / "elsewhere", 3, size=32, seed=1)
    with open(faces / "big.jpg", "wb") as big:
        big.truncate(100 * 2**30)  # sparse: 100 GB that take no disk
    (faces / "bomb.png").write_bytes(bomb_png(30_000))
    (faces / "empty.png").write_bytes(b"")
    (faces / "text.png").write_bytes(with_text_chunk(paths[0].read_bytes(), 2**21))
    os.mkfifo(faces / "pipe.png")
    (faces / "dev.png").symlink_to("/dev/zero")
    (faces / "dangling.png").symlink_to(root / "gone.png")
    odd = os.fsencode(faces) + b"/dup-\xff.png"  # a name that is not UTF-8, holding a copy of a face
    Path(os.fsdecode(odd)).write_bytes(paths[1].read_bytes())
    Path(os.fsdecode(os.fsencode(faces) + b"/note-\xfe.txt")).write_text("not an image")
    (faces / "again").symlink_to(root / "elsewhere")  # a folder through a link: read
    (faces / "linked").symlink_to(root / "elsewhere")  # the same folder a second way: a reject
    (root / "elsewhere" / "loop").symlink_to(faces)  # a loop back to the top: a reject, and the walk ends
    out = root / "out"
    result = cli("ingest", "--input", str(faces), "--output", str(out), "--image-size", "32", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    no_traceback(result)
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest, [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


def test_hostile_files_are_rejects_with_a_reason_and_the_ingest_goes_on(hostile):
    manifest, rejects = hostile
    reasons = {reject["source"]: reject["reason"] for reject in rejects}
    assert {key: reasons.get(key) for key in ("big.jpg", "bomb.png", "empty.png", "pipe.png", "dev.png", "dangling.png")} == {
        "big.jpg": images.TOO_LARGE,
        "bomb.png": images.BOMB,
        "empty.png": images.EMPTY,
        "pipe.png": images.NOT_A_FILE,
        "dev.png": images.NOT_A_FILE,
        "dangling.png": images.UNREADABLE,
    }
    assert reasons["note-\udcfe.txt"] == images.NOT_AN_IMAGE
    duplicates = {r["source"]: r["duplicate_of"] for r in rejects if r["reason"] == "duplicate"}
    assert duplicates == {
        "face-000001.png": "dup-\udcff.png",  # the smallest name is kept, in any encoding
        "text.png": "face-000000.png",  # 2 MB of text beside a face's pixels: the face, once
    }
    counts = manifest["counts"]
    assert counts["written"] == 6 + 3 and counts["seen"] == counts["written"] + counts["duplicates"] + counts["rejected"]


def test_links_to_folders_are_followed_once_and_loops_end_as_rejects(hostile):
    _, rejects = hostile
    repeated = {r["source"]: r["detail"] for r in rejects if r["reason"] == images.REPEATED_FOLDER}
    assert repeated == {
        "linked/": "the same folder as again/ (through a link), read already",  # links are read in name order
        "again/loop/": "the same folder as the input folder (through a link), read already",
    }


def test_a_folder_of_links_only_is_listed_through_them_never_silently_empty(tmp_path):
    write_synthetic_faces(tmp_path / "real", 2, size=32)
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "a").symlink_to(tmp_path / "real")
    (tmp_path / "links" / "face.png").symlink_to(tmp_path / "real" / "face-000000.png")
    assert FolderSource(str(tmp_path / "links")).scan().names == ["a/face-000000.png", "a/face-000001.png", "face.png"]
    (tmp_path / "loops").mkdir()
    (tmp_path / "loops" / "self").symlink_to(tmp_path / "loops")
    scan = FolderSource(str(tmp_path / "loops")).scan()
    assert scan.names == [] and [r["reason"] for r in scan.unlisted] == [images.REPEATED_FOLDER]


def test_an_input_that_is_a_file_or_a_pipe_is_one_error_line(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"not a folder")
    os.mkfifo(tmp_path / "pipe")
    for name in ("photo.png", "pipe"):
        result = cli("ingest", "--input", str(tmp_path / name), "--output", str(tmp_path / "out"), "--quiet")
        assert result.returncode == 2 and result.stderr.count("error:") == 1 and "is not a folder" in result.stderr
        no_traceback(result)
    assert not (tmp_path / "out").exists() and (tmp_path / "photo.png").read_bytes() == b"not a folder"


def test_a_file_that_changes_after_the_listing_is_read_within_bounds_or_rejected(tmp_path):
    """Between listing and reading a file may grow, vanish or become a pipe: never a hang, never
    more than the limit read."""
    write_synthetic_faces(tmp_path, 3, size=32)
    source = FolderSource(str(tmp_path))
    names = source.scan().names
    os.truncate(tmp_path / names[0], 2**40)
    (tmp_path / names[1]).unlink()
    (tmp_path / names[2]).unlink()
    os.mkfifo(tmp_path / names[2])
    outcome = {}

    def read_all() -> None:
        for name in names:
            try:
                source.read(name, 10_000)
            except images.Rejected as rejected:
                outcome[name] = rejected.reason

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(60)
    assert not reader.is_alive(), "reading a pipe blocked"
    assert outcome == {names[0]: images.TOO_LARGE, names[1]: images.UNREADABLE, names[2]: images.NOT_A_FILE}


# -- sampling: what the generator returns, chunked calls, the disk ----------------------------------


def mimic_generator(folder: Path, images_for) -> Path:
    """A SavedModel with a `serving_default` signature like the exporter's (z float32[None, LATENT]
    -> {"images": uint8[...]}) whose images are `images_for(z)`."""
    import tensorflow as tf

    module = tf.Module()
    module.serve = tf.function(
        lambda z: {"images": images_for(z)}, input_signature=[tf.TensorSpec([None, LATENT], tf.float32, name="z")]
    )
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    return folder


def grey(z, count=None):
    import tensorflow as tf

    return tf.fill(tf.stack([tf.shape(z)[0] if count is None else count, SIZE, SIZE, 3]), tf.constant(128, tf.uint8))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    import tensorflow as tf

    root = tmp_path_factory.mktemp("models")

    def one_short_past_two(z):  # right for the one image of the load check, one short for larger batches
        images = grey(z)
        return tf.cond(tf.shape(z)[0] > 2, lambda: images[1:], lambda: images)

    return {
        "good": mimic_generator(root / "good", lambda z: tf.ensure_shape(grey(z), [None, SIZE, SIZE, 3])),
        "short": mimic_generator(root / "short", lambda z: tf.ensure_shape(one_short_past_two(z), [None, SIZE, SIZE, 3])),
        "always4": mimic_generator(root / "always4", lambda z: tf.ensure_shape(grey(z, 4), [None, SIZE, SIZE, 3])),
        "unsized": mimic_generator(root / "unsized", unsized),
    }


def unsized(z):
    """Images whose height and width the signature leaves open (a size computed at run time)."""
    import tensorflow as tf

    side = tf.cast(tf.reduce_sum(z) * 0, tf.int32) + SIZE  # a value of the input: unknown when traced
    return tf.cast(tf.image.resize(grey(z), tf.stack([side, side])), tf.uint8)


def test_a_generator_returning_the_wrong_count_is_one_error_and_leaves_no_misnamed_file(models, tmp_path):
    out = tmp_path / "out"
    result = cli(
        "sample", "--model", str(models["short"]), "--num", "8", "--generate-batch", "4", "--output", str(out), "--quiet"
    )
    assert result.returncode == 2 and result.stderr.count("error:") == 1, result.stderr[-2000:]
    assert "returned uint8 (3, 8, 8, 3) for 4 latents instead of uint8 (4, 8, 8, 3)" in result.stderr
    no_traceback(result)
    assert not list(out.glob("*.png"))
    for name in ("always4", "unsized"):  # wrong at the load check, or a shape the signature does not fix
        result = cli("sample", "--model", str(models[name]), "--num", "2", "--output", str(tmp_path / name), "--quiet")
        assert result.returncode == 2 and result.stderr.count("error:") == 1, result.stderr[-2000:]
        no_traceback(result)
        assert not (tmp_path / name).exists()


def test_generator_calls_are_chunked_and_a_grid_too(models, tmp_path):
    generator = sampler.SavedModelGenerator(models["good"])
    calls = []
    serve = generator._serve
    generator._serve = lambda z: calls.append(int(z.shape[0])) or serve(z=z)
    sampler.save_first_grid(generator, tmp_path / "grid.png", sampler.SampleOptions(grid_count=20, generate_batch=8))
    assert calls == [8, 8, 4] and (tmp_path / "grid.png").is_file()


def test_a_huge_num_is_refused_for_its_disk_space_before_any_name_is_listed(models, tmp_path):
    out = tmp_path / "out"
    result = cli("sample", "--model", str(models["good"]), "--num", "1000000000000", "--output", str(out), "--quiet")
    assert result.returncode == 2 and result.stderr.count("error:") == 1, result.stderr[-2000:]
    assert "1,000,000,000,000 png images need about 4.1 PB" in result.stderr and "free" in result.stderr
    no_traceback(result)
    assert not out.exists()


def test_what_is_on_disk_counts_from_the_names_there():
    png, npz = sampler.FORMATS["png"], sampler.FORMATS["npz"]
    assert png.images_in(["000000.png", "000003.png", "000009.png", "notes.txt", "0000001.png"], 5) == 2
    assert npz.images_in(["000000-000999.npz", "001000-001499.npz", "001000-001999.npz"], 1500) == 1500
    assert png.estimated_bytes(3, (64, 64, 3)) == 3 * 16384 and npz.estimated_bytes(1500, (8, 8, 3)) == 2 * 200704


# -- the sample folder: only files of ours are counted, replaced or deleted ----------------------------


def sample(model: Path, out: Path, num: int, *extra: str):
    return cli("sample", "--model", str(model), "--num", str(num), "--output", str(out), "--quiet", *extra)


def test_a_grid_inside_the_sample_folder_is_refused(models, tmp_path):
    out = tmp_path / "out"
    result = sample(models["good"], out, 8, "--grid", str(out / "000008.png"))
    assert result.returncode == 2 and result.stderr.count("error:") == 1 and "lies inside --out" in result.stderr, result.stderr[
        -2000:
    ]
    no_traceback(result)
    assert not out.exists()


def test_only_files_a_sampling_wrote_are_deleted_and_only_regular_files_count(models, tmp_path):
    out = tmp_path / "out"
    assert sample(models["good"], out, 8).returncode == 0
    (out / "000100.png").write_text("mine")  # past the end, never written by a sampling: the user's
    (out / "000200.png").mkdir()
    result = sample(models["good"], out, 4)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(path.name for path in out.glob("0000*.png")) == [f"{i:06d}.png" for i in range(4)]
    assert (out / "000100.png").read_text() == "mine" and (out / "000200.png").is_dir()
    assert (out / "000000.png").stat().st_mode & 0o777 == 0o666 & ~_umask()  # shared like any file, not private
    for name, make, kind in (("000009.png", Path.mkdir, "a folder"), ("000010.png", Path.symlink_to, "a symbolic link")):
        make(out / name, *([out / "000100.png"] if kind == "a symbolic link" else []))  # where an image of --num 12 goes
        result = sample(models["good"], out, 12)
        assert result.returncode == 2 and result.stderr.count("error:") == 1, result.stderr[-2000:]
        assert f"{out / name} is {kind}" in result.stderr
        no_traceback(result)
        assert json.loads((out / "samples.json").read_text())["num"] == 4 and not (out / "000004.png").exists()  # nothing written
        (out / name).rmdir() if kind == "a folder" else (out / name).unlink()
    result = sample(models["good"], out, 12)
    assert result.returncode == 0 and "(8 generated, 4 already there)" in result.stdout, result.stdout
    assert all((out / f"{i:06d}.png").is_file() for i in range(12)) and (out / "000100.png").read_text() == "mine"


def test_a_linked_marker_is_refused_and_left_alone(models, tmp_path):
    out = tmp_path / "out"
    assert sample(models["good"], out, 2).returncode == 0
    elsewhere = tmp_path / "settings.json"
    (out / "samples.json").rename(elsewhere)
    (out / "samples.json").symlink_to(elsewhere)
    result = sample(models["good"], out, 3)
    assert result.returncode == 2 and result.stderr.count("error:") == 1 and "symbolic link" in result.stderr, result.stderr[
        -2000:
    ]
    no_traceback(result)
    assert (out / "samples.json").is_symlink() and not (out / "000002.png").exists()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_project_folder_reached_from_the_image_folder_is_one_reject_never_faces(tmp_path):
    write_synthetic_faces(tmp_path / "faces", 2, size=32)
    for marker in ("hparams.json", "samples.json", "manifest.json", "saved_model.pb"):
        project = tmp_path / marker.split(".")[0]
        write_synthetic_faces(project / "inner", 1, size=32)
        (project / marker).write_text("{}")
        (tmp_path / "faces" / f"to-{project.name}").symlink_to(project)
    (tmp_path / "faces" / "run").mkdir()
    (tmp_path / "faces" / "run" / "hparams.json").write_text("{}")
    scan = FolderSource(str(tmp_path / "faces")).scan()
    assert scan.names == ["face-000000.png", "face-000001.png"]
    rejects = {r["source"]: r["reason"] for r in scan.unlisted}
    expected = ["run/", "to-hparams/", "to-manifest/", "to-samples/", "to-saved_model/"]
    assert rejects == dict.fromkeys(expected, images.PROJECT_FOLDER)
