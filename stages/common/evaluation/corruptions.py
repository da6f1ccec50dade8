"""The 15 corruptions of CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019), generated from the test
split: their definitions and the CIFAR severity parameters of the paper's generation script.

Each corruption maps float images in [0, 1], shaped (N, 32, 32, 3), to float images in [0, 1]; as
in CIFAR-10-C the result is stored as uint8 by truncation. Randomness comes from one generator
per image, seeded by (seed, corruption, severity, the image's index in the test split), so an
image is corrupted the same way whatever subset, batch or worker it is generated in.

Libraries where one does the job: Pillow (JPEG and pixelate's box resize, as in the paper;
torchvision 0.29 deprecates its own JPEG codec), torchvision.transforms.v2 (the Gaussian
anti-aliasing of the defocus disk), scipy.ndimage (the Gaussian filters, elastic warps),
matplotlib (HSV), torch (convolutions, zoom). Written here, because no kept library has
them with the paper's parameters: the noises (a seeded generator per image; torchvision's
noise draws from torch's global generator), the defocus disk, glass blur's local pixel shuffle,
the diamond-square plasma fractal of fog, the zoom crop, contrast per channel (torchvision
blends towards the grey mean), and motion blur, which the paper takes from ImageMagick (not a
Python dependency): a one-sided Gaussian line kernel of width 2 x radius + 1, integer offsets
and edge pixels repeated, as ImageMagick's MotionBlurImage does.

Where this differs from CIFAR-10-C (docs/robustness.md): frost blends procedural ice texture
(the paper's frost photographs are not redistributable here), motion blur's direction
convention is ImageMagick's documented one, and the zoom resampling is bilinear with aligned
corners (scipy's order-1 zoom) but from torch.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as tvf
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image
from scipy import ndimage

Generators = Sequence[np.random.Generator]
Apply = Callable[[np.ndarray, Any, Generators], np.ndarray]
SEVERITIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Corruption:
    name: str
    family: str  # noise | blur | weather | digital
    parameters: tuple[Any, ...]  # one per severity, 1..5
    apply: Apply


def _per_image(rngs: Generators, draw: Callable[[np.random.Generator], np.ndarray]) -> np.ndarray:
    return np.stack([draw(rng) for rng in rngs])


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as 8 bits the way the paper's script stores them: clipped, then
    truncated (not rounded)."""
    return np.floor(np.clip(x, 0, 1) * 255).astype(np.uint8)


# ---------------------------------------------------------------- noise
def gaussian_noise(x: np.ndarray, std: float, rngs: Generators) -> np.ndarray:
    return x + _per_image(rngs, lambda rng: rng.normal(0.0, std, x.shape[1:]))


def shot_noise(x: np.ndarray, photons: float, rngs: Generators) -> np.ndarray:
    """Poisson noise: ``photons`` per unit of intensity (fewer photons, more noise)."""
    return np.stack([rng.poisson(image * photons) for rng, image in zip(rngs, x)]) / photons


def impulse_noise(x: np.ndarray, amount: float, rngs: Generators) -> np.ndarray:
    """Salt and pepper: each channel value is replaced with probability ``amount``, by 0 or 1."""
    hit = _per_image(rngs, lambda rng: rng.random((2, *x.shape[1:])))
    flipped, salt = hit[:, 0] < amount, hit[:, 1] < 0.5
    return np.where(flipped, salt.astype(x.dtype), x)


# ---------------------------------------------------------------- blur
def _gaussian(x: np.ndarray, sigma: float, mode: str = "nearest") -> np.ndarray:
    """skimage's ``gaussian(..., multichannel=True)``: scipy's filter over height and width."""
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode=mode, truncate=4.0)


def _filter(x: np.ndarray, kernel: torch.Tensor) -> np.ndarray:
    """Each channel correlated with ``kernel`` (odd, square), borders reflected (cv2's
    BORDER_REFLECT_101, filter2D's default)."""
    images = torch.from_numpy(x).float().permute(0, 3, 1, 2)  # float64 convolutions are slow
    pad = kernel.shape[-1] // 2
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad), mode="reflect")
    weight = kernel.float().expand(3, 1, *kernel.shape)
    blurred = torch.nn.functional.conv2d(padded, weight, groups=3).permute(0, 2, 3, 1)
    return blurred.double().numpy()


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """A normalised disk of ``radius`` on a 17x17 grid (wider for radius > 8), anti-aliased by
    a Gaussian of ``alias_blur``."""
    half = 8 if radius <= 8 else math.ceil(radius)
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).to(torch.float64)
    size = 3 if radius <= 8 else 5
    return tvf.gaussian_blur((disk / disk.sum())[None], [size, size], [alias_blur])[0]


def defocus_blur(x: np.ndarray, setting: tuple[float, float], rngs: Generators) -> np.ndarray:
    return _filter(x, disk_kernel(*setting))


def glass_blur(x: np.ndarray, setting: tuple[float, int, int], rngs: Generators) -> np.ndarray:
    """Blur, then give each pixel a neighbour's value (in the paper's order, from the bottom
    right, offsets drawn from [-delta, delta)), ``iterations`` times, then blur again.

    The paper's script means to swap the two pixels, but its tuple assignment of numpy views
    copies the neighbour and leaves the neighbour as it was; CIFAR-10-C was made that way, so
    this copies too."""
    sigma, delta, iterations = setting
    quantised = to_uint8(_gaussian(x, sigma)) / 255
    positions = [(h, w) for h in range(32 - delta, delta, -1) for w in range(32 - delta, delta, -1)]
    offsets = _per_image(
        rngs, lambda rng: rng.integers(-delta, delta, (iterations, len(positions), 2))
    )
    images = np.arange(len(x))
    for iteration in range(iterations):
        for k, (h, w) in enumerate(positions):
            dx, dy = offsets[:, iteration, k, 0], offsets[:, iteration, k, 1]
            quantised[images, h, w] = quantised[images, h + dy, w + dx]
    return _gaussian(quantised, sigma)


def motion_kernel_offsets(radius: int, sigma: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """ImageMagick's motion blur: weights exp(-i^2 / 2 sigma^2) of the pixels i = 0 .. 2 radius
    steps along ``angle`` (degrees, 0 = along the rows), at rounded integer offsets (dy, dx)."""
    steps = np.arange(2 * radius + 1)
    weights = np.exp(-(steps**2) / (2 * sigma**2))
    theta = math.radians(angle)
    offsets = np.stack([np.round(steps * math.sin(theta)), np.round(steps * math.cos(theta))], 1)
    return weights / weights.sum(), offsets.astype(int)


def _motion(x: np.ndarray, radius: int, sigma: float, angles: np.ndarray) -> np.ndarray:
    """Each image blurred along its own angle; pixels beyond the edge repeat the edge."""
    out = np.zeros_like(x)
    rows, cols = np.arange(x.shape[1]), np.arange(x.shape[2])
    for n, angle in enumerate(angles):
        weights, offsets = motion_kernel_offsets(radius, sigma, float(angle))
        for weight, (dy, dx) in zip(weights, offsets):
            r = np.clip(rows + dy, 0, x.shape[1] - 1)
            c = np.clip(cols + dx, 0, x.shape[2] - 1)
            out[n] += weight * x[n][np.ix_(r, c)]
    return out


def motion_blur(x: np.ndarray, setting: tuple[int, float], rngs: Generators) -> np.ndarray:
    angles = np.array([rng.uniform(-45, 45) for rng in rngs])
    return _motion(x, *setting, angles)


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """The centre ceil(32 / factor) pixels zoomed by ``factor`` (bilinear, corners aligned as
    scipy's order-1 zoom), cropped back to the centre 32."""
    size = x.shape[1]
    crop = math.ceil(size / factor)
    top = (size - crop) // 2
    images = torch.from_numpy(np.ascontiguousarray(x[:, top : top + crop, top : top + crop]))
    zoomed_size = round(crop * factor)
    zoomed = torch.nn.functional.interpolate(
        images.permute(0, 3, 1, 2),
        size=(zoomed_size, zoomed_size),
        mode="bilinear",
        align_corners=True,
    ).permute(0, 2, 3, 1)
    trim = (zoomed_size - size) // 2
    return zoomed[:, trim : trim + size, trim : trim + size].numpy()


def zoom_blur(x: np.ndarray, stop: float, rngs: Generators) -> np.ndarray:
    """The mean of the image and its zooms by ``np.arange(1, stop, 0.01)``, the paper's factors
    (floating point makes that 1.00-1.05 for stop 1.06 but 1.00-1.11 for stop 1.11)."""
    factors = np.arange(1, stop, 0.01)
    return (x + sum(clipped_zoom(x, float(f)) for f in factors)) / (len(factors) + 1)


# ---------------------------------------------------------------- weather
def plasma_fractal(rng: np.random.Generator, decay: float, size: int = 32) -> np.ndarray:
    """A diamond-square height map in [0, 1]; its roughness falls by ``decay`` per level."""
    heights = np.zeros((size, size))
    step, wibble = size, 100.0

    def wibbled_mean(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = heights[0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, axis=0)
        square += np.roll(square, -1, axis=1)
        heights[half:size:step, half:size:step] = wibbled_mean(square)
        centres = heights[half:size:step, half:size:step]
        corners = heights[0:size:step, 0:size:step]
        across = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        heights[0:size:step, half:size:step] = wibbled_mean(across)
        down = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        heights[half:size:step, 0:size:step] = wibbled_mean(down)
        step //= 2
        wibble /= decay
    heights -= heights.min()
    return heights / heights.max()


def fog(x: np.ndarray, setting: tuple[float, float], rngs: Generators) -> np.ndarray:
    thickness, decay = setting
    haze = _per_image(rngs, lambda rng: plasma_fractal(rng, decay))[..., None]
    brightest = x.max(axis=(1, 2, 3), keepdims=True)
    return (x + thickness * haze) * brightest / (brightest + thickness)


def frost_texture(rng: np.random.Generator) -> np.ndarray:
    """Procedural ice in [0, 1], (32, 32, 3): a rough plasma fractal sharpened into bright
    crystals, with a faint blue tint (the stand-in for the paper's frost photographs)."""
    crystals = plasma_fractal(rng, decay=1.4) ** 2.5
    veins = np.abs(plasma_fractal(rng, decay=1.8) - 0.5) < 0.06
    ice = np.clip(0.75 * crystals + 0.5 * veins, 0, 1)
    return ice[..., None] * np.array([0.85, 0.93, 1.0])


def frost(x: np.ndarray, setting: tuple[float, float], rngs: Generators) -> np.ndarray:
    image_weight, frost_weight = setting
    return image_weight * x + frost_weight * _per_image(rngs, frost_texture)


def snow(x: np.ndarray, setting: tuple[float, ...], rngs: Generators) -> np.ndarray:
    mean, std, zoom, threshold, radius, sigma, keep = setting
    flakes = _per_image(rngs, lambda rng: rng.normal(mean, std, (32, 32)))[..., None]
    flakes = clipped_zoom(flakes, zoom)
    flakes[flakes < threshold] = 0
    flakes = to_uint8(flakes) / 255  # the paper blurs an 8-bit layer
    angles = np.array([rng.uniform(-135, -45) for rng in rngs])
    flakes = _motion(flakes, int(radius), sigma, angles)
    grey = x @ np.array([0.299, 0.587, 0.114])
    x = keep * x + (1 - keep) * np.maximum(x, grey[..., None] * 1.5 + 0.5)
    return x + flakes + np.rot90(flakes, k=2, axes=(1, 2))


# ---------------------------------------------------------------- digital
def brightness(x: np.ndarray, shift: float, rngs: Generators) -> np.ndarray:
    hsv = rgb_to_hsv(np.clip(x, 0, 1))
    hsv[..., 2] = np.clip(hsv[..., 2] + shift, 0, 1)
    return hsv_to_rgb(hsv)


def contrast(x: np.ndarray, factor: float, rngs: Generators) -> np.ndarray:
    """Towards each image's per-channel mean."""
    means = x.mean(axis=(1, 2), keepdims=True)
    return (x - means) * factor + means


def elastic_transform(
    x: np.ndarray, setting: tuple[float, float, float], rngs: Generators
) -> np.ndarray:
    """A random affine warp (three points moved up to ``shift`` px, borders mirrored), then a
    smooth random displacement field (uniform noise blurred by ``sigma``, times ``alpha``)."""
    alpha, sigma, shift = (32 * value for value in setting)
    centre, side = 16.0, 32 // 3
    anchors = np.array([[centre + side] * 2, [centre + side, centre - side], [centre - side] * 2])
    out = np.empty_like(x)
    grid_y, grid_x = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    for n, (rng, image) in enumerate(zip(rngs, x)):
        moved = anchors + rng.uniform(-shift, shift, anchors.shape)
        # the inverse map, destination (x, y) -> source (x, y), as scipy's (row, column) matrix
        inverse = np.linalg.solve(np.c_[moved, np.ones(3)], anchors).T
        matrix = np.diag([1.0, 1.0, 1.0])
        matrix[:2, :2] = inverse[::-1, :2][:, ::-1]
        offset = np.array([inverse[1, 2], inverse[0, 2], 0.0])
        warped = ndimage.affine_transform(image, matrix, offset, order=1, mode="mirror")
        dx, dy = (
            ndimage.gaussian_filter(rng.uniform(-1, 1, (32, 32)), sigma, mode="reflect", truncate=3)
            * alpha
            for _ in range(2)
        )
        coordinates = [
            np.repeat((grid_y + dy)[..., None], 3, 2),
            np.repeat((grid_x + dx)[..., None], 3, 2),
            np.broadcast_to(np.arange(3), (32, 32, 3)),
        ]
        out[n] = ndimage.map_coordinates(warped, coordinates, order=1, mode="reflect")
    return out


def _pillow(x: np.ndarray, change: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(change(Image.fromarray(image))) for image in to_uint8(x)]) / 255


def pixelate(x: np.ndarray, scale: float, rngs: Generators) -> np.ndarray:
    small = int(32 * scale)
    box = Image.Resampling.BOX
    return _pillow(x, lambda image: image.resize((small, small), box).resize((32, 32), box))


def jpeg_compression(x: np.ndarray, quality: int, rngs: Generators) -> np.ndarray:
    def round_trip(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return Image.open(buffer)

    return _pillow(x, round_trip)


CORRUPTIONS: dict[str, Corruption] = {
    c.name: c
    for c in (
        Corruption("gaussian_noise", "noise", (0.04, 0.06, 0.08, 0.09, 0.10), gaussian_noise),
        Corruption("shot_noise", "noise", (500, 250, 100, 75, 50), shot_noise),
        Corruption("impulse_noise", "noise", (0.01, 0.02, 0.03, 0.05, 0.07), impulse_noise),
        Corruption(
            "defocus_blur",
            "blur",
            ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
            defocus_blur,
        ),
        Corruption(
            "glass_blur",
            "blur",
            ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
            glass_blur,
        ),
        Corruption(
            "motion_blur", "blur", ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)), motion_blur
        ),
        Corruption("zoom_blur", "blur", (1.06, 1.11, 1.16, 1.21, 1.26), zoom_blur),
        Corruption(
            "snow",
            "weather",
            (
                (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
                (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
            ),
            snow,
        ),
        Corruption(
            "frost",
            "weather",
            ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
            frost,
        ),
        Corruption("fog", "weather", ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)), fog),
        Corruption("brightness", "digital", (0.05, 0.1, 0.15, 0.2, 0.3), brightness),
        Corruption("contrast", "digital", (0.75, 0.5, 0.4, 0.3, 0.15), contrast),
        Corruption(
            "elastic_transform",
            "digital",
            (
                (0, 0, 0.08),
                (0.05, 0.2, 0.07),
                (0.08, 0.06, 0.06),
                (0.1, 0.04, 0.05),
                (0.1, 0.03, 0.03),
            ),
            elastic_transform,
        ),
        Corruption("pixelate", "digital", (0.95, 0.9, 0.85, 0.75, 0.65), pixelate),
        Corruption("jpeg_compression", "digital", (80, 65, 58, 50, 40), jpeg_compression),
    )
}
NAMES = tuple(CORRUPTIONS)


def image_generators(
    seed: int, corruption: str, severity: int, indices: Sequence[int]
) -> list[np.random.Generator]:
    """One generator per image, from (seed, corruption, severity, image index)."""
    number = NAMES.index(corruption)
    return [np.random.default_rng([seed, number, severity, int(i)]) for i in indices]


def corrupt(
    images: np.ndarray, corruption: str, severity: int, seed: int, indices: Sequence[int]
) -> np.ndarray:
    """``images`` (N, 32, 32, 3) uint8, test-split positions ``indices``, corrupted at
    ``severity`` (1-5); uint8 like CIFAR-10-C (values truncated, as its script stores them)."""
    spec = CORRUPTIONS[corruption]
    rngs = image_generators(seed, corruption, severity, indices)
    result = spec.apply(images / 255.0, spec.parameters[severity - 1], rngs)
    return to_uint8(result)
