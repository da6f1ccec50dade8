"""Reading params.yaml (and presets) strictly: what PyYAML lets through and DVC or a person
would trip over later is refused here, each with one line.

- Text that is not UTF-8 (a Latin-1 or UTF-16 file): DVC reads params as UTF-8.
- A key twice in one mapping: PyYAML keeps the last silently, DVC's ruamel refuses the file
  with a ten-line error after check_params has said it is valid.
- Aliases that expand out of all proportion ("billion laughs": nine aliases of nine aliases
  of ...): PyYAML builds them as shared objects in no time, but anything that walks the
  value (validation, an error message quoting it) never finishes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stages.common.plumbing.errors import ParamsError

MAX_VALUES = 100_000  # a params.yaml holds about 150; aliases may not expand it past this


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key repeated within one mapping."""

    source = "params.yaml"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first_seen:
                raise ParamsError(
                    f"{self.source}: line {line}: duplicate key '{key}' (first at line "
                    f"{first_seen[key]}); YAML would keep only the last one"
                )
            first_seen[key] = line
        return super().construct_mapping(node, deep=deep)


def expanded_size(node: yaml.Node, sizes: dict[int, int] | None = None) -> int:
    """How many values ``node`` stands for once every alias is expanded (each shared node is
    counted once per place it appears, but computed once)."""
    sizes = {} if sizes is None else sizes
    if id(node) in sizes:
        return sizes[id(node)]
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(expanded_size(item, sizes) for item in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(expanded_size(k, sizes) + expanded_size(v, sizes) for k, v in node.value)
    sizes[id(node)] = size
    return size


def load_yaml(path: Path | str) -> Any:
    """The parsed YAML of ``path``, or one ParamsError line saying what is wrong and where."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ParamsError(
            f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
            f"{error.start}); save it as UTF-8"
        ) from None
    loader = _StrictLoader(text)
    loader.source = str(path)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = expanded_size(node)
        if size > MAX_VALUES:
            raise ParamsError(
                f"{path}: its aliases expand to {size:.3g} values (a params file has hundreds; "
                "an alias bomb?); refusing it"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise ParamsError(f"{path}:{where} {problem}") from None
    finally:
        loader.dispose()
