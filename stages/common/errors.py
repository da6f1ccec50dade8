"""Errors that stop a stage with one clear line instead of a traceback."""


class StageError(Exception):
    """A problem the user can fix; the message names the key, file or index."""

    exit_code = 1


class ParamsError(StageError):
    """params.yaml is wrong: exit code 2, as for any bad command-line usage."""

    exit_code = 2


class DataError(StageError):
    """The data source or the prepared data cannot be used."""
