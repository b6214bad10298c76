"""The emotion-faces source: seeded drawing, classes, split, colours, CLI, contact sheet."""

from __future__ import annotations

import collections
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kerasemote import data
from kerasemote.data.emotions import EMOTION_PROMPTS
from kerasemote.data.prepare import split_key
from kerasemote.data.sources.drawn import DEFAULT_PER_CLASS
from kerasemote.data.sources.emotion_faces import FACE_CAPTIONS, FACE_LABELS, draw_face, face_records
from kerasemote.data.split import split_for_key

CARD_DIR = Path(__file__).resolve().parents[1] / "dataset" / "emotion-faces"


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def first_faces(label: str, count: int = 8, size: int = 64) -> np.ndarray:
    return np.stack([pixels(draw_face(label, k, size=size)) for k in range(count)])  # (N, size, size, 3)


def test_same_seed_draws_byte_identical_faces_and_another_seed_or_index_does_not():
    first = draw_face("sad", 3, seed=5, size=64).tobytes()
    assert draw_face("sad", 3, seed=5, size=64).tobytes() == first
    assert draw_face("sad", 3, seed=6, size=64).tobytes() != first
    assert draw_face("sad", 4, seed=5, size=64).tobytes() != first


def test_fewer_faces_per_class_keeps_the_first_ones_unchanged():
    few = [(r.id, pixels(r.load())) for r in face_records(per_class=1, seed=2, size=32)]
    more = [(r.id, pixels(r.load())) for r in face_records(per_class=2, seed=2, size=32)]
    assert [i for i, _ in few] == [i for i, _ in more[: len(few)]]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(few, more))


def test_records_are_the_four_judged_emotions_in_turn_with_ids_and_captions():
    records = list(face_records(per_class=3, size=32))
    assert FACE_LABELS == tuple(EMOTION_PROMPTS) == ("happy", "sad", "angry", "in love")
    assert [r.label for r in records[:4]] == list(FACE_LABELS)
    assert collections.Counter(r.label for r in records) == {label: 3 for label in FACE_LABELS}
    assert all(r.caption == FACE_CAPTIONS[r.label] and r.vendor == "emotion-faces" for r in records)
    assert records[3].id == "emotion-faces_in-love_0000" and records[-1].id == "emotion-faces_in-love_0002"
    assert len({r.id for r in records}) == len(records)


def test_default_split_gives_every_class_at_least_20_test_faces_in_the_split_proportion():
    counts = collections.Counter()
    for record in face_records():  # nothing is drawn: records decode on load
        assert split_key(record, group_by_emoji=True) == record.id  # each face is its own split group
        counts[record.label, split_for_key(split_key(record, group_by_emoji=True))] += 1
    assert sum(counts.values()) == DEFAULT_PER_CLASS * len(FACE_LABELS)
    for label in FACE_LABELS:
        assert counts[label, "test"] >= 20, counts
        assert 0.1 < counts[label, "test"] / DEFAULT_PER_CLASS < 0.25, counts  # 20 / 121 expected
        assert counts[label, "validation"] <= 6 and counts[label, "train"] > 0.7 * DEFAULT_PER_CLASS, counts


def test_no_two_faces_are_alike():
    faces = np.concatenate([first_faces(label, 10) for label in FACE_LABELS])
    distinct = {face.tobytes() for face in faces}
    assert len(distinct) == len(faces)
    # Not just a pixel apart: every pair differs in a visible share of its pixels.
    flat = faces.reshape(len(faces), -1).astype(np.int16)
    for i in range(len(flat)):
        changed = (np.abs(flat[i + 1:] - flat[i]) > 30).mean(axis=1)
        assert (changed > 0.02).all(), i


@pytest.mark.parametrize("size", [64, 128])
def test_faces_are_rgb_of_the_asked_size_with_white_corners(size):
    for label in FACE_LABELS:
        image = draw_face(label, 1, size=size)
        array = pixels(image)
        assert image.mode == "RGB" and array.shape == (size, size, 3) and array.dtype == np.uint8
        for corner in (array[:2, :2], array[:2, -2:], array[-2:, :2], array[-2:, -2:]):
            assert (corner == 255).all(), label
        drawn = (array < 240).any(-1)
        assert 0.35 < drawn.mean() < 0.8, (label, drawn.mean())  # a disc filling most of the square


def _share(faces: np.ndarray, test) -> float:
    """Share of the drawn (not white) pixels of ``faces`` that pass ``test``."""
    drawn = faces[(faces < 240).any(-1)].astype(int)  # (P, 3)
    return float(test(drawn[:, 0], drawn[:, 1], drawn[:, 2]).mean())


def test_discs_are_yellow_and_each_emotion_carries_its_colour_cue():
    faces = {label: first_faces(label, 12) for label in FACE_LABELS}
    yellow = lambda r, g, b: (r > 200) & (g > 130) & (b < 130) & (r >= g)
    blue_tear = lambda r, g, b: (b > 200) & (r < 150) & (b > g + 20)
    red_heart = lambda r, g, b: (r > 180) & (g < 90) & (b < 110)
    red = lambda r, g, b: (r > 180) & (g < 110)
    for label in ("happy", "sad", "in love"):
        assert _share(faces[label], yellow) > 0.6, label
    assert _share(faces["sad"], blue_tear) > 0.01 > _share(faces["happy"], blue_tear)
    assert _share(faces["in love"], red_heart) > 0.02 > _share(faces["sad"], red_heart)
    assert _share(faces["angry"], red) > 0.15 > _share(faces["happy"], red)


def test_cli_prepares_faces_that_the_dataset_reader_reads_with_the_four_labels(tmp_path):
    from kerasemote.cli import main

    out = tmp_path / "faces"
    assert main(["data", "prepare", "--source", "emotion-faces", "--out", str(out), "--size", "32",
                 "--per-class", "2", "--seed", "3"]) == 0
    rows = data.read_metadata(out)
    assert collections.Counter(r["label"] for r in rows) == {label: 2 for label in FACE_LABELS}
    assert {r["caption"] for r in rows} == set(FACE_CAPTIONS.values())
    assert data.label_names(out) == sorted(FACE_LABELS)
    row = next(r for r in rows if r["id"] == "emotion-faces_in-love_0001")
    with Image.open(out / row["file"]) as written:
        assert np.array_equal(pixels(written.convert("RGB")), pixels(draw_face("in love", 1, seed=3, size=32)))


def test_unknown_labels_and_a_path_are_errors():
    with pytest.raises(ValueError, match="in love"):
        draw_face("surprised", 0)
    with pytest.raises(ValueError, match="at least 16"):
        draw_face("happy", 0, size=8)
    with pytest.raises(ValueError, match="emotion-faces"):
        data.source_records("emotion-faces", "somewhere")


def test_committed_contact_sheet_is_what_its_script_draws_and_stays_small():
    spec = importlib.util.spec_from_file_location("make_face_sheet", CARD_DIR / "make_contact_sheet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with Image.open(CARD_DIR / "contact_sheet.png") as committed:
        assert np.array_equal(pixels(committed.convert("RGB")), pixels(module.contact_sheet())), (
            "regenerate with: python dataset/emotion-faces/make_contact_sheet.py")
    assert (CARD_DIR / "contact_sheet.png").stat().st_size < 300_000
