"""`--config FILE`: a command's settings from a configuration file, under its flags.

A TOML file holds a table per stage (`STAGE_TABLES`); an artifact's JSON record holds the settings
it was made with under "settings" (`settings_record`). Each value goes through the check of the
flag it stands for (its type, range and choices), so a file can set nothing a flag could not, and
a mistake is one error naming the file, the table and the key.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline._cli import Parser

# Stage tables a configuration file may hold: any other table name is a typing mistake.
STAGE_TABLES = ("ingest", "train", "search", "export", "evaluate", "sample")


def parse_command_line(
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    *,
    tables: Mapping[str, Mapping[str, Any]] | None = None,
    records: Callable[[Path, Any], dict[str, dict[str, Any]] | None] | None = None,
) -> argparse.Namespace:
    """The flags of `argv` over the settings of `--config FILE` over the defaults.

    `tables` are settings composed by a caller (pipeline.run), by table name; they go through the
    same checks as a file's. `records(path, document)` turns a JSON record this command understands
    beyond its own "settings" (a run's hparams.json) into tables, or returns None.
    """
    config = Parser(prog=parser.prog, usage_line=parser.usage_line, add_help=False)
    config.add_argument("--config", type=Path)
    path = config.parse_known_args(list(argv))[0].config
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_settings(parser, read_config_file(path, parser.tables, records), str(path)))
    if tables:
        values.update(_settings(parser, {name: tables[name] for name in parser.tables if name in tables}, "pipeline.run"))
    for action in parser._actions:
        if action.required and action.dest in values:
            action.required = False  # given by the file
    return parser.parse_args(list(argv), argparse.Namespace(**values))


def settings_record(args: argparse.Namespace) -> dict[str, Any]:
    """The effective settings of a command (every flag's value, given or not), as JSON values: what
    its artifact records, and what `--config <that record>` reads back to repeat it."""
    return {name: str(value) if isinstance(value, Path) else value for name, value in vars(args).items() if name != "config"}


def given_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict[str, Any]:
    """The settings `argv` gives explicitly (defaults left out): argparse applies no default to an
    attribute the namespace already holds, so whatever still holds the marker was not given."""
    unset = object()
    namespace = argparse.Namespace(**{action.dest: unset for action in parser._actions if action.option_strings})
    for action in parser._actions:
        action.required = False
    return {name: value for name, value in vars(parser.parse_args(list(argv), namespace)).items() if value is not unset}


def read_config_file(
    path: Path, tables: tuple[str, ...], records: Callable[[Path, Any], dict[str, dict[str, Any]] | None] | None = None
) -> dict[str, dict[str, Any]]:
    """The tables of a configuration file this command reads: a TOML file, or the JSON record an
    earlier run of a command wrote (its "settings" object, or what `records` makes of it)."""
    import json
    import tomllib

    from components.artifacts import read_small_file
    from components.errors import PipelineError

    try:
        text = read_small_file(path).decode("utf-8")
    except FileNotFoundError:
        raise PipelineError(f"--config {path} does not exist.") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise PipelineError(f"--config {path} cannot be read: {err}.") from None
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(text)
        except ValueError as err:
            raise PipelineError(f"--config {path} is not JSON: {err}.") from None
        recorded = records(path, document) if records is not None else None
        if recorded is None:
            recorded = document.get("settings") if isinstance(document, dict) else None
        if not isinstance(recorded, dict):
            raise PipelineError(f'--config {path} is not a record of this command\'s settings (it has no "settings").')
        document = recorded
    else:
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise PipelineError(f"--config {path} is not valid TOML: {err}.") from None
    for name, table in document.items():
        if name not in STAGE_TABLES:
            raise PipelineError(f"{path}: [{name}] is not a stage's table; the tables are {', '.join(STAGE_TABLES)}.")
        if not isinstance(table, dict):
            raise PipelineError(f"{path}: {name} must be a table ([{name}]), got {table!r}.")
    return {name: document[name] for name in tables if name in document}


def check_tables(module: str, tables: Mapping[str, Mapping[str, Any]], source: str) -> None:
    """Check settings meant for the command `module` (pipeline.<stage>) as it will check them."""
    import importlib

    _settings(importlib.import_module(module).build_parser(), tables, source)


def _settings(parser: argparse.ArgumentParser, tables: Mapping[str, Mapping[str, Any]], source: str) -> dict[str, Any]:
    """The values of `tables` for `parser`, each checked as its flag would check it."""
    from components.errors import PipelineError

    actions = {
        action.dest: action for action in parser._actions if action.option_strings and action.dest not in ("help", "config")
    }
    values = {}
    for table, settings in tables.items():
        for key, value in settings.items():
            where = f"{source}: [{table}] {key}"
            if key not in actions:
                raise PipelineError(f"{where}: no such setting of {parser.prog} (the keys are its flags' names, see --help).")
            try:
                values[key] = _file_value(actions[key], value)
            except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
                raise PipelineError(f"{where}: {err}") from None
    return values


def _file_value(action: argparse.Action, value: Any) -> Any:
    """`value` from a configuration file for the flag of `action`: of the flag's type, checked by
    the flag's own checks (range, choices)."""
    if action.nargs == 0:  # a switch
        if not isinstance(value, bool) and not (value is None is action.default):
            raise TypeError(f"must be true or false, got {value!r}")
        return value
    if isinstance(action, argparse._AppendAction):
        if not isinstance(value, list):
            raise TypeError(f"must be a list, got {value!r}")
        return [_one_value(action, item) for item in value]
    return _one_value(action, value)


def _one_value(action: argparse.Action, value: Any) -> Any:
    if value is None and action.default is None:  # JSON's null in a record: not set, as the flag's default
        return None
    kind = getattr(action.type, "kind", int if action.type is int else str)
    expected = (int, float) if kind is float else kind
    if isinstance(value, bool) or not isinstance(value, expected):
        raise TypeError(
            f"must be {'a number' if kind is float else 'a whole number' if kind is int else 'a string'}, got {value!r}"
        )
    converted = action.type(str(value)) if action.type is not None else value
    if action.choices is not None and converted not in action.choices:
        raise ValueError(f"must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return converted
