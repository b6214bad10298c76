"""Emoji data: packaged offline sets, external dataset formats, user folders, splits and tf.data.

Typical use::

    from kerasemote import data

    report = data.prepare(data.source_records("twemoji"), "emoji_512", size=512)
    print(report.format())
    ds = data.load_dataset("emoji_512", "train", flip=True, batch_size=4)  # (image, caption)

The tf.data and TFDS functions import TensorFlow / TFDS on first use, so that
preparing data (and the CLI) starts quickly.
"""

from __future__ import annotations

import importlib
from typing import Any

from kerasemote.data.captions import build_caption, caption_for, style_tokens
from kerasemote.data.emotions import EMOTION_EMOJI, EMOTIONS, emotion_for_emoji, emotion_for_name, emotion_label
from kerasemote.data.images import fit_square, prepare_image
from kerasemote.data.names import emoji_name
from kerasemote.data.prepare import prepare
from kerasemote.data.records import BadImageError, EmojiRecord, PrepareReport, SkippedItem
from kerasemote.data.sources import PACKAGED_SOURCES, SOURCE_NAMES, source_records
from kerasemote.data.sources.folder import FolderImage, load_image_folder
from kerasemote.data.sources.packaged import noto_available
from kerasemote.data.split import DEFAULT_RATIOS, SPLITS, split_for_key

_LAZY = {
    "load_dataset": "kerasemote.data.dataset",
    "dataset_from_folder": "kerasemote.data.dataset",
    "dataset_from_records": "kerasemote.data.dataset",
    "read_metadata": "kerasemote.data.dataset",
    "label_names": "kerasemote.data.dataset",
    "vendor_tokens": "kerasemote.data.dataset",
    "dataset_info": "kerasemote.data.dataset",
    "summarize": "kerasemote.data.inspection",
    "format_summary": "kerasemote.data.inspection",
    "contact_sheet": "kerasemote.data.inspection",
    "tfds_builder": "kerasemote.data.tfds_dataset",
    "tfds_load": "kerasemote.data.tfds_dataset",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kerasemote.data' has no attribute {name!r}")


__all__ = [
    "BadImageError", "DEFAULT_RATIOS", "EMOTIONS", "EMOTION_EMOJI", "EmojiRecord", "FolderImage",
    "PACKAGED_SOURCES", "PrepareReport", "SOURCE_NAMES", "SPLITS", "SkippedItem", "build_caption",
    "caption_for", "emoji_name", "emotion_for_emoji", "emotion_for_name", "emotion_label", "fit_square",
    "load_image_folder", "noto_available", "prepare", "prepare_image", "source_records", "split_for_key",
    "style_tokens", *_LAZY,
]
