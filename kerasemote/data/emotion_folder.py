"""A small labelled emotion folder drawn from the packaged emoji sets (Twemoji PNGs, OpenMoji font).

For tests, benchmarks and first experiments: the face emoji of the taught emotions
(:data:`~kerasemote.data.emotions.EMOTION_PROMPTS`: happy, sad, angry, in love) from the one
emotion table, :data:`~kerasemote.data.emotions.EMOTION_EMOJI`, drawn in two styles (82 images).
The full emoji datasets come from :func:`kerasemote.data.prepare`.
Needs the ``emoji`` extra: ``pip install "kerasemote[emoji]"``.

Example:
    >>> write_emotion_folder("by_emotion")          # by_emotion/happy/twemoji_1f600.png ...
    {'happy': 26, 'sad': 28, 'angry': 12, 'in love': 16}
    >>> write_emotion_folder("tokens", folder_name=emotion_slug)  # tokens/in-love/: token <in-love>
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from kerasemote.data.emotions import EMOTION_EMOJI, EMOTION_PROMPTS
from kerasemote.data.images import open_image_file, to_rgba
from kerasemote.data.names import emoji_to_codepoints
from kerasemote.data.sources.packaged import openmoji_font_path, twemoji_png_dir

SOURCES = ("twemoji", "openmoji")


def twemoji_png(char: str) -> Path:
    """Path of Twemoji's 72 x 72 PNG for a single-code-point emoji."""
    path = twemoji_png_dir() / f"{ord(char):x}.png"
    if not path.is_file():
        raise FileNotFoundError(f"Twemoji has no PNG {os.fspath(path)!r} for {emoji_to_codepoints(char)}.")
    return path


def render_openmoji(char: str, size: int = 72) -> Image.Image:
    """Draw one emoji with OpenMoji's colour (COLRv0) font, centred, as an RGBA image (size, size).

    OpenMoji ships SVGs and colour fonts but no PNGs; Pillow draws the font without an SVG renderer.
    """
    font = ImageFont.truetype(os.fspath(openmoji_font_path()), int(size * 0.8))
    image = Image.new("RGBA", (size, size), (255, 255, 255, 0))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=font, embedded_color=True)
    origin = ((size - (right - left)) / 2 - left, (size - (bottom - top)) / 2 - top)
    draw.text(origin, char, font=font, embedded_color=True)
    if np.asarray(image)[..., 3].max() == 0:
        raise ValueError(f"OpenMoji font has no glyph for {emoji_to_codepoints(char)}.")
    return image


def emoji_image(char: str, source: str, size: int = 72) -> Image.Image:
    """RGBA image (size, size) of one single-code-point emoji (``"🥦"``) from ``source`` (twemoji | openmoji)."""
    if source == "twemoji":
        return to_rgba(open_image_file(twemoji_png(char))).resize((size, size), Image.Resampling.BILINEAR)
    if source == "openmoji":
        return render_openmoji(char, size)
    raise ValueError(f"Emoji source is {source!r}; expected one of {SOURCES}.")


def write_emotion_folder(
    out_dir: os.PathLike | str,
    sources: Sequence[str] = SOURCES,
    size: int = 72,
    labels: Sequence[str] = tuple(EMOTION_PROMPTS),
    per_emotion: int | None = None,
    folder_name: Callable[[str], str] | None = None,
) -> dict[str, int]:
    """Write ``out_dir/<label>/<source>_<codepoint>.png`` (RGBA) for the face emoji of each label.

    Args:
        out_dir: root of the labelled folder.
        sources: emoji styles to draw.
        size: side length of each PNG.
        labels: emotions of :data:`~kerasemote.data.emotions.EMOTION_EMOJI` to draw; by default the
            four taught ones.
        per_emotion: at most this many emoji per label (the first of the table's row); None: all.
        folder_name: label -> folder name; None: the label itself (``in love/``, the classifier's
            class). Pass :func:`~kerasemote.data.emotions.emotion_slug` for token training, where the
            folder names the token (``in-love/`` -> ``<in-love>``).

    Returns:
        Number of images written per label.
    """
    unknown = [label for label in labels if label not in EMOTION_EMOJI]
    if unknown:
        raise ValueError(f"Emotion labels {unknown} are not in the emotion table (kerasemote.data.emotions); "
                         f"expected some of {list(EMOTION_EMOJI)}.")
    out = Path(out_dir)
    counts: dict[str, int] = {}
    for label in labels:
        folder = out / (folder_name(label) if folder_name else label)
        folder.mkdir(parents=True, exist_ok=True)
        counts[label] = 0
        for char in EMOTION_EMOJI[label][:per_emotion]:
            for source in sources:
                emoji_image(char, source, size).save(folder / f"{source}_{ord(char):x}.png")
                counts[label] += 1
    return counts
