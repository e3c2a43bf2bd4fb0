"""Contact sheets: many small images tiled into one PNG, for sample grids and previews."""

from __future__ import annotations

import io
import math
import os

import numpy as np

from components.artifacts import atomic_write_bytes


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Map generator output in [-1, 1] to uint8 pixels, rounding (not truncating) and clipping."""
    return np.clip(np.rint((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile uint8 NHWC images into one HWC image, row by row, `padding` white pixels apart."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 NHWC images, got {images.dtype} {images.shape}")
    count, height, width, channels = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    sheet = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels), 255, np.uint8
    )
    for index, image in enumerate(images):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        sheet[top : top + height, left : left + width] = image
    return sheet


def encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(path: str | os.PathLike, images: np.ndarray, columns: int | None = None) -> None:
    """Write a contact sheet of uint8 NHWC images as a PNG, atomically."""
    atomic_write_bytes(path, encode_png(make_grid(images, columns)))
