"""`-S key=value` overrides applied the way `dvc exp run -S` applies them, without touching
params.yaml: so that run.sh, the sweep and check_params check exactly what DVC will run."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from stages.common.config.params import Params, parse_params
from stages.common.plumbing.errors import ParamsError, first_line
from stages.common.plumbing.params_errors import suggestion
from stages.common.plumbing.stage_params import PARAMS_FILE, read_params_file

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
            why = _missing_key(override, self.raw) or _why(cause) + hint
            raise ParamsError(f"-S {override}: {why}") from None

    @property
    def raw(self) -> Any:
        return read_params_file(self.path)

    @property
    def text(self) -> str:
        return self.path.read_text()


def _why(error: BaseException) -> str:
    """Hydra's message and the reason under it ("Could not override 'x'" says no more than
    that; the cause says which key was missing)."""
    said = [first_line(error).rstrip(".")]
    cause = error.__cause__ or error.__context__
    if cause is not None and first_line(cause) not in said[0]:
        said.append(first_line(cause))
    return ": ".join(said)


def _missing_key(override: str, raw: Any) -> str | None:
    """Which part of the key of ``override`` params.yaml ``raw`` lacks, and what to write
    instead; None when the key is there (or is to be added with '+')."""
    if "=" not in override or override.startswith("+"):
        return None
    key = override.partition("=")[0].lstrip("~")
    if key == "tune.space" or key.startswith("tune.space."):
        return (
            "tune.space's keys hold dots, as in 'train.lr', which -S cannot address, and "
            "Hydra merges a new space into the old: replace it whole, -S '~tune.space' -S "
            "'+tune.space={train.lr: {type: float, low: 0.0001, high: 0.01}}'"
        )
    node: Any = raw
    walked: list[str] = []
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            known = sorted(node) if isinstance(node, dict) else []
            where = ".".join(walked) or "params.yaml"
            return f"'{part}' is not a key of {where}{suggestion(part, known)}"
        node = node[part]
        walked.append(part)
    return None


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
