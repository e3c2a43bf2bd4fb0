"""What every CLI shares: quiet TensorFlow start-up, help formatting, user errors as exit codes."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import math
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from components.config import MAX_SEED
from components.settings import interval

# TensorFlow prints a screenful of C++ info lines at import; keep warnings and errors (level 1).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# What TensorFlow's C++ side prints at import whatever TF_CPP_MIN_LOG_LEVEL says (absl writes it
# before its logging is initialised): info lines, the "not initialised" banner, the CPU-flags note.
_STARTUP_NOISE = re.compile(
    r"^(I\d{4} |WARNING: All log messages before absl::InitializeLog|To enable the following instructions)"
)

EXIT_ENVIRONMENT = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM: what a shell reports for a process SIGTERM ended


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, a job scheduler, `docker stop`), raised where Ctrl-C raises
    KeyboardInterrupt: the command stops the same way (unfinished atomic writes abandoned, the last
    checkpoint kept, locks released) and the same code that handles Ctrl-C handles it."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the command runs, SIGTERM raises `Terminated` in the main thread. A second SIGTERM
    during the clean-up ends the process at once (the default action)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults beside every flag and keep the description's line breaks.

    Flags without a meaningful default (None, or off switches) get no "(default: ...)": their
    help says what happens when they are absent.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def finite_float(text: str) -> float:
    """An argparse type: a float that is a real number (`inf` and `nan` are refused by name)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


finite_float.kind = float


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high`, both included.

    Every count, size and seed flag has one, so a value no machine could honour (a batch of a
    million images, a seed NumPy refuses) is one `error:` line before any work starts. Where a
    dataclass checks the same field, both use one constant.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low:,} to {high:,}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:,}, got {value:,}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,}, got {value:,}")
        return value

    parse.__name__ = f"integer from {low} to {high}"
    parse.kind = int
    return parse


def bounded_float(low: float, high: float, *, low_included: bool = True, high_included: bool = True) -> Callable[[str], float]:
    """An argparse type: a finite number from `low` to `high`, each end included unless `low_included`
    or `high_included` says not."""

    def parse(text: str) -> float:
        value = finite_float(text)
        above_low = low <= value if low_included else low < value
        below_high = value <= high if high_included else value < high
        if not (above_low and below_high):
            raise argparse.ArgumentTypeError(f"must be {interval(low, high, low_included, high_included)}, got {text}")
        return value

    parse.__name__ = "number"
    parse.kind = float
    return parse


# Argparse types shared by several CLIs. A seed: what every user of it accepts (components.config).
seed = bounded_int(0, MAX_SEED)


class Parser(argparse.ArgumentParser):
    """argparse with the house rules: no abbreviated flags (`--epoch 3` is an error, not `--epochs`),
    a bad command line is a short usage line and one `error:` line (exit 2) instead of every flag,
    and `--flag=--`, which reaches a flag as an empty list without its type being called (Python
    3.11), is a usage error too."""

    def __init__(self, *, usage_line: str, **kwargs):
        super().__init__(allow_abbrev=False, **kwargs)
        self.usage_line = usage_line

    def _get_values(self, action: argparse.Action, arg_strings: list[str]):
        if action.option_strings and arg_strings == ["--"]:
            raise argparse.ArgumentError(action, "'--' is not a value")
        return super()._get_values(action, arg_strings)

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"usage: {self.prog} {self.usage_line}  (--help for all flags)\nerror: {message}\n")


def make_parser(prog: str, description: str, usage: str = "[options]", *, tables: tuple[str, ...]) -> argparse.ArgumentParser:
    """The parser of one command; `usage` is what a bad command line shows after the command's name:
    its required flags and `[options]`. Its `--config FILE` reads the configuration file's `tables`
    (`pipeline._config.parse_command_line`)."""
    parser = Parser(prog=prog, description=description, formatter_class=HelpFormatter, usage_line=usage)
    parser.tables = tables
    names = " and ".join(f"[{table}]" for table in tables)
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"read settings from the {names} table{'s' if len(tables) > 1 else ''} of a TOML file (keys: the flags' "
        "names with _ for -; other stages' tables are ignored, so one file serves pipeline.run and every stage), "
        "or from the JSON record of an earlier run of this command; flags given here override the file",
    )
    return parser


def flag_name(setting: str) -> str:
    """The command-line flag of a setting: `eval_num` -> `--eval-num` (a configuration file's key is the setting's name)."""
    return "--" + setting.replace("_", "-")


def add_setting(group, config_class: type, name: str, *, default: Any = dataclasses.MISSING, note: str = "") -> argparse.Action:
    """The flag `flag_name(name)` of the setting `name` of a configuration dataclass: its type, range,
    choices, default and help are the field's (components.settings), declared nowhere else. A range
    the flag cannot check alone (an open end, or tied to another setting) is the dataclass's to check.

    `default` replaces the field's default on the command line, e.g. None where the value comes from
    elsewhere when the flag is absent (a recipe), which `note`, added to the help, then states."""
    field = next(field for field in dataclasses.fields(config_class) if field.name == name)
    spec = field.metadata["setting"]
    default = field.default if default is dataclasses.MISSING else default
    options: dict[str, Any] = {"default": default, "help": spec["help"] + note}
    bounded = spec["low"] is not None and spec["high"] is not None
    if spec["kind"] is bool:
        options["action"] = "store_true" if default is False else argparse.BooleanOptionalAction
    else:
        options["metavar"] = spec["metavar"]
        options["choices"] = spec["choices"]
        if spec["kind"] is int:
            options["type"] = bounded_int(spec["low"], spec["high"]) if bounded else int
        elif spec["kind"] is float:
            ends = {"low_included": spec["low_included"], "high_included": spec["high_included"]}
            options["type"] = bounded_float(spec["low"], spec["high"], **ends) if bounded else finite_float
    return group.add_argument(flag_name(name), **options)


def options_from_args(config_class: type, args: argparse.Namespace, **others: Any):
    """The configuration `config_class` (components.settings) holding the parsed flags of its settings
    and its `others` fields; it checks itself, so a value no flag checks alone (e.g. two settings
    together) is refused here."""
    from components.settings import setting_fields

    flags = {field.name: getattr(args, field.name) for field in setting_fields(config_class) if field.name not in others}
    return config_class(**flags, **others)


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


def split_beam_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Our flags before `--`, Beam's after it (passed to Beam untouched)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def resolve_data(data: str, fs_flags: Sequence[str] = (), quiet: bool = False):
    """The local folder of `--data`: the path itself, or for a URI (s3://, gs://, ...) a verified
    local copy (components.remote_data); an error when there is no such folder."""
    from pathlib import Path

    from components.errors import PipelineError
    from components.remote_data import local_data

    local = Path(local_data(data, fs_flags, say=(lambda _: None) if quiet else print))
    if not local.is_dir():
        raise PipelineError(f"--data {data} does not exist; create it with `python -m pipeline.ingest`.")
    return local


def data_name(data: str) -> str:
    """The last component of a folder path or URI: `tfrecords/faces/` -> faces, `s3://b/faces` -> faces."""
    from pathlib import Path

    if "://" in data:
        return data.rstrip("/").rsplit("/", 1)[-1] or "data"
    return Path(data).resolve().name


# Failures of the machine rather than of the command: a full disk, a read-only or forbidden folder.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
_ENVIRONMENT_TEXT = re.compile(r"No space left on device|Disk quota exceeded|Read-only file system|Permission denied")


def environment_failure(err: BaseException) -> str | None:
    """One line describing `err` if it is a failure of the environment, else None.

    TensorFlow and Beam wrap the operating system's error in their own exception types, so
    besides `OSError` numbers the message itself is looked at.
    """
    if isinstance(err, ModuleNotFoundError) and (err.name or "").split(".")[0] == "tensorflow":
        return 'TensorFlow is not installed: pip install -e ".[cpu]" (or ".[gpu]" on a machine with an NVIDIA GPU).'
    if isinstance(err, OSError) and err.errno in _ENVIRONMENT_ERRNOS:
        return f"{err.strerror}: {err.filename}" if err.filename else str(err)
    match = _ENVIRONMENT_TEXT.search(str(err))
    if match and not isinstance(err, KeyboardInterrupt):
        line = next((line for line in str(err).splitlines() if match.group(0) in line), match.group(0))
        return line.strip()[:500]
    return None


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None, *, tensorflow: bool = True) -> None:
    """Run a CLI `main`, turning user errors into one clear message and a non-zero exit.

    `PipelineError` is the user's mistake: print it without a traceback, exit 2. A failure of the
    machine (full disk, read-only or forbidden folder, no TensorFlow) prints one line and exits 1;
    every write is atomic, so nothing half-written is left; a path that cannot exist (too long, a
    loop of links) is the user's mistake again. Ctrl-C exits 130 and SIGTERM 143, each
    with a note that re-running resumes. Anything else is our bug and keeps its traceback.

    A user error names settings the library's way, in backticks ("pass `overwrite` to start over",
    components.errors); each that is a flag of this command is printed as that flag ("pass
    --overwrite to start over", `flags_of`, `name_flags`), the rest stay as written: a
    configuration key, or a command to run.
    """
    from components.errors import PipelineError
    from components.settings import SettingError

    try:
        with sigterm_as_interrupt():
            if tensorflow:
                import_tensorflow_quietly()
            code = main(argv)
    except SettingError as err:  # a setting's name, as the command line knows it: its flag
        _error_line(name_flags(f"{flag_name(err.setting)} {err.problem}", flags_of(main)))
        code = EXIT_USER_ERROR
    except PipelineError as err:
        _error_line(name_flags(str(err), flags_of(main)))
        code = EXIT_USER_ERROR
    except Terminated:
        print("\nterminated (SIGTERM): re-run the same command to resume", file=sys.stderr)
        code = EXIT_TERMINATED
    except KeyboardInterrupt:
        print("\ninterrupted: re-run the same command to resume", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except OSError as err:
        code = _os_error(err)
    except Exception as err:
        line = environment_failure(err)
        if line is None:
            raise
        _error_line(line)
        code = EXIT_ENVIRONMENT
    sys.exit(code or 0)


# A setting named in a message, the library's way (components.errors): its name in backticks.
_SETTING_NAME = re.compile(r"`([a-z][a-z0-9_]*)`")


def flags_of(main: Callable) -> dict[str, str]:
    """The flags of the command whose `main` this is, by setting name: each option's `dest` -> its
    long option string, from the `build_parser()` of `main`'s module (`__main__` under `python -m`);
    none for a module without one."""
    build_parser = getattr(sys.modules.get(main.__module__), "build_parser", None)
    if build_parser is None:
        return {}
    flags: dict[str, str] = {}
    for action in build_parser()._actions:
        long_options = [option for option in action.option_strings if option.startswith("--")]
        if long_options:
            flags.setdefault(action.dest, long_options[0])
    return flags


def name_flags(message: str, flags: dict[str, str]) -> str:
    """`message` with each setting named in backticks that is one of `flags` written as that flag:
    "pass `overwrite`" -> "pass --overwrite". Any other backticked text stays: a setting this
    command has no flag for reads as its configuration key, and a command (`python -m ...`) as one."""
    return _SETTING_NAME.sub(lambda match: flags.get(match.group(1), match.group()), message)


# Characters that end a line or move the cursor (str.splitlines breaks at several besides "\n").
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _error_line(message: str) -> None:
    """Print `message` as the one `error:` line: a control character in it (a newline in a path the
    user gave) is written as its escape, so the message stays one line that scripts can grep."""
    escaped = _CONTROL.sub(lambda match: repr(match.group())[1:-1], message)
    print(f"error: {escaped}", file=sys.stderr)


# A path the user gave that no file system can hold or follow: their mistake, not the machine's.
_PATH_MISTAKES = {errno.ENAMETOOLONG, errno.ELOOP}


def _os_error(err: OSError) -> int:
    """One line and an exit code for an operating-system error that escaped the stages: a path
    the user gave that cannot exist (too long, a loop of links) is a user error (2), a failure of
    the machine one of environment (1); anything else is our bug and keeps its traceback."""
    if err.errno in _PATH_MISTAKES:
        name = f": {os.fsdecode(err.filename)[:200]}" if err.filename else ""
        _error_line(f"{err.strerror}{name}; give a shorter path, or one without a loop of links.")
        return EXIT_USER_ERROR
    line = environment_failure(err)
    if line is None:
        raise err
    _error_line(line)
    return EXIT_ENVIRONMENT
