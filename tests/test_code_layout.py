"""The code base's shape: one concern a module, no packed lines, no import cycles, public KerasTuner API only."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 420  # "about 400": a module past this holds more than one concern
PACKAGES = ("components", "pipeline")
SOURCE_FOLDERS = (*PACKAGES, "bench", "tests")  # every folder of Python the project keeps
LINE_LIMIT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["line-length"]


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def module_level_imports(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports when it is imported (imports inside functions excluded)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        found |= {name for name in names if name in known}
    return found


def test_no_module_is_over_about_400_lines():
    long = {name: n for name, path in project_modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long


def lines_where(folders: tuple[str, ...], found: Callable[[str], bool]) -> list[str]:
    """`path:line` of every line of the .py files under `folders` for which `found(line)` holds."""
    return [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in folders
        for path in sorted((ROOT / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if found(line)
    ]


def test_no_line_is_over_the_line_limit():
    """The limit is pyproject's, checked here without ruff, so the test suite alone keeps it."""
    long = lines_where(SOURCE_FOLDERS, lambda line: len(line) > LINE_LIMIT)
    assert not long, f"over {LINE_LIMIT} columns: {', '.join(long)}"


def test_no_module_switches_the_formatter_off():
    """`# fmt: skip` keeps a packed line out of the formatter's reach; a module's size is kept down by
    splitting it by concern (the line-count test above), not by packing lines."""
    skipped = lines_where(PACKAGES, lambda line: "# fmt: skip" in line or "# fmt: off" in line)
    assert not skipped, f"formatting switched off at {', '.join(skipped)}"


def test_module_level_imports_have_no_cycle():
    modules = project_modules()
    graph = {name: module_level_imports(path, set(modules)) - {name} for name, path in modules.items()}
    visiting, done = set(), set()

    def visit(name: str, chain: list[str]) -> None:
        assert name not in visiting, " -> ".join([*chain, name])
        if name in done:
            return
        visiting.add(name)
        for target in sorted(graph[name]):
            visit(target, [*chain, name])
        visiting.discard(name)
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_only_public_keras_tuner_api_is_used():
    for path in project_modules().values():
        assert "keras_tuner.src" not in path.read_text(), path


def test_no_command_line_module_loads_tensorflow_when_imported():
    """`pipeline._cli` sets TF_CPP_MIN_LOG_LEVEL when imported; that only quiets TensorFlow's start-up
    if nothing a CLI imports at module level has loaded TensorFlow before, whatever the import order."""
    import subprocess
    import sys

    names = sorted(path.stem for path in (ROOT / "pipeline").glob("[!_]*.py"))
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module('pipeline.' + name)\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'keras_tuner') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert names  # the CLIs were found
