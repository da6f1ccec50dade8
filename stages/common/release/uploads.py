"""A prediction request's files: their sizes, headers and bytes checked before any is
decoded, then each decoded as `stages.predict` decodes files."""

from __future__ import annotations

import functools
import io
import os

import anyio
import numpy as np
from fastapi import Request, UploadFile
from PIL import Image

from stages.common.data.images import MAX_PIXELS, TOO_MANY_PIXELS, decode_image
from stages.common.release.errors import Refused

MAX_FILES = 32
MAX_FILE_BYTES = 1 << 20  # as prepare reads sources: a CIFAR-sized photo is far smaller
MAX_REQUEST_PIXELS = 2 * MAX_PIXELS  # decoded, all of a request's images together


@functools.cache
def decoders() -> anyio.CapacityLimiter:
    """Images decode on at most as many threads as there are cores (not anyio's 40): each
    thread would keep a memory arena of its own after a burst."""
    return anyio.CapacityLimiter(os.cpu_count() or 1)


async def read_uploads(files: list[UploadFile], max_bytes: int) -> list[bytes]:
    """Each file's bytes, each within ``max_bytes`` and not empty, and all of them together
    within MAX_REQUEST_PIXELS once decoded (from their headers)."""
    blobs = []
    for index, upload in enumerate(files):
        blob = await upload.read(max_bytes + 1)
        if len(blob) > max_bytes:
            raise Refused(413, f"{_named(index, upload)}: over {max_bytes} bytes")
        if not blob:
            raise Refused(422, f"{_named(index, upload)}: empty")
        blobs.append(blob)
    total = sum(pixels_of(blob) for blob in blobs)
    if total > MAX_REQUEST_PIXELS:
        raise Refused(413, f"{total:,} pixels in all; at most {MAX_REQUEST_PIXELS:,} per request")
    return blobs


async def decode_upload(index: int, upload: UploadFile, blob: bytes) -> np.ndarray:
    """One uploaded file as a (32, 32, 3) uint8 image, decoded as predict decodes files."""
    image, problem = await anyio.to_thread.run_sync(
        lambda: decode_image(blob, convert=True, max_pixels=MAX_PIXELS), limiter=decoders()
    )
    if image is None:
        status = 413 if problem.startswith(TOO_MANY_PIXELS) else 422
        raise Refused(status, f"{_named(index, upload)}: not a usable image: {problem}")
    return image


def _named(index: int, upload: UploadFile) -> str:
    return f"file {index} ('{upload.filename}')"


def pixels_of(blob: bytes) -> int:
    """Width x height from an image's header (0 when it has none: decoding will say)."""
    try:
        with Image.open(io.BytesIO(blob)) as image:
            return image.size[0] * image.size[1]
    except Exception:  # what Pillow raises for a file it cannot open: decoding says why
        return 0


def check_content(request: Request, max_body: int, max_files: int) -> None:
    """A prediction's headers: a size within the cap, a body at all, multipart."""
    kind = request.headers.get("content-type", "")
    length = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if length is not None and length.isdigit() and int(length) > max_body:
        raise Refused(413, f"request of {length} bytes; at most {max_body} ({max_files} files)")
    if length == "0" or (length is None and not chunked):
        raise Refused(400, "empty body: send images as files")
    if not kind.lower().startswith("multipart/form-data"):
        raise Refused(415, f"content type '{kind or 'none'}': send multipart/form-data (files)")
