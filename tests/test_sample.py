"""`python -m pipeline.sample` and components.sampler: files by index, determinism, resume, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components import latents, sampler
from components.errors import PipelineError
from components.exporter import export_generator
from components.grid import encode_png, make_grid
from pipeline.sample import main
from tests.test_exporter import LATENT, SIZE, tiny_generator

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A run-style folder whose export/generator/1 holds a tiny exported generator."""
    run = tmp_path_factory.mktemp("run")
    export_generator(tiny_generator(), run / "export" / "generator", {})
    return run


@pytest.fixture(scope="module")
def loaded(model_dir):
    return sampler.SavedModelGenerator(model_dir)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunked formats with 4 images per file, so a 10-image folder spans several files and batches."""
    for name in ("npz", "tfrecord"):
        monkeypatch.setitem(sampler.FORMATS, name, sampler.OutputFormat(name, 4, sampler.FORMATS[name].write))


def run(model_dir, out, *flags) -> None:
    assert main(["--model", str(model_dir), "--output", str(out), "--quiet", *map(str, flags)]) == 0


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def read_pngs(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


def test_png_files_are_named_by_index_and_identical_whatever_the_batch_size(model_dir, loaded, tmp_path):
    run(model_dir, tmp_path / "a", "--num", 10, "--seed", 1, "--generate-batch", 3)
    run(model_dir, tmp_path / "b", "--num", 10, "--seed", 1, "--generate-batch", 4, "--workers", 1)
    run(model_dir, tmp_path / "c", "--num", 10, "--seed", 2)
    names = [f"{i:06d}.png" for i in range(10)]
    assert sorted(p.name for p in (tmp_path / "a").glob("*.png")) == names
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")
    assert read_pngs(tmp_path / "a").shape == (10, SIZE, SIZE, 3)
    assert not np.array_equal(read_pngs(tmp_path / "a"), read_pngs(tmp_path / "c"))
    # The files are the SavedModel's own `sample` signature output for that seed.
    import tensorflow as tf

    signatures = tf.saved_model.load(str(loaded.path)).signatures
    sampled = signatures["sample"](num=tf.constant(10), seed=tf.constant(1, tf.int64))["images"].numpy()
    assert np.array_equal(read_pngs(tmp_path / "a"), sampled)


def test_a_rerun_writes_only_missing_files_and_follows_num(model_dir, tmp_path):
    out = tmp_path / "out"
    run(model_dir, out, "--num", 6)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    original = (out / "000003.png").read_bytes()
    (out / "000003.png").unlink()
    summary = sampler.sample_to_folder(sampler.SavedModelGenerator(model_dir), out, sampler.SampleOptions(num=8), progress=False)
    assert (summary.written, summary.skipped, summary.files) == (3, 5, 8)
    assert (out / "000003.png").read_bytes() == original
    assert all(out.joinpath(name).stat().st_mtime_ns == mtime for name, mtime in before.items() if name != "000003.png")
    run(model_dir, out, "--num", 4)  # shrinking drops the images past the new end
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:06d}.png" for i in range(4)]


def test_npz_chunks_hold_the_same_images_and_are_byte_identical(model_dir, tmp_path, small_chunks):
    run(model_dir, tmp_path / "png", "--num", 10, "--seed", 5)
    run(model_dir, tmp_path / "a", "--num", 10, "--seed", 5, "--format", "npz", "--generate-batch", 3)
    run(model_dir, tmp_path / "b", "--num", 10, "--seed", 5, "--format", "npz", "--generate-batch", 7)
    names = ["000000-000003.npz", "000004-000007.npz", "000008-000009.npz"]
    assert sorted(p.name for p in (tmp_path / "a").glob("*.npz")) == names
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")
    chunks = [np.load(tmp_path / "a" / name) for name in names]
    assert np.array_equal(np.concatenate([c["indices"] for c in chunks]), np.arange(10))
    assert np.array_equal(np.concatenate([c["images"] for c in chunks]), read_pngs(tmp_path / "png"))
    run(model_dir, tmp_path / "a", "--num", 6, "--seed", 5, "--format", "npz")  # last chunk re-cut at 6
    assert sorted(p.name for p in (tmp_path / "a").glob("*.npz")) == ["000000-000003.npz", "000004-000005.npz"]


def test_tfrecord_chunks_use_the_ingest_schema(model_dir, tmp_path, small_chunks):
    import tensorflow as tf

    from components.records import parse_examples

    run(model_dir, tmp_path / "png", "--num", 6, "--seed", 3)
    run(model_dir, tmp_path / "a", "--num", 6, "--seed", 3, "--format", "tfrecord")
    run(model_dir, tmp_path / "b", "--num", 6, "--seed", 3, "--format", "tfrecord", "--generate-batch", 1)
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")
    files = sorted(str(p) for p in (tmp_path / "a").glob("*.tfrecord"))
    assert [Path(f).name for f in files] == ["000000-000003.tfrecord", "000004-000005.tfrecord"]
    parsed = parse_examples(tf.stack(list(tf.data.TFRecordDataset(files))), SIZE)
    assert np.array_equal(parsed["image"].numpy(), read_pngs(tmp_path / "png"))
    assert parsed["source"].numpy()[4] == b"seed-3/000004.png"


def test_png_bytes_decode_to_the_same_pixels():
    import io

    image = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)  # wrap-around differences
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(image)))), image)


def test_grid_and_truncation(model_dir, loaded, tmp_path):
    grid = tmp_path / "grid.png"
    assert main(["--model", str(model_dir), "--grid", str(grid), "--grid-count", "4", "--truncation", "0.5"]) == 0
    import tensorflow as tf

    z = tf.clip_by_value(latents.latents(0, np.arange(4), LATENT), -0.5, 0.5)
    truncated = tf.saved_model.load(str(loaded.path)).signatures["serving_default"](z=z)["images"].numpy()
    assert np.array_equal(np.asarray(Image.open(grid)), make_grid(truncated))
    assert not np.array_equal(truncated, loaded.images(np.arange(4), seed=0))


def test_refuses_folders_that_are_not_ours_or_hold_other_settings(model_dir, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(PipelineError, match="not written by pipeline.sample"):
        run(model_dir, foreign, "--num", 2)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    out = tmp_path / "out"
    run(model_dir, out, "--num", 2, "--seed", 1)
    with pytest.raises(PipelineError, match="seed 1 -> 2"):
        run(model_dir, out, "--num", 2, "--seed", 2)
    with pytest.raises(PipelineError, match="format 'png' -> 'npz'"):
        run(model_dir, out, "--num", 2, "--seed", 1, "--format", "npz")


def test_rejects_what_is_not_a_generator_savedmodel(tmp_path):
    import tensorflow as tf

    with pytest.raises(PipelineError, match="holds no SavedModel"):
        sampler.SavedModelGenerator(tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "saved_model.pb").write_bytes(b"not a protobuf")
    with pytest.raises(PipelineError, match="not a loadable SavedModel"):
        sampler.SavedModelGenerator(tmp_path / "broken")

    module = tf.Module()
    module.double = tf.function(lambda x: {"y": 2 * x}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "other"), signatures={"double": module.double})
    with pytest.raises(PipelineError, match="has no 'serving_default' signature"):
        sampler.SavedModelGenerator(tmp_path / "other")
    tf.saved_model.save(module, str(tmp_path / "wrong"), signatures={"serving_default": module.double})
    with pytest.raises(PipelineError, match="a generator export maps"):
        sampler.SavedModelGenerator(tmp_path / "wrong")


def test_bad_numbers_are_refused(model_dir, loaded, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        run(model_dir, tmp_path / "out", "--num", 0)
    assert exit_info.value.code == 2
    with pytest.raises(PipelineError, match="^num must be a whole number from 1 to"):  # the setting, not a flag
        sampler.sample_to_folder(loaded, tmp_path / "out", sampler.SampleOptions(num=0))
    assert not (tmp_path / "out").exists()


def test_cli_reports_user_errors_in_one_line_with_exit_code_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.sample", "--model", str(tmp_path / "missing"), "--output", str(tmp_path / "o")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert f"error: {tmp_path / 'missing'} does not exist" in result.stderr and "Traceback" not in result.stderr
