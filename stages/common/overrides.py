"""`-S key=value` overrides applied the way `dvc exp run -S` applies them, without touching
params.yaml: so that run.sh, the sweep and check_params check exactly what DVC will run."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from stages.common.errors import ParamsError, first_line
from stages.common.params import PARAMS_FILE, Params, parse_params, read_params_file

QUOTING_HINT = (
    " (a value with spaces or characters beyond letters, digits and "
    """/._- needs quotes: -S 'data.source="/data/ü x.tar"')"""
)


class Overridden(NamedTuple):
    """params.yaml as DVC will write it for the run: its text, the parsed YAML, the checked
    Params."""

    text: str
    raw: dict[str, Any]
    params: Params


class ScratchParams:
    """A scratch copy of params.yaml that overrides are applied to one at a time, by DVC's own
    Hydra-based code, so that a bad one is named alone."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def apply(self, override: str) -> None:
        from dvc.exceptions import InvalidArgumentError
        from dvc.utils.hydra import apply_overrides

        try:
            apply_overrides(self.path, [override])
        except InvalidArgumentError as error:
            cause = error.__cause__ or error
            hint = QUOTING_HINT if "LexerNoViableAlt" in type(cause).__name__ + str(cause) else ""
            raise ParamsError(f"-S {override}: {first_line(cause)}{hint}") from None

    @property
    def raw(self) -> Any:
        return read_params_file(self.path)

    @property
    def text(self) -> str:
        return self.path.read_text()


@contextmanager
def scratch_params(text: str) -> Iterator[ScratchParams]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / PARAMS_FILE.name
        path.write_text(text)
        yield ScratchParams(path)


def with_overrides(overrides: list[str], path: Path = PARAMS_FILE) -> Overridden:
    """``path`` with ``overrides`` applied, in a temporary copy."""
    raw = read_params_file(path)
    text = path.read_text()
    if overrides:
        with scratch_params(text) as scratch:
            for override in overrides:
                scratch.apply(override)
            raw, text = scratch.raw, scratch.text
    return Overridden(text, raw, parse_params(raw, str(path)))
