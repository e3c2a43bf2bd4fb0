"""PNG output: a fast encoder for single images, and contact sheets (many images tiled into one)."""

from __future__ import annotations

import math
import os
import struct
import zlib

import numpy as np

from components.artifacts import atomic_write_bytes

PNG_COMPRESS_LEVEL = 1
PNG_FILTER_UP = 2  # PNG row filter type "Up": each byte minus the byte above it
PNG_COLOR_RGB = 2


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile uint8 NHWC images into one HWC image, row by row, `padding` white pixels apart."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 NHWC images, got {images.dtype} {images.shape}")
    count, height, width, channels = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    sheet = np.full((rows * (height + padding) + padding, columns * (width + padding) + padding, channels), 255, np.uint8)
    for index, image in enumerate(images):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        sheet[top : top + height, left : left + width] = image
    return sheet


def encode_png(image: np.ndarray) -> bytes:
    """Encode one uint8 HxWx3 (RGB) image as a PNG: every row "Up"-filtered, zlib level 1.

    About 2x less CPU than Pillow's encoder (level 1 or its default 6) for files within a few
    percent of its size on faces; at 64x64 Pillow's encoding costs a sixth of generating the
    image, and both compete for the same cores.
    """
    height, width, channels = image.shape
    rows = image.reshape(height, width * channels)
    up = rows.copy()
    up[1:] -= rows[:-1]  # uint8 arithmetic wraps modulo 256, as the PNG filter requires
    scanlines = np.concatenate([np.full((height, 1), PNG_FILTER_UP, np.uint8), up], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, PNG_COLOR_RGB, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), PNG_COMPRESS_LEVEL)),
            _png_chunk(b"IEND", b""),
        ]
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def save_grid(path: str | os.PathLike, images: np.ndarray, columns: int | None = None) -> None:
    """Write a contact sheet of uint8 NHWC images as a PNG, atomically."""
    atomic_write_bytes(path, encode_png(make_grid(images, columns)))
