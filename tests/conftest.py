"""Shared fixtures: every test makes its own small data; none reads the real-face data set or the network."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_tiny_records(out_dir: Path, train: np.ndarray, eval_: np.ndarray, shards: int = 2) -> Path:
    """Write uint8 NHWC arrays as an ingest-style data folder (shards + manifest), without Beam.

    For tests of the stages after ingest, which need valid shards fast; the ingest tests cover
    the Beam job itself.
    """
    from components.artifacts import atomic_write_json
    from components.shards import serialize_example, shard_name, write_shard

    out_dir.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, images in (("train", train), ("eval", eval_)):
        chunks = [c for c in np.array_split(np.arange(len(images)), shards) if len(c)]
        entries = []
        for index, chunk in enumerate(chunks):
            records = (serialize_example(images[i], f"{split}/{i}.png", f"{i:064x}") for i in chunk)
            entries.append(write_shard(out_dir / shard_name(split, index, len(chunks)), records))
        splits[split] = {"count": len(images), "shards": entries}
    manifest = {"image_size": int(train.shape[1]), "channels": 3, "splits": splits, "fingerprint": "test"}
    atomic_write_json(out_dir / "manifest.json", manifest)
    return out_dir


@pytest.fixture(scope="session")
def tiny_records(tmp_path_factory) -> Path:
    """A 32x32 data folder of 96 train and 32 eval smooth random images."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(128, 4, 4, 3)).astype(np.float32)
    images = np.repeat(np.repeat(base, 8, axis=1), 8, axis=2).astype(np.uint8)
    return write_tiny_records(tmp_path_factory.mktemp("records"), images[:96], images[96:])


def pytest_addoption(parser):
    parser.addoption(
        "--fault-rounds",
        type=int,
        default=1,
        help="kills per stage in tests/test_fault_injection.py, each at another random moment (the long version: 20)",
    )
