"""Grad-CAM on a known case, and on the ViT token path."""

from __future__ import annotations

import numpy as np
import timm
import torch
from torch import nn

from stages.common.evaluation.explain import grad_cam, tsne_2d


class RedDetector(nn.Module):
    """A CNN whose class-0 score is the mean 'redness' of the image, timm-style API."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1))
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))

    def forward_features(self, x):
        return torch.relu(self.conv(x))

    def forward_head(self, x, pre_logits: bool = False):
        pooled = x.mean(dim=(2, 3))
        return pooled if pre_logits else self.fc(pooled)


def test_grad_cam_concentrates_on_the_class_signal():
    images = torch.zeros(2, 3, 32, 32)
    images[0, 0, 20:28, 4:12] = 1.0  # a red patch bottom-left
    images[1, 0, 2:10, 22:30] = 1.0  # a red patch top-right
    maps, explained, grid = grad_cam(RedDetector(), images, torch.tensor([0, 0]))
    assert maps.shape == (2, 32, 32) and explained.tolist() == [0, 0] and grid == (32, 32)
    for index, (rows, cols) in enumerate(
        [(slice(20, 28), slice(4, 12)), (slice(2, 10), slice(22, 30))]
    ):
        inside = np.zeros((32, 32), bool)
        inside[rows, cols] = True
        assert maps[index][inside].mean() > 0.9
        assert maps[index][~inside].max() == 0.0


def test_grad_cam_of_a_vit_uses_the_token_grid():
    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=10, img_size=32)
    images = torch.randn(3, 3, 32, 32)
    maps, explained, grid = grad_cam(model, images)
    assert maps.shape == (3, 32, 32) and grid == model.patch_embed.grid_size  # (2, 2)
    assert explained.tolist() == model(images).argmax(1).tolist()
    assert np.isfinite(maps).all() and maps.max() == 1.0  # patch tokens carry gradient


def test_tsne_is_seeded_and_clips_perplexity():
    vectors = np.random.default_rng(0).normal(size=(20, 5))
    first, perplexity = tsne_2d(vectors, 30.0, seed=1)
    second, _ = tsne_2d(vectors, 30.0, seed=1)
    assert first.shape == (20, 2) and perplexity < 20
    np.testing.assert_allclose(first, second)
