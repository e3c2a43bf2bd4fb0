"""The one exception type that means "the user asked for something we cannot do".

CLIs catch `PipelineError` and print its message (no traceback, non-zero exit); any other
exception is a bug and keeps its traceback.
"""


class PipelineError(Exception):
    """A user-facing error: bad input, bad option, missing or corrupt file.

    The message must say what is wrong, name the file where there is one, and say what to do.
    """
