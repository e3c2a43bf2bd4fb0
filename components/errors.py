"""The one exception type that means "the user asked for something we cannot do".

CLIs catch `PipelineError` and print its message (no traceback, non-zero exit); any other
exception is a bug and keeps its traceback.

A message names a setting by its name in backticks ("pass `overwrite` to start over"), never by a
command-line flag: a Python caller of a component typed no flag, and a configuration file knows the
setting by that name. The CLI layer (pipeline._cli.run_main) prints each such name that is a flag
of the command being run as that flag. A whole command suggested in backticks stays as written.
"""


class PipelineError(Exception):
    """A user-facing error: bad input, bad option, missing or corrupt file.

    The message must say what is wrong, name the file where there is one, and say what to do.
    """
