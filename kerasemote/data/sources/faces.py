"""Procedural emoji faces: a round yellow disc, in one of three drawing styles, with an emotion's face.

The styles follow the three packaged emoji sets, so that a judge trained on the faces does
not learn one vendor's look: ``flat`` (one fill, no outline, like Twemoji), ``outlined``
(a dark line around the disc, like OpenMoji) and ``shaded`` (a radial gradient with a
highlight, like Noto). The disc varies in shade, size, squash, position and rotation; an
angry face is tinted red or orange half of the time, as 😡 is.

Each emotion has several faces: the one shared with the broccoli stickers
(:mod:`.face_parts`) and the emoji faces drawn here, built from the same parts
(happy: 😀 😆 😊; sad: 😢 😭 😞; angry: 😠 and a shouting face; in love: 😍 😘 🥰).
Every varying choice comes from the ``numpy.random.Generator`` passed in, so the same
generator state gives the same pixels. Everything is drawn on a canvas of at least 256 px
and then reduced, and the face is framed like a packaged emoji after preparation: its
drawing fills most of the square, on white.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from kerasemote.data.sources.face_parts import (
    FACES,
    MOUTH,
    RGB,
    TEAR,
    TEAR_LINE,
    TONGUE,
    WHITE,
    FaceBox,
    FaceDrawer,
    Pen,
    blush,
    brows,
    dot_eyes,
    drawing_scale,
    hsv,
    mix,
    outlined_heart,
    tear,
)

STYLES = ("flat", "outlined", "shaded")
DISC_X, DISC_Y, DISC_R = 0.5, 0.5, 0.4  # the disc on the drawing layer, in fractions of its side
FACE_RED = (222, 42, 36)  # the red of 😡; an angry disc is blended toward it
ANGRY_TINT = 0.5  # share of angry faces with a tinted disc
FILL_SHARE = (0.76, 0.9)  # the drawing's longer side, as a share of the image side (packaged emoji: 0.875)
_CLEAR = (255, 255, 255, 0)  # transparent white: resampling at the disc's edge blends toward the paper


# ---------------------------------------------------------------------- emoji face parts


def _oval_eyes(pen: Pen, face: FaceBox, rng: np.random.Generator, height: float = 0.15) -> None:
    """Tall oval eyes without a glint (Twemoji's and OpenMoji's)."""
    ry = rng.uniform(0.85, 1.15) * height * face.u
    for side in (-1, 1):
        x, y = face.eye(side)
        pen.ellipse(x, y - 0.02 * face.u, 0.085 * face.u, ry, face.ink)


def _closed_eyes(pen: Pen, face: FaceBox, smiling: bool) -> None:
    """Closed eyes: arcs bowed up when ``smiling`` (^ ^), down otherwise (a downcast or crying look)."""
    u = face.u
    for side in (-1, 1):
        x, y = face.eye(side)
        if smiling:
            pen.arc(x, y + 0.07 * u, 0.15 * u, 200, 340, face.ink, 0.085 * u)
        else:
            pen.arc(x, y - 0.1 * u, 0.15 * u, 25, 155, face.ink, 0.08 * u)


def _squint_eyes(pen: Pen, face: FaceBox) -> None:
    """Laughing eyes squeezed shut: > on the left, < on the right."""
    u = face.u
    for side in (-1, 1):
        x, y = face.eye(side)
        out = x + side * 0.12 * u
        pen.line([(out, y - 0.13 * u), (x - side * 0.1 * u, y), (out, y + 0.13 * u)], face.ink, 0.08 * u)


def _half_ellipse(pen: Pen, x: float, y: float, rx: float, ry: float, fill: RGB, down: bool = True) -> None:
    """Half an ellipse with its flat side on y: the lower half when ``down``, else the upper."""
    box = [pen.px(x - rx), pen.px(y - ry), pen.px(x + rx), pen.px(y + ry)]
    pen.draw.pieslice(box, 0 if down else 180, 180 if down else 360, fill=fill)


def _grin(pen: Pen, face: FaceBox, rng: np.random.Generator, width: float, tongue: bool) -> None:
    """An open D-shaped grin with a row of white upper teeth and, with ``tongue``, a tongue."""
    u, line = face.u, 0.05 * face.u
    mx, my = face.x, face.y + rng.uniform(0.14, 0.2) * u
    rx, ry = width * u, rng.uniform(0.7, 0.95) * width * u
    _half_ellipse(pen, mx, my, rx + line, ry + line, face.ink)
    _half_ellipse(pen, mx, my, rx, ry, MOUTH)
    if tongue:
        pen.ellipse(mx, my + 0.72 * ry, 0.5 * rx, 0.26 * ry, TONGUE)
    _half_ellipse(pen, mx, my, rx, 0.38 * ry, WHITE)
    pen.draw.rectangle([pen.px(mx - rx - line), pen.px(my - line), pen.px(mx + rx + line), pen.px(my)], fill=face.ink)


def _smile(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    pen.arc(face.x, face.y + 0.02 * face.u, rng.uniform(0.34, 0.4) * face.u, 30, 150, face.ink, 0.095 * face.u)


def _frown(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    r = rng.uniform(0.26, 0.34) * face.u
    pen.arc(face.x, face.y + 0.36 * face.u + r, r, 215, 325, face.ink, 0.09 * face.u)


def _open_frown(pen: Pen, face: FaceBox, rng: np.random.Generator, teeth: bool) -> None:
    """A wailing or shouting mouth: the upper half of an ellipse, flat side down."""
    u, line = face.u, 0.05 * face.u
    mx, my = face.x, face.y + rng.uniform(0.62, 0.7) * u
    rx, ry = rng.uniform(0.24, 0.32) * u, rng.uniform(0.26, 0.34) * u
    _half_ellipse(pen, mx, my, rx + line, ry + line, face.ink, down=False)
    _half_ellipse(pen, mx, my, rx, ry, MOUTH, down=False)
    if teeth:  # upper teeth: the top of the mouth, a band kept inside the ellipse
        pen.draw.chord([pen.px(mx - rx), pen.px(my - ry), pen.px(mx + rx), pen.px(my + ry)], 230, 310, fill=WHITE)
    pen.draw.rectangle([pen.px(mx - rx - line), pen.px(my), pen.px(mx + rx + line), pen.px(my + line)], fill=face.ink)


def _streams(pen: Pen, face: FaceBox) -> None:
    """Tears running from both eyes down the cheeks (😭)."""
    u = face.u
    for side in (-1, 1):
        x, y = face.eye(side)
        box = [pen.px(x - 0.11 * u), pen.px(y + 0.02 * u), pen.px(x + 0.11 * u), pen.px(y + 0.72 * u)]
        pen.draw.rounded_rectangle(box, radius=pen.px(0.1 * u), fill=TEAR,
                                   outline=TEAR_LINE, width=pen.width(0.03 * u))


def _pucker(pen: Pen, face: FaceBox) -> None:
    """Kissing lips: two small bumps stacked, like a 3."""
    u = face.u
    for dy in (-0.095, 0.095):
        pen.arc(face.x + 0.02 * u, face.y + (0.42 + dy) * u, 0.1 * u, 270, 90, face.ink, 0.085 * u)


def _floating_hearts(pen: Pen, rng: np.random.Generator) -> None:
    """Three small hearts around the disc, overlapping its rim (🥰)."""
    for base in (205.0, 335.0, 140.0):
        angle = math.radians(base + rng.uniform(-15, 15))
        dist = rng.uniform(0.95, 1.05) * DISC_R
        outlined_heart(pen, DISC_X + dist * math.cos(angle), DISC_Y + dist * math.sin(angle),
                       rng.uniform(0.26, 0.32) * DISC_R, 0.025 * DISC_R)


def _heart_eyes(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    width = rng.uniform(0.4, 0.48) * face.u
    for side in (-1, 1):
        x, y = face.eye(side)
        outlined_heart(pen, x + side * 0.03 * face.u, y, width, 0.03 * face.u)


# ---------------------------------------------------------------------- the emoji faces


def grinning_face(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """😀: oval eyes and a wide open grin with teeth."""
    _oval_eyes(pen, face, rng)
    _grin(pen, face, rng, rng.uniform(0.46, 0.54), tongue=rng.random() < 0.5)


def laughing_face(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """😆 / 😁: eyes squeezed shut (> < or ^ ^) and an open grin."""
    if rng.random() < 0.6:
        _squint_eyes(pen, face)
    else:
        _closed_eyes(pen, face, smiling=True)
    _grin(pen, face, rng, rng.uniform(0.46, 0.56), tongue=rng.random() < 0.6)


def smiling_face(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """😊 / 🙂: smiling closed eyes or oval eyes, a smile and sometimes rosy cheeks."""
    if rng.random() < 0.5:
        _closed_eyes(pen, face, smiling=True)
        blush(pen, face)
    else:
        _oval_eyes(pen, face, rng)
    _smile(pen, face, rng)


def crying_face(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """😢: worried brows, oval eyes, a frown and one big tear."""
    u = face.u
    brows(pen, face, -0.1, 0.08)
    _oval_eyes(pen, face, rng, 0.13)
    _frown(pen, face, rng)
    side = int(rng.choice([-1, 1]))
    x, y = face.eye(side)
    tear(pen, x + side * 0.06 * u, y + 0.5 * u, rng.uniform(0.16, 0.2) * u, 0.035 * u)


def sobbing_face(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """😭: closed eyes, tears streaming down both cheeks and a wailing mouth."""
    _streams(pen, face)
    _closed_eyes(pen, face, smiling=False)
    if rng.random() < 0.5:
        brows(pen, face, -0.1, 0.08)
    _open_frown(pen, face, rng, teeth=rng.random() < 0.5)


def disappointed_face(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """😞 / 😟: downcast closed or worried oval eyes, raised inner brows and a deep frown."""
    brows(pen, face, -0.12, 0.08)
    if rng.random() < 0.5:
        _closed_eyes(pen, face, smiling=False)
    else:
        _oval_eyes(pen, face, rng, 0.12)
    _frown(pen, face, rng)


def pouting_face(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """😠: heavy V brows over oval eyes and a turned-down mouth."""
    brows(pen, face, rng.uniform(0.12, 0.16), 0.11)
    _oval_eyes(pen, face, rng, 0.12)
    _frown(pen, face, rng)


def shouting_face(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """An angry shout: V brows, small eyes and a wide open mouth with bared upper teeth."""
    brows(pen, face, rng.uniform(0.12, 0.16), 0.11)
    dot_eyes(pen, face, 0.1)
    _open_frown(pen, face, rng, teeth=True)


def heart_eyes_face(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """😍: heart eyes and an open grin."""
    _heart_eyes(pen, face, rng)
    _grin(pen, face, rng, rng.uniform(0.4, 0.48), tongue=False)


def kissing_face(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """😘 / 😚: a wink, closed or oval eyes, puckered lips and a heart blown from them."""
    u = face.u
    look = rng.random()
    if look < 0.4:  # a wink: open left eye, closed right one
        x, y = face.eye(-1)
        pen.ellipse(x, y - 0.02 * u, 0.085 * u, 0.15 * u, face.ink)
        x, y = face.eye(1)
        pen.arc(x, y + 0.07 * u, 0.15 * u, 200, 340, face.ink, 0.085 * u)
    elif look < 0.75:
        _closed_eyes(pen, face, smiling=True)
        blush(pen, face)
    else:
        _oval_eyes(pen, face, rng)
    _pucker(pen, face)
    outlined_heart(pen, face.x + rng.uniform(0.52, 0.6) * u, face.y + rng.uniform(0.4, 0.5) * u,
                   rng.uniform(0.4, 0.48) * u, 0.03 * u)


def smiling_hearts_face(pen: Pen, face: FaceBox, rng: np.random.Generator) -> None:
    """🥰: smiling closed eyes, rosy cheeks, a smile and hearts floating around."""
    _closed_eyes(pen, face, smiling=True)
    blush(pen, face)
    _smile(pen, face, rng)
    _floating_hearts(pen, rng)


# Emotion label -> the faces drawn for it, each as likely; the first is the one the broccoli stickers wear.
EMOJI_FACES: dict[str, tuple[FaceDrawer, ...]] = {
    "happy": (FACES["happy"], grinning_face, laughing_face, smiling_face),
    "sad": (FACES["sad"], crying_face, sobbing_face, disappointed_face),
    "angry": (FACES["angry"], pouting_face, shouting_face),
    "in love": (FACES["in love"], heart_eyes_face, kissing_face, smiling_hearts_face),
}


# ---------------------------------------------------------------------- the disc


def _disc_fill(rng: np.random.Generator, label: str) -> RGB:
    """A golden-to-lemon yellow; an angry face tinted toward red half of the time."""
    fill = hsv(rng.uniform(0.112, 0.155), rng.uniform(0.62, 0.88), rng.uniform(0.96, 1.0))
    if label == "angry" and rng.random() < ANGRY_TINT:
        fill = mix(fill, FACE_RED, rng.uniform(0.55, 0.95))
    return fill


def _ink(rng: np.random.Generator, style: str) -> RGB:
    """Feature colour: Twemoji's brown to near black (flat), black (outlined), dark brown (shaded)."""
    if style == "outlined":
        return mix((20, 20, 20), (55, 45, 35), rng.random())
    if style == "flat":
        return mix((102, 69, 0), (45, 32, 20), rng.random())
    return mix((64, 42, 20), (40, 28, 18), rng.random())


def _shaded_disc(layer: Image.Image, fill: RGB, rng: np.random.Generator) -> None:
    """A disc lit from the upper left: light near the highlight, darker and oranger toward the rim."""
    side = layer.width
    light = np.array(mix(fill, (255, 248, 200), rng.uniform(0.3, 0.55)), float)
    dark = np.array(mix(fill, (205, 95, 0), rng.uniform(0.3, 0.5)), float)
    hx, hy = DISC_X - rng.uniform(0.04, 0.14), DISC_Y - rng.uniform(0.1, 0.2)
    grid = (np.arange(side) + 0.5) / side
    dist = np.hypot(grid[None, :] - hx, grid[:, None] - hy)  # (H, W)
    t = np.clip(dist / (1.45 * DISC_R), 0.0, 1.0)[..., None] ** 1.3
    shade = np.round(light * (1 - t) + dark * t).astype(np.uint8)  # (H, W, 3)
    mask = Image.new("L", layer.size, 0)
    Pen(mask).circle(DISC_X, DISC_Y, DISC_R, 255)
    layer.paste(Image.fromarray(shade, "RGB"), mask=mask)


def _disc(layer: Image.Image, pen: Pen, rng: np.random.Generator, style: str, fill: RGB, ink: RGB) -> None:
    if style == "shaded":
        _shaded_disc(layer, fill, rng)
    elif style == "outlined":
        pen.circle(DISC_X, DISC_Y, DISC_R, fill, ink, rng.uniform(0.055, 0.075) * DISC_R)
    else:
        pen.circle(DISC_X, DISC_Y, DISC_R, fill)


def draw_emoji_face(rng: np.random.Generator, label: str, side: int) -> Image.Image:
    """One emoji face: RGB, ``side`` x ``side``, on white.

    Args:
        rng: the source of every random choice (style, shade, face, pose).
        label: an emotion in :data:`EMOJI_FACES`.
        side: output side in pixels.

    Returns:
        The face image (mode ``RGB``).
    """
    if label not in EMOJI_FACES:
        raise ValueError(f"face label must be one of {list(EMOJI_FACES)}; found {label!r}.")
    canvas = side * drawing_scale(side)
    layer = Image.new("RGBA", (canvas, canvas), _CLEAR)
    pen = Pen(layer)
    style = STYLES[int(rng.integers(len(STYLES)))]
    fill = _disc_fill(rng, label)
    ink = _ink(rng, style)
    _disc(layer, pen, rng, style, fill, ink)
    unit = rng.uniform(0.92, 1.05) * DISC_R
    face = FaceBox(DISC_X + rng.uniform(-0.02, 0.02), DISC_Y + rng.uniform(0.0, 0.05), unit, ink)
    faces = EMOJI_FACES[label]
    faces[int(rng.integers(len(faces)))](pen, face, rng)
    return _pose(layer, canvas, side, rng)


def _pose(layer: Image.Image, canvas: int, side: int, rng: np.random.Generator) -> Image.Image:
    """Mirror, squash, turn and size the drawing, then put it on white at ``side`` pixels."""
    if rng.random() < 0.5:
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    squash = rng.uniform(0.93, 1.07)
    layer = layer.resize((round(canvas * squash), round(canvas / squash)), Image.Resampling.BICUBIC)
    layer = layer.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BICUBIC, expand=True, fillcolor=_CLEAR)
    drawing = layer.crop(layer.getchannel("A").getbbox())
    extent = rng.uniform(*FILL_SHARE) * canvas
    factor = extent / max(drawing.size)
    drawing = drawing.resize((max(1, round(drawing.width * factor)), max(1, round(drawing.height * factor))),
                             Image.Resampling.LANCZOS)
    offsets = []
    for size in drawing.size:
        slack = max(0.0, min((0.94 * canvas - size) / 2, 0.03 * canvas))  # room left: use it to vary the position
        offsets.append(round((canvas - size) / 2 + rng.uniform(-slack, slack)))
    paper = Image.new("RGBA", (canvas, canvas), (255, 255, 255, 255))
    paper.alpha_composite(drawing, tuple(offsets))
    return paper.convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
