"""The project's own errors: expected bad input, reported as one line a person can act on.

Scripts catch `PipelineError`, print `error: <message>` on stderr and exit with code 2; anything else is a
bug and keeps its traceback.
"""


class PipelineError(Exception):
    """Bad input or usage: the message names the file/column/row and says what to do."""


class DataError(PipelineError):
    """A CSV or processed-data folder that cannot be used as it is."""


class ConfigError(PipelineError):
    """A flag, YAML config or parameter value that cannot be used."""


class CheckpointError(PipelineError):
    """No usable checkpoint, or one that does not match the requested run."""
