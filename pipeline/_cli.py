"""What every CLI shares: quiet TensorFlow start-up, help formatting, user errors as exit codes."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
from typing import Callable, Iterator, Sequence

# TensorFlow prints a screenful of C++ info lines at import; keep warnings and errors (level 1).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# What TensorFlow's C++ side prints at import whatever TF_CPP_MIN_LOG_LEVEL says (absl writes it
# before its logging is initialised): info lines, the "not initialised" banner, the CPU-flags note.
_STARTUP_NOISE = re.compile(
    r"^(I\d{4} |WARNING: All log messages before absl::InitializeLog|To enable the following instructions)"
)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults beside every flag and keep the description's line breaks.

    Flags without a meaningful default (None, or off switches) get no "(default: ...)": their
    help says what happens when they are absent.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)


@contextlib.contextmanager
def file_descriptor_2_to(fileno: int) -> Iterator[int]:
    """Point file descriptor 2 at `fileno` for a while; yield a duplicate of the real stderr.

    C++ libraries and child processes write to descriptor 2 directly, where neither `sys.stderr`
    nor Python's logging can filter them.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(fileno, 2)
    try:
        yield saved
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its start-up info lines filtered out of stderr; keep real warnings.

    The lines come from C++ straight to file descriptor 2: it is pointed at a temp file during the
    import, then every line but the known noise is replayed.
    """
    if "tensorflow" in sys.modules:
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        try:
            with file_descriptor_2_to(capture.fileno()):
                import tensorflow  # noqa: F401
        finally:
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines():
                if not _STARTUP_NOISE.match(line):
                    print(line, file=sys.stderr)


def run_main(
    main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None, *, tensorflow: bool = True
) -> None:
    """Run a CLI `main`, turning user errors into one clear message and a non-zero exit.

    `PipelineError` is the user's mistake: print it without a traceback. Ctrl-C exits 130 with a
    note that re-running resumes. Anything else is our bug and keeps its traceback.
    """
    from components.errors import PipelineError

    if tensorflow:
        import_tensorflow_quietly()
    try:
        code = main(argv)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        code = EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted: re-run the same command to resume", file=sys.stderr)
        code = EXIT_INTERRUPTED
    sys.exit(code or 0)
