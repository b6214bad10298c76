"""Held-out accuracy of the ResNet-50 emotion classifier on packaged emoji (CPU friendly).

Builds the 4-class emoji emotion set (Twemoji + OpenMoji, 82 images), holds out a
stratified test split, trains, and prints test accuracy, chance level and run time.
``--shuffle-labels`` permutes the training labels: accuracy should fall to chance.

    python bench/classifier_emoji.py --weights none --size 64 --epochs 60
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from kerasemote.classification import (  # noqa: E402
    ClassifierTrainConfig,
    evaluate_classifier,
    load_labelled_folder,
    stratified_split,
    train_classifier,
)
from kerasemote.data.emotion_folder import write_emotion_folder  # noqa: E402


def run(config: ClassifierTrainConfig, test_fraction: float, shuffle_labels: bool, work: str) -> dict:
    """Train on the emoji set minus a held-out split; return accuracy and timings."""
    counts = write_emotion_folder(os.path.join(work, "emoji"))
    data = load_labelled_folder(os.path.join(work, "emoji"), config.image_size)
    train_idx, test_idx = stratified_split(data.labels, test_fraction, seed=1234)
    train, test = data.subset(train_idx), data.subset(test_idx)
    if shuffle_labels:
        train.labels = np.random.default_rng(config.seed).permutation(train.labels)
    start = time.perf_counter()
    result = train_classifier(train, os.path.join(work, "clf"), config, verbose=2)
    seconds = time.perf_counter() - start
    report = evaluate_classifier(result.classifier, test)
    majority = np.bincount(test.labels).max() / len(test.labels)
    return {
        "counts": counts, "num_train": len(train.labels), "num_test": len(test.labels),
        "epochs_run": len(result.history["loss"]), "train_seconds": seconds,
        "accuracy": report.accuracy, "chance_uniform": 1 / len(data.class_names),
        "chance_majority": float(majority), "table": report.format_table(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="none", help="imagenet | none | path to a no-top .h5")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--val-fraction", type=float, default=0.0)
    parser.add_argument("--patience", type=int, default=60)
    parser.add_argument("--freeze-backbone", action="store_true")
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--shuffle-labels", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = ClassifierTrainConfig(
        image_size=args.size, weights=args.weights, freeze_backbone=args.freeze_backbone,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        val_fraction=args.val_fraction, patience=args.patience, seed=args.seed,
    )
    with tempfile.TemporaryDirectory() as work:
        out = run(config, args.test_fraction, args.shuffle_labels, work)
    print(out["table"])
    print(
        f"weights={args.weights} size={args.size} shuffled={args.shuffle_labels} "
        f"train={out['num_train']} test={out['num_test']} epochs_run={out['epochs_run']} "
        f"train_time={out['train_seconds']:.0f}s  test_accuracy={out['accuracy']:.3f}  "
        f"chance(uniform)={out['chance_uniform']:.2f}  chance(majority)={out['chance_majority']:.2f}"
    )


if __name__ == "__main__":
    main()
