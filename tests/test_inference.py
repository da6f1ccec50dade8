"""Test-time augmentation: which views are averaged, and with what weights."""

from __future__ import annotations

import torch
from torch import nn

from stages.common.models.inference import tta_logits


class CountingLinear(nn.Module):
    """Logits that depend on every pixel's position, and a count of the batches seen."""

    def __init__(self, pixels: int) -> None:
        super().__init__()
        self.weight = torch.randn(pixels, 10, generator=torch.Generator().manual_seed(0))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x.flatten(1) @ self.weight


def _shift(images: torch.Tensor, by: int) -> torch.Tensor:
    """The image moved by ``by`` pixels down and right, its edges mirrored (reflect padding)."""
    size = images.shape[-1]
    source = (torch.arange(size) - by).abs()
    source = torch.where(source >= size, 2 * (size - 1) - source, source)
    return images[..., source[:, None], source[None, :]]


def test_tta_averages_the_documented_views_with_the_documented_weights():
    images = torch.randn(4, 3, 8, 8)
    model = CountingLinear(3 * 8 * 8)
    plain, mirrored = model(images), model(images.flip(-1))
    torch.testing.assert_close(tta_logits(model, images, "none"), plain)
    torch.testing.assert_close(tta_logits(model, images, "flip"), (plain + mirrored) / 2)
    # padded by one pixel and cropped at the top-left (+1 shift) and bottom-right (-1) corners
    shifted = [_shift(images, 1), _shift(images, -1)]
    expected = 0.25 * (plain + mirrored) + 0.125 * sum(
        model(view) + model(view.flip(-1)) for view in shifted
    )
    model.calls = 0
    torch.testing.assert_close(tta_logits(model, images, "flip_translate"), expected)
    assert model.calls == 6
