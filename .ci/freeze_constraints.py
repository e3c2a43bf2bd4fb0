"""Print the constraints file: `name==version` of every installed distribution that
`animegan-pipeline[cpu,test]` needs, directly or not (the project itself left out).

Run it where the tests just passed: `python .ci/freeze_constraints.py > .ci/constraints.txt`.
Unlike `pip freeze` it leaves out whatever else the machine has (linters, notebooks), so the file
holds only what `.ci/run` installs. Requirements' markers are evaluated for this machine.
"""

from __future__ import annotations

import importlib.metadata
import platform

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = "animegan-pipeline"
EXTRAS = ("cpu", "test")


def needed(distribution: importlib.metadata.Distribution, extras: frozenset[str]) -> list[Requirement]:
    """The requirements of `distribution` that apply here with `extras` asked for."""
    environments = [{"extra": extra} for extra in sorted(extras)] or [{"extra": ""}]
    requirements = [Requirement(text) for text in distribution.requires or []]
    return [req for req in requirements if req.marker is None or any(req.marker.evaluate(env) for env in environments)]


def closure(project: str, extras: tuple[str, ...]) -> dict[str, str]:
    """Installed version of every distribution reached from `project[extras]`, by canonical name."""
    versions: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(project, frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        if (canonicalize_name(name), wanted) in seen:
            continue
        seen.add((canonicalize_name(name), wanted))
        distribution = importlib.metadata.distribution(name)
        versions[canonicalize_name(name)] = distribution.version
        todo.extend((req.name, frozenset(req.extras)) for req in needed(distribution, wanted))
    del versions[canonicalize_name(project)]
    return versions


def main() -> None:
    machine = f"{platform.system()} {platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    print(f"# Exact versions the tests passed with: the installed closure of {PROJECT}[{','.join(EXTRAS)}] on")
    print(f"# {machine}. Made by `python .ci/freeze_constraints.py > .ci/constraints.txt`;")
    print('# used by .ci/run (`pip install -c .ci/constraints.txt -e ".[cpu,test]"`).')
    for name, version in sorted(closure(PROJECT, EXTRAS).items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
