"""Broccoli stickers: a labelled, seeded set of drawn broccoli with emotion faces.

Five classes: ``happy``, ``sad``, ``angry`` and ``in love`` (the emotion labels of
:mod:`kerasemote.data.emotions`, each with its drawn face, see :mod:`.broccoli`) and
``neutral``, a broccoli without a face. Every sticker is drawn from its own random
generator, keyed by ``(seed, label, index)``: the same seed gives the same pixels, and
asking for fewer stickers (``per_class``, ``limit``) never changes the ones kept.

Records come class by class in turn (happy 0, sad 0, ..., happy 1, ...), so ``limit``
keeps the classes balanced. Each sticker is its own split group (the captions of one
class are all alike, and grouping by caption would put a whole class in one split).

Example:
    >>> from kerasemote import data
    >>> report = data.prepare(data.source_records("broccoli-stickers", render_size=64), "stickers_64", size=64)
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image

from kerasemote.data.emotions import EMOTIONS, emotion_slug
from kerasemote.data.records import EmojiRecord
from kerasemote.data.sources.broccoli import FACES, draw_broccoli

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
# 200 per class puts at least 24 of each class in the test split (100:1:20 by id hash).
DEFAULT_PER_CLASS = 200

_faced = set(STICKER_LABELS) - {NEUTRAL}
if _faced != set(FACES) or not _faced <= set(EMOTIONS):
    raise AssertionError(f"Sticker labels {sorted(_faced)} must be the drawn faces {sorted(FACES)}, "
                         f"all in kerasemote.data.emotions.EMOTIONS {list(EMOTIONS)}.")


def _check_label(label: str) -> None:
    if label not in STICKER_CAPTIONS:
        raise ValueError(f"Sticker label must be one of {list(STICKER_LABELS)}; found {label!r}.")


def sticker_rng(seed: int, label: str, index: int) -> np.random.Generator:
    """The generator of one sticker: keyed by the seed, the label (by CRC-32) and the index."""
    _check_label(label)
    return np.random.default_rng([int(seed), zlib.crc32(label.encode("utf-8")), int(index)])


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
    if size < 16:
        raise ValueError(f"Sticker size must be at least 16 pixels; found {size}.")
    if index < 0:
        raise ValueError(f"Sticker index must be non-negative; found {index}.")
    rng = sticker_rng(seed, label, index)
    return draw_broccoli(rng, None if label == NEUTRAL else label, size)


def sticker_id(label: str, index: int) -> str:
    """``"broccoli-stickers_in-love_0007"``: file-system safe, the same for every seed."""
    _check_label(label)
    return f"{VENDOR}_{emotion_slug(label)}_{index:04d}"


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
    if per_class < 1:
        raise ValueError(f"per_class must be a positive number of stickers; found {per_class}.")
    count = 0
    for index in range(per_class):
        for label in STICKER_LABELS:
            if limit is not None and count >= limit:
                return
            record_id = sticker_id(label, index)
            yield EmojiRecord(
                id=record_id,
                load=functools.partial(draw_sticker, label, index, seed, size),
                description=STICKER_CAPTIONS[label],
                vendor=VENDOR,
                label=label,
                caption=STICKER_CAPTIONS[label],
                origin=f"{VENDOR}:seed {seed}:{label}:{index}",
                group=record_id,
            )
            count += 1


def sticker_examples(per_class: int = 6, size: int = 64, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """The first ``per_class`` stickers of each class, class by class, for a contact sheet.

    Returns:
        ``(images, labels)``: uint8 (N, size, size, 3) with N = 5 * per_class, and each one's label.
    """
    labels = [label for label in STICKER_LABELS for _ in range(per_class)]
    images = [np.asarray(draw_sticker(label, index, seed, size))
              for label in STICKER_LABELS for index in range(per_class)]
    return np.stack(images), labels  # (N, size, size, 3)
