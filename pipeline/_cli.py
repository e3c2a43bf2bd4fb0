"""What every CLI shares: quiet TensorFlow start-up, help formatting, user errors as exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

# TensorFlow prints a screenful of C++ info lines at import; keep warnings and errors (level 1).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults beside every flag and keep the description's line breaks."""


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> None:
    """Run a CLI `main`, turning user errors into one clear message and a non-zero exit.

    `PipelineError` is the user's mistake: print it without a traceback. Ctrl-C exits 130 with a
    note that re-running resumes. Anything else is our bug and keeps its traceback.
    """
    from components.errors import PipelineError

    try:
        code = main(argv)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        code = EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted: re-run the same command to resume", file=sys.stderr)
        code = EXIT_INTERRUPTED
    sys.exit(code or 0)
