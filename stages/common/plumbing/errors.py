"""Errors that stop a stage with one clear line instead of a traceback."""


class StageError(Exception):
    """A problem the user can fix; the message names the key, file or index."""

    exit_code = 1


class ParamsError(StageError):
    """params.yaml is wrong: exit code 2, as for any bad command-line usage."""

    exit_code = 2


class DataError(StageError):
    """The data source or the prepared data cannot be used."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that it ends as an interrupt does."""


def first_line(error: BaseException | str, prefer: str = "", limit: int = 200) -> str:
    """The first informative line of an error message (or the first containing ``prefer``)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    chosen = next((line for line in lines if prefer and prefer in line), None)
    chosen = chosen or (lines[0] if lines else type(error).__name__)
    return chosen[:limit]
