"""The vendor-style job's pieces: tokens and prompt in the training captions' format, the judge's split by name,
and its labelled set with one class per vendor."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from kerasemote import data
from kerasemote.data import EmojiRecord
from kerasemote.demo.styles import (CONCEPT, ROW_NAMES, STYLE_PROMPT, STYLE_TOKENS, VENDORS, style_candidates,
                                    style_judge_names, style_judge_set)

COLORS = {"noto": (220, 40, 40), "openmoji": (40, 200, 40), "twemoji": (40, 40, 220)}


def _rows(names, vendors=VENDORS, label=None, emoji_of=None) -> list[dict]:
    emoji_of = emoji_of or (lambda i: chr(0x1F400 + i))
    return [{"vendor": v, "description": n, "emoji": emoji_of(i), "label": label}
            for i, n in enumerate(names) for v in vendors]


def _emoji_set(count: int = 60) -> list[dict]:
    """Rows of a mixed set: ``count`` plain names, labelled faces, the concept, the row names, a skin tone."""
    rows = _rows([f"thing {i}" for i in range(count)])
    rows += _rows(["grinning face", "crying face"], label="happy", emoji_of=lambda i: chr(0x1F600 + i))
    rows += _rows([CONCEPT, *ROW_NAMES], emoji_of=lambda i: chr(0x1F900 + i))
    rows += _rows(["waving hand: medium skin tone"], emoji_of=lambda i: "\U0001F44B\U0001F3FD")
    return rows


def test_the_style_prompt_is_the_caption_a_mixed_prepared_set_gives(tmp_path):
    records = [EmojiRecord(id=f"{v}_1f34e", load=lambda: Image.new("RGB", (8, 8), "red"), description="red apple",
                           vendor=v, emoji="\U0001F34E") for v in reversed(VENDORS)]
    data.prepare(records, tmp_path, size=8)
    assert data.vendor_tokens(tmp_path) == STYLE_TOKENS == {"noto": "<s0>", "openmoji": "<s1>", "twemoji": "<s2>"}
    captions = {row["vendor"]: row["caption"] for row in data.read_metadata(tmp_path)}
    assert captions == {v: STYLE_PROMPT.format(name="red apple", token=STYLE_TOKENS[v]) for v in VENDORS}


def test_judge_names_are_disjoint_and_leave_out_faces_the_concept_row_names_and_sequences():
    rows = _emoji_set()
    train, test = style_judge_names(rows, train=40, test=12)
    assert len(train) == 40 and len(test) == 12 and not set(train) & set(test)
    chosen = set(train) | set(test)
    assert chosen <= {f"thing {i}" for i in range(60)}
    assert "thing 0" in style_candidates(rows) and CONCEPT not in style_candidates(rows)
    assert not chosen & ({"grinning face", CONCEPT, "waving hand: medium skin tone"} | set(ROW_NAMES))


def test_judge_names_do_not_depend_on_row_order():
    rows = _emoji_set()
    shuffled = random.Random(1).sample(rows, len(rows))
    assert style_judge_names(rows, train=40, test=12) == style_judge_names(shuffled, train=40, test=12)


def test_a_set_that_holds_only_the_chosen_names_gives_the_same_split():
    rows = _emoji_set()
    train, test = style_judge_names(rows, train=40, test=12)
    kept = set(train) | set(test) | {"grinning face", CONCEPT}
    assert style_judge_names([r for r in rows if r["description"] in kept], train=40, test=12) == (train, test)


def test_a_name_one_vendor_lacks_is_no_candidate():
    rows = [r for r in _emoji_set() if not (r["description"] == "thing 3" and r["vendor"] == "openmoji")]
    assert "thing 3" not in style_candidates(rows) and "thing 4" in style_candidates(rows)


def test_too_few_names_is_an_error_naming_the_counts():
    with pytest.raises(ValueError, match="60 emoji names are held by every vendor .* expected at least .* = 61"):
        style_judge_names(_emoji_set(), train=50, test=11)


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory):
    """A prepared set of three vendors, each drawn in its own colour, five names each."""
    folder = tmp_path_factory.mktemp("mixed")
    records = [EmojiRecord(id=f"{v}_{i}", load=lambda c=COLORS[v]: Image.new("RGB", (16, 16), c),
                           description=f"thing {i}", vendor=v, emoji=chr(0x1F400 + i))
               for i in range(5) for v in VENDORS]
    data.prepare(records, folder, size=16)
    return str(folder)


def test_the_judge_set_has_one_class_per_vendor_in_token_order(mixed_dir):
    judged = style_judge_set(mixed_dir, ["thing 1", "thing 3"], 8)
    assert judged.class_names == list(VENDORS) and judged.images.shape == (6, 8, 8, 3)
    for image, label in zip(judged.images, judged.labels):
        assert tuple(image[4, 4]) == COLORS[VENDORS[label]]
    assert sorted(judged.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    assert all(s.startswith(mixed_dir) and s.endswith(".png") for s in judged.sources)


def test_a_vendor_without_any_of_the_names_is_an_error(mixed_dir):
    with pytest.raises(ValueError, match=r"no image of vendors \['apple'\]"):
        style_judge_set(mixed_dir, ["thing 1"], 8, vendors=("apple", *VENDORS))
    assert np.all(style_judge_set(mixed_dir, ["thing 1"], 8).labels == [0, 1, 2])


def test_the_demos_vendor_judge_trains_and_is_checked_at_its_own_size(mixed_dir, monkeypatch):
    from kerasemote.demo import judge, styles
    from kerasemote.demo.result import DemoResult
    from kerasemote.demo.spec import DemoConfig

    config = DemoConfig(judge_size=32, style_judge_size=48)
    seen = {}

    def fit_checked_judge(train, test, epochs, config, folder, name, result, log, networks=None, size=None):
        seen.update(train=train.images.shape, test=test.images.shape, size=size, epochs=epochs)
        return type("Judge", (), {"class_names": list(VENDORS)})(), 1.0

    monkeypatch.setattr(judge, "fit_checked_judge", fit_checked_judge)
    monkeypatch.setattr(styles, "style_judge_names", lambda rows: (["thing 0", "thing 1", "thing 2"], ["thing 4"]))
    result = DemoResult(str(mixed_dir), config)
    styles.style_judge_for_run(mixed_dir, str(mixed_dir), config, result, lambda line: None)
    assert seen == {"train": (9, 48, 48, 3), "test": (3, 48, 48, 3), "size": 48, "epochs": config.style_judge_epochs}
    assert result.judge["style"]["image_size"] == 48
    # Every other judge network keeps the judges' size.
    assert judge.judge_settings(config, 3, 0).image_size == 32
    assert judge.judge_settings(config, 3, 0, 48).image_size == 48
    with pytest.raises(ValueError, match="style_judge_size must be >= 32"):
        DemoConfig(style_judge_size=16)
