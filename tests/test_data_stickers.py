"""The broccoli-stickers source: seeded drawing, classes, split, prepared layout, CLI, committed sample."""

from __future__ import annotations

import collections
import importlib.util
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kerasemote import data
from kerasemote.data.emotions import EMOTIONS
from kerasemote.data.prepare import split_key
from kerasemote.data.sources.stickers import (
    DEFAULT_PER_CLASS,
    NEUTRAL,
    STICKER_CAPTIONS,
    STICKER_LABELS,
    draw_sticker,
    sticker_records,
)
from kerasemote.data.split import split_for_key

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "dataset" / "broccoli-stickers"
PREPARE_COMMAND = "kerasemote data prepare --source broccoli-stickers"


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def test_same_seed_draws_byte_identical_stickers_and_another_seed_does_not():
    first = draw_sticker("happy", 3, seed=5, size=64).tobytes()
    assert draw_sticker("happy", 3, seed=5, size=64).tobytes() == first
    assert draw_sticker("happy", 3, seed=6, size=64).tobytes() != first
    assert draw_sticker("happy", 4, seed=5, size=64).tobytes() != first


def test_fewer_stickers_per_class_keeps_the_first_ones_unchanged():
    few = [(r.id, pixels(r.load())) for r in sticker_records(per_class=1, seed=2, size=32)]
    more = [(r.id, pixels(r.load())) for r in sticker_records(per_class=2, seed=2, size=32)]
    assert [i for i, _ in few] == [i for i, _ in more[: len(few)]]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(few, more))


def test_records_cover_every_class_in_turn_with_its_caption():
    records = list(sticker_records(per_class=3, size=32))
    assert [r.label for r in records[:5]] == list(STICKER_LABELS)
    assert collections.Counter(r.label for r in records) == {label: 3 for label in STICKER_LABELS}
    assert set(STICKER_LABELS) - {NEUTRAL} <= set(EMOTIONS) and "in love" in STICKER_LABELS
    assert "other" not in STICKER_LABELS
    assert all(r.caption == STICKER_CAPTIONS[r.label] and r.vendor == "broccoli-stickers" for r in records)
    assert len({r.id for r in records}) == len(records)


def test_limit_keeps_the_classes_balanced():
    counts = collections.Counter(r.label for r in sticker_records(per_class=10, limit=12))
    assert sum(counts.values()) == 12 and max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize("size", [64, 128])
def test_stickers_are_rgb_uint8_of_the_asked_size_on_white_corners(size):
    for label in STICKER_LABELS:
        image = draw_sticker(label, 0, size=size)
        array = pixels(image)
        assert image.mode == "RGB" and array.shape == (size, size, 3) and array.dtype == np.uint8
        corner = size // 10
        for block in (array[:corner, :corner], array[:corner, -corner:], array[-corner:, :corner],
                      array[-corner:, -corner:]):
            assert (block == 255).all(), label
        drawn = array[(array < 240).any(-1)]  # (P, 3) pixels that are not paper
        assert len(drawn) > size * size // 5, label


def _colour_share(label: str, test) -> float:
    """Share of drawn pixels passing ``test`` over the first stickers of a class at 64 px."""
    arrays = np.stack([pixels(draw_sticker(label, k, size=64)) for k in range(6)]).astype(int)
    drawn = arrays[(arrays < 240).any(-1)]  # (P, 3)
    r, g, b = drawn[:, 0], drawn[:, 1], drawn[:, 2]
    return float(test(r, g, b).mean())


def test_each_face_carries_its_colour_cue_and_neutral_has_none():
    blue_tear = lambda r, g, b: (b > 200) & (r < 150) & (b > g + 20)
    red_heart = lambda r, g, b: (r > 180) & (g < 90) & (b < 110)
    reddish = lambda r, g, b: r > g + 30
    assert _colour_share("sad", blue_tear) > 0.01 > _colour_share(NEUTRAL, blue_tear)
    assert _colour_share("in love", red_heart) > 0.01 > _colour_share(NEUTRAL, red_heart)
    assert _colour_share("angry", reddish) > 0.3 > _colour_share("happy", reddish)


def test_default_split_puts_at_least_20_of_each_class_in_test():
    counts = collections.Counter()
    for record in sticker_records():  # nothing is drawn: records decode on load
        counts[record.label, split_for_key(split_key(record, group_by_emoji=True))] += 1
    assert all(counts[label, "test"] >= 20 for label in STICKER_LABELS), counts
    assert all(counts[label, "train"] > 100 for label in STICKER_LABELS), counts
    assert sum(counts.values()) == DEFAULT_PER_CLASS * len(STICKER_LABELS)


def test_each_sticker_is_its_own_split_group():
    record = next(iter(sticker_records(per_class=1)))
    assert split_key(record, group_by_emoji=True) == split_key(record, group_by_emoji=False) == record.id


def test_prepared_stickers_load_through_the_dataset_reader(tmp_path):
    out = tmp_path / "stickers"
    report = data.prepare(data.source_records("broccoli-stickers", render_size=32, per_class=2), out, size=32)
    assert report.written == 10 and report.total_skipped == 0
    rows = data.read_metadata(out)
    assert {r["label"] for r in rows} == set(STICKER_LABELS)
    assert {r["caption"] for r in rows} == set(STICKER_CAPTIONS.values())
    assert data.label_names(out) == sorted(STICKER_LABELS)
    images, captions, labels = next(iter(data.load_dataset(out, "all", with_labels=True, batch_size=10)))
    assert images.shape == (10, 32, 32, 3) and sorted(set(labels.numpy().tolist())) == [0, 1, 2, 3, 4]
    assert {c.decode() for c in captions.numpy()} == set(STICKER_CAPTIONS.values())


def test_prepared_stickers_give_textual_inversion_one_token_per_label(tmp_path):
    from kerasemote.training import concept_tokens, load_training_images

    out = tmp_path / "stickers"
    data.prepare(data.source_records("broccoli-stickers", render_size=32, per_class=1), out, size=32)
    tokens = concept_tokens(load_training_images(str(out), 32))
    assert tokens == {"happy": "<happy>", "sad": "<sad>", "angry": "<angry>", "in love": "<in-love>",
                      "neutral": "<neutral>"}


def test_cli_prepares_stickers_with_the_asked_seed_and_count(tmp_path):
    from kerasemote.cli import main

    out = tmp_path / "cli"
    assert main(["data", "prepare", "--source", "broccoli-stickers", "--out", str(out), "--size", "64",
                 "--per-class", "2", "--seed", "3"]) == 0
    rows = data.read_metadata(out)
    assert collections.Counter(r["label"] for r in rows) == {label: 2 for label in STICKER_LABELS}
    row = next(r for r in rows if r["label"] == "in love" and r["id"].endswith("_0001"))
    with Image.open(out / row["file"]) as written:
        assert np.array_equal(pixels(written.convert("RGB")), pixels(draw_sticker("in love", 1, seed=3, size=64)))


def test_a_path_for_the_stickers_is_an_error():
    with pytest.raises(ValueError, match="broccoli-stickers"):
        data.source_records("broccoli-stickers", "somewhere")
    with pytest.raises(ValueError, match="in love"):
        draw_sticker("surprised", 0)


def _documented_command() -> list[str]:
    """The card's command that writes this folder, as CLI arguments (without ``kerasemote``)."""
    text = (SAMPLE_DIR / "README.md").read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines()
             if line.strip().startswith(PREPARE_COMMAND) and "--out dataset/broccoli-stickers" in line]
    assert len(lines) == 1, f"{SAMPLE_DIR}/README.md: expected one command writing the sample, found {lines}"
    return shlex.split(lines[0])[1:]


def test_committed_sample_is_what_its_documented_command_writes(tmp_path):
    from kerasemote.cli import main

    args = _documented_command()
    args[args.index("--out") + 1] = str(tmp_path / "sample")
    assert main(args) == 0
    fresh_rows, committed_rows = data.read_metadata(tmp_path / "sample"), data.read_metadata(SAMPLE_DIR)
    assert fresh_rows == committed_rows
    for name in ("labels.json", "info.json", "vendor_tokens.json"):
        assert json.loads((tmp_path / "sample" / name).read_text()) == json.loads((SAMPLE_DIR / name).read_text())
    for row in committed_rows:
        with Image.open(SAMPLE_DIR / row["file"]) as committed, Image.open(tmp_path / "sample" / row["file"]) as fresh:
            assert np.array_equal(pixels(committed), pixels(fresh)), row["file"]
    on_disk = {p.name for p in (SAMPLE_DIR / "images").iterdir()}
    assert on_disk == {Path(r["file"]).name for r in committed_rows}
    assert sum(p.stat().st_size for p in SAMPLE_DIR.rglob("*") if p.is_file()) < 5_000_000


def test_committed_contact_sheet_is_what_its_script_draws():
    spec = importlib.util.spec_from_file_location("make_contact_sheet", SAMPLE_DIR / "make_contact_sheet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with Image.open(SAMPLE_DIR / "contact_sheet.png") as committed:
        assert np.array_equal(pixels(committed.convert("RGB")), pixels(module.contact_sheet())), (
            "regenerate with: python dataset/broccoli-stickers/make_contact_sheet.py")
