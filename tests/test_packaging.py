"""The package as a user gets it: the wheel built from pyproject.toml holds every module (a
sub-package missing from it installs fine and fails at the first import that needs it), and,
installed without `-e` into a fresh virtual environment, its console scripts run the pipeline
from a folder that is not the project's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.helpers import TINY, write_synthetic_faces

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "components", "bench")
STAGES = ("ingest", "train", "export", "evaluate", "sample", "run")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of the project as it is in the work tree, built without network (this machine's setuptools)."""
    folder = tmp_path_factory.mktemp("wheel")
    source = folder / "source"  # a copy: setuptools builds inside the source tree
    ignore = shutil.ignore_patterns("__pycache__", "out", "*.egg-info")
    for top in PACKAGES:
        shutil.copytree(ROOT / top, source / top, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    pip_wheel = ["pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", str(source), "-w", str(folder)]
    build = subprocess.run([sys.executable, "-m", *pip_wheel], check=False, capture_output=True, text=True, cwd=folder)
    assert build.returncode == 0, build.stderr
    (built,) = folder.glob("*.whl")
    return built


def test_the_wheel_holds_every_package_and_module(wheel):
    shipped = set(zipfile.ZipFile(wheel).namelist())
    sources = {str(path.relative_to(ROOT)) for top in PACKAGES for path in (ROOT / top).rglob("*.py")}
    assert "components/metrics/swd.py" in sources
    assert sources <= shipped, sorted(sources - shipped)


def test_the_wheel_holds_the_license_and_a_console_script_per_stage(wheel):
    archive = zipfile.ZipFile(wheel)
    dist_info = next(name.split("/")[0] for name in archive.namelist() if name.split("/")[0].endswith(".dist-info"))
    assert f"{dist_info}/LICENSE" in archive.namelist()
    assert archive.read(f"{dist_info}/LICENSE").decode() == (ROOT / "LICENSE").read_text()
    entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    for stage in STAGES:
        assert f"animegan-{stage} = pipeline.{stage}:console_script" in entry_points


def test_the_cpu_extra_asks_for_the_tensorflow_that_has_a_wheel_on_each_platform():
    """tensorflow-cpu 2.21's wheels are for Linux x86_64 and Windows AMD64; `tensorflow` has wheels
    for those and for Linux aarch64 and macOS arm64 (the package index's file lists). On every
    platform exactly one of the two is asked for: tensorflow-cpu where it has a wheel."""
    has_tensorflow_cpu = {
        ("Linux", "x86_64"): True,
        ("Windows", "AMD64"): True,
        ("Linux", "aarch64"): False,
        ("Darwin", "arm64"): False,
        ("Darwin", "x86_64"): False,
        ("Windows", "ARM64"): False,
    }
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cpu"]
    requirements = [Requirement(text) for text in extra]
    for (system, machine), cpu_wheel in has_tensorflow_cpu.items():
        environment = {"platform_system": system, "platform_machine": machine, "extra": "cpu"}
        asked = [req.name for req in requirements if req.marker is None or req.marker.evaluate(environment)]
        assert asked == ["tensorflow-cpu" if cpu_wheel else "tensorflow"], (system, machine, asked)


# The names of the flags that are still being settled, in one place.
EVALUATE_COUNT, EVALUATE_OUTPUT, SAMPLE_OUTPUT = "--eval-num", "--output", "--output"


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed (not editable, no index). It sees this
    interpreter's site-packages for TensorFlow and the other dependencies, where the work tree may be
    installed editable too: the wheel's copy comes first on the venv's path, which a test checks."""
    folder = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(folder)], check=True)
    pip_install = ["pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)]  # the pip it sees: this interpreter's
    install = subprocess.run([folder / "bin" / "python", "-m", *pip_install], check=False, capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    return folder


def venv_command(venv: Path, program: str, *argv: str, cwd: Path) -> subprocess.Popen:
    """Start one of the venv's programs in `cwd`, with no PYTHONPATH that could reach the work tree."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    return subprocess.Popen([venv / "bin" / program, *argv], cwd=cwd, env=env, **pipes)


def succeeds(process: subprocess.Popen) -> str:
    """The standard output of `process` once it has exited 0 without a traceback."""
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, f"{process.args}\n{out[-2000:]}\n{err[-2000:]}"
    assert "Traceback" not in err, err[-2000:]
    return out


def test_the_venv_imports_the_installed_wheel_not_the_work_tree(venv, tmp_path):
    code = "import json, sysconfig, pipeline, components.metrics as m; "
    code += "print(json.dumps([sysconfig.get_paths()['purelib'], pipeline.__file__, m.__file__]))"
    site, *modules = map(Path, json.loads(succeeds(venv_command(venv, "python", "-c", code, cwd=tmp_path))))
    assert site.is_relative_to(venv)  # the venv's own site-packages, not this interpreter's
    for module in modules:
        assert module.is_relative_to(site) and not module.is_relative_to(ROOT), module


def test_every_console_script_shows_its_help(venv, tmp_path):
    running = {stage: venv_command(venv, f"animegan-{stage}", "--help", cwd=tmp_path) for stage in STAGES}
    for stage, process in running.items():
        out = succeeds(process)
        assert out.startswith("usage: ") and "--quiet" in out, (stage, out[:500])


def test_the_console_scripts_run_the_pipeline_from_another_folder(venv, tmp_path):
    """Relative paths from a folder outside the work tree: every file lands below it. Evaluate and
    sample only read the model, so they run side by side."""

    def start(stage: str, *argv: str) -> subprocess.Popen:
        return venv_command(venv, f"animegan-{stage}", *argv, "--quiet", cwd=tmp_path)

    def run(stage: str, *argv: str) -> str:
        return succeeds(start(stage, *argv))

    write_synthetic_faces(tmp_path / "faces", 32, size=32)
    run("ingest", "--input", "faces", "--output", "data", "--image-size", "32", "--eval-fraction", "0.25")
    assert json.loads((tmp_path / "data" / "manifest.json").read_text())["image_size"] == 32

    run("train", "--data", "data", "--run", "run", "--images", "32", *TINY, "--no-export")
    assert (tmp_path / "run" / "hparams.json").is_file() and not (tmp_path / "run" / "export").exists()

    run("export", "--run", "run")
    (version,) = (tmp_path / "run" / "export" / "generator").iterdir()
    assert (version / "saved_model.pb").is_file()

    evaluating = start("evaluate", "--model", "run", "--data", "data", EVALUATE_COUNT, "8", EVALUATE_OUTPUT, "eval.json")
    sampling = start("sample", "--model", "run", "--num", "4", SAMPLE_OUTPUT, "samples")
    succeeds(evaluating)
    succeeds(sampling)
    assert "swd_avg" in json.loads((tmp_path / "eval.json").read_text())["metrics"]
    assert len(list((tmp_path / "samples").glob("*.png"))) == 4
