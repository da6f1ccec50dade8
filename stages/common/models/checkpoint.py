"""The model file a train stage outputs.

A model file is ``models/<name>/model.safetensors``: the weights under their usual names (timm
can load it as pretrained weights too) and, in the safetensors header, this project's metadata
as JSON (architecture, classes, preprocessing, data hash, best epoch, params). Nothing in it is
code, so a model pulled from a shared remote cannot run anything when loaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError

from stages.common.plumbing.errors import DataError
from stages.common.plumbing.files import read_json
from stages.common.plumbing.param_types import TtaMode
from stages.common.plumbing.tensor_files import load_tensors, save_tensors

log = logging.getLogger(__name__)
METADATA_KEY = "cifar10_dvc"
FORMAT_VERSION = 1


class Preprocessing(BaseModel):
    """What turns a uint8 32 px image into model input."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    img_size: Annotated[int, Field(ge=1)]
    mean: tuple[float, float, float]
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat]
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"


class InferenceSettings(BaseModel):
    """How evaluation scored the model: its test-time augmentation and the temperature fitted
    on those logits. The released model carries them, so that it predicts as it was scored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tta: TtaMode = "none"
    temperature: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 1.0

    @classmethod
    def of_evaluation(cls, details_path: Path) -> InferenceSettings:
        """What evaluation/<model>/details.json says."""
        return cls.of_details(read_json(details_path), details_path)

    @classmethod
    def of_details(cls, details: dict[str, Any], details_path: Path) -> InferenceSettings:
        """What ``details``, read from ``details_path``, says; one DataError line naming the
        file when it says nothing usable (a temperature that is not a finite positive number,
        say)."""
        try:
            return cls(
                tta=details.get("tta", "none"), temperature=details["calibration"]["temperature"]
            )
        except (KeyError, TypeError, AttributeError, ValidationError) as error:
            problem = error.errors()[0]["msg"] if isinstance(error, ValidationError) else error
            raise DataError(
                f"{details_path}: no usable TTA and temperature ({problem}); re-create it with "
                "`dvc repro -f` of its evaluate stage"
            ) from None


class CheckpointInfo(BaseModel):
    """The metadata stored with the weights."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = FORMAT_VERSION
    name: str | None = None  # its key under `models` (None: a file made before it was stored)
    arch: str
    classes: Annotated[list[str], Field(min_length=1)]
    preprocessing: Preprocessing
    data_sha256: str | None = None
    best_epoch: int | None = None
    params: dict[str, Any] = {}
    inference: InferenceSettings | None = None  # set on the released copy (stages/compare.py)

    @property
    def architecture(self) -> str:
        """The architecture as a title should name it: without timm's pretrained tag
        (``vit_base_patch16_224.augreg_in21k``) when the model did not start from those
        weights."""
        pretrained = self.params.get("model", {}).get("pretrained", True)
        return self.arch if pretrained else self.arch.split(".", 1)[0]


@dataclass
class ModelCheckpoint:
    """Weights and metadata of a trained model, saved and loaded in one checked place."""

    info: CheckpointInfo
    weights: dict[str, torch.Tensor]

    def save(self, path: Path | str) -> None:
        metadata = {METADATA_KEY: self.info.model_dump_json()}
        save_tensors(path, self.weights, metadata)

    @classmethod
    def load(cls, path: Path | str) -> ModelCheckpoint:
        """The checkpoint at ``path``; DataError (one line naming the file) for a missing,
        damaged or foreign file. Never unpickles anything."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: model checkpoint not found (run the train stage first)")
        weights, metadata = load_tensors(path)
        if METADATA_KEY not in metadata:
            raise DataError(
                f"{path}: a safetensors file without this project's metadata (plain weights? "
                "use them as `pretrained` instead)"
            )
        try:
            info = CheckpointInfo.model_validate_json(metadata[METADATA_KEY])
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise DataError(f"{path}: invalid metadata at '{where}' ({problem['msg']})") from None
        if info.format != FORMAT_VERSION:
            raise DataError(f"{path}: checkpoint format {info.format}, expected {FORMAT_VERSION}")
        return cls(info, weights)
