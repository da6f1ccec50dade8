"""Logging helpers shared by the commands."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quieted(name: str, level: int = logging.WARNING) -> Iterator[None]:
    """Logger ``name`` says only ``level`` and above while the block runs (another tool's or
    another job's progress lines, which would mislead here)."""
    log = logging.getLogger(name)
    before = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(before)
