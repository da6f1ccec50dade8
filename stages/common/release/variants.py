"""What the service serves: each A/B variant's model, its card, its batcher and its drift
monitor, loaded from a checkpoint or an ONNX file and the drift reference beside it."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.common.monitoring.drift import DriftMonitor, DriftReference, DriftSettings
from stages.common.plumbing.errors import DataError
from stages.common.plumbing.files import read_json
from stages.common.plumbing.output_paths import (
    COMPARE_DETAILS,
    COMPARE_METRICS,
    DRIFT_REFERENCE_NAME,
    EXPORT_METRICS,
    ONNX_MODEL,
    RELEASE_CHECKPOINT,
    paths,
)
from stages.common.release.batcher import Batcher
from stages.common.release.released_model import Backend, load_backend

log = logging.getLogger("serve")
REGISTRY_ARTIFACT = "cifar10-classifier"  # dvc.yaml's artifact, GTO's tag prefix


@dataclass
class Variant:
    """One model of the service (its only one, or A or B of a split)."""

    name: str
    backend: Backend
    card: dict[str, Any]
    batcher: Batcher
    drift: DriftMonitor | None  # None: no reference beside the model
    drift_note: str = ""  # why there is none


def load_variant(name: str, path: Path, max_batch: int, drift: DriftSettings) -> Variant:
    """Variant ``name``: the model at ``path`` and the drift reference beside it."""
    backend = load_backend(path)
    batcher = Batcher(backend, max_batch)  # the service tells it where to count its batches
    reference_file = path.parent / DRIFT_REFERENCE_NAME
    if not reference_file.is_file():
        note = f"no {reference_file}: drift is not measured (`dvc repro compare` writes it)"
        return Variant(name, backend, model_card(backend), batcher, None, note)
    reference = DriftReference.load(reference_file)
    if reference.classes != backend.info.classes:
        raise DataError(
            f"{reference_file}: classes {reference.classes} are not the model's "
            f"{backend.info.classes}"
        )
    return Variant(name, backend, model_card(backend), batcher, DriftMonitor(reference, drift))


def registered_version() -> str | None:
    """The newest GTO version tag on this commit (``cifar10-classifier@v1.2.0``), if any."""
    try:
        tags = subprocess.run(
            ["git", "tag", "--points-at", "HEAD", "--list", f"{REGISTRY_ARTIFACT}@v*"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    versions = sorted((tag.split("@", 1)[1] for tag in tags), key=version_key)
    return versions[-1] if versions else None


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in version.lstrip("v").split("."))


def _readable(path: Path, notes: list[str]) -> Any:
    """``path``'s JSON, or None with a note saying why it is left out (a damaged file is no
    reason to fail every card)."""
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except (DataError, OSError, ValueError) as error:
        notes.append(f"{path} left out: {error}")
        return None


def model_card(backend: Backend) -> dict[str, Any]:
    """What the served file is and what was measured of it: its own evaluation (by the model
    name it carries), whether it is the released model, and the export's check when it is.
    Made once, at start: a request costs no file reading or git."""
    info = backend.info
    notes: list[str] = []
    released = backend.path.resolve() in {RELEASE_CHECKPOINT.resolve(), ONNX_MODEL.resolve()}
    metrics: dict[str, Any] = {}
    if info.name is None:
        notes.append("the file names no model (made before checkpoints carried it): no metrics")
    elif (evaluation := _readable(paths(info.name).evaluate_metrics, notes)) is not None:
        metrics["evaluate"] = evaluation
    comparison = _readable(COMPARE_METRICS, notes)
    details = _readable(COMPARE_DETAILS, notes)
    if isinstance(comparison, dict):
        metrics["compare"] = {
            "best": comparison.get("best_model"),
            "released_model": details.get("released_model") if isinstance(details, dict) else None,
        }
    if released and (export := _readable(EXPORT_METRICS, notes)) is not None:
        metrics["export"] = export
    return {
        "file": str(backend.path),
        "runtime": backend.runtime,
        "model": info.name,
        "released": released,
        "architecture": info.architecture,
        "classes": info.classes,
        "data_sha256": info.data_sha256,
        "best_epoch": info.best_epoch,
        "preprocessing": info.preprocessing.model_dump(),
        "inference": backend.settings.model_dump(),
        "metrics": metrics,
        "version": registered_version(),
        "notes": notes,
    }
