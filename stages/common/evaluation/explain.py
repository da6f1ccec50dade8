"""Grad-CAM and penultimate-layer embeddings through timm's forward_features/forward_head.

Every timm model splits into ``forward_features`` (a CNN's last feature map, or a ViT's
tokens) and ``forward_head``; Grad-CAM weighs that last feature map by the gradient of the
class score, so one implementation serves CNNs and ViTs (tokens reshaped to their grid).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.manifold import TSNE
from torch import nn

from stages.common.models.inference import DeviceInput


def _as_grid(features: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """(N, C, H, W) from a CNN feature map or from ViT tokens (prefix tokens dropped)."""
    if features.ndim == 4:
        return features
    prefix = getattr(model, "num_prefix_tokens", 0)
    tokens = features[:, prefix:]
    side = round(tokens.shape[1] ** 0.5)
    if side * side != tokens.shape[1]:
        raise ValueError(f"cannot arrange {tokens.shape[1]} tokens in a square grid")
    return tokens.transpose(1, 2).reshape(len(tokens), -1, side, side)


def _target_layer(model: nn.Module) -> nn.Module | None:
    """The layer to explain in a transformer: the last block's first norm, whose patch
    tokens still reach the class token through the last attention (the final tokens do not).
    None for CNNs, whose last feature map (the forward_features output) is used."""
    blocks = getattr(model, "blocks", None)
    if getattr(model, "num_prefix_tokens", None) is not None and blocks is not None:
        return getattr(blocks[-1], "norm1", None)
    return None


def grad_cam(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Grad-CAM maps (N, H, W) in [0, 1] at input resolution, the explained classes, and the
    resolution of the explained feature map (a 1x1 map cannot localise anything).

    ``targets``: the class to explain per image (default: the predicted one).
    """
    model.eval()
    captured: list[torch.Tensor] = []
    layer = _target_layer(model)

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured.append(output)

    handle = layer.register_forward_hook(keep) if layer is not None else None
    try:
        features = model.forward_features(inputs)
        if layer is None:
            features.retain_grad()
            captured.append(features)
        logits = model.forward_head(features)
    finally:
        if handle is not None:
            handle.remove()
    if targets is None:
        targets = logits.argmax(1)
    model.zero_grad(set_to_none=True)
    logits.gather(1, targets[:, None]).sum().backward()
    explained = captured[-1]
    activations, gradients = _as_grid(explained, model), _as_grid(explained.grad, model)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activations).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
    grid = tuple(activations.shape[-2:])
    return (cam / peak).detach().cpu().numpy(), targets.detach().cpu().numpy(), grid


@torch.no_grad()
def embeddings(
    model: nn.Module, images: np.ndarray, device_input: DeviceInput, batch_size: int
) -> np.ndarray:
    """Penultimate-layer (pre-logits) embeddings of uint8 NHWC images."""
    model.eval()
    outputs = []
    for inputs in device_input.batches(images, batch_size):
        features = model.forward_features(inputs)
        outputs.append(model.forward_head(features, pre_logits=True).float().cpu())
    return torch.cat(outputs).flatten(1).numpy()


def tsne_2d(vectors: np.ndarray, perplexity: float, seed: int) -> tuple[np.ndarray, float]:
    """A seeded 2-D t-SNE; perplexity is clipped below the sample count (returned)."""
    perplexity = float(min(perplexity, max(len(vectors) - 1, 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca")
    return tsne.fit_transform(vectors.astype(np.float64)), perplexity
