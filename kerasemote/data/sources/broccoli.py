"""Procedural broccoli stickers: a floret crown, a stalk, an optional emotion face, a sticker border.

Everything is drawn with Pillow on a canvas several times the asked side (at least
256 px) and then reduced, so edges are smooth at 64 px. Every varying choice (pose, size, floret
count and shade, face variant) comes from the ``numpy.random.Generator`` passed in, so
the same generator state gives the same pixels.

Coordinates are fractions of the canvas side; ``_Pen`` turns them into pixels.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

BORDER_WHITE = 0.045  # sticker border widths, as fractions of the side
BORDER_DARK = 0.014
MARGIN = 0.02  # blank paper between the sticker's dark line and the image edge
BORDER_DARK_COLOR = (70, 70, 70)
ANGRY_RED = (232, 30, 25)

RGB = tuple[int, int, int]


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))


@dataclass(frozen=True)
class Greens:
    """The shades of one broccoli: florets (dark, mid, light), outlines, stalk."""

    dark: RGB
    mid: RGB
    light: RGB
    line: RGB
    stalk: RGB
    stalk_light: RGB
    stalk_line: RGB

    @staticmethod
    def draw(rng: np.random.Generator) -> Greens:
        hue = rng.uniform(0.25, 0.36)  # yellow-green to blue-green
        sat = rng.uniform(0.55, 0.8)
        val = rng.uniform(0.55, 0.72)
        stalk_hue = hue - rng.uniform(0.02, 0.06)
        return Greens(
            dark=_hsv(hue, sat, val * 0.72),
            mid=_hsv(hue, sat, val),
            light=_hsv(hue - 0.02, sat * 0.8, min(1.0, val * 1.3)),
            line=_hsv(hue, sat, val * 0.38),
            stalk=_hsv(stalk_hue, 0.42, 0.84),
            stalk_light=_hsv(stalk_hue, 0.28, 0.95),
            stalk_line=_hsv(stalk_hue, 0.55, 0.45),
        )

    def tinted(self, color: RGB, amount: float) -> Greens:
        """Florets blended toward ``color`` (the angry red); the stalk keeps its shade."""
        return Greens(
            dark=_mix(self.dark, color, amount), mid=_mix(self.mid, color, amount),
            light=_mix(self.light, color, amount), line=_mix(self.line, (90, 10, 10), amount),
            stalk=self.stalk, stalk_light=self.stalk_light, stalk_line=self.stalk_line,
        )


class _Pen:
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


# ---------------------------------------------------------------------- face parts


@dataclass(frozen=True)
class FaceBox:
    """Where the face goes: centre (x, y) and unit ``u`` (the crown's front radius)."""

    x: float
    y: float
    u: float

    def eye(self, side: int) -> tuple[float, float]:
        return self.x + side * 0.4 * self.u, self.y - 0.1 * self.u


INK = (35, 30, 30)
MOUTH = (125, 20, 35)
TONGUE = (240, 110, 120)
BLUSH = (250, 135, 150)
HEART = (228, 28, 58)
HEART_LINE = (120, 0, 20)
TEAR = (95, 175, 255)
TEAR_LINE = (25, 75, 190)


def _dot_eyes(pen: _Pen, face: FaceBox, size: float = 0.13) -> None:
    for side in (-1, 1):
        x, y = face.eye(side)
        pen.circle(x, y, size * face.u, INK)
        pen.circle(x - 0.4 * size * face.u, y - 0.4 * size * face.u, 0.38 * size * face.u, (255, 255, 255))


def _heart(pen: _Pen, x: float, y: float, w: float, fill: RGB) -> None:
    """A heart ``w`` wide centred at (x, y): two lobes and a point."""
    r = w / 4
    pen.circle(x - r, y - r * 0.5, r * 1.02, fill)
    pen.circle(x + r, y - r * 0.5, r * 1.02, fill)
    pen.polygon([(x - 2 * r, y - r * 0.35), (x + 2 * r, y - r * 0.35), (x, y + 1.85 * r)], fill)


def _outlined_heart(pen: _Pen, x: float, y: float, w: float, line: float) -> None:
    _heart(pen, x, y + line * 0.3, w + 2.6 * line, HEART_LINE)
    _heart(pen, x, y, w, HEART)
    pen.circle(x - w * 0.3, y - w * 0.2, w * 0.08, (255, 200, 210))


def _tear(pen: _Pen, x: float, y: float, r: float, line: float) -> None:
    """A blue drop, point up, its round end centred at (x, y)."""
    for radius, color in ((r + line, TEAR_LINE), (r, TEAR)):
        pen.circle(x, y, radius, color)
        pen.polygon([(x - radius * 0.93, y - radius * 0.35), (x + radius * 0.93, y - radius * 0.35),
                     (x, y - r * 2.3 - (radius - r) * 1.6)], color)
    pen.circle(x - r * 0.35, y - r * 0.2, r * 0.28, (225, 242, 255))


def _brows(pen: _Pen, face: FaceBox, inner_dy: float, w: float) -> None:
    """Two brows above the eyes; ``inner_dy`` > 0 lowers the inner ends (angry), < 0 raises them (sad)."""
    for side in (-1, 1):
        x, y = face.eye(side)
        top = y - 0.33 * face.u
        inner = (x - side * 0.2 * face.u, top + inner_dy * face.u)
        outer = (x + side * 0.2 * face.u, top - inner_dy * face.u)
        pen.line([inner, outer], INK, w * face.u)


def _blush(pen: _Pen, face: FaceBox) -> None:
    for side in (-1, 1):
        x, y = face.eye(side)
        pen.ellipse(x + side * 0.1 * face.u, y + 0.3 * face.u, 0.15 * face.u, 0.085 * face.u, BLUSH)


def happy_face(pen: _Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """Upturned eye arcs (or dot eyes) and a big open smile with a tongue."""
    u = face.u
    if rng.random() < 0.5:
        for side in (-1, 1):
            x, y = face.eye(side)
            pen.arc(x, y + 0.06 * u, 0.14 * u, 195, 345, INK, 0.085 * u)
    else:
        _dot_eyes(pen, face)
    mx, my, mr = face.x, face.y + 0.14 * u, rng.uniform(0.36, 0.42) * u
    pen.pieslice(mx, my, mr + 0.05 * u, 0, 180, INK)
    pen.pieslice(mx, my, mr, 0, 180, MOUTH)
    pen.ellipse(mx, my + 0.7 * mr, 0.5 * mr, 0.26 * mr, TONGUE)
    pen.draw.rectangle([pen.px(mx - mr - 0.05 * u), pen.px(my - 0.05 * u), pen.px(mx + mr + 0.05 * u), pen.px(my)],
                       fill=INK)


def sad_face(pen: _Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """Droopy brows (inner ends up), dot eyes, a downturned mouth and blue tears."""
    u = face.u
    _brows(pen, face, -0.1, 0.09)
    _dot_eyes(pen, face, 0.12)
    pen.arc(face.x, face.y + 0.58 * u, 0.34 * u, 210, 330, INK, 0.11 * u)
    sides = (-1, 1) if rng.random() < 0.6 else (int(rng.choice([-1, 1])),)
    for side in sides:
        x, y = face.eye(side)
        _tear(pen, x + side * 0.05 * u, y + 0.42 * u, 0.15 * u, 0.035 * u)


def angry_face(pen: _Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """Frowning V brows, small eyes and gritted teeth or a turned-down mouth."""
    u = face.u
    _brows(pen, face, 0.12, 0.1)
    _dot_eyes(pen, face, 0.1)
    if rng.random() < 0.6:
        x0, x1, y0, y1 = face.x - 0.3 * u, face.x + 0.3 * u, face.y + 0.24 * u, face.y + 0.44 * u
        box = [pen.px(x0), pen.px(y0), pen.px(x1), pen.px(y1)]
        pen.draw.rounded_rectangle(box, radius=pen.px(0.06 * u), fill=(255, 255, 255), outline=INK,
                                   width=pen.width(0.055 * u))
        pen.line([(x0 + 0.04 * u, (y0 + y1) / 2), (x1 - 0.04 * u, (y0 + y1) / 2)], INK, 0.04 * u)
        for k in (-1, 0, 1):
            pen.line([(face.x + k * 0.1 * u, y0 + 0.03 * u), (face.x + k * 0.1 * u, y1 - 0.03 * u)], INK, 0.03 * u)
    else:
        pen.arc(face.x, face.y + 0.6 * u, 0.3 * u, 215, 325, INK, 0.1 * u)


def in_love_face(pen: _Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """Red heart eyes, pink cheeks and a smile."""
    u = face.u
    _blush(pen, face)
    width = rng.uniform(0.36, 0.42) * u
    for side in (-1, 1):
        x, y = face.eye(side)
        _outlined_heart(pen, x + side * 0.03 * u, y, width, 0.03 * u)
    pen.arc(face.x, face.y + 0.1 * u, 0.26 * u, 25, 155, INK, 0.085 * u)


# Emotion label (kerasemote.data.emotions spelling) -> its face.
FACES: dict[str, Callable[[_Pen, FaceBox, np.random.Generator], None]] = {
    "happy": happy_face,
    "sad": sad_face,
    "angry": angry_face,
    "in love": in_love_face,
}


# ---------------------------------------------------------------------- the broccoli


def _stalk(pen: _Pen, rng: np.random.Generator, cx: float, top: float, s: float, greens: Greens) -> None:
    length = rng.uniform(0.2, 0.27) * s
    top_w, bottom_w = rng.uniform(0.085, 0.11) * s, rng.uniform(0.06, 0.085) * s
    lean = rng.uniform(-0.02, 0.02) * s
    line = 0.016
    bottom = top + length
    outline = [(cx - top_w - line, top), (cx + top_w + line, top),
               (cx + lean + bottom_w + line, bottom), (cx + lean - bottom_w - line, bottom)]
    pen.polygon(outline, greens.stalk_line)
    pen.ellipse(cx + lean, bottom, bottom_w + line, 0.03 * s + line, greens.stalk_line)
    pen.polygon([(cx - top_w, top), (cx + top_w, top), (cx + lean + bottom_w, bottom),
                 (cx + lean - bottom_w, bottom)], greens.stalk)
    pen.ellipse(cx + lean, bottom, bottom_w, 0.03 * s, greens.stalk)
    # A lighter stripe down one side reads as a round stem.
    pen.polygon([(cx - top_w * 0.55, top), (cx - top_w * 0.15, top), (cx + lean - bottom_w * 0.1, bottom - 0.01),
                 (cx + lean - bottom_w * 0.5, bottom - 0.01)], greens.stalk_light)


def _floret(pen: _Pen, rng: np.random.Generator, x: float, y: float, r: float, greens: Greens) -> None:
    """One floret: an outlined circle with a few smaller bumps inside for texture."""
    pen.circle(x, y, r, greens.mid, greens.line, 0.016)
    for _ in range(int(rng.integers(2, 5))):
        angle = rng.uniform(0, 2 * math.pi)
        dist = rng.uniform(0.2, 0.5) * r
        shade = greens.dark if rng.random() < 0.4 else greens.light
        pen.circle(x + dist * math.cos(angle), y + dist * math.sin(angle), rng.uniform(0.25, 0.4) * r, shade)


def draw_broccoli(rng: np.random.Generator, face: str | None, side: int) -> Image.Image:
    """One broccoli sticker: RGB, ``side`` x ``side``, on white with a white and a thin dark border.

    Args:
        rng: the source of every random choice (pose, size, shape, shade, face variant).
        face: an emotion in :data:`FACES`, or ``None`` for a broccoli without a face.
        side: output side in pixels.

    Returns:
        The sticker image (mode ``RGB``).
    """
    if face is not None and face not in FACES:
        raise ValueError(f"face must be one of {list(FACES)} or None; found {face!r}.")
    scale = _scale(side)
    canvas = side * scale
    layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    pen = _Pen(layer)
    s = rng.uniform(0.95, 1.12)  # overall size
    greens = Greens.draw(rng)
    if face == "angry":
        greens = greens.tinted(ANGRY_RED, rng.uniform(0.6, 0.72))
    cx, cy = 0.5, 0.42
    front = rng.uniform(0.19, 0.22) * s  # radius of the front floret that carries the face
    stretch_x, stretch_y = rng.uniform(0.95, 1.2), rng.uniform(0.85, 1.05)

    _stalk(pen, rng, cx, cy + 0.75 * front, s, greens)
    count = int(rng.integers(5, 10))
    spread = rng.uniform(100, 120)
    for k in range(count):
        phi = math.radians(-spread + 2 * spread * k / (count - 1) + rng.uniform(-6, 6))
        dist = front * rng.uniform(0.85, 1.0)
        r = rng.uniform(0.09, 0.12) * s * (1.1 - 0.25 * abs(math.sin(phi)))
        _floret(pen, rng, cx + dist * math.sin(phi) * stretch_x, cy - dist * math.cos(phi) * stretch_y, r, greens)
    for k in range(int(rng.integers(6, 9))):  # scallops: smaller florets peeking out around the front one
        angle = math.radians(-200 + 220 * k / 7 + rng.uniform(-8, 8))
        bump = rng.uniform(0.3, 0.4) * front
        _floret(pen, rng, cx + (front - 0.3 * bump) * math.cos(angle), cy + (front - 0.3 * bump) * math.sin(angle),
                bump, greens)
    pen.circle(cx, cy, front, _mix(greens.mid, greens.light, 0.3), greens.line, 0.016)  # lighter: the face stands out
    for k in range(int(rng.integers(4, 7))):  # texture along the front floret's upper edge, clear of the face
        angle = math.radians(rng.uniform(-165, -15))
        pen.circle(cx + 0.8 * front * math.cos(angle), cy + 0.8 * front * math.sin(angle),
                   rng.uniform(0.1, 0.16) * front, greens.light if k % 2 else greens.dark)
    if face is not None:
        FACES[face](pen, FaceBox(cx, cy + 0.2 * front, front), rng)

    if rng.random() < 0.5:
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    layer = layer.rotate(rng.uniform(-22, 22), resample=Image.Resampling.BILINEAR, expand=True)
    return _stick(_place(layer, canvas, rng)).resize((side, side), Image.Resampling.LANCZOS)


def _scale(side: int) -> int:
    """Drawing scale: a canvas of at least 256 px, and never less than twice the side."""
    return max(2, -(-256 // side))


def _place(layer: Image.Image, canvas: int, rng: np.random.Generator) -> Image.Image:
    """The drawing on a ``canvas`` square, shrunk if needed so that its border stays inside the margin."""
    drawing = layer.crop(layer.getchannel("A").getbbox())
    room = canvas * (1 - 2 * (BORDER_WHITE + BORDER_DARK + MARGIN))
    if max(drawing.size) > room:
        factor = room / max(drawing.size)
        drawing = drawing.resize((max(1, round(drawing.width * factor)), max(1, round(drawing.height * factor))),
                                 Image.Resampling.LANCZOS)
    placed = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    offsets = []
    for extent in drawing.size:
        slack = max(0.0, min((room - extent) / 2, 0.03 * canvas))  # a little room left: use it to vary the position
        offsets.append(round((canvas - extent) / 2 + rng.uniform(-slack, slack)))
    placed.paste(drawing, tuple(offsets))  # onto a transparent canvas: a plain copy keeps the alpha exact
    return placed


def _grow(alpha: Image.Image, by: float) -> Image.Image:
    """Binary mask of every pixel within about ``by`` pixels of the shape (blur, then threshold)."""
    blurred = alpha.filter(ImageFilter.GaussianBlur(by / 1.75))
    return blurred.point(lambda v: 255 if v > 10 else 0)


def _stick(layer: Image.Image) -> Image.Image:
    """White canvas, a thin dark line and a thick white border around the drawing, then the drawing."""
    side = layer.width
    alpha = layer.getchannel("A").point(lambda v: 255 if v > 127 else 0)
    white = _grow(alpha, BORDER_WHITE * side)
    dark = _grow(white, BORDER_DARK * side)
    sticker = Image.new("RGB", layer.size, (255, 255, 255))
    sticker.paste(BORDER_DARK_COLOR, mask=dark)
    sticker.paste((255, 255, 255), mask=white)
    sticker.paste(layer.convert("RGB"), mask=layer.getchannel("A"))
    return sticker
