"""The wheel built from pyproject.toml holds every package of the project (a sub-package missing
from it installs fine and fails at the first import that needs it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_package_and_module(tmp_path):
    source = tmp_path / "source"  # a copy: setuptools builds inside the source tree
    ignore = shutil.ignore_patterns("__pycache__", "out", "*.egg-info")
    for top in ("pipeline", "components", "bench"):
        shutil.copytree(ROOT / top, source / top, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", str(source), "-w", str(tmp_path)],
        check=False, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        str(path.relative_to(ROOT))
        for top in ("pipeline", "components", "bench")
        for path in (ROOT / top).rglob("*.py")
    }  # fmt: skip
    assert "components/metrics/swd.py" in sources
    assert sources <= shipped, sorted(sources - shipped)
