"""Drawn face parts shared by every drawn source: a pen in canvas fractions, eyes, mouths, brows, tears,
hearts, blush, and one face per emotion.

The broccoli stickers (:mod:`.broccoli`) put these faces on a floret and the emotion faces
(:mod:`.faces`) on an emoji disc; both draw from this one copy. A face is placed by a
:class:`FaceBox` (centre, unit, ink) and every varying choice comes from the
``numpy.random.Generator`` passed in, so the same generator state gives the same pixels.

Coordinates are fractions of the canvas side; :class:`Pen` turns them into pixels.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[int, int, int]

INK = (35, 30, 30)
MOUTH = (125, 20, 35)
TONGUE = (240, 110, 120)
BLUSH = (250, 135, 150)
HEART = (228, 28, 58)
HEART_LINE = (120, 0, 20)
TEAR = (95, 175, 255)
TEAR_LINE = (25, 75, 190)
WHITE = (255, 255, 255)


def hsv(h: float, s: float, v: float) -> RGB:
    """An RGB colour from hue (wrapped), saturation and value (clipped to 0..1)."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """The colour ``t`` of the way from ``a`` to ``b``."""
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))


def drawing_scale(side: int) -> int:
    """Drawing scale: a canvas of at least 256 px, and never less than twice the side, so edges are smooth
    once the drawing is reduced to ``side``."""
    return max(2, -(-256 // side))


class Pen:
    """ImageDraw in canvas fractions: ``x, y, r`` are fractions of the side."""

    def __init__(self, image: Image.Image) -> None:
        self.side = image.width
        self.draw = ImageDraw.Draw(image)

    def px(self, value: float) -> float:
        return value * self.side

    def width(self, value: float) -> int:
        return max(1, round(value * self.side))

    def circle(self, x: float, y: float, r: float, fill: RGB, line: RGB | None = None, w: float = 0.0) -> None:
        box = [self.px(x - r), self.px(y - r), self.px(x + r), self.px(y + r)]
        self.draw.ellipse(box, fill=fill, outline=line, width=self.width(w) if line else 0)

    def ellipse(self, x: float, y: float, rx: float, ry: float, fill: RGB) -> None:
        self.draw.ellipse([self.px(x - rx), self.px(y - ry), self.px(x + rx), self.px(y + ry)], fill=fill)

    def arc(self, x: float, y: float, r: float, start: float, end: float, color: RGB, w: float) -> None:
        """Arc of the circle at (x, y); angles in degrees clockwise from 3 o'clock (Pillow's)."""
        box = [self.px(x - r), self.px(y - r), self.px(x + r), self.px(y + r)]
        self.draw.arc(box, start, end, fill=color, width=self.width(w))

    def line(self, points: list[tuple[float, float]], color: RGB, w: float) -> None:
        self.draw.line([(self.px(x), self.px(y)) for x, y in points], fill=color, width=self.width(w), joint="curve")
        for x, y in (points[0], points[-1]):  # round caps
            self.circle(x, y, w / 2, color)

    def polygon(self, points: list[tuple[float, float]], fill: RGB) -> None:
        self.draw.polygon([(self.px(x), self.px(y)) for x, y in points], fill=fill)

    def pieslice(self, x: float, y: float, r: float, start: float, end: float, fill: RGB) -> None:
        box = [self.px(x - r), self.px(y - r), self.px(x + r), self.px(y + r)]
        self.draw.pieslice(box, start, end, fill=fill)


@dataclass(frozen=True)
class FaceBox:
    """Where a face goes and in what ink: centre (x, y), unit ``u`` (the radius of what carries the face:
    a broccoli's front floret, about an emoji disc's) and the colour of eyes, brows and mouth lines."""

    x: float
    y: float
    u: float
    ink: RGB = INK

    def eye(self, side: int) -> tuple[float, float]:
        return self.x + side * 0.4 * self.u, self.y - 0.1 * self.u


def dot_eyes(pen: Pen, face: FaceBox, size: float = 0.13) -> None:
    """Round eyes with a white glint, ``size`` units in radius."""
    for side in (-1, 1):
        x, y = face.eye(side)
        pen.circle(x, y, size * face.u, face.ink)
        pen.circle(x - 0.4 * size * face.u, y - 0.4 * size * face.u, 0.38 * size * face.u, WHITE)


def heart(pen: Pen, x: float, y: float, w: float, fill: RGB) -> None:
    """A heart ``w`` wide centred at (x, y): two lobes and a point."""
    r = w / 4
    pen.circle(x - r, y - r * 0.5, r * 1.02, fill)
    pen.circle(x + r, y - r * 0.5, r * 1.02, fill)
    pen.polygon([(x - 2 * r, y - r * 0.35), (x + 2 * r, y - r * 0.35), (x, y + 1.85 * r)], fill)


def outlined_heart(pen: Pen, x: float, y: float, w: float, line: float) -> None:
    """A red heart with a dark red outline ``line`` thick and a pink glint."""
    heart(pen, x, y + line * 0.3, w + 2.6 * line, HEART_LINE)
    heart(pen, x, y, w, HEART)
    pen.circle(x - w * 0.3, y - w * 0.2, w * 0.08, (255, 200, 210))


def tear(pen: Pen, x: float, y: float, r: float, line: float) -> None:
    """A blue drop, point up, its round end centred at (x, y)."""
    for radius, color in ((r + line, TEAR_LINE), (r, TEAR)):
        pen.circle(x, y, radius, color)
        pen.polygon([(x - radius * 0.93, y - radius * 0.35), (x + radius * 0.93, y - radius * 0.35),
                     (x, y - r * 2.3 - (radius - r) * 1.6)], color)
    pen.circle(x - r * 0.35, y - r * 0.2, r * 0.28, (225, 242, 255))


def brows(pen: Pen, face: FaceBox, inner_dy: float, w: float) -> None:
    """Two brows above the eyes; ``inner_dy`` > 0 lowers the inner ends (angry), < 0 raises them (sad)."""
    for side in (-1, 1):
        x, y = face.eye(side)
        top = y - 0.33 * face.u
        inner = (x - side * 0.2 * face.u, top + inner_dy * face.u)
        outer = (x + side * 0.2 * face.u, top - inner_dy * face.u)
        pen.line([inner, outer], face.ink, w * face.u)


def blush(pen: Pen, face: FaceBox) -> None:
    """Pink cheeks below and outside the eyes."""
    for side in (-1, 1):
        x, y = face.eye(side)
        pen.ellipse(x + side * 0.1 * face.u, y + 0.3 * face.u, 0.15 * face.u, 0.085 * face.u, BLUSH)


def happy_face(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """Upturned eye arcs (or dot eyes) and a big open smile with a tongue."""
    u = face.u
    if rng.random() < 0.5:
        for side in (-1, 1):
            x, y = face.eye(side)
            pen.arc(x, y + 0.06 * u, 0.14 * u, 195, 345, face.ink, 0.085 * u)
    else:
        dot_eyes(pen, face)
    mx, my, mr = face.x, face.y + 0.14 * u, rng.uniform(0.36, 0.42) * u
    pen.pieslice(mx, my, mr + 0.05 * u, 0, 180, face.ink)
    pen.pieslice(mx, my, mr, 0, 180, MOUTH)
    pen.ellipse(mx, my + 0.7 * mr, 0.5 * mr, 0.26 * mr, TONGUE)
    pen.draw.rectangle([pen.px(mx - mr - 0.05 * u), pen.px(my - 0.05 * u), pen.px(mx + mr + 0.05 * u), pen.px(my)],
                       fill=face.ink)


def sad_face(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """Droopy brows (inner ends up), dot eyes, a downturned mouth and blue tears."""
    u = face.u
    brows(pen, face, -0.1, 0.09)
    dot_eyes(pen, face, 0.12)
    pen.arc(face.x, face.y + 0.58 * u, 0.34 * u, 210, 330, face.ink, 0.11 * u)
    sides = (-1, 1) if rng.random() < 0.6 else (int(rng.choice([-1, 1])),)
    for side in sides:
        x, y = face.eye(side)
        tear(pen, x + side * 0.05 * u, y + 0.44 * u, 0.18 * u, 0.035 * u)


def angry_face(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """Frowning V brows, small eyes and gritted teeth or a turned-down mouth."""
    u = face.u
    brows(pen, face, 0.12, 0.1)
    dot_eyes(pen, face, 0.1)
    if rng.random() < 0.6:
        x0, x1, y0, y1 = face.x - 0.3 * u, face.x + 0.3 * u, face.y + 0.24 * u, face.y + 0.44 * u
        box = [pen.px(x0), pen.px(y0), pen.px(x1), pen.px(y1)]
        pen.draw.rounded_rectangle(box, radius=pen.px(0.06 * u), fill=WHITE, outline=face.ink,
                                   width=pen.width(0.055 * u))
        pen.line([(x0 + 0.04 * u, (y0 + y1) / 2), (x1 - 0.04 * u, (y0 + y1) / 2)], face.ink, 0.04 * u)
        for k in (-1, 0, 1):
            pen.line([(face.x + k * 0.1 * u, y0 + 0.03 * u), (face.x + k * 0.1 * u, y1 - 0.03 * u)], face.ink,
                     0.03 * u)
    else:
        pen.arc(face.x, face.y + 0.6 * u, 0.3 * u, 215, 325, face.ink, 0.1 * u)


def in_love_face(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """Red heart eyes, pink cheeks and a smile."""
    u = face.u
    blush(pen, face)
    width = rng.uniform(0.36, 0.42) * u
    for side in (-1, 1):
        x, y = face.eye(side)
        outlined_heart(pen, x + side * 0.03 * u, y, width, 0.03 * u)
    pen.arc(face.x, face.y + 0.1 * u, 0.26 * u, 25, 155, face.ink, 0.085 * u)


FaceDrawer = Callable[[Pen, FaceBox, np.random.Generator], None]

# Emotion label (kerasemote.data.emotions spelling) -> its face.
FACES: dict[str, FaceDrawer] = {
    "happy": happy_face,
    "sad": sad_face,
    "angry": angry_face,
    "in love": in_love_face,
}
