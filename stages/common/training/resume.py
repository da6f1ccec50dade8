"""The resumable state a train stage keeps while it runs (its own file, not a DVC output).

The state lives in ``checkpoints/<name>/resume.safetensors``, keyed by a fingerprint of everything
that shapes the run (params, data hash, code). A killed run re-run with the same fingerprint
continues from its last completed epoch; any change starts fresh. Because no output is
``persist: true``, DVC's run-cache keeps working. Only the train stage imports this module: the
fingerprint reads the import graph (stages/common/plumbing/import_graph.py), which no other stage
needs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.common.plumbing.errors import DataError
from stages.common.plumbing.import_graph import ROOT, import_closure
from stages.common.plumbing.tensor_files import load_tree, save_tree

if TYPE_CHECKING:
    from torch import nn

    from stages.common.training.early_stopping import EarlyStopping
    from stages.common.training.optimisation import Optimisation

log = logging.getLogger(__name__)


def fingerprint(settings: dict[str, Any], module: str = "stages.train") -> str:
    """A hash of ``settings`` (JSON-able) and of the code ``module`` runs (its import closure:
    editing a plot helper or the report does not throw away a half-finished training run)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name in import_closure(module):
        digest.update(name.encode())
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()[:16]


def resume_state(
    fingerprint: str,
    epoch: int,
    model: nn.Module,
    optimisation: Optimisation,
    stopping: EarlyStopping,
    history: list[dict[str, float]],
    seconds: float,
) -> dict[str, Any]:
    """What a run that stops now continues from: everything after ``epoch`` epochs."""
    return {
        "fingerprint": fingerprint,
        "epoch": epoch,
        "model": model.state_dict(),
        **optimisation.state_dict(),
        "early_stopping": stopping.state_dict(),
        "history": history,
        "train_seconds": seconds,
    }


def restore(
    state: dict[str, Any], model: nn.Module, optimisation: Optimisation, stopping: EarlyStopping
) -> tuple[list[dict[str, float]], int, float]:
    """Put ``state`` back into the run's parts; its (history, epochs done, training seconds)."""
    model.load_state_dict(state["model"])
    optimisation.load_state_dict(state)
    stopping.load_state_dict(state["early_stopping"])
    return state["history"], state["epoch"], state["train_seconds"]


def save_resume_state(path: Path, state: dict[str, Any]) -> None:
    save_tree(path, state)


def load_resume_state(path: Path, expected_fingerprint: str) -> dict[str, Any] | None:
    """The saved state if it belongs to this exact run; None (and why) otherwise."""
    if not path.is_file():
        return None
    try:
        state = load_tree(path)
        saved = state["fingerprint"]
    except (DataError, KeyError, TypeError) as error:
        log.warning("%s is unusable (%s); refusing it and starting fresh", path, error)
        return None
    if saved != expected_fingerprint:
        log.info("%s is from other params or code (%s); starting fresh", path, saved)
        return None
    log.info("resuming from %s after epoch %d", path, state["epoch"])
    return state
