"""Broccoli stickers: a labelled, seeded set of drawn broccoli with emotion faces.

Five classes: ``happy``, ``sad``, ``angry`` and ``in love`` (the emotion labels of
:mod:`kerasemote.data.emotions`, each with its drawn face, see :mod:`.broccoli`) and
``neutral``, a broccoli without a face. Every sticker is drawn from its own random
generator, keyed by ``(seed, label, index)``: the same seed gives the same pixels, and
asking for fewer stickers (``per_class``, ``limit``) never changes the ones kept.
Ids, records, the split and the class order are :mod:`.drawn`'s, shared with the emotion faces.

Example:
    >>> from kerasemote import data
    >>> report = data.prepare(data.source_records("broccoli-stickers", render_size=64), "stickers_64", size=64)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image

from kerasemote.data.emotions import EMOTIONS
from kerasemote.data.records import EmojiRecord
from kerasemote.data.sources.broccoli import FACES, draw_broccoli
from kerasemote.data.sources.drawn import DEFAULT_PER_CLASS, DrawnSet

VENDOR = "broccoli-stickers"
NEUTRAL = "neutral"
# Label -> caption ("<what it shows> sticker", the way other sources write "<name> emoji").
STICKER_CAPTIONS: dict[str, str] = {
    "happy": "happy broccoli sticker",
    "sad": "sad broccoli sticker",
    "angry": "angry broccoli sticker",
    "in love": "broccoli sticker in love",
    NEUTRAL: "broccoli sticker",
}
STICKER_LABELS: tuple[str, ...] = tuple(STICKER_CAPTIONS)

_faced = set(STICKER_LABELS) - {NEUTRAL}
if _faced != set(FACES) or not _faced <= set(EMOTIONS):
    raise AssertionError(f"Sticker labels {sorted(_faced)} must be the drawn faces {sorted(FACES)}, "
                         f"all in kerasemote.data.emotions.EMOTIONS {list(EMOTIONS)}.")


def _draw(rng: np.random.Generator, label: str, side: int) -> Image.Image:
    return draw_broccoli(rng, None if label == NEUTRAL else label, side)


STICKERS = DrawnSet(VENDOR, STICKER_CAPTIONS, _draw, "Sticker")


def sticker_rng(seed: int, label: str, index: int) -> np.random.Generator:
    """The generator of one sticker: keyed by the seed, the label (by CRC-32) and the index."""
    return STICKERS.rng(seed, label, index)


def draw_sticker(label: str, index: int, seed: int = 0, size: int = 64) -> Image.Image:
    """Sticker number ``index`` of one class: RGB, ``size`` x ``size``, on white.

    Args:
        label: one of :data:`STICKER_LABELS`.
        index: which sticker of the class (any non-negative integer).
        seed: the set's seed.
        size: side in pixels.

    Example:
        >>> draw_sticker("in love", 0, size=128).save("in_love.png")
    """
    return STICKERS.image(label, index, seed, size)


def sticker_id(label: str, index: int) -> str:
    """``"broccoli-stickers_in-love_0007"``: file-system safe, the same for every seed."""
    return STICKERS.record_id(label, index)


def sticker_records(
    per_class: int = DEFAULT_PER_CLASS,
    seed: int = 0,
    size: int = 512,
    limit: int | None = None,
) -> Iterator[EmojiRecord]:
    """Records for :func:`kerasemote.data.prepare`, drawn when they are loaded.

    Args:
        per_class: stickers of each class.
        seed: the set's seed; the same seed gives byte-identical images.
        size: side the stickers are drawn at; match the prepare ``size`` (a different
            one is resized by prepare).
        limit: at most this many records in all (classes stay balanced).

    Yields:
        One ``EmojiRecord`` per sticker: vendor ``broccoli-stickers``, its label and caption.
    """
    return STICKERS.records(per_class, seed, size, limit)


def sticker_examples(per_class: int = 6, size: int = 64, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """The first ``per_class`` stickers of each class, class by class, for a contact sheet.

    Returns:
        ``(images, labels)``: uint8 (N, size, size, 3) with N = 5 * per_class, and each one's label.
    """
    return STICKERS.examples(per_class, size, seed)
