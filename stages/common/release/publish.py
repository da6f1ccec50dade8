"""Releasing a model: its checkpoint as release/model.safetensors, the model registry's
artifact (dvc.yaml `artifacts`)."""

from __future__ import annotations

from typing import Any

from stages.common.models.checkpoint import InferenceSettings, ModelCheckpoint
from stages.common.plumbing.output_paths import RELEASE_CHECKPOINT, paths


def release(name: str, evaluation_details: dict[str, Any]) -> InferenceSettings:
    """Model ``name``'s checkpoint as release/model.safetensors, carrying the test-time
    augmentation and temperature its evaluation scored it with (so that the released file
    predicts as it was scored, wherever it goes)."""
    where = paths(name)
    settings = InferenceSettings.of_details(evaluation_details, where.evaluation_details)
    checkpoint = ModelCheckpoint.load(where.checkpoint)
    info = checkpoint.info.model_copy(update={"inference": settings})
    ModelCheckpoint(info, checkpoint.weights).save(RELEASE_CHECKPOINT)
    return settings
