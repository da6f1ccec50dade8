"""One line for a pydantic ValidationError: ``key.path: what is wrong (got value)``.

It reads pydantic's error locations, where pydantic 2 also puts the union member it tried
(``int``, ``function-after[...]``, ``literal['a','b']``) between the keys: those are told apart
from keys by their names and tags. A pydantic release that renames them shows here first
(tests/test_params.py's table of bad values fails).
"""

from __future__ import annotations

import difflib
import reprlib
from typing import Any

from pydantic import BaseModel, ValidationError

_UNION_MEMBER_TAGS = ("function-", "constrained-", "literal[")


def describe(error: ValidationError, root: type[BaseModel]) -> str:
    """The first problem of ``error`` (raised validating ``root``) as one line."""
    first = error.errors()[0]
    location = [str(part) for part in first["loc"] if _is_key(part)]
    key = ".".join(location)
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        parent, unknown = first["loc"][:-1], str(first["loc"][-1])
        return f"{key}: unknown key{suggestion(unknown, known_keys(root, parent))}"
    if first["type"] == "missing":
        return f"{key}: required key is missing"
    if first["type"] == "value_error":
        nested, separator, rest = message.partition(": ")
        if separator and " " not in nested:
            return f"{key}.{nested}: {rest}" if key else f"{nested}: {rest}"
        return f"{key}: {message}"
    return f"{key}: {message} (got {quoted(first.get('input'))})"


def suggestion(key: str, known: list[str]) -> str:
    """ " (did you mean 'x'?)", or the known keys, or nothing."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (known: {', '.join(known)})" if known else ""


def quoted(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error line quotes the value, however
    large (a list of a million items, an alias-expanded tree)."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    short.maxlist = short.maxdict = 4
    return short.repr(value)


def known_keys(root: type[BaseModel], location: tuple[Any, ...]) -> list[str]:
    """Field names accepted at ``location`` (a path into ``root``)."""
    model: type[BaseModel] = root
    parts = list(location)
    while parts:
        part = parts.pop(0)
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return []
        annotation = field.annotation
        mapping_value = _mapping_value_model(annotation)
        if mapping_value is not None:
            if not parts:
                return []
            parts.pop(0)  # the entry's name (a model, a download, a search-space key)
            model = mapping_value
            continue
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted((f.alias or name) for name, f in model.model_fields.items())


def _is_key(part: Any) -> bool:
    """Pydantic puts the union member it tried into an error's location; keep the keys only."""
    text = str(part)
    return text not in ("bool", "str", "int", "float", "none") and not text.startswith(
        _UNION_MEMBER_TAGS
    )


def _mapping_value_model(annotation: Any) -> type[BaseModel] | None:
    """For ``dict[str, SomeModel]`` fields: SomeModel."""
    arguments: tuple[Any, ...] = getattr(annotation, "__args__", ())
    if getattr(annotation, "__origin__", None) is dict and len(arguments) == 2:
        value = arguments[1]
        if isinstance(value, type) and issubclass(value, BaseModel):
            return value
    return None
