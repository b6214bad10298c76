"""Emotion faces: a labelled, seeded set of drawn round emoji faces.

Four classes, the emotion labels of :mod:`kerasemote.data.emotions`: ``happy``, ``sad``,
``angry`` and ``in love``, each drawn in several faces and three styles (see :mod:`.faces`).
The packaged emoji sets label only a few faces of each emotion; this set gives as many as
asked, so a face judge can be trained and tested on at least 20 faces of every class.

Face ``k`` of a class depends only on the seed, its label and ``k``; ids, records, the
split and the class order are :mod:`.drawn`'s, shared with the broccoli stickers.

Example:
    >>> from kerasemote import data
    >>> report = data.prepare(data.source_records("emotion-faces", render_size=64), "faces_64", size=64)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image

from kerasemote.data.emotions import EMOTION_PROMPTS
from kerasemote.data.records import EmojiRecord
from kerasemote.data.sources.drawn import DEFAULT_PER_CLASS, DrawnSet
from kerasemote.data.sources.faces import EMOJI_FACES, draw_emoji_face

VENDOR = "emotion-faces"
# Label -> caption ("<emotion> face emoji", the way the broccoli stickers write "<emotion> broccoli sticker").
FACE_CAPTIONS: dict[str, str] = {
    "happy": "happy face emoji",
    "sad": "sad face emoji",
    "angry": "angry face emoji",
    "in love": "face emoji in love",
}
FACE_LABELS: tuple[str, ...] = tuple(FACE_CAPTIONS)

if set(FACE_LABELS) != set(EMOJI_FACES) or set(FACE_LABELS) != set(EMOTION_PROMPTS):
    raise AssertionError(f"Face labels {sorted(FACE_LABELS)} must be the drawn faces {sorted(EMOJI_FACES)} "
                         f"and the judged emotions of kerasemote.data.emotions {sorted(EMOTION_PROMPTS)}.")

EMOTION_FACES = DrawnSet(VENDOR, FACE_CAPTIONS, draw_emoji_face, "Face")


def draw_face(label: str, index: int, seed: int = 0, size: int = 64) -> Image.Image:
    """Face number ``index`` of one class: RGB, ``size`` x ``size``, on white.

    Args:
        label: one of :data:`FACE_LABELS`.
        index: which face of the class (any non-negative integer).
        seed: the set's seed.
        size: side in pixels.

    Example:
        >>> draw_face("in love", 0, size=128).save("in_love.png")
    """
    return EMOTION_FACES.image(label, index, seed, size)


def face_records(
    per_class: int = DEFAULT_PER_CLASS,
    seed: int = 0,
    size: int = 512,
    limit: int | None = None,
) -> Iterator[EmojiRecord]:
    """Records for :func:`kerasemote.data.prepare`, drawn when they are loaded.

    Args:
        per_class: faces of each class.
        seed: the set's seed; the same seed gives byte-identical images.
        size: side the faces are drawn at; match the prepare ``size`` (a different one is
            resized by prepare).
        limit: at most this many records in all (classes stay balanced).

    Yields:
        One ``EmojiRecord`` per face: vendor ``emotion-faces``, id ``emotion-faces_<label>_<kkkk>``
        (``emotion-faces_in-love_0007``), its label and caption.
    """
    return EMOTION_FACES.records(per_class, seed, size, limit)


def face_examples(per_class: int = 6, size: int = 64, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """The first ``per_class`` faces of each class, class by class, for a contact sheet.

    Returns:
        ``(images, labels)``: uint8 (N, size, size, 3) with N = 4 * per_class, and each one's label.
    """
    return EMOTION_FACES.examples(per_class, size, seed)
