"""How a benchmark hands over its result: the JSON and its markdown table printed, and with
``--out`` the JSON written there and the markdown beside it (what the MR report includes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def publish(result: dict[str, Any], table: str, out: Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    print(table)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        out.with_suffix(".md").write_text(table + "\n")
