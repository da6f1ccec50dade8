"""Save and load nested state (dicts and lists of tensors and plain values) without pickle.

Tensors go into a safetensors file; everything else (the structure, numbers, strings) is JSON
in the file's own header metadata. Loading parses a JSON header and raw tensor bytes only, so
a crafted file cannot run code: a pickle (or anything else) is refused with one line.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from stages.common.plumbing.errors import DataError
from stages.common.plumbing.files import write_atomic

TREE_KEY = "tree"
_TENSOR_MARK = "__tensor__"
_MAX_HEADER = 100_000_000


def _split(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """``value`` with every tensor replaced by a reference into ``tensors``."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {_TENSOR_MARK: path}
    if isinstance(value, dict):
        if not all(isinstance(key, str | int) for key in value):
            raise TypeError(f"{path}: only str/int keys can be saved")
        return {
            "__dict__": [
                [key, _split(item, tensors, f"{path}.{key}")] for key, item in value.items()
            ]
        }
    if isinstance(value, list | tuple):
        return [_split(item, tensors, f"{path}.{index}") for index, item in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"{path}: cannot save {type(value).__name__}")


def _join(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if _TENSOR_MARK in value:
            return tensors[value[_TENSOR_MARK]]
        return {key: _join(item, tensors) for key, item in value["__dict__"]}
    if isinstance(value, list):
        return [_join(item, tensors) for item in value]
    return value


def save_tensors(
    path: Path | str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    """A safetensors file with string ``metadata`` in its header, written atomically."""
    contiguous = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    write_atomic(path, lambda temp: save_file(contiguous, str(temp), metadata=metadata))


def load_tensors(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and header metadata of a safetensors file; DataError (one line) naming the
    file for anything else, a pickle included."""
    header = read_header(path)
    try:
        return load_file(str(path)), header.get("__metadata__") or {}
    except (SafetensorError, OSError) as error:
        raise DataError(f"{path}: damaged ({str(error).splitlines()[0][:120]})") from None


def save_tree(path: Path | str, tree: Any) -> None:
    """Write ``tree`` atomically: tensors as safetensors, the rest as JSON in its header."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split(tree, tensors, "root")
    save_tensors(path, tensors, {TREE_KEY: json.dumps(skeleton)})


def read_header(path: Path | str) -> dict[str, Any]:
    """The safetensors header of ``path``; DataError (one line) for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found")
    total = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        size = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
        if not 2 <= size <= _MAX_HEADER:
            raise DataError(_not_safetensors(path, prefix))
        if 8 + size > total:
            raise DataError(
                f"{path}: cut short (its header says {size:,} bytes of metadata; the file has "
                f"{total:,} bytes in all): copy or `dvc pull` it again"
            )
        text = handle.read(size)
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        if text[:1] != b"{":
            raise DataError(_not_safetensors(path, prefix)) from None
        raise DataError(f"{path}: a damaged safetensors header") from None
    if not isinstance(header, dict):
        raise DataError(_not_safetensors(path, prefix))
    return header


def _not_safetensors(path: Path, prefix: bytes) -> str:
    kind = "a pickle" if prefix[:1] == b"\x80" or prefix[:2] == b"PK" else "another format"
    return (
        f"{path}: not a safetensors file (looks like {kind}); refusing to load it, since "
        "pickled files can run code"
    )


def load_tree(path: Path | str) -> Any:
    """What :func:`save_tree` wrote; DataError naming the file if it is anything else."""
    tensors, metadata = load_tensors(path)
    if TREE_KEY not in metadata:
        raise DataError(f"{path}: a safetensors file without this project's metadata")
    try:
        return _join(json.loads(metadata[TREE_KEY]), tensors)
    except (KeyError, ValueError) as error:
        raise DataError(f"{path}: damaged metadata ({error})") from None
