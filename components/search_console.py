"""What KerasTuner prints during a search, kept to what a user acts on.

KerasTuner prints the whole traceback of every failed trial to stderr. A trial that diverges is
an expected outcome of a search: `components.tuner` reports it in one line and keeps its
traceback in the trial's result.json, so `quiet_trial_failures` drops those tracebacks and lets
everything else through.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_trial_failures() -> Iterator[None]:
    """Keep KerasTuner from printing a traceback per failed trial (it prints every one to stderr):
    a diverged trial is an expected outcome; `run_trial` prints one line and keeps the traceback
    in the trial's result.json. Other output, and tracebacks of anything else, pass through."""
    saved, sys.stderr = sys.stderr, _FailedTrialTracebackFilter(sys.stderr)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = saved


class _FailedTrialTracebackFilter(io.TextIOBase):
    """A text stream that drops whole tracebacks ending in a `FailedTrialError` line."""

    def __init__(self, stream):
        self.stream, self.held = stream, ""

    def write(self, text: str) -> int:
        if not self.held and not text.startswith("Traceback (most recent call last):"):
            return self.stream.write(text)
        self.held += text
        if self.held.endswith("\n"):
            last = self.held.rstrip("\n").rsplit("\n", 1)[-1]
            if last and not last[0].isspace() and not last.startswith("Traceback"):  # the exception line
                if "FailedTrialError: " not in last:
                    self.stream.write(self.held)
                self.held = ""
        return len(text)

    def flush(self) -> None:
        if self.held:
            self.stream.write(self.held)
            self.held = ""
        self.stream.flush()
