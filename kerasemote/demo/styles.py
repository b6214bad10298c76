"""Vendor styles: does "X emoji in <sN> style" draw X in the style of the vendor that <sN> names?

A model trained on several emoji vendors learns one style token per vendor
(:func:`kerasemote.data.captions.style_tokens`: ``<s0>`` for the first vendor in sorted order).
This module holds the pieces of the vendor-style job that do not depend on how they are run:

- ``STYLE_TOKENS`` and ``STYLE_PROMPT``: each packaged vendor's token and the caption format the
  model was trained on;
- ``ROW_NAMES``: the emoji every style row draws;
- ``style_judge_names``: which emoji the vendor judge trains on and which it is checked on (a
  split by name, so no emoji is seen in two styles on both sides);
- ``style_judge_set``: the judge's labelled images, one class per vendor;
- ``noto_sample_names``: every emoji the shipped Noto sample (``dataset/noto-emoji``) holds.

``bench/styles.py`` trains the judge and scores the shipped model's style rows.

Example:
    >>> train_names, test_names = style_judge_names(read_metadata("emoji_64"))
    >>> judge_train = style_judge_set("emoji_64", train_names, 64)     # classes: noto, openmoji, twemoji
    >>> STYLE_PROMPT.format(name="red apple", token=STYLE_TOKENS["twemoji"])
    'red apple emoji in <s2> style'
"""

from __future__ import annotations

import hashlib
import os
from typing import Iterable, Sequence

import numpy as np

from kerasemote.data.captions import build_caption, style_tokens
from kerasemote.data.names import VARIATION_SELECTOR
from kerasemote.demo.sets import is_concept
from kerasemote.demo.spec import STYLE_KIND, DemoConfig, Row

VENDORS = ("noto", "openmoji", "twemoji")  # the packaged vendors kerasemote-tiny was trained on
STYLE_TOKENS = style_tokens(VENDORS)  # vendor -> <sN>, as data preparation gives it
STYLE_PROMPT = build_caption("{name}", "{token}")  # "{name} emoji in {token} style", the training captions
CONCEPT = DemoConfig.concept  # the demo's concept (broccoli): kept out of the judge, held by the Noto sample
# The rows: eight everyday things, one from each of eight Unicode subgroups (fruit, vegetable, flower, mammal,
# car, building, sport, light), drawn by all three vendors; no face, not the concept. Chosen by that rule alone,
# and kept out of the judge's names, so the judge never saw them in any style.
ROW_NAMES = ("red apple", "carrot", "sunflower", "dog", "automobile", "house", "soccer ball", "light bulb")
JUDGE_TRAIN_NAMES = 400
JUDGE_TEST_NAMES = 30  # 30 held-out images per vendor


def _single_code_point(row: dict) -> bool:
    """Skin-tone variants, flags, keycaps and ZWJ sequences are several code points: near-copies of a base."""
    return len(str(row.get("emoji") or "").replace(VARIATION_SELECTOR, "")) == 1


def style_candidates(rows: Iterable[dict], vendors: Sequence[str] = VENDORS) -> list[str]:
    """Names the judge may use: emoji every vendor of ``vendors`` has, one code point each, that are
    no emotion face (a labelled row), not the demo's concept and not one of ``ROW_NAMES``; sorted.

    Args:
        rows: metadata rows of one or several prepared directories (``description``, ``emoji``,
            ``vendor``, ``label``).
        vendors: the vendors that must all have a name.
    """
    held: dict[str, set[str]] = {vendor: set() for vendor in vendors}
    excluded = set(ROW_NAMES)
    for row in rows:
        name = str(row.get("description") or "")
        if row.get("label") or is_concept(row, CONCEPT):
            excluded.add(name)
        elif row.get("vendor") in held and _single_code_point(row):
            held[row["vendor"]].add(name)
    return sorted(set.intersection(*held.values()) - excluded)


def _rank(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def style_judge_names(rows: Iterable[dict], train: int = JUDGE_TRAIN_NAMES, test: int = JUDGE_TEST_NAMES,
                      vendors: Sequence[str] = VENDORS) -> tuple[list[str], list[str]]:
    """The judge's training names and held-out test names, disjoint, by SHA-256 of each name.

    Candidates (:func:`style_candidates`) are ordered by the hash of their name: the first ``test``
    are the test names, the next ``train`` the training names. A set that holds only some
    candidates, but all the chosen ones (the shipped Noto sample), gives the same split as the
    full set, since dropping other names moves none of them.

    Returns:
        ``(train names, test names)``, each sorted.

    Raises:
        ValueError: fewer than ``train + test`` candidates.
    """
    candidates = sorted(style_candidates(rows, vendors), key=_rank)
    if len(candidates) < train + test:
        raise ValueError(f"style_judge_names: {len(candidates)} emoji names are held by every vendor of "
                         f"{list(vendors)}, expected at least train + test = {train + test}.")
    return sorted(candidates[test:test + train]), sorted(candidates[:test])


def noto_sample_names(rows: Sequence[dict]) -> set[str]:
    """Every emoji name the shipped Noto sample holds: the emotion faces, the demo's concept,
    the judge's training and test names and ``ROW_NAMES`` (the rows' references)."""
    train, test = style_judge_names(rows)
    faces = {str(row["description"]) for row in rows if row.get("label")}
    concept = {str(row["description"]) for row in rows if is_concept(row, CONCEPT)}
    return faces | concept | set(train) | set(test) | set(ROW_NAMES)


def style_judge_set(data_dir: str, names: Iterable[str], size: int, vendors: Sequence[str] = VENDORS):
    """Labelled images for the vendor judge: each vendor's image of each of ``names``.

    Args:
        data_dir: a prepared directory holding the vendors (e.g. twemoji, openmoji, noto-sample).
        names: emoji names (rows' ``description``), e.g. one side of :func:`style_judge_names`.
        size: image side in pixels.
        vendors: the classes, in this order (default: the order of their style tokens).

    Returns:
        ``kerasemote.classification.LabelledImages`` with one class per vendor.

    Raises:
        ValueError: a vendor has no image of any of ``names``.
    """
    from kerasemote import storage
    from kerasemote.classification import LabelledImages
    from kerasemote.data import read_metadata
    from kerasemote.data.images import read_image

    wanted = set(names)
    rows = [row for row in read_metadata(data_dir) if row["vendor"] in vendors and row.get("description") in wanted]
    labels = [list(vendors).index(row["vendor"]) for row in rows]
    missing = [vendor for i, vendor in enumerate(vendors) if i not in labels]
    if missing:
        raise ValueError(f"{data_dir}: metadata.jsonl has no image of vendors {missing} among the "
                         f"{len(wanted)} names asked for; found vendors {sorted({r['vendor'] for r in rows})}.")
    files = [storage.join(data_dir, row["file"]) for row in rows]
    images = np.stack([read_image(path, size) for path in files])  # (N, S, S, 3)
    return LabelledImages(images, np.asarray(labels), list(vendors), files)


def style_rows() -> list[Row]:
    """One row per vendor token, ``style <s0>``...: ``ROW_NAMES`` "X emoji in <sN> style", judged by the
    vendor judge (its class: the vendor the token names)."""
    return [Row(f"style {token}", tuple(STYLE_PROMPT.format(name=name, token=token) for name in ROW_NAMES),
                STYLE_KIND, vendor, judge="style")
            for vendor, token in sorted(STYLE_TOKENS.items(), key=lambda item: item[1])]


def style_judge_for_run(data_dir: str, out_dir: str, config: DemoConfig, result, log, networks=None):
    """The demo's vendor judge: a ResNet-50 from scratch on the judge's training names of every vendor in
    ``data_dir``, saved to ``out_dir/style_classifier`` and evaluated on the held-out names;
    ``networks``: the run's ``CompiledNetworks``.

    Returns:
        The judge, or None (noted in ``result.notes``) when ``data_dir`` lacks a vendor or names.
    """
    from kerasemote.data import read_metadata
    from kerasemote.demo.judge import fit_checked_judge

    try:
        train_names, test_names = style_judge_names(read_metadata(data_dir))
    except ValueError as err:
        result.notes.append(f"the style rows are not scored: {err}")
        log(f"  {result.notes[-1]}")
        return None
    train = style_judge_set(data_dir, train_names, config.style_judge_size)
    test = style_judge_set(data_dir, test_names, config.style_judge_size)
    judge, seconds = fit_checked_judge(train, test, config.style_judge_epochs, config,
                                       os.path.join(out_dir, "style_classifier"), "style names", result, log,
                                       networks, size=config.style_judge_size)
    result.judge["style"] = {"class_names": list(judge.class_names), "train_names": len(train_names),
                             "train_images": len(train.labels), "epochs": config.style_judge_epochs,
                             "image_size": config.style_judge_size,
                             "seconds": seconds, "test_names": test_names}
    return judge
