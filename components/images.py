"""Turn one image file into training pixels, or into a reason why not.

Ingest sees whatever is in a user's folder: photos with EXIF rotation, transparent PNGs, palette
GIFs, CMYK or 16-bit files, thumbnails, half-downloaded files, `.txt` notes, decompression bombs.
Every file either becomes a square uint8 RGB array at the training size, or raises `Rejected`
with a short machine-readable reason (it goes to `rejects.jsonl`) and a human detail.

Pure functions of bytes and options: no TensorFlow, no global state (Pillow's own global
decompression-bomb limit is left alone; the limit here is a parameter).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# The formats the data set may come in; Pillow opens more (TIFF, ICO, PSD...), which we refuse
# rather than half-support. MPO is what cameras call a JPEG with extra frames.
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF"})
RESIZE_MODES = ("center-crop", "pad", "stretch")
# 64 Mpx (8192 x 8192) is far beyond any face crop, and small enough that one bomb cannot eat the
# memory of a worker. Pillow warns at 89 Mpx and refuses at 179 Mpx by default.
MAX_PIXELS = 64 * 1024 * 1024
PILLOW_MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS  # above this Pillow refuses an image, whatever we allow
# A file may hold 4 bytes per allowed pixel (8-bit RGBA, uncompressed) and 16 MB of metadata: no
# image within the pixel limit needs more. Reading stops there, so a 100 GB file costs nothing.
BYTES_PER_PIXEL = 4
METADATA_BYTES = 16 * 1024 * 1024
# (lowest, highest) of the whole-number ingest options, checked by IngestOptions (and its flags) before
# any work. 65,535 is the longest side a JPEG can have.
OPTION_LIMITS = {"image_size": (4, 4096), "min_size": (1, 65_535), "shards": (1, 10_000), "max_pixels": (1, PILLOW_MAX_PIXELS)}
PAD_COLOUR = (255, 255, 255)  # white, like the background transparent images are composited on
_RESAMPLE = Image.Resampling.LANCZOS  # antialiased when shrinking (tf.image.resize is not)

# Magic numbers, to tell a damaged image ("corrupt") from a file that never was one.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")

# Reasons a file is rejected (the `reason` field of rejects.jsonl).
EMPTY = "empty-file"
UNREADABLE = "unreadable"
NOT_AN_IMAGE = "not-an-image"
UNSUPPORTED = "unsupported-format"
BOMB = "decompression-bomb"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
TOO_SMALL = "too-small"
TOO_LARGE = "too-large"  # more bytes than any image within the pixel limit needs
NOT_A_FILE = "not-a-file"  # a pipe, socket or device: reading it could block forever
REPEATED_FOLDER = "repeated-folder"  # a link to a folder that is read already (a loop, or a second way in)
PROJECT_FOLDER = "project-folder"  # a run, data, sample or model folder of this project: its files are not faces
REASONS = (
    EMPTY,
    UNREADABLE,
    NOT_AN_IMAGE,
    UNSUPPORTED,
    BOMB,
    TRUNCATED,
    CORRUPT,
    TOO_SMALL,
    TOO_LARGE,
    NOT_A_FILE,
    REPEATED_FOLDER,
    PROJECT_FOLDER,
)


class Rejected(Exception):
    """A file that cannot become a training image: `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class PreparedImage:
    """What ingest keeps of an image file."""

    pixels: np.ndarray  # uint8 HWC RGB at the training size
    pixel_hash: str  # of the decoded full-size RGB pixels: equal hashes = exact duplicates
    sha256: str  # of the file's bytes, for provenance


def max_file_bytes(max_pixels: int = MAX_PIXELS) -> int:
    """The most bytes an image file within `max_pixels` may hold (see BYTES_PER_PIXEL)."""
    return BYTES_PER_PIXEL * max_pixels + METADATA_BYTES


def read_file(path: str | os.PathLike, max_bytes: int = max_file_bytes()) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, or `Rejected`.

    The file is opened without blocking and checked through the open handle, as it may have been
    replaced since it was listed: a pipe would block the read forever. At most `max_bytes` + 1
    bytes are read, whatever size the file claims or grows to.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise Rejected(UNREADABLE, err.strerror or str(err)) from err
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise Rejected(UNREADABLE, "Is a directory")  # what reading it says, where it can be opened at all
        if not stat.S_ISREG(info.st_mode):
            raise Rejected(NOT_A_FILE, "not a regular file (a pipe, socket or device): reading it could block forever")
        if info.st_size > max_bytes:
            raise Rejected(TOO_LARGE, f"{info.st_size:,} bytes; the limit is {max_bytes:,} (raise --max-pixels to allow more)")
        with open(descriptor, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    except OSError as err:
        raise Rejected(UNREADABLE, err.strerror or str(err)) from err
    finally:
        os.close(descriptor)
    return check_size(data, max_bytes)


def check_size(data: bytes, max_bytes: int) -> bytes:
    """`data` if it holds 1 to `max_bytes` bytes, else `Rejected` (empty, or too large)."""
    if not data:
        raise Rejected(EMPTY, "the file has zero bytes")
    if len(data) > max_bytes:
        raise Rejected(TOO_LARGE, f"more than {max_bytes:,} bytes (raise --max-pixels to allow more)")
    return data


def prepare_image(
    data: bytes,
    image_size: int,
    resize: str = "center-crop",
    min_size: int = 1,
    max_pixels: int = MAX_PIXELS,
) -> PreparedImage:
    """Decode, validate and resize the bytes of one image file (see the module docstring)."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    image = to_rgb(decode(data, max_pixels))
    if min(image.size) < min_size:
        raise Rejected(TOO_SMALL, f"{image.width}x{image.height} is below the minimum side of {min_size}px")
    pixel_hash = hashlib.blake2b(image.tobytes(), digest_size=16, person=b"%dx%d" % image.size).hexdigest()
    pixels = np.asarray(resize_square(image, image_size, resize), dtype=np.uint8)
    return PreparedImage(pixels=pixels, pixel_hash=pixel_hash, sha256=hashlib.sha256(data).hexdigest())


def decode(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open the first frame of an image, fully decoded and turned upright by its EXIF orientation."""
    if not data:
        raise Rejected(EMPTY, "the file has zero bytes")
    try:
        with warnings.catch_warnings():
            # Our own limit below decides; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise Rejected(BOMB, str(err)) from err
    except UnidentifiedImageError as err:
        if data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
            raise Rejected(CORRUPT, "an image header Pillow cannot parse") from err
        raise Rejected(NOT_AN_IMAGE, "not a JPEG, PNG, WebP, BMP or GIF file") from err
    except Exception as err:  # Pillow's parsers raise all sorts (struct.error, IndexError...) on bad bytes
        raise _decode_failure(err) from err
    if image.format not in SUPPORTED_FORMATS:
        raise Rejected(UNSUPPORTED, f"{image.format} images are not supported (use JPEG, PNG, WebP, BMP or GIF)")
    if image.width * image.height > max_pixels:
        raise Rejected(BOMB, f"{image.width}x{image.height} is more than {max_pixels} pixels")
    try:
        image.load()  # the first frame of an animation; decoding problems surface here
        return ImageOps.exif_transpose(image)
    except Exception as err:
        raise _decode_failure(err) from err


def _decode_failure(err: Exception) -> Rejected:
    message = str(err) or type(err).__name__
    if "truncated" in message.lower() or isinstance(err, EOFError):
        return Rejected(TRUNCATED, message)
    return Rejected(CORRUPT, message)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: transparency composited on white, 16-bit grey scaled down, other modes converted."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I"):  # 16-bit (I;16*) or 32-bit integer grey from 16-bit PNGs
        grey = np.asarray(image).astype(np.float64) * (255.0 / 65535.0)
        return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8)).convert("RGB")
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, PAD_COLOUR + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # palette, grey, 1-bit, CMYK, YCbCr...


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)


def resize_square(image: Image.Image, size: int, mode: str = "center-crop") -> Image.Image:
    """A `size` x `size` image: crop the centre square, pad to a square, or stretch; antialiased."""
    if image.size == (size, size):
        return image
    if mode == "center-crop":
        return ImageOps.fit(image, (size, size), method=_RESAMPLE)
    if mode == "pad":
        return ImageOps.pad(image, (size, size), method=_RESAMPLE, color=PAD_COLOUR)
    if mode == "stretch":
        return image.resize((size, size), _RESAMPLE)
    raise ValueError(f"resize must be one of {RESIZE_MODES}, got {mode!r}")
