"""Decoding image files into CIFAR-format arrays, for prepare and for predict."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stages.common.cifar10 import IMAGE_SHAPE

TOO_MANY_PIXELS = "too many pixels"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def decode_image(
    blob: bytes, convert: bool = False, max_pixels: int | None = None
) -> tuple[np.ndarray | None, str]:
    """The image as (32, 32, 3) uint8, or None and why it cannot be used.

    ``convert=False`` (prepare): only 32x32 RGB images are data set images. ``convert=True``
    (predict): any size or mode is turned into one the way CIFAR-10 was made: EXIF
    orientation applied, RGB, the shorter side resized to 32 px and the centre cropped.
    ``max_pixels``: refuse a larger image from its header, before decoding it (a small file
    can decode to gigabytes).
    """
    try:
        with Image.open(io.BytesIO(blob)) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                return None, f"{TOO_MANY_PIXELS} ({width}x{height}, at most {max_pixels:,})"
            image.load()
            if convert:
                image = ImageOps.exif_transpose(image).convert("RGB")
                image = ImageOps.fit(image, IMAGE_SHAPE[:2], Image.Resampling.BICUBIC)
            elif image.mode != "RGB":
                return None, f"mode {image.mode}, expected RGB"
            elif image.size != IMAGE_SHAPE[:2]:
                return None, f"size {image.size[0]}x{image.size[1]}, expected 32x32"
            return np.asarray(image, np.uint8), ""
    except UnidentifiedImageError:
        return None, "does not decode (not a recognised image format)"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return None, f"does not decode ({error})"
