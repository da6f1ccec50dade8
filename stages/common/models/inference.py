"""Inference, apart from training: model input from uint8 images, batched logits, and a trained
model loaded from its checkpoint. Shared by evaluate, explain, compare and predict (and used by
the training engine for its validation pass)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from stages.common.models.checkpoint import CheckpointInfo, ModelCheckpoint, Preprocessing
from stages.common.models.factory import create_architecture
from stages.common.plumbing.errors import DataError, first_line
from stages.common.plumbing.machine import autocast, tuned


class DeviceInput:
    """uint8 batch -> resized, normalised float batch on the device, channels_last if asked."""

    def __init__(
        self, preprocessing: Preprocessing, device: torch.device, channels_last: bool = False
    ) -> None:
        self.size = preprocessing.img_size
        self.mode = preprocessing.interpolation
        self.mean = torch.tensor(preprocessing.mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(preprocessing.std, device=device).view(1, 3, 1, 1) * 255
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def batches(self, images: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
        """Model-ready batches of uint8 NHWC ``images`` (no augmentation), in order. To a GPU
        each goes from pinned memory: a copy from pageable memory would hold the host until
        the batches queued before it had run."""
        pin = self.device.type == "cuda"
        for start in range(0, len(images), batch_size):
            chunk = torch.from_numpy(images[start : start + batch_size])
            yield self((chunk.pin_memory() if pin else chunk).permute(0, 3, 1, 2))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: uint8 (N, 3, H, W) on any device."""
        return self.prepare(self.pixels(images))

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) ``images`` as float pixel values (0-255) on the device, at their
        own size: what training mixes (CutMix/MixUp) before each model sees it its own way."""
        return images.to(self.device, non_blocking=True).float()

    def prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        """Float pixel values (0-255, on the device) resized and normalised for the model."""
        if pixels.shape[-1] != self.size or pixels.shape[-2] != self.size:
            pixels = F.interpolate(
                pixels, size=(self.size, self.size), mode=self.mode, align_corners=False
            )
        pixels = (pixels - self.mean) / self.std
        return pixels.contiguous(memory_format=self.memory_format)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: np.ndarray,
    device_input: DeviceInput,
    batch_size: int,
    amp: bool = False,
    tta: str = "none",
    progress: str | None = None,
) -> torch.Tensor:
    """Logits (float32, CPU) for uint8 NHWC ``images``, in order; eval mode, test-time
    augmentation ``tta`` (see :func:`tta_logits`)."""
    model.eval()
    outputs = []
    total = -(-len(images) // batch_size)
    batches = device_input.batches(images, batch_size)
    for inputs in tqdm(
        batches, total=total, desc=progress, disable=None if progress else True, leave=False
    ):
        with autocast(device_input.device, amp):
            outputs.append(tta_logits(model, inputs, tta))
    return torch.cat(outputs).cpu()  # read back once: the batches queue without waiting


def probabilities(
    loaded: LoadedModel,
    images: np.ndarray,
    batch_size: int,
    tta: str,
    temperature: float,
    progress: str | None = None,
) -> np.ndarray:
    """Float64 class probabilities of uint8 NHWC ``images``: the logits with test-time
    augmentation ``tta``, divided by ``temperature`` (what predict prints and serve answers)."""
    logits = predict_logits(
        loaded.model, images, loaded.device_input, batch_size, tta=tta, progress=progress
    )
    return torch.softmax(logits.double() / temperature, 1).numpy()


def tta_logits(model: nn.Module, inputs: torch.Tensor, tta: str) -> torch.Tensor:
    """Float32 logits of ``inputs``: ``none``, the model's; ``flip``, the mean over the batch
    and its mirror image; ``flip_translate``, airbench94's: half that, half the flip mean of
    two views shifted by one pixel (reflect padding, up-left and down-right)."""
    logits = model(inputs).float()
    if tta == "none":
        return logits
    mirrored = (logits + model(inputs.flip(-1)).float()) / 2
    if tta == "flip":
        return mirrored
    height, width = inputs.shape[-2:]
    padded = F.pad(inputs, (1, 1, 1, 1), mode="reflect")
    shifted = (padded[..., :height, :width], padded[..., 2:, 2:])
    translated = sum(tta_logits(model, view, "flip") for view in shifted) / 2
    return (mirrored + translated) / 2


def inference_device() -> torch.device:
    return tuned(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


@dataclass
class LoadedModel:
    """A trained model ready for inference, with what its checkpoint says about it."""

    model: nn.Module
    info: CheckpointInfo
    device_input: DeviceInput

    @property
    def classes(self) -> list[str]:
        return self.info.classes


def load_model(path: Path | str, device: torch.device | None = None) -> LoadedModel:
    """The model saved at ``path`` (a checkpoint of this project), on ``device``, in eval mode."""
    checkpoint = ModelCheckpoint.load(path)
    info = checkpoint.info
    if not timm.is_model(info.arch):
        raise DataError(
            f"{path}: its architecture '{info.arch}' is not one this timm "
            f"({timm.__version__}) builds (a checkpoint of a newer timm or another project?)"
        )
    model = create_architecture(info.arch, len(info.classes), info.preprocessing.img_size)
    try:
        model.load_state_dict(checkpoint.weights)
    except RuntimeError as error:
        raise DataError(
            f"{path}: weights do not fit '{info.arch}' ({first_line(error, prefer='key')})"
        ) from None
    device = device or inference_device()
    # channels_last on every device: twice the images/s of the default layout for airbench on
    # a 2-core CPU, and what CUDA convolutions prefer
    model.to(device, memory_format=torch.channels_last).eval()
    return LoadedModel(model, info, DeviceInput(info.preprocessing, device, channels_last=True))
