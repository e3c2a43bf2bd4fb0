"""Beam's local workers die with the ingest that started them, even when it is killed with SIGKILL.

The DirectRunner in multi-processing mode starts its workers as child processes (through a
shell) that wait on a gRPC connection to the driver; a driver killed before they connected
leaves them waiting for ever. `workers_die_with_this_process()` gives every process started
inside it an environment variable with a fresh token, and starts a small watchdog in a session
of its own: when this process is gone, the watchdog kills every process that carries the token
(only processes started from here inherit it) and exits. On a normal exit it is stopped. Linux
only (it reads /proc); elsewhere it does nothing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

TOKEN_VARIABLE = "ANIMEGAN_INGEST_RUN"

_WATCHDOG = (
    r"""
import os, sys, time
parent, needle = int(sys.argv[1]), ("%s=" + sys.argv[2]).encode() + b"\0"

def running(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"  # a zombie has exited
    except OSError:
        return False

while running(parent):
    time.sleep(0.5)
for entry in os.listdir("/proc"):
    if entry.isdigit() and int(entry) != os.getpid():
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if needle in environ.read() + b"\0":
                    os.kill(int(entry), 9)
        except OSError:
            pass
"""
    % TOKEN_VARIABLE
)


@contextlib.contextmanager
def workers_die_with_this_process() -> Iterator[None]:
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc"):
        yield
        return
    token = secrets.token_hex(8)
    environment = {name: value for name, value in os.environ.items() if name != TOKEN_VARIABLE}
    watchdog = subprocess.Popen(
        [sys.executable, "-S", "-c", _WATCHDOG, str(os.getpid()), token],
        env=environment,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ[TOKEN_VARIABLE] = token
    try:
        yield
    finally:
        os.environ.pop(TOKEN_VARIABLE, None)
        watchdog.kill()
        watchdog.wait()
