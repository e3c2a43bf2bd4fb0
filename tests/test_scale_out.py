"""Scale-out on real engines and storage, started by the tests on 127.0.0.1: ingest bucket to bucket
on a local S3 server (moto) with the DirectRunner and on a Dask cluster (a scheduler and two
worker processes), a local ingest through Beam's portable job service with an external worker
pool, and training whose data lives on the S3 server. Every ingest must write the very records
of a local DirectRunner ingest of the same files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.errors import PipelineError
from pipeline.ingest import main as ingest
from tests.helpers import write_synthetic_faces
from tests.servers import dask_cluster, portable_job_service, s3_client, s3_flags, s3_server

COMMON = ["--image-size", "32", "--eval-fraction", "0.25", "--quiet"]


def make_faces(folder: Path) -> Path:
    """24 drawn faces, a duplicate and a file that is not an image."""
    paths = write_synthetic_faces(folder / "faces", 24, size=40)
    (folder / "faces" / "copy-of-3.png").write_bytes(paths[3].read_bytes())
    (folder / "faces" / "notes.txt").write_text("not an image")
    return folder / "faces"


def local_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


def bucket_files(client, bucket: str, prefix: str) -> dict[str, bytes]:
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
    return {item["Key"][len(prefix) + 1 :]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read() for item in listing}


def records_of(files: dict[str, bytes]) -> dict[str, bytes]:
    """The shards (byte for byte) and the rejects of an ingest output."""
    return {name: data for name, data in files.items() if name.endswith(".tfrecord") or name == "rejects.jsonl"}


@pytest.fixture(scope="module")
def local_ingest(tmp_path_factory):
    """The reference: the same faces ingested from a local folder by the DirectRunner."""
    root = tmp_path_factory.mktemp("local")
    faces = make_faces(root)
    assert ingest(["--input", str(faces), "--output", str(root / "out"), *COMMON]) == 0
    return faces, local_files(root / "out")


@pytest.fixture(scope="module")
def s3(tmp_path_factory, local_ingest):
    """A local S3 server whose bucket `in` holds the faces under faces/."""
    logs = tmp_path_factory.mktemp("s3-logs")
    faces, _ = local_ingest
    with s3_server(logs) as url:
        client = s3_client(url)
        for bucket in ("images", "records"):
            client.create_bucket(Bucket=bucket)
        for path in faces.iterdir():
            client.put_object(Bucket="images", Key=f"faces/{path.name}", Body=path.read_bytes())
        yield url, client


def test_ingest_from_bucket_to_bucket_writes_the_local_records(s3, local_ingest):
    url, client = s3
    _, expected = local_ingest
    assert ingest(["--input", "s3://images/faces", "--output", "s3://records/direct", *COMMON, "--", *s3_flags(url)]) == 0
    written = bucket_files(client, "records", "direct")
    assert records_of(written) == records_of(expected)
    manifest = json.loads(written["manifest.json"])
    assert manifest["counts"] == {"seen": 26, "written": 24, "duplicates": 1, "rejected": 1}
    assert "--s3_secret_access_key=***" in manifest["beam_options"]  # secrets are not recorded
    assert not [name for name in written if name.startswith(".")]  # no staging left in the output
    staging = client.list_objects_v2(Bucket="records", Prefix=".direct.staging").get("KeyCount", 0)
    assert staging == 0

    # Up to date the second time; a changed input rebuilds, the manifest always last.
    assert ingest(["--input", "s3://images/faces", "--output", "s3://records/direct", *COMMON, "--", *s3_flags(url)]) == 0
    assert bucket_files(client, "records", "direct")["manifest.json"] == written["manifest.json"]


def test_ingest_on_a_dask_cluster_from_bucket_to_bucket_writes_the_local_records(s3, local_ingest, tmp_path):
    url, client = s3
    _, expected = local_ingest
    with dask_cluster(tmp_path) as address:
        dask = [
            "--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
            f"--dask_client_address={address}",
            "--dask_npartitions=2",
        ]
        assert (
            ingest(["--input", "s3://images/faces", "--output", "s3://records/dask", *COMMON, "--", *dask, *s3_flags(url)]) == 0
        )
    written = bucket_files(client, "records", "dask")
    assert records_of(written) == records_of(expected)
    assert "DaskRunner" in " ".join(json.loads(written["manifest.json"])["beam_options"])


def test_ingest_through_the_portable_job_service_writes_the_local_records(local_ingest, tmp_path):
    faces, expected = local_ingest
    with portable_job_service(tmp_path) as portable:
        assert ingest(["--input", str(faces), "--output", str(tmp_path / "out"), *COMMON, "--", *portable]) == 0
    assert records_of(local_files(tmp_path / "out")) == records_of(expected)


def test_training_and_evaluation_read_a_data_folder_on_s3_through_a_verified_local_copy(s3, tmp_path, monkeypatch, capsys):
    from pipeline.evaluate import main as evaluate
    from pipeline.train import main as train

    url, client = s3
    monkeypatch.setenv("ANIMEGAN_CACHE_DIR", str(tmp_path / "cache"))
    assert ingest(["--input", "s3://images/faces", "--output", "s3://records/train", *COMMON, "--", *s3_flags(url)]) == 0
    run = tmp_path / "run"
    flags = [
        "--data",
        "s3://records/train",
        "--run",
        str(run),
        "--images",
        "16",
        "--batch-size",
        "8",
        "--latent-dim",
        "8",
        "--g-filters",
        "4",
        "--d-filters",
        "4",
        "--precision",
        "float32",
        "--eval-every",
        "16",
        "--eval-num",
        "4",
    ]
    assert train([*flags, "--", *s3_flags(url)]) == 0
    out = capsys.readouterr().out
    assert "data: s3://records/train copied to" in out and "every shard checked" in out
    copy = Path(out.split("copied to ")[1].split(" (")[0])
    assert records_of(local_files(copy)) == {
        k: v for k, v in records_of(bucket_files(client, "records", "train")).items() if k != "rejects.jsonl"
    }
    assert (
        json.loads((run / "hparams.json").read_text())["data"]["fingerprint"]
        == json.loads((copy / "manifest.json").read_text())["fingerprint"]
    )
    version = run / "export" / "generator" / "1"
    assert (
        evaluate(
            ["--model", str(version), "--data", "s3://records/train", "--eval-num", "4", "--skip-if-done", "--", *s3_flags(url)]
        )
        == 0
    )

    # A shard damaged on the server: the copy is refused with the shard's URI, the old copy untouched.
    shard = next(name for name in bucket_files(client, "records", "train") if name.startswith("train-"))
    body = bytearray(client.get_object(Bucket="records", Key=f"train/{shard}")["Body"].read())
    body[100] ^= 0xFF
    client.put_object(Bucket="records", Key=f"train/{shard}", Body=bytes(body))
    manifest = json.loads(client.get_object(Bucket="records", Key="train/manifest.json")["Body"].read())
    manifest["created"] = "changed"  # another manifest: the local copy is stale and must be fetched again
    client.put_object(Bucket="records", Key="train/manifest.json", Body=json.dumps(manifest).encode())
    with pytest.raises(PipelineError, match=f"shard s3://records/train/{shard} is damaged"):
        train([*flags, "--", *s3_flags(url)])
    assert (copy / "manifest.json").is_file()


def test_a_missing_bucket_or_manifest_is_one_clear_error(s3, tmp_path):
    url, _ = s3
    with pytest.raises(PipelineError, match="s3://nope/faces holds no files"):
        ingest(["--input", "s3://nope/faces", "--output", str(tmp_path / "x"), *COMMON, "--", *s3_flags(url)])
    from pipeline.train import main as train

    with pytest.raises(PipelineError, match="cannot read s3://images/faces/manifest.json"):
        train(["--data", "s3://images/faces", "--run", str(tmp_path / "run"), "--", *s3_flags(url)])


def test_pixels_on_the_server_decode_like_local_ones(s3, local_ingest):
    _, client = s3
    faces, _ = local_ingest
    remote = client.get_object(Bucket="images", Key="faces/face-000000.png")["Body"].read()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(remote))), np.asarray(Image.open(faces / "face-000000.png")))
