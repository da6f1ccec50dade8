"""Durations as people say them, in estimates and in the stages' own lines."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """``seconds`` as people say it: 0.4 s, 45 s, 12 min, 3.4 h, 5.1 days."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
