"""Atomic file writes: a reader never sees a half-written output."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from stages.common.plumbing.errors import DataError

# what np.load raises for a truncated or bit-flipped .npz
NPZ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only on success."""
    path = Path(path)
    if problem := writable(path):
        raise DataError(f"{path}: cannot write it ({problem})")
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        # mkstemp creates 0600, and a writer may replace the file with its own (safetensors
        # does): outputs get the usual mode, set last
        os.chmod(temp, 0o666 & ~_UMASK)
        os.replace(temp, path)
    except OSError as error:  # a full disk, a read-only folder: one line naming the output
        raise DataError(f"{path}: cannot write it ({error.strerror or error})") from None
    finally:
        temp.unlink(missing_ok=True)


def writable(path: Path | str) -> str | None:
    """Why ``path`` cannot be written atomically (a directory there, a folder that cannot be
    made or written), or None. Checked before long work whose result goes there."""
    path = Path(path)
    if path.is_dir():
        return f"'{path}' is a directory"
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot make the folder '{folder}' ({error.strerror or error})"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder '{folder}' is not writable"
    return None


def write_atomic(path: Path | str, writer: Callable[[Path], Any]) -> None:
    """Call ``writer(temp_path)`` and move the result into place."""
    with atomic_path(path) as temp:
        writer(temp)


def write_text(path: Path | str, text: str) -> None:
    write_atomic(path, lambda temp: temp.write_text(text))


def _to_builtin(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_json(path: Path | str, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=_to_builtin) + "\n")


def read_json(path: Path | str) -> Any:
    """A JSON file's content; a missing or damaged file is one DataError line naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run the stage that writes it)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(
            f"{path}: damaged JSON ({error}); restore it with `dvc checkout` or re-run the "
            "stage that writes it"
        ) from None


def copy_file(source: Path | str, destination: Path | str) -> None:
    """Copy ``source`` to ``destination`` atomically."""
    write_atomic(destination, lambda temp: shutil.copyfile(source, temp))


def save_figure(figure: Any, path: Path | str, dpi: int = 120) -> None:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    write_atomic(path, lambda temp: figure.savefig(temp, format="png", dpi=dpi))
    plt.close(figure)
