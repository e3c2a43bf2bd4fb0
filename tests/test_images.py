"""One file to training pixels or a reject reason: components.images, without Beam."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from components import images
from components.images import Rejected, prepare_image, read_file


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def random_rgb(height: int = 32, width: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def reason_of(data: bytes, **kwargs) -> str:
    with pytest.raises(Rejected) as caught:
        prepare_image(data, 32, **kwargs)
    return caught.value.reason


@pytest.mark.parametrize("fmt,params", [("PNG", {}), ("BMP", {}), ("WEBP", {"lossless": True})])
def test_lossless_formats_round_trip_pixel_exact(fmt, params):
    pixels = random_rgb()
    prepared = prepare_image(encode(Image.fromarray(pixels), fmt, **params), 32)
    assert prepared.pixels.dtype == np.uint8 and prepared.pixels.shape == (32, 32, 3)
    assert np.array_equal(prepared.pixels, pixels)


def test_gif_uses_the_first_frame():
    red, blue = (Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 0, 255)))
    data = encode(red, "GIF", save_all=True, append_images=[blue])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    pixels = prepare_image(data, 32).pixels
    assert (pixels == [255, 0, 0]).all()


def test_exif_orientation_is_applied():
    # 48 wide x 32 high: red on the left, blue on the right. Orientation 6 means "rotate 90 degrees
    # clockwise to display": upright the image is 32 wide x 48 high, red on top.
    pixels = np.zeros((32, 48, 3), np.uint8)
    pixels[:, :24] = (255, 0, 0)
    pixels[:, 24:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes())
    upright = images.decode(data)
    assert upright.size == (32, 48)
    top, bottom = np.asarray(upright)[4, 16], np.asarray(upright)[44, 16]
    assert top[0] > 200 and top[2] < 60, top  # red
    assert bottom[2] > 200 and bottom[0] < 60, bottom  # blue


def test_transparency_is_composited_on_white():
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:16] = (255, 0, 0, 255)  # opaque red top, fully transparent bottom
    pixels = prepare_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"), 32).pixels
    assert (pixels[:16] == [255, 0, 0]).all()
    assert (pixels[16:] == 255).all()

    grey_alpha = Image.fromarray(np.dstack([np.full((32, 32), 0, np.uint8), np.full((32, 32), 0, np.uint8)]), "LA")
    assert (prepare_image(encode(grey_alpha, "PNG"), 32).pixels == 255).all()

    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([0, 255, 0] * 256)
    gif = encode(palette, "GIF", transparency=0)  # palette index 0 is transparent
    assert (prepare_image(gif, 32).pixels == 255).all()


def test_grey_palette_and_cmyk_become_rgb():
    grey = Image.fromarray(np.full((32, 32), 77, np.uint8), "L")
    assert (prepare_image(encode(grey, "PNG"), 32).pixels == 77).all()

    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    pixels = prepare_image(encode(cmyk, "JPEG", quality=95), 32).pixels
    assert pixels[..., 0].mean() > 230 and pixels[..., 1:].mean() < 30


def test_16_bit_grey_is_scaled_not_clipped():
    values = np.array([[0, 32896, 65535, 65535]], np.uint16).repeat(32, axis=0).repeat(8, axis=1)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    pixels = prepare_image(data, 32).pixels
    assert pixels[0, 0, 0] == 0 and pixels[0, 8, 0] == 128 and pixels[0, 31, 0] == 255


def test_non_square_is_centre_cropped_padded_or_stretched():
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, 16:48] = (0, 200, 0)  # a green centre square between black sides
    data = encode(Image.fromarray(pixels), "PNG")
    crop = prepare_image(data, 32, resize="center-crop").pixels
    assert np.array_equal(crop, pixels[:, 16:48])
    pad = prepare_image(data, 32, resize="pad").pixels
    assert (pad[:8] == 255).all() and (pad[-8:] == 255).all()  # white bars above and below
    assert (pad[12:20, 12:20] == [0, 200, 0]).all()
    stretch = prepare_image(data, 32, resize="stretch", min_size=1).pixels
    assert stretch.shape == (32, 32, 3) and (stretch[:, :6] < 20).all()  # the black sides are kept


def test_downsizing_is_antialiased():
    checker = (np.indices((128, 128)).sum(axis=0) % 2 * 255).astype(np.uint8)  # 1-pixel checkerboard
    pixels = prepare_image(encode(Image.fromarray(checker).convert("RGB"), "PNG"), 32).pixels
    assert abs(pixels.mean() - 127.5) < 3 and pixels.std() < 8  # an even grey, not aliased stripes


def test_equal_pixels_hash_equal_whatever_the_file():
    pixels = random_rgb()
    as_png = prepare_image(encode(Image.fromarray(pixels), "PNG"), 32)
    as_bmp = prepare_image(encode(Image.fromarray(pixels), "BMP"), 32)
    other = prepare_image(encode(Image.fromarray(random_rgb(seed=1)), "PNG"), 32)
    assert as_png.pixel_hash == as_bmp.pixel_hash != other.pixel_hash
    assert as_png.sha256 != as_bmp.sha256 and len(as_png.sha256) == 64


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but holds no pixels: a decompression bomb costs nothing to make."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_every_kind_of_bad_bytes_has_its_reason():
    jpeg = encode(Image.fromarray(random_rgb(64, 64)), "JPEG")
    png = encode(Image.fromarray(random_rgb(64, 64)), "PNG")
    corrupt_png = png[:100] + b"\x00" * 200 + png[300:]
    assert reason_of(b"") == images.EMPTY
    assert reason_of(b"just some notes\n") == images.NOT_AN_IMAGE
    assert reason_of(jpeg[: len(jpeg) // 2]) == images.TRUNCATED
    assert reason_of(png[: len(png) // 2]) == images.TRUNCATED
    assert reason_of(corrupt_png) == images.CORRUPT
    assert reason_of(png[:30]) == images.CORRUPT  # a PNG signature, then nothing usable
    assert reason_of(encode(Image.fromarray(random_rgb()), "TIFF")) == images.UNSUPPORTED
    assert reason_of(png_header_only(30_000, 30_000)) == images.BOMB  # Pillow's own hard limit
    assert reason_of(png, max_pixels=1000) == images.BOMB  # ours
    assert reason_of(encode(Image.fromarray(random_rgb(15, 40)), "PNG"), min_size=16) == images.TOO_SMALL


def test_read_file_rejects_empty_and_unreadable(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    (tmp_path / "folder.png").mkdir()
    for name, reason in (("empty.png", images.EMPTY), ("dangling.png", images.UNREADABLE), ("folder.png", images.UNREADABLE)):
        with pytest.raises(Rejected) as caught:
            read_file(tmp_path / name)
        assert caught.value.reason == reason, name
