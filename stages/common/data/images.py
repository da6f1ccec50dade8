"""Decoding image files into CIFAR-format arrays, for prepare, predict and the service."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stages.common.data.cifar10 import IMAGE_SHAPE

TOO_MANY_PIXELS = "too many pixels"
MAX_PIXELS = 25_000_000  # a small file that decodes to more is a decompression bomb
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # Pillow's modes of 16-bit grey


def decode_image(
    blob: bytes, convert: bool = False, max_pixels: int | None = MAX_PIXELS
) -> tuple[np.ndarray | None, str]:
    """The image as (32, 32, 3) uint8, or None and why it cannot be used.

    ``convert=False`` (prepare): only 32x32 8-bit RGB images are data set images.
    ``convert=True`` (predict, the service): any size or mode is turned into one the way
    CIFAR-10 was made: EXIF orientation applied, 8-bit RGB (16-bit grey scaled by 1/257,
    float grey from 0..1 by 255: Pillow's own conversion saturates both, so mid-grey came out
    white), the shorter side resized to 32 px and the centre cropped. ``max_pixels``: refuse
    a larger image from its header, before decoding it (a small file can decode to
    gigabytes). Whatever a hostile file makes Pillow raise is one line, not a traceback.
    """
    try:
        with warnings.catch_warnings():
            # max_pixels is the limit here; Pillow's own warning would be one more stderr line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(blob))
        with image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                return None, f"{TOO_MANY_PIXELS} ({width}x{height}, at most {max_pixels:,})"
            if convert and image.format == "JPEG":
                image.draft("RGB", IMAGE_SHAPE[:2])  # decode at 1/2 .. 1/8 of its size
            image.load()
            if not convert:
                if image.mode != "RGB":
                    return None, f"mode {image.mode}, expected RGB"
                if image.size != IMAGE_SHAPE[:2]:
                    return None, f"size {image.size[0]}x{image.size[1]}, expected 32x32"
                return np.asarray(image, np.uint8), ""
            image = ImageOps.exif_transpose(image)
            rgb, problem = _eight_bit_rgb(image)
            if rgb is None:
                return None, problem
            fitted = ImageOps.fit(rgb, IMAGE_SHAPE[:2], Image.Resampling.BICUBIC)
            return np.asarray(fitted, np.uint8), ""
    except UnidentifiedImageError:
        return None, "does not decode (not a recognised image format)"
    except Exception as error:  # any decoder's failure on a hostile file
        return None, f"does not decode ({type(error).__name__}: {error})"


def _eight_bit_rgb(image: Image.Image) -> tuple[Image.Image | None, str]:
    """``image`` as 8-bit RGB with its levels kept, or None and why not."""
    if image.mode in SIXTEEN_BIT:
        levels = np.asarray(image, np.int64)
        if levels.min() < 0 or levels.max() > 65535:
            return None, f"mode {image.mode} with values {levels.min()}..{levels.max()}, not 16-bit"
        grey = np.rint(levels / 257).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB"), ""
    if image.mode == "F":
        levels = np.asarray(image, np.float64)
        if not np.isfinite(levels).all() or levels.min() < 0 or levels.max() > 1:
            return None, (
                f"a float image with values {levels.min():.4g}..{levels.max():.4g}; expected 0..1"
            )
        grey = np.rint(levels * 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB"), ""
    return image.convert("RGB"), ""
