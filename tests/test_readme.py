"""README.md cannot rot: its quick start is what CI runs, and every command in it parses."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)


def pipeline_commands() -> list[str]:
    """Every `python -m pipeline.<stage> ...` line of the README's shell blocks."""
    lines = [line for block in code_blocks(README) for line in block.splitlines()]
    commands = []
    for line in lines:
        for part in line.split("&&"):
            part = part.split("#")[0].strip()
            if part.startswith("python -m pipeline."):
                commands.append(part)
    return sorted(set(commands))


def test_quick_start_is_install_and_demo_then_the_ci_test_command():
    first, second = code_blocks(README)[:2]
    assert first.strip() == 'pip install -e ".[cpu,test]" && python -m pipeline.run --demo'
    assert second.strip() == "python -m pytest -q"
    ci = (ROOT / ".ci" / "run").read_text()
    # the README's install, at the versions the tests passed with
    assert 'pip install --quiet -c .ci/constraints.txt -e ".[cpu,test]"' in ci
    assert (ROOT / ".ci" / "constraints.txt").is_file()
    assert re.search(r"^python3? -m pytest -q$", ci, flags=re.MULTILINE), "CI must run the README's test command"


@pytest.mark.parametrize("command", pipeline_commands())
def test_every_readme_command_parses(command):
    words = shlex.split(command)
    module = importlib.import_module(words[2])
    ours = words[3:]
    if "--" in ours:  # Beam options after `--` go to Beam, not to our parser
        ours = ours[: ours.index("--")]
    module.build_parser().parse_args(ours)  # argparse exits (fails the test) on an unknown flag


def test_the_readme_shows_every_stage():
    stages = {re.match(r"python -m pipeline\.(\w+)", c).group(1) for c in pipeline_commands()}
    assert stages >= {"ingest", "train", "export", "evaluate", "sample", "run"}
