"""Emoji sources. Each yields ``EmojiRecord`` or ``SkippedItem`` and decodes lazily."""

from __future__ import annotations

import os
from typing import Iterator, Sequence

from kerasemote.data.records import EmojiRecord, SkippedItem

# Sources that need no path: emoji sets installed with the package, the Noto sample that ships with kerasemote,
# and broccoli-stickers and emotion-faces, drawn by kerasemote.
PACKAGED_SOURCES = ("twemoji", "openmoji", "noto", "noto-sample", "broccoli-stickers", "emotion-faces")
FILE_SOURCES = ("kaggle", "valhalla", "russian", "folder")
SOURCE_NAMES = PACKAGED_SOURCES + FILE_SOURCES


def source_records(
    name: str,
    path: str | os.PathLike | None = None,
    *,
    vendors: Sequence[str] | None = None,
    limit: int | None = None,
    image_column: str | None = None,
    caption_column: str | None = None,
    file_column: str | None = None,
    font_path: str | os.PathLike | None = None,
    render_size: int = 512,
    seed: int = 0,
    per_class: int | None = None,
) -> Iterator[EmojiRecord | SkippedItem]:
    """Records of one named source, ready for :func:`kerasemote.data.prepare`.

    Args:
        name: one of ``twemoji, openmoji, noto, noto-sample, broccoli-stickers, emotion-faces`` (no path) or
            ``kaggle, valhalla, russian, folder`` (need ``path``).
        path: the file or folder of a file source.
        vendors: Kaggle vendor columns to use (all by default).
        limit: at most this many source rows (for quick tries and tests).
        image_column: valhalla parquet image column.
        caption_column: caption column of valhalla / russian tables.
        file_column: russian CSV image-path column.
        font_path: NotoColorEmoji.ttf when not in a system folder.
        render_size: OpenMoji font size and the side of drawn images in pixels; match the
            prepare ``size`` (rendering at 512 costs about 10x the time of 128).
        seed: seed of a drawn source (broccoli-stickers, emotion-faces); the same seed draws
            the same images.
        per_class: images per class of a drawn source (default
            :data:`~kerasemote.data.sources.drawn.DEFAULT_PER_CLASS`).
    """
    from kerasemote.data.sources import captioned, emotion_faces, folder, kaggle, packaged, samples, stickers
    from kerasemote.data.sources.drawn import DEFAULT_PER_CLASS

    if name not in SOURCE_NAMES:
        raise ValueError(f"Unknown source {name!r}; choose one of {list(SOURCE_NAMES)}.")
    if name in FILE_SOURCES and path is None:
        raise ValueError(f"Source {name!r} reads local files; give the path of its file or folder.")
    if name in PACKAGED_SOURCES and path is not None:
        raise ValueError(f"Source {name!r} is packaged and takes no path; got {path!s}.")
    if name == "twemoji":
        return packaged.twemoji_records(limit)
    if name == "openmoji":
        return packaged.openmoji_records(limit, render_size)
    if name == "noto":
        return packaged.noto_records(limit, font_path)
    if name == "noto-sample":
        return samples.noto_sample_records(limit)
    per_class = DEFAULT_PER_CLASS if per_class is None else per_class
    if name == "broccoli-stickers":
        return stickers.sticker_records(per_class, seed, render_size, limit)
    if name == "emotion-faces":
        return emotion_faces.face_records(per_class, seed, render_size, limit)
    if name == "kaggle":
        return kaggle.kaggle_records(path, vendors, limit)
    if name == "valhalla":
        return captioned.parquet_records(path, image_column, caption_column, limit=limit)
    if name == "russian":
        return captioned.csv_image_records(path, file_column, caption_column, limit=limit)
    return folder.folder_records(path, limit=limit)
