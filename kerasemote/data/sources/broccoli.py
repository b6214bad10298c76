"""Procedural broccoli stickers: a floret crown, a stalk, an optional emotion face, a sticker border.

Everything is drawn with Pillow on a canvas several times the asked side (at least
256 px) and then reduced, so edges are smooth at 64 px. Every varying choice (pose, size, floret
count and shade, face variant) comes from the ``numpy.random.Generator`` passed in, so
the same generator state gives the same pixels.

Coordinates are fractions of the canvas side; the face parts and the pen that draws in
fractions come from :mod:`.face_parts`, shared with the emotion faces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from kerasemote.data.sources.face_parts import (
    FACES,
    RGB,
    FaceBox,
    Pen,
    drawing_scale,
    hsv,
    mix,
)

BORDER_WHITE = 0.045  # sticker border widths, as fractions of the side
BORDER_DARK = 0.014
MARGIN = 0.02  # blank paper between the sticker's dark line and the image edge
BORDER_DARK_COLOR = (70, 70, 70)
ANGRY_RED = (232, 30, 25)
FRONT = (0.27, 0.30)  # radius of the front floret that carries the face, as a fraction of the side
FACE_SCALE = 1.25  # the face's unit, in front-floret radii
# The casts over the florets: (colour, range of the blend amount, outline colour). Angry broccoli is red,
# sad broccoli is blue ("feeling blue"): at 64 px a sad face's brows and tears are a few pixels, and without
# the blue a small model drew sad stickers that no one could tell from faceless ones.
EMOTION_TINTS: dict[str, tuple[RGB, tuple[float, float], RGB]] = {
    "sad": ((55, 105, 235), (0.45, 0.6), (15, 30, 90)),
    "angry": (ANGRY_RED, (0.6, 0.72), (90, 10, 10)),
}


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
            dark=hsv(hue, sat, val * 0.72),
            mid=hsv(hue, sat, val),
            light=hsv(hue - 0.02, sat * 0.8, min(1.0, val * 1.3)),
            line=hsv(hue, sat, val * 0.38),
            stalk=hsv(stalk_hue, 0.42, 0.84),
            stalk_light=hsv(stalk_hue, 0.28, 0.95),
            stalk_line=hsv(stalk_hue, 0.55, 0.45),
        )

    def tinted(self, color: RGB, amount: float, line: RGB = (90, 10, 10)) -> Greens:
        """Florets blended toward ``color`` (the angry red, the sad blue), outlines toward ``line``; the stalk
        keeps its shade."""
        return Greens(
            dark=mix(self.dark, color, amount), mid=mix(self.mid, color, amount),
            light=mix(self.light, color, amount), line=mix(self.line, line, amount),
            stalk=self.stalk, stalk_light=self.stalk_light, stalk_line=self.stalk_line,
        )


# ---------------------------------------------------------------------- the broccoli


def _stalk(pen: Pen, rng: np.random.Generator, cx: float, top: float, s: float, greens: Greens) -> None:
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


def _floret(pen: Pen, rng: np.random.Generator, x: float, y: float, r: float, greens: Greens) -> None:
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
    scale = drawing_scale(side)
    canvas = side * scale
    layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    pen = Pen(layer)
    s = rng.uniform(0.95, 1.12)  # overall size
    greens = Greens.draw(rng)
    if face in EMOTION_TINTS:
        color, (low, high), line = EMOTION_TINTS[face]
        greens = greens.tinted(color, rng.uniform(low, high), line=line)
    cx, cy = 0.5, 0.42
    front = rng.uniform(*FRONT) * s
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
    pen.circle(cx, cy, front, mix(greens.mid, greens.light, 0.3), greens.line, 0.016)  # lighter: the face stands out
    for k in range(int(rng.integers(4, 7))):  # texture along the front floret's upper edge, clear of the face
        angle = math.radians(rng.uniform(-165, -15))
        pen.circle(cx + 0.8 * front * math.cos(angle), cy + 0.8 * front * math.sin(angle),
                   rng.uniform(0.1, 0.16) * front, greens.light if k % 2 else greens.dark)
    if face is not None:
        FACES[face](pen, FaceBox(cx, cy + 0.2 * front, FACE_SCALE * front), rng)

    if rng.random() < 0.5:
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    layer = layer.rotate(rng.uniform(-22, 22), resample=Image.Resampling.BILINEAR, expand=True)
    return _stick(_place(layer, canvas, rng)).resize((side, side), Image.Resampling.LANCZOS)


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
