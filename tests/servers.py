"""Servers the scale-out tests start themselves, on 127.0.0.1 only: an S3 endpoint (moto), a Dask
cluster (a scheduler and workers as separate processes) and Beam's portable job service with an
external worker pool. Each is a context manager that stops every process it started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
S3_KEYS = {"key": "testing", "secret": "testing", "region": "us-east-1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(command: list[str], log: Path) -> subprocess.Popen:
    """A process in a session of its own (so its whole group can be stopped), able to import the project."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _wait_for(check, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


@contextlib.contextmanager
def s3_server(logs: Path) -> Iterator[str]:
    """A local S3 endpoint (moto); yields its URL."""
    port = free_port()
    server = _start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], logs / "moto.log")
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: urllib.request.urlopen(f"{url}/moto-api/", timeout=1), "the S3 server")
        yield url
    finally:
        _stop([server])


def s3_client(url: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name=S3_KEYS["region"],
        aws_access_key_id=S3_KEYS["key"],
        aws_secret_access_key=S3_KEYS["secret"],
    )


def s3_flags(url: str) -> list[str]:
    """Beam's S3 options for the local endpoint: what a user passes after `--`."""
    return [
        f"--s3_endpoint_url={url}",
        f"--s3_access_key_id={S3_KEYS['key']}",
        f"--s3_secret_access_key={S3_KEYS['secret']}",
        f"--s3_region_name={S3_KEYS['region']}",
    ]


@contextlib.contextmanager
def dask_cluster(logs: Path, workers: int = 2) -> Iterator[str]:
    """A Dask scheduler and `workers` single-threaded workers, each its own process; yields the address."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dashboard = ["--dashboard-address", "127.0.0.1:0"]
    processes = [
        _start(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port), *dashboard],
            logs / "scheduler.log",
        )
    ]
    try:
        for index in range(workers):
            processes.append(
                _start(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        address,
                        "--nworkers",
                        "1",
                        "--nthreads",
                        "1",
                        "--host",
                        "127.0.0.1",
                        "--name",
                        f"w{index}",
                        *dashboard,
                    ],
                    logs / f"worker{index}.log",
                )
            )
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        _stop(processes)


@contextlib.contextmanager
def portable_job_service(logs: Path) -> Iterator[list[str]]:
    """Beam's Python job service and an external worker pool (the architecture of the Flink and
    Spark runners); yields the Beam flags that send a pipeline there."""
    job_port, pool_port = free_port(), free_port()
    processes = [
        _start(
            [
                sys.executable,
                "-m",
                "apache_beam.runners.portability.local_job_service_main",
                f"--port={job_port}",
                f"--staging_dir={logs / 'staging'}",
            ],
            logs / "job_service.log",
        ),
        _start(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"],
            logs / "worker_pool.log",
        ),
    ]
    try:
        for port in (job_port, pool_port):
            _wait_for(lambda port=port: socket.create_connection(("127.0.0.1", port), timeout=1).close() is None, f"port {port}")
        yield [
            "--runner=PortableRunner",
            f"--job_endpoint=localhost:{job_port}",
            "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{pool_port}",
        ]
    finally:
        _stop(processes)
