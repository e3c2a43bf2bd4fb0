"""The Example schema and the tf.data reader."""

import numpy as np
import pytest

from components.errors import PipelineError
from components.records import load_images, make_dataset, parse_examples
from components.shards import serialize_example
from tests.conftest import write_tiny_records


def test_serialize_parse_round_trip_is_pixel_exact():
    pixels = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    parsed = parse_examples(np.array([serialize_example(pixels, "a/b.png", "ab" * 32)]), 8)
    assert np.array_equal(parsed["image"].numpy()[0], pixels)
    assert parsed["source"].numpy()[0] == b"a/b.png"
    assert int(parsed["height"][0]) == 8 and int(parsed["channels"][0]) == 3


def test_reader_batches_shape_range_and_count(tiny_records):
    batches = list(make_dataset(tiny_records, "train", batch_size=16, repeat=False, seed=0))
    assert len(batches) == 96 // 16
    first = batches[0].numpy()
    assert first.shape == (16, 32, 32, 3) and first.dtype == np.float32
    assert first.min() >= -1.0 and first.max() <= 1.0


def test_unshuffled_reader_matches_load_images(tiny_records):
    (batch,) = make_dataset(tiny_records, "eval", batch_size=32, shuffle=False, repeat=False)
    expected = load_images(tiny_records, "eval").astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(batch.numpy(), expected, atol=1e-6)


def test_wrong_image_size_is_an_error(tiny_records):
    with pytest.raises(PipelineError, match="32x32"):
        make_dataset(tiny_records, image_size=64)


def test_corrupt_shard_error_names_the_file(tmp_path):
    images = np.zeros((8, 4, 4, 3), np.uint8)
    data = write_tiny_records(tmp_path / "d", images, images[:2], shards=1)
    shard = data / "train-00000-of-00001.tfrecord"
    blob = bytearray(shard.read_bytes())
    blob[40] ^= 0xFF  # flip a payload byte: same size, bad CRC
    shard.write_bytes(bytes(blob))
    with pytest.raises(PipelineError, match="train-00000-of-00001.tfrecord"):
        make_dataset(data, "train")


def test_truncated_shard_error_names_the_file(tmp_path):
    images = np.zeros((8, 4, 4, 3), np.uint8)
    data = write_tiny_records(tmp_path / "d", images, images[:2], shards=1)
    shard = data / "eval-00000-of-00001.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(PipelineError, match="eval-00000-of-00001.tfrecord"):
        make_dataset(data, "eval")


def test_missing_manifest_says_how_to_ingest(tmp_path):
    with pytest.raises(PipelineError, match="pipeline.ingest"):
        make_dataset(tmp_path)


def test_resolve_saved_model_finds_version_parent_and_run(tmp_path):
    from components.artifacts import RunPaths, resolve_saved_model

    run = RunPaths(tmp_path / "run")
    for version in ("1", "2", "10"):
        (run.export / version).mkdir(parents=True)
        (run.export / version / "saved_model.pb").write_bytes(b"")
    (run.export / "11").mkdir()  # an incomplete export: no saved_model.pb
    assert resolve_saved_model(run.root).name == "10"
    assert resolve_saved_model(run.export).name == "10"
    assert resolve_saved_model(run.export / "2").name == "2"
    with pytest.raises(PipelineError, match="no SavedModel"):
        resolve_saved_model(tmp_path)


def test_atomic_outputs_get_umask_permissions(tmp_path):
    import os
    import stat

    from components.artifacts import atomic_directory, atomic_write_text

    atomic_write_text(tmp_path / "a.txt", "x")
    with atomic_directory(tmp_path / "out") as tmp:
        (tmp / "f").write_text("y")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777 & ~mask


def test_shards_are_verified_on_every_read_and_only_those_read(tmp_path, monkeypatch):
    from components import records

    images = np.random.default_rng(2).integers(0, 256, (12, 4, 4, 3), dtype=np.uint8)
    data = write_tiny_records(tmp_path / "d", images, images[:4], shards=3)  # train: 3 shards of 4
    checked = []
    honest = records.verify_shard
    monkeypatch.setattr(records, "verify_shard", lambda path, count, **kw: (checked.append(path.name), honest(path, count, **kw)))

    assert len(load_images(data, "train", limit=3)) == 3
    assert checked == ["train-00000-of-00003.tfrecord"]  # the first shard holds the 3 images asked for
    make_dataset(data, "train", batch_size=4)
    assert checked[1:] == ["train-00000-of-00003.tfrecord", "train-00001-of-00003.tfrecord", "train-00002-of-00003.tfrecord"]
    make_dataset(data, "train", batch_size=4)
    assert len(checked) == 7  # again: nothing but the bytes themselves says a shard is intact
    assert not (data / "cache").exists()
