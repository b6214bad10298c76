"""Broccoli stickers in four emotions: a few stickers per emotion in, tokens, LoRA and a judge out.

The ``broccoli-stickers`` data source (``kerasemote data prepare --source broccoli-stickers``)
draws labelled stickers: ``happy``, ``sad``, ``angry``, ``in love`` and ``neutral`` (no face).
This module holds the pieces of that job that do not depend on how they are run:

- ``few_stickers``: a handful of training stickers per emotion, as a training set whose
  concepts are the emotions (one token each: ``STICKER_TOKENS``);
- ``sticker_judge_set``: the judge's labelled images, the five sticker classes plus ``other``
  (packaged emoji that are not broccoli), from chosen splits, so the judge trains on one split
  and is checked on another;
- ``row_spread``: how different a row's generations are (a row of near-copies scores ~0).

``bench/stickers.py`` runs the whole job on the shipped model and prints its table.

Example:
    >>> stickers = few_stickers("broccoli_64", per_emotion=8, size=64)    # 32 images, 4 concepts
    >>> judge_train = sticker_judge_set("broccoli_64", "emoji_64", 64, ("train",), other=300)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kerasemote.data.emotions import EMOTION_PROMPTS, EMOTION_TOKENS, emotion_slug
from kerasemote.demo.sets import is_concept
from kerasemote.demo.spec import BODY_TOKEN, COMBINED_KIND, STICKER_KIND, STICKER_SUFFIX, Row

STICKER_JUDGE = "stickers"  # the judge of the sticker and combined rows (Row.judge)

NEUTRAL = "neutral"  # the sticker set's class of broccoli without a face
OTHER = "other"  # the judge's class for everything that is not a broccoli sticker
EMOTIONS = tuple(EMOTION_PROMPTS)  # happy, sad, angry, in love
STICKER_TOKENS = {label: f"<{emotion_slug(label)}-broccoli>" for label in EMOTIONS}
STICKER_PROMPT = "a {} sticker"  # {} is a sticker token
JUDGE_CLASSES = [*EMOTIONS, NEUTRAL, OTHER]
COMBINED_EMOTION = "happy"  # the emotion face combined with the faceless body in the combined row


def sticker_class(label: str) -> str:
    """The demo judge's class of a sticker label: ``"happy"`` -> ``"happy broccoli"``, ``"neutral"`` ->
    ``"neutral broccoli"`` (its emotion classes are the emoji faces')."""
    return f"{label}{STICKER_SUFFIX}"


def sticker_rows(alphas: Sequence[float] = ()) -> list[Row]:
    """One row per emotion, ``a <happy-broccoli> sticker``..., the combined row (the faceless body token and
    the emotion face token in one prompt: ``a <happy> <broccoli-sticker> sticker``) and one row per mixing
    share in ``alphas`` (the two tokens mixed into one, :func:`combined_token`; see
    :func:`add_combined_tokens`)."""
    rows = [Row(sticker_class(label), (STICKER_PROMPT.format(STICKER_TOKENS[label]),), STICKER_KIND,
                sticker_class(label), judge=STICKER_JUDGE) for label in EMOTIONS]
    combined = STICKER_PROMPT.format(f"{EMOTION_TOKENS[COMBINED_EMOTION]} {BODY_TOKEN}")
    name = f"combined {sticker_class(COMBINED_EMOTION)}"
    rows.append(Row(name, (combined,), COMBINED_KIND, sticker_class(COMBINED_EMOTION), judge=STICKER_JUDGE))
    rows += [Row(f"{name}, alpha {alpha:g}", (STICKER_PROMPT.format(combined_token(alpha)),), COMBINED_KIND,
                 sticker_class(COMBINED_EMOTION), judge=STICKER_JUDGE) for alpha in alphas]
    return rows


def combined_token(alpha: float) -> str:
    """The token that mixes the face token into the body token with share ``alpha`` of the face:
    ``<broccoli-sticker+happy-0.3>``."""
    return f"<{BODY_TOKEN.strip('<>')}+{emotion_slug(COMBINED_EMOTION)}-{alpha:g}>"


def add_combined_tokens(model, alphas: Sequence[float]) -> list[str]:
    """Add :func:`combined_token` for each share in ``alphas`` to ``model``: slerp of the faceless body token
    (share ``1 - alpha``) and the ``<happy>`` face token (share ``alpha``), the seed's "30 % emoji, 70 %
    broccoli" at ``alpha = 0.3``. Both tokens must already be in the model.

    Returns:
        The new tokens, in the order of ``alphas``.
    """
    from kerasemote.interpolate import add_mixed_token

    return [add_mixed_token(model, BODY_TOKEN, EMOTION_TOKENS[COMBINED_EMOTION], alpha, name=combined_token(alpha))
            for alpha in alphas]


def sticker_judge_for_run(sticker_dir: str, other_dir: str, out_dir: str, config, result, log, networks=None):
    """The demo's sticker judge: ``config.sticker_judge_members`` ResNet-50s from scratch (one seed each,
    probabilities averaged) on ``config.judge_stickers`` train-split
    stickers of each class and ``config.judge_other`` other emoji of ``other_dir``, classes
    ``happy broccoli`` ... ``neutral broccoli``, ``other``; saved to ``out_dir/sticker_classifier`` and
    evaluated on the sticker set's held-out test split (``result.judge["held_out"]["stickers"]``);
    ``networks``: the run's ``CompiledNetworks``."""
    import os

    from kerasemote import classification as clf
    from kerasemote.demo.judge import fit_checked_judge

    def named(data):  # the demo's class names: a sticker's emotion is "happy broccoli", not the face's "happy"
        return clf.LabelledImages(data.images, data.labels,
                                  [c if c == OTHER else sticker_class(c) for c in data.class_names], data.sources)

    train = named(sticker_judge_set(sticker_dir, other_dir, config.judge_size, ("train", "validation"),
                                    other=config.judge_other, per_class=config.judge_stickers))
    test = named(sticker_judge_set(sticker_dir, other_dir, config.judge_size, ("test",), other=0))
    judge, seconds = fit_checked_judge(train, test, config.sticker_judge_epochs, config,
                                       os.path.join(out_dir, "sticker_classifier"), STICKER_JUDGE, result, log,
                                       networks, members=config.sticker_judge_members)
    result.judge[STICKER_JUDGE] = {"class_names": list(judge.class_names), "seconds": seconds,
                                   "train_images": len(train.labels), "members": config.sticker_judge_members}
    return judge


def _rows(data_dir: str, splits: Sequence[str]) -> list[dict]:
    from kerasemote.data import read_metadata

    return [row for row in read_metadata(data_dir) if row["split"] in splits]


def _read(data_dir: str, rows: Sequence[dict], size: int) -> np.ndarray:
    from kerasemote import storage
    from kerasemote.data.images import read_image

    if not rows:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([read_image(storage.join(data_dir, row["file"]), size) for row in rows])  # (N, S, S, 3)


def few_stickers(sticker_dir: str, per_emotion: int, size: int, split: str = "train"):
    """The first ``per_emotion`` stickers of each emotion in ``split``, concepts named by emotion.

    Returns:
        A ``kerasemote.training.ImageSet`` with no captions of its own, so a strategy's
        templates caption each image with its emotion's token.

    Raises:
        ValueError: an emotion has fewer than ``per_emotion`` stickers in ``split``.
    """
    return _first_of(sticker_dir, EMOTIONS, per_emotion, size, split)


def neutral_stickers(sticker_dir: str, count: int, size: int, split: str = "train"):
    """The first ``count`` broccoli stickers without a face in ``split`` (concept ``neutral``): the body
    that a face concept is combined with."""
    return _first_of(sticker_dir, (NEUTRAL,), count, size, split)


def sticker_set(sticker_dir: str, per_class: int, size: int, split: str = "train"):
    """The demo's sticker training set: ``per_class`` stickers of each emotion and as many faceless ones
    (concepts: the labels, ``neutral`` for the faceless body)."""
    return _first_of(sticker_dir, (*EMOTIONS, NEUTRAL), per_class, size, split)


def _first_of(sticker_dir: str, labels: Sequence[str], count: int, size: int, split: str):
    from kerasemote.training import ImageSet

    if count < 1:
        raise ValueError(f"{sticker_dir}: at least 1 sticker a class is needed, found {count}.")
    chosen = []
    rows = _rows(sticker_dir, (split,))
    for label in labels:
        of_label = [row for row in rows if row["label"] == label][:count]
        if len(of_label) < count:
            raise ValueError(f"{sticker_dir}: metadata.jsonl has {len(of_label)} {label!r} stickers in split "
                             f"{split!r}, expected at least {count}.")
        chosen += of_label
    return ImageSet(images=_read(sticker_dir, chosen, size), captions=((),) * len(chosen),
                    concepts=tuple(row["label"] for row in chosen), files=tuple(row["file"] for row in chosen))


def sticker_judge_set(sticker_dir: str, other_dir: str, size: int, splits: Sequence[str], other: int,
                      per_class: int | None = None):
    """Labelled images for the sticker judge: ``JUDGE_CLASSES`` from ``splits`` of both sets.

    Args:
        sticker_dir: a prepared broccoli-stickers set.
        other_dir: a prepared emoji set; its images that are not the broccoli emoji
            (:func:`kerasemote.demo.sets.is_concept`) are the ``other`` class (``other`` of them,
            spread evenly over the set).
        size: image side in pixels.
        splits: which splits to take, e.g. ``("train",)`` to train, ``("test",)`` to check.
        other: how many ``other`` images.
        per_class: at most this many stickers of each class (``None``: all).

    Returns:
        ``kerasemote.classification.LabelledImages`` with classes ``JUDGE_CLASSES``.
    """
    from kerasemote.classification import LabelledImages

    rows = _rows(sticker_dir, splits)
    chosen, labels = [], []
    for index, label in enumerate(JUDGE_CLASSES[:-1]):
        of_label = [row for row in rows if row["label"] == label][:per_class]
        chosen += of_label
        labels += [index] * len(of_label)
    others = [row for row in _rows(other_dir, splits) if not is_concept(row, "broccoli")]
    if other and others:
        picks = np.linspace(0, len(others) - 1, min(other, len(others))).round().astype(int)
        others = [others[i] for i in sorted(set(picks.tolist()))]
    else:
        others = []
    images = np.concatenate([_read(sticker_dir, chosen, size), _read(other_dir, others, size)])
    sources = [f"{sticker_dir}/{row['file']}" for row in chosen] + [f"{other_dir}/{row['file']}" for row in others]
    return LabelledImages(images, np.asarray(labels + [len(JUDGE_CLASSES) - 1] * len(others)),
                          list(JUDGE_CLASSES), sources)


def row_spread(images: np.ndarray) -> float:
    """Mean over pixels of the standard deviation across a row's images, in uint8 levels.

    32 copies of one image score 0; different stickers on white score tens of levels.
    """
    images = np.asarray(images, np.float32)  # (N, H, W, 3)
    if len(images) < 2:
        raise ValueError(f"row_spread needs at least 2 images, found {len(images)}.")
    return float(images.std(axis=0).mean())
