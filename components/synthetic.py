"""Procedural anime-style faces drawn with Pillow: the pipeline's built-in data set.

They let the whole pipeline (ingest, training, the demo, the tests) run with no download. Each
face is a portrait on a plain or gradient background: back hair, shoulders, a pointed anime chin,
big eyes (sclera, iris, pupil, highlight, lashes), brows, nose, mouth, sometimes blush and a bow,
and bangs. Hair colour and style, eye colour and size, skin, mouth, background and pose vary.
The shapes are few and bold so that a small DCGAN learns them at 32-64 px.

Face `i` of seed `s` is a pure function of `(s, i)`: the same face whatever the count, the order
or the machine. Drawn at 4x and downsampled with an antialiasing filter, since `ImageDraw` does
not antialias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Bump when the drawing changes: it is part of the ingest fingerprint of synthetic data.
VERSION = 1
SUPERSAMPLE = 4

Colour = tuple[int, int, int]

HAIR_COLOURS: tuple[Colour, ...] = (
    (30, 28, 36),
    (92, 56, 36),
    (150, 96, 52),
    (236, 206, 120),
    (250, 236, 190),  # black..blonde
    (224, 120, 160),
    (250, 180, 200),
    (90, 130, 220),
    (150, 200, 240),
    (200, 204, 214),  # pink, blue, silver
    (196, 52, 52),
    (130, 80, 180),
    (80, 170, 120),
    (240, 140, 60),  # red, purple, green, orange
)
EYE_COLOURS: tuple[Colour, ...] = (
    (60, 110, 200),
    (40, 150, 110),
    (150, 60, 40),
    (180, 40, 60),
    (120, 60, 170),
    (200, 150, 40),
    (70, 70, 80),
)
SKIN_TONES: tuple[Colour, ...] = ((255, 232, 216), (252, 222, 200), (246, 208, 180), (232, 186, 150), (200, 150, 116))
HAIR_STYLES = ("short", "bob", "long", "twin-tails")
MOUTHS = ("smile", "open", "small", "flat", "cat")


@dataclass(frozen=True)
class FaceTraits:
    """Everything that varies between faces; drawing is a pure function of these."""

    background: tuple[Colour, Colour]  # top and bottom of a vertical gradient (equal = plain)
    hair: Colour
    hair_style: str
    bangs: int  # number of strands across the forehead
    eye: Colour
    eye_size: float  # 1.0 = average
    skin: Colour
    mouth: str
    blush: bool
    bow: Colour | None
    clothes: Colour
    centre: tuple[float, float]  # face centre, fraction of the image
    scale: float  # face size, 1.0 = average


def sample_traits(rng: np.random.Generator) -> FaceTraits:
    """Draw one face's traits; the order of the draws is part of the data set's definition."""

    def pick(options):
        return options[int(rng.integers(len(options)))]

    def jitter(colour: Colour, amount: int) -> Colour:
        return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)

    # Mostly light backgrounds, like the cropped illustrations of the real data set.
    top = tuple(int(c) for c in rng.integers(80, 256, 3))
    bottom = top if rng.random() < 0.4 else tuple(int(c) for c in rng.integers(80, 256, 3))
    return FaceTraits(
        background=(top, bottom),
        hair=jitter(pick(HAIR_COLOURS), 18),
        hair_style=pick(HAIR_STYLES),
        bangs=int(rng.integers(3, 8)),
        eye=jitter(pick(EYE_COLOURS), 20),
        eye_size=float(rng.uniform(0.8, 1.25)),
        skin=jitter(pick(SKIN_TONES), 6),
        mouth=pick(MOUTHS),
        blush=bool(rng.random() < 0.5),
        bow=tuple(int(c) for c in rng.integers(0, 256, 3)) if rng.random() < 0.3 else None,
        clothes=tuple(int(c) for c in rng.integers(20, 236, 3)),
        centre=(float(0.5 + rng.normal(0, 0.025)), float(0.45 + rng.normal(0, 0.025))),
        scale=float(rng.uniform(0.92, 1.08)),
    )


def draw_face(traits: FaceTraits, size: int) -> Image.Image:
    """Render `traits` as a `size` x `size` RGB image."""
    canvas = size * SUPERSAMPLE
    image = _gradient(traits.background, canvas)
    _Painter(ImageDraw.Draw(image, "RGBA"), canvas, traits).paint()
    return image.resize((size, size), Image.Resampling.LANCZOS)


def synthetic_face(seed: int, index: int, size: int) -> Image.Image:
    """Face number `index` of the data set `seed`."""
    return draw_face(sample_traits(np.random.default_rng([seed, index])), size)


def face_filename(index: int) -> str:
    return f"face-{index:06d}.png"


def _gradient(colours: tuple[Colour, Colour], size: int) -> Image.Image:
    top, bottom = (np.array(c, np.float32) for c in colours)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    rows = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)
    return Image.fromarray(np.broadcast_to(rows, (size, size, 3)).copy())


def _shade(colour: Colour, factor: float) -> Colour:
    """Darker (factor < 1) or lighter (> 1, towards white) version of a colour."""
    if factor <= 1:
        return tuple(int(c * factor) for c in colour)
    return tuple(int(c + (255 - c) * (factor - 1)) for c in colour)


class _Painter:
    """Draws one face layer by layer, back to front, in face-relative coordinates.

    `(u, v)` are offsets from the face centre in units of the face size: u right, v down,
    the face spans about u in [-0.26, 0.26] and v in [-0.3, 0.32].
    """

    def __init__(self, draw: ImageDraw.ImageDraw, canvas: int, traits: FaceTraits):
        self.draw, self.t = draw, traits
        self.unit = canvas * 1.35 * traits.scale  # a tight crop, like the real data: the face fills ~70%
        self.cx, self.cy = traits.centre[0] * canvas, traits.centre[1] * canvas

    def xy(self, u: float, v: float) -> tuple[float, float]:
        return self.cx + u * self.unit, self.cy + v * self.unit

    def box(self, u: float, v: float, half_w: float, half_h: float) -> list[float]:
        (x0, y0), (x1, y1) = self.xy(u - half_w, v - half_h), self.xy(u + half_w, v + half_h)
        return [x0, y0, x1, y1]

    def polygon(self, points: list[tuple[float, float]], fill) -> None:
        self.draw.polygon([self.xy(u, v) for u, v in points], fill=fill)

    def paint(self) -> None:
        self.back_hair()
        self.body()
        self.head()
        self.bangs()
        for side in (-1, 1):
            self.eye(side)
            self.brow(side)
        self.nose()
        self.mouth()
        if self.t.blush:
            for side in (-1, 1):
                self.draw.ellipse(self.box(side * 0.15, 0.12, 0.05, 0.022), fill=(255, 110, 130, 110))
        if self.t.bow:
            self.bow(self.t.bow)

    def back_hair(self) -> None:
        hair, style = self.t.hair, self.t.hair_style
        self.draw.ellipse(self.box(0, -0.06, 0.33, 0.33), fill=hair)  # the crown behind the head
        if style == "bob":
            self.draw.rounded_rectangle(self.box(0, 0.06, 0.33, 0.2), radius=self.unit * 0.08, fill=hair)
        elif style == "long":
            self.polygon([(-0.33, -0.06), (0.33, -0.06), (0.4, 0.62), (-0.4, 0.62)], hair)
        elif style == "twin-tails":
            for side in (-1, 1):
                self.draw.ellipse(self.box(side * 0.34, 0.2, 0.09, 0.26), fill=hair)
                self.draw.ellipse(self.box(side * 0.29, -0.12, 0.05, 0.04), fill=_shade(hair, 0.6))  # hair tie

    def body(self) -> None:
        self.draw.rectangle(self.box(0, 0.36, 0.07, 0.08), fill=_shade(self.t.skin, 0.9))  # neck
        self.polygon([(-0.45, 0.7), (-0.34, 0.44), (0, 0.4), (0.34, 0.44), (0.45, 0.7)], self.t.clothes)
        self.polygon([(-0.08, 0.41), (0.08, 0.41), (0, 0.5)], _shade(self.t.skin, 0.9))  # collar V

    def head(self) -> None:
        skin = self.t.skin
        self.draw.ellipse(self.box(0, -0.02, 0.26, 0.26), fill=skin)
        # The pointed anime chin: the lower half narrows to a point.
        self.polygon([(-0.26, 0.0), (-0.2, 0.18), (-0.04, 0.31), (0.04, 0.31), (0.2, 0.18), (0.26, 0.0)], skin)

    def bangs(self) -> None:
        hair, count = self.t.hair, self.t.bangs
        self.draw.chord(self.box(0, -0.12, 0.29, 0.24), 180, 360, fill=hair)  # hairline over the forehead
        x0, y0, x1, y1 = self.box(0, -0.14, 0.2, 0.16)
        self.draw.arc([x0, y0, x1, y1], 200, 340, fill=_shade(hair, 1.35), width=max(1, int(self.unit * 0.02)))  # shine
        width = 0.6 / count
        for index in range(count):
            left = -0.3 + index * width
            tip = -0.02 + 0.025 * ((index * 7 + count) % 3)  # strands of uneven length, still deterministic
            self.polygon([(left, -0.13), (left + width, -0.13), (left + width * 0.55, tip)], hair)
        for side in (-1, 1):  # side locks framing the cheeks
            self.polygon([(side * 0.3, -0.1), (side * 0.22, -0.08), (side * 0.24, 0.2), (side * 0.3, 0.14)], hair)

    def eye(self, side: int) -> None:
        size, colour = self.t.eye_size, self.t.eye
        u, v = side * 0.11, 0.04
        w, h = 0.058 * size, 0.072 * size
        self.draw.ellipse(self.box(u, v, w, h), fill=(255, 255, 255))
        self.draw.ellipse(self.box(u, v + 0.008, w * 0.78, h * 0.88), fill=colour)
        self.draw.ellipse(self.box(u, v + 0.03 * size, w * 0.6, h * 0.4), fill=_shade(colour, 1.35))  # lower glow
        self.draw.ellipse(self.box(u, v + 0.006, w * 0.38, h * 0.45), fill=_shade(colour, 0.35))  # pupil
        self.draw.ellipse(self.box(u - side * w * 0.3, v - h * 0.35, w * 0.25, w * 0.25), fill=(255, 255, 255))
        lash = (30, 20, 25)
        x0, y0, x1, y1 = self.box(u, v - h * 0.05, w * 1.15, h)
        self.draw.arc([x0, y0, x1, y1], 195, 345, fill=lash, width=max(1, int(self.unit * 0.018)))
        outer = self.xy(u + side * w * 1.15, v - h * 0.25)
        self.draw.line([outer, self.xy(u + side * w * 1.4, v - h * 0.45)], fill=lash, width=max(1, int(self.unit * 0.012)))

    def brow(self, side: int) -> None:
        x0, y0, x1, y1 = self.box(side * 0.11, -0.045, 0.06, 0.022)
        self.draw.arc([x0, y0, x1, y1], 200, 340, fill=_shade(self.t.hair, 0.55), width=max(1, int(self.unit * 0.012)))

    def nose(self) -> None:
        self.draw.line(
            [self.xy(0.0, 0.13), self.xy(-0.008, 0.15)], fill=_shade(self.t.skin, 0.7), width=max(1, int(self.unit * 0.008))
        )

    def mouth(self) -> None:
        line = (150, 60, 60)
        width = max(1, int(self.unit * 0.01))
        kind = self.t.mouth
        if kind == "smile":
            self.draw.arc(self.box(0, 0.2, 0.05, 0.03), 20, 160, fill=line, width=width)
        elif kind == "open":
            self.draw.chord(self.box(0, 0.205, 0.045, 0.04), 0, 180, fill=(170, 40, 60))
            self.draw.chord(self.box(0, 0.225, 0.028, 0.018), 180, 360, fill=(240, 120, 130))  # tongue
        elif kind == "small":
            self.draw.ellipse(self.box(0, 0.22, 0.014, 0.014), fill=(170, 50, 60))
        elif kind == "flat":
            self.draw.line([self.xy(-0.03, 0.22), self.xy(0.03, 0.22)], fill=line, width=width)
        else:  # "cat": the ":3" mouth
            for side in (-1, 1):
                self.draw.arc(self.box(side * 0.02, 0.21, 0.02, 0.018), 0, 180, fill=line, width=width)

    def bow(self, colour: Colour) -> None:
        u, v = 0.2, -0.26
        self.polygon([(u, v), (u - 0.1, v - 0.06), (u - 0.1, v + 0.06)], colour)
        self.polygon([(u, v), (u + 0.1, v - 0.06), (u + 0.1, v + 0.06)], colour)
        self.draw.ellipse(self.box(u, v, 0.025, 0.025), fill=_shade(colour, 0.7))
