"""The whole loop: generate per concept, classify, success-rate table and files."""

import json

import keras
import numpy as np
import pytest
from small_model import SMALL

from kerasemote.classification import Classifier, concept_label, evaluate_concepts, save_classifier
from kerasemote.model import StableDiffusion


@keras.saving.register_keras_serializable(package="kerasemote_tests")
class _Brightness(keras.layers.Layer):
    """A stand-in classifier: class 0 ("happy") for bright images, 1 ("in love") for dark ones."""

    def call(self, x):
        mean = keras.ops.mean(x, axis=(1, 2, 3))[:, None] / 255.0  # (B, 1)
        return keras.ops.softmax(keras.ops.concatenate([20 * (mean - 0.5), 20 * (0.5 - mean)], axis=1))


@pytest.fixture(scope="module")
def classifier():
    inputs = keras.Input((16, 16, 3))
    return Classifier(keras.Model(inputs, _Brightness()(inputs)), ["happy", "in love"])


def test_concepts_find_their_class_by_name():
    assert concept_label("<in-love>", ["happy", "in love"]) == "in love"
    assert concept_label("Happy", ["happy", "in love"]) == "happy"
    with pytest.raises(ValueError, match="--labels"):
        concept_label("<broccoli>", ["happy", "in love"])


def test_evaluate_concepts_scores_every_generated_image(classifier, tmp_path):
    model = StableDiffusion.random(SMALL, seed=0)
    report = evaluate_concepts(model, classifier, "a {} emoji", ["happy", "<in-love>"], num_images=3,
                               batch_size=2, out_dir=str(tmp_path), steps=1, height=16, width=16,
                               labels=["happy", "in love"])
    assert [c.num_images for c in report.concepts] == [3, 3]
    # The success counts agree with the classifier's own verdict on the written images.
    from kerasemote.classification import load_image

    bright = []
    for folder in ("happy", "in-love"):
        for i in range(3):
            image = load_image(tmp_path / folder / f"image_{i:03d}.png", 16)
            bright.append(image.mean() / 255.0 > 0.5)
    assert report.concepts[0].num_success == sum(bright[:3])
    assert report.concepts[1].num_success == 3 - sum(bright[3:])
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert "concepts" in scores and (tmp_path / "predictions.csv").exists()
    assert (tmp_path / "happy" / "grid.png").exists()
    assert "happy" in report.format_table()


def test_evaluate_concepts_command(classifier, tmp_path, small_model_path):
    from kerasemote.cli import main

    save_classifier(classifier, tmp_path / "clf")
    code = main(["evaluate-concepts", "--model", small_model_path, "--classifier", str(tmp_path / "clf"),
                 "--concepts", "happy", "in love", "--n", "2", "--steps", "1", "--height", "16", "--width", "16",
                 "--out", str(tmp_path / "out")])
    assert code == 0 and (tmp_path / "out" / "predictions.csv").exists()
