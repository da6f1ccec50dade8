"""The model checkpoint a train stage outputs, and the resumable state it keeps meanwhile.

Resume design: the resumable state lives in ``checkpoints/<model>/resume.pt``, which is *not*
a DVC output, keyed by a fingerprint of everything that shapes the run (params, data hash,
code). A killed run re-run with the same fingerprint continues from its last completed epoch;
any change starts fresh. Because no output is ``persist: true``, DVC's run-cache keeps working:
an experiment whose params and deps were seen before is restored, not retrained.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from stages.common.errors import DataError
from stages.common.io import write_atomic

log = logging.getLogger(__name__)
CODE_DIR = Path(__file__).resolve().parents[1]


def fingerprint(settings: dict[str, Any]) -> str:
    """A hash of ``settings`` (JSON-able) and of the training code itself."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in sorted(CODE_DIR.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def save_torch(path: Path, payload: dict[str, Any]) -> None:
    write_atomic(path, lambda temp: torch.save(payload, temp))


def load_resume_state(path: Path, expected_fingerprint: str) -> dict[str, Any] | None:
    """The saved state if it belongs to this exact run; None (and why) otherwise."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        saved = state["fingerprint"]
    except Exception as error:  # a damaged file raises whatever the unpickler hits
        log.warning("%s is corrupt (%s); refusing it and starting fresh", path, error)
        return None
    if saved != expected_fingerprint:
        log.info("%s is from other params or code (%s); starting fresh", path, saved)
        return None
    log.info("resuming from %s after epoch %d", path, state["epoch"])
    return state


def load_model_checkpoint(path: Path) -> dict[str, Any]:
    """A train stage's model file, checked for the keys evaluation needs."""
    if not path.is_file():
        raise DataError(f"{path}: model checkpoint not found (run the train stage first)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise DataError(f"{path}: corrupt model checkpoint ({error})") from None
    missing = {"arch", "state_dict", "classes", "preprocessing"} - set(checkpoint)
    if missing:
        raise DataError(f"{path}: not a model checkpoint of this project (lacks {sorted(missing)})")
    return checkpoint
