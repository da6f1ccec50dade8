"""`-S key=value` overrides applied the way `dvc exp run -S` applies them, without touching
params.yaml: so that run.sh, the sweep and check_params check exactly what DVC will run."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from stages.common.errors import ParamsError, first_line
from stages.common.params import PARAMS_FILE, Params, parse_params, read_params_file


class Overridden(NamedTuple):
    """params.yaml as DVC will write it for the run: its text, the parsed YAML, the checked
    Params."""

    text: str
    raw: dict[str, Any]
    params: Params


def with_overrides(overrides: list[str], path: Path = PARAMS_FILE) -> Overridden:
    """``path`` with ``overrides`` applied by DVC's own Hydra-based code, in a temporary copy."""
    raw = read_params_file(path)
    text = path.read_text()
    if overrides:
        from dvc.exceptions import InvalidArgumentError
        from dvc.utils.hydra import apply_overrides

        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / path.name
            shutil.copyfile(path, copy)
            try:
                apply_overrides(copy, overrides)
            except InvalidArgumentError as error:
                cause = error.__cause__ or error
                hint = ""
                if "LexerNoViableAlt" in type(cause).__name__ + str(cause):
                    hint = (
                        " (a value with spaces or characters beyond letters, digits and "
                        """/._- needs quotes: -S 'data.source="/data/ü x.tar"')"""
                    )
                raise ParamsError(f"-S {' '.join(overrides)}: {first_line(cause)}{hint}") from None
            raw = read_params_file(copy)
            text = copy.read_text()
    return Overridden(text, raw, parse_params(raw, str(path)))
