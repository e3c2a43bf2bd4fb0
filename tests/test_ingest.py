"""`python -m pipeline.ingest` end to end (Beam), its planning pieces, and the TF-free record I/O.

Beam start-up costs seconds, so one module-scoped ingest of a mixed folder (good images,
duplicates, every kind of bad file) in the default multi-processing mode serves most tests; the
few other runs use the in-memory runner, which is also how the tests check that options after
`--` reach Beam.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.errors import PipelineError
from components.example_gen import IngestOptions, find_duplicates, plan_chunks, split_of
from components.records import make_dataset, parse_examples
from components.shards import serialize_example, write_shard
from components.synthetic import synthetic_face
from pipeline._cli import run_main
from pipeline.ingest import main
from tests.helpers import read_records

IN_MEMORY = ["--", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
REPO = Path(__file__).resolve().parents[1]

BAD_FILES = {  # name in bad/ -> expected reason
    "empty.jpg": "empty-file",
    "notes.txt": "not-an-image",
    "truncated.jpg": "truncated",
    "corrupt.png": "corrupt",
    "tiny.png": "too-small",
    "bomb.png": "decompression-bomb",
    "dangling.png": "unreadable",
    "scan.tiff": "unsupported-format",
}


def face(index: int, size: int = 32) -> np.ndarray:
    return np.asarray(synthetic_face(seed=9, index=index, size=size))


def save(path: Path, pixels: np.ndarray, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def make_folder(root: Path, faces: int) -> dict[str, np.ndarray]:
    """Lossless faces under root/faces/; returns the pixels each written source must hold."""
    expected = {}
    for index in range(faces):
        name = f"faces/face-{index:03d}.png"
        expected[name] = face(index)
        save(root / name, expected[name])
    return expected


def add_bad_files(root: Path) -> None:
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.txt").write_text("not an image\n")
    jpeg = io.BytesIO()
    Image.fromarray(face(0, 64)).save(jpeg, format="JPEG")
    (bad / "truncated.jpg").write_bytes(jpeg.getvalue()[:600])
    png = (root / "faces/face-000.png").read_bytes()
    (bad / "corrupt.png").write_bytes(png[:100] + b"\0" * 300 + png[400:])
    save(bad / "tiny.png", face(0, 8))  # below the default --min-size (16 for 32 px)
    from tests.test_images import png_header_only

    (bad / "bomb.png").write_bytes(png_header_only(30_000, 30_000))
    (bad / "dangling.png").symlink_to(bad / "deleted.png")
    save(bad / "scan.tiff", face(0), "TIFF")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """A 32 px ingest of 24 faces + 2 duplicates + 1 wide image + 8 bad files, default runner."""
    root = tmp_path_factory.mktemp("images")
    expected = make_folder(root, 24)
    # 64 x 32 with face 31 in the middle, halves of faces 30 and 32 either side: the crop is face 31.
    save(root / "faces/wide.png", np.concatenate([face(30), face(31), face(32)], axis=1)[:, 16:80])
    expected["faces/wide.png"] = face(31)
    (root / "more").mkdir()
    shutil.copy(root / "faces/face-000.png", root / "more/dup-a.png")
    save(root / "more/dup-b.bmp", face(1), "BMP")  # same pixels as face-001, another format
    add_bad_files(root)
    (root / ".DS_Store").write_bytes(b"\0\0")  # hidden: not an input at all
    out = tmp_path_factory.mktemp("tfrecords") / "mixed"
    assert main(["--input", str(root), "--output", str(out), "--image-size", "32", "--eval-fraction", "0.25", "--quiet"]) == 0
    return out, expected


def read_all(data_dir: Path) -> dict[str, tuple[str, np.ndarray]]:
    """source -> (split, uint8 pixels) of every record in every shard of the manifest."""
    manifest = json.loads((data_dir / "manifest.json").read_text())
    size = manifest["image_size"]
    found = {}
    for split, entry in manifest["splits"].items():
        for shard in entry["shards"]:
            serialized = np.array(list(read_records(data_dir / shard["file"])), dtype=object)
            parsed = parse_examples(serialized, size)
            for source, image in zip(parsed["source"].numpy(), parsed["image"].numpy()):
                found[source.decode()] = (split, image)
    return found


def rejects(data_dir: Path) -> dict[str, dict]:
    return {line["source"]: line for line in map(json.loads, (data_dir / "rejects.jsonl").read_text().splitlines())}


def test_counts_add_up_and_the_manifest_describes_the_shards(ingested):
    out, expected = ingested
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"seen": 35, "written": 25, "duplicates": 2, "rejected": 8}
    assert manifest["rejected_by_reason"] == {reason: 1 for reason in BAD_FILES.values()}
    assert manifest["image_size"] == 32 and manifest["channels"] == 3
    assert manifest["options"]["min_size"] == 16 and manifest["options"]["eval_fraction"] == 0.25
    assert set(manifest["tool_versions"]) >= {"apache-beam", "numpy", "pillow"}
    assert len(manifest["fingerprint"]) == 16 and manifest["source"]["kind"] == "folder"
    listed = set()
    for split, entry in manifest["splits"].items():
        assert entry["count"] == sum(shard["count"] for shard in entry["shards"])
        for shard in entry["shards"]:
            assert shard["file"].startswith(f"{split}-") and (out / shard["file"]).stat().st_size == shard["bytes"]
            listed.add(shard["file"])
    assert manifest["splits"]["train"]["count"] + manifest["splits"]["eval"]["count"] == 25
    assert {p.name for p in out.iterdir()} == listed | {"manifest.json", "rejects.jsonl"}  # no staging left-overs


def test_every_bad_file_is_rejected_with_its_reason(ingested):
    out, _ = ingested
    lines = rejects(out)
    assert {name: lines[f"bad/{name}"]["reason"] for name in BAD_FILES} == BAD_FILES
    assert all(lines[f"bad/{name}"]["detail"] for name in BAD_FILES)


def test_exact_duplicates_are_written_once(ingested):
    out, _ = ingested
    lines = rejects(out)
    assert lines["more/dup-a.png"] == {"source": "more/dup-a.png", "reason": "duplicate", "duplicate_of": "faces/face-000.png"}
    assert lines["more/dup-b.bmp"]["duplicate_of"] == "faces/face-001.png"
    written = read_all(out)
    assert "more/dup-a.png" not in written and "faces/face-000.png" in written


def test_pixels_round_trip_exactly_and_the_split_is_a_hash_of_the_name(ingested):
    out, expected = ingested
    written = read_all(out)
    assert set(written) == set(expected)
    for source, (split, pixels) in written.items():
        assert np.array_equal(pixels, expected[source]), source
        assert split == split_of(source, 0.25), source
    assert {split for split, _ in written.values()} == {"train", "eval"}


def test_reader_batches_have_the_right_shape_range_and_count(ingested):
    out, _ = ingested
    train_count = json.loads((out / "manifest.json").read_text())["splits"]["train"]["count"]
    batches = [b.numpy() for b in make_dataset(out, "train", batch_size=4, repeat=False, seed=1)]
    assert len(batches) == train_count // 4
    assert all(b.shape == (4, 32, 32, 3) and b.dtype == np.float32 for b in batches)
    assert min(b.min() for b in batches) >= -1.0 and max(b.max() for b in batches) <= 1.0


def test_rerun_is_a_no_op_and_overwrite_rebuilds_identically(ingested, tmp_path, capsys):
    out, _ = ingested
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = {p.name: (p.stat().st_ino, p.read_bytes()) for p in copy.iterdir() if p.is_file()}
    source = json.loads((copy / "manifest.json").read_text())["source"]["root"]
    argv = ["--input", source, "--output", str(copy), "--image-size", "32", "--eval-fraction", "0.25", "--quiet"]
    capsys.readouterr()

    assert main(argv) == 0
    assert "up to date" in capsys.readouterr().out
    assert {p.name: (p.stat().st_ino, p.read_bytes()) for p in copy.iterdir() if p.is_file()} == before

    assert main([*argv, "--overwrite", *IN_MEMORY]) == 0
    assert "ingested" in capsys.readouterr().out
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["beam_options"] == IN_MEMORY[1:]  # passed through to Beam and recorded
    for name, (inode, data) in before.items():
        if name.endswith(".tfrecord") or name == "rejects.jsonl":
            assert (copy / name).read_bytes() == data, name  # same records whatever the runner
            assert (copy / name).stat().st_ino != inode, name  # but freshly written


def test_changed_inputs_or_options_rebuild(tmp_path, capsys):
    root = tmp_path / "images"
    make_folder(root, 6)
    out = tmp_path / "out"
    argv = ["--input", str(root), "--output", str(out), "--image-size", "32", "--quiet", *IN_MEMORY]
    assert main(argv) == 0
    save(root / "faces/extra.png", face(40))
    save(root / "faces/again.png", face(0))  # a duplicate of face-000
    assert main(argv) == 0
    assert json.loads((out / "manifest.json").read_text())["counts"] == {"seen": 8, "written": 7, "duplicates": 1, "rejected": 0}
    assert main([*argv[:-3], "--no-dedupe", *IN_MEMORY]) == 0
    assert json.loads((out / "manifest.json").read_text())["counts"] == {"seen": 8, "written": 8, "duplicates": 0, "rejected": 0}
    assert capsys.readouterr().out.count("ingested") == 3


def test_synthetic_faces_with_forced_shards(tmp_path):
    out = tmp_path / "synthetic"
    argv = ["--synthetic", "40", "--image-size", "16", "--shards", "3", "--eval-fraction", "0.2", "--output", str(out)]
    assert main([*argv, "--quiet", *IN_MEMORY]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == {"kind": "synthetic", "count": 40, "seed": 0, "size": 16, "version": 1}
    train = manifest["splits"]["train"]
    assert [s["file"] for s in train["shards"]] == [f"train-{i:05d}-of-00003.tfrecord" for i in range(3)]
    assert train["count"] + manifest["splits"]["eval"]["count"] == 40
    written = read_all(out)
    assert np.array_equal(written["face-000007.png"][1], np.asarray(synthetic_face(0, 7, 16)))


def test_zero_images_written_is_an_error_and_leaves_no_output(tmp_path):
    root = tmp_path / "junk"
    root.mkdir()
    (root / "readme.txt").write_text("hello\n")
    (root / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    with pytest.raises(PipelineError, match=r"no images written: all 2 input files were rejected \(1 "):
        main(["--input", str(root), "--output", str(out), "--quiet", *IN_MEMORY])
    assert not out.exists() and sorted(os.listdir(tmp_path)) == [
        ".out.lock",
        "junk",
    ]  # the lock beside --output stays (components.locks)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--input", "{tmp}/missing"], "missing does not exist"),
        (["--input", "{tmp}/empty"], "holds no files"),
        (["--synthetic", "5", "--eval-fraction", "1.5"], "--eval-fraction must be in"),
        (["--synthetic", "5", "--image-size", "2"], "--image-size: must be at least 4"),
        (["--synthetic", "5", "--output", "{tmp}/empty"], "is not an ingest output"),
        (["--input", "{tmp}", "--synthetic", "5"], "not allowed with argument"),
        (["--synthetic", "0"], "must be at least 1"),
        (["--input", "{tmp}/empty", "--output", "{tmp}/empty/out"], "is inside --input"),
    ],
)
def test_cli_errors_exit_2_with_a_message(argv, message, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden").write_text("")
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    with pytest.raises(SystemExit) as exited:
        run_main(main, [*argv, "--quiet"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_module_entry_point_explains_how_to_get_data(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.ingest", "--input", str(tmp_path / "data")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: no input images") and "--synthetic 2000" in result.stderr
    assert "Traceback" not in result.stderr and "WARNING" not in result.stderr


# Planning, without Beam


def test_chunks_are_near_equal_largest_first_and_shards_can_be_forced():
    names = [f"img-{i:05d}.png" for i in range(1000)]
    chunks = plan_chunks(names, IngestOptions(image_size=256, eval_fraction=0.1))  # ~170 images per 32 MB
    assert sorted(n for c in chunks for n in c.names) == names
    train = [c for c in chunks if c.split == "train"]
    assert len(train) == train[0].total > 1 and max(len(c.names) for c in train) - min(len(c.names) for c in train) <= 1
    assert [len(c.names) for c in chunks] == sorted((len(c.names) for c in chunks), reverse=True)
    forced = plan_chunks(names, IngestOptions(shards=4, eval_fraction=0.1))
    assert sorted(c.file for c in forced) == sorted(
        [f"train-{i:05d}-of-00004.tfrecord" for i in range(4)] + [f"eval-{i:05d}-of-00004.tfrecord" for i in range(4)]
    )


def test_split_of_is_stable_and_near_the_fraction():
    names = [f"dir/{i}.jpg" for i in range(20_000)]
    share = sum(split_of(n, 0.05) == "eval" for n in names) / len(names)
    assert 0.04 < share < 0.06
    assert [split_of(n, 0.05) for n in names[:100]] == [split_of(n, 0.05) for n in names[:100]]
    assert all(split_of(n, 0.0) == "train" for n in names[:100])


def test_find_duplicates_keeps_the_smallest_name():
    parts = [[("h1", b"b.png", "train-00000", 0), ("h2", b"c.png", "train-00000", 1)], [("h1", b"a.png", "eval-00000", 4)]]
    assert list(find_duplicates(0, parts)) == [("train-00000", {"position": 0, "source": b"b.png", "duplicate_of": b"a.png"})]


# TF-free record I/O (components/records.py)


def test_serialized_examples_are_valid_tf_train_examples():
    import tensorflow as tf

    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    example = tf.train.Example.FromString(serialize_example(pixels, "dir/é.png", "cd" * 32))
    feature = example.features.feature
    assert feature["image"].bytes_list.value == [pixels.tobytes()]
    assert [feature[k].int64_list.value[0] for k in ("height", "width", "channels")] == [5, 7, 3]
    assert feature["source"].bytes_list.value == ["dir/é.png".encode()]
    assert feature["sha256"].bytes_list.value == [b"cd" * 32]


def test_write_shard_matches_tf_record_writer(tmp_path):
    import tensorflow as tf

    records = [b"", b"x", bytes(range(256)) * 40]
    entry = write_shard(tmp_path / "ours.tfrecord", records)
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
        for record in records:
            writer.write(record)
    assert (tmp_path / "ours.tfrecord").read_bytes() == (tmp_path / "tf.tfrecord").read_bytes()
    assert entry == {"file": "ours.tfrecord", "count": 3, "bytes": (tmp_path / "tf.tfrecord").stat().st_size}
    assert read_records(tmp_path / "ours.tfrecord") == records
