"""How a benchmark hands over its result: the JSON and its markdown table printed, and with
``--out`` the JSON written there and the markdown beside it (what the MR report includes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stages.common.plumbing.files import write_text


def publish(result: dict[str, Any], table: str, out: Path | None) -> None:
    print(json.dumps(result, indent=2))
    print(table)
    if out:
        write_json(result, out)
        write_text(out.with_suffix(".md"), table + "\n")


def write_json(result: dict[str, Any], out: Path) -> None:
    """``out`` replaced whole (a benchmark cut short leaves its last complete JSON)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(result, indent=2) + "\n")
