"""The recipe's data: a prepared emoji set (read through ``kerasemote.data``), captions and oversampling."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from kerasemote import storage
from kerasemote.data.dataset import read_metadata, vendor_tokens
from kerasemote.data.prepare import METADATA_FILE, TOKENS_FILE
from kerasemote.pretrain.settings import PretrainSettings
from kerasemote.training.data import ImageSet, read_square_image


@dataclass(frozen=True)
class EmojiRow:
    """The metadata of one prepared image that the recipe uses."""

    file: str
    description: str
    vendor: str
    label: str | None
    split: str


def read_prepared(path: str, size: int) -> tuple[np.ndarray, list[EmojiRow], dict[str, str]]:
    """A ``kerasemote data prepare`` directory: images uint8 (N, size, size, 3), rows, vendor tokens.

    Raises:
        FileNotFoundError: no ``metadata.jsonl`` in ``path``.
        ValueError: a row without the keys the recipe needs (file and row named).
    """
    meta = storage.join(path, METADATA_FILE)
    if not storage.exists(meta):
        raise FileNotFoundError(f"--data {path}: no {METADATA_FILE}; write one with `kerasemote data prepare "
                                "--source twemoji,openmoji,noto --size 64 --out DIR`.")
    rows = []
    for number, raw in enumerate(read_metadata(path), start=1):
        if not isinstance(raw.get("description"), str):
            raise ValueError(f"{meta}: row {number} ({raw['file']}): key 'description' expected the emoji's "
                             f"name, found {raw.get('description')!r}.")
        rows.append(EmojiRow(raw["file"], raw["description"], raw["vendor"], raw["label"], raw["split"]))
    tokens = vendor_tokens(path) if storage.exists(storage.join(path, TOKENS_FILE)) else {}
    images = np.stack([read_square_image(storage.join(path, r.file), size) for r in rows])  # (N, S, S, 3)
    return images, rows, tokens


def train_and_test(images: np.ndarray, rows: Sequence[EmojiRow]) -> tuple[np.ndarray, np.ndarray]:
    """The train-split and test-split images (the VAE stages train on the one, report PSNR on the other)."""
    split = np.array([r.split for r in rows])
    return images[split == "train"], images[split == "test"]


def _article(words: str) -> str:
    return "an" if words[:1].lower() in "aeiou" else "a"


def captions_for(row: EmojiRow, style_token: str | None) -> tuple[str, ...]:
    """Caption candidates of one image; one is drawn each time the image is used.

    The name alone and with an article (the evaluation prompts' form), with the vendor's
    style token, and for labelled faces the emotion word; each twice, next to one empty
    caption, so about one draw in ten is unconditional (classifier-free guidance).
    """
    name = " ".join(row.description.split())
    named = [f"{name} emoji", f"{_article(name)} {name} emoji"]
    if style_token:
        named.append(f"{_article(name)} {name} emoji in {style_token} style")
    if row.label:
        named += [f"{_article(row.label)} {row.label} face emoji", f"{_article(name)} {name} emoji, {row.label}"]
    return tuple(named * 2) + ("",)


def emotion_repeats(labels: Sequence[str], repeat: int, balance: bool = True) -> dict[str, int]:
    """Copies of each image per emotion label: ``repeat``, or with ``balance`` ``repeat`` times
    (count of the most common label / count of this label), rounded, so each emotion is drawn
    about equally often.

    Example:
        >>> emotion_repeats(["happy"] * 4 + ["angry"] * 2, 10)
        {'happy': 10, 'angry': 20}
    """
    counts = Counter(labels)
    most = max(counts.values(), default=1)
    return {label: max(1, round(repeat * most / n)) if balance else repeat for label, n in counts.items()}


def is_face(row: EmojiRow) -> bool:
    """Whether the image is a face: emotion-labelled, or "face" in its name."""
    return bool(row.label) or " face" in f" {row.description.lower()}"


def text_to_image_set(images: np.ndarray, rows: Sequence[EmojiRow], tokens: Mapping[str, str],
                      settings: PretrainSettings) -> ImageSet:
    """The text-to-image stage's examples: every image with its caption candidates, faces repeated.

    Faces are oversampled (emotion-labelled ones most) because the expression is what the
    prompt has to control.
    """
    per_label = emotion_repeats([r.label for r in rows if r.label], settings.emotion_repeat,
                                settings.balance_emotions)
    repeats = [per_label[r.label] if r.label else settings.face_repeat if is_face(r) else 1 for r in rows]
    order = np.repeat(np.arange(len(rows)), repeats)
    return ImageSet(
        images=images[order],
        captions=tuple(captions_for(rows[i], tokens.get(rows[i].vendor)) for i in order),
        concepts=tuple(rows[i].label or rows[i].vendor for i in order),
        files=tuple(rows[i].file for i in order),
    )
