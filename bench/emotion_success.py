"""Emotion success rates of a model: generate N images per emotion prompt, classify, count.

    python bench/emotion_success.py --data /tmp/emoji64 --classifier out/judge --n 32

Trains the judge first when ``--classifier`` does not exist yet: a ResNet-50 from scratch on
the four-emotion faces of a prepared set (train + validation splits; the test split is held
out and its accuracy printed), then generates ``--n`` images for each of the four emotion
prompts (``kerasemote.data.emotions.EMOTION_PROMPTS``) at every ``--guidance`` and prints the
success-rate table (chance is 25 %).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

from kerasemote import classification as clf  # noqa: E402
from kerasemote.data.emotions import EMOTION_PROMPTS  # noqa: E402
from kerasemote.presets import load_model  # noqa: E402


def emotion_faces(data_dir: str, size: int, splits: tuple[str, ...]) -> clf.LabelledImages:
    """The four-emotion labelled rows of a prepared directory in ``splits`` (surprised dropped)."""
    parts = [clf.load_labelled_folder(data_dir, size, split=s) for s in splits]
    images = np.concatenate([p.images for p in parts])
    names = [p.class_names[i] for p in parts for i in p.labels]
    keep = np.array([n in EMOTION_PROMPTS for n in names])
    classes = sorted(EMOTION_PROMPTS)
    labels = np.array([classes.index(n) for n, k in zip(names, keep) if k], dtype=np.int64)
    files = [f for p in parts for f in p.sources]
    return clf.LabelledImages(images[keep], labels, classes, [f for f, k in zip(files, keep) if k])


def train_judge(data_dir: str, out_dir: str, size: int, epochs: int, seed: int) -> dict:
    """Train the judge and return its held-out (test split) accuracy."""
    train = emotion_faces(data_dir, size, ("train", "validation"))
    test = emotion_faces(data_dir, size, ("test",))
    config = clf.ClassifierTrainConfig(image_size=size, weights="none", epochs=epochs, patience=epochs,
                                       val_fraction=0.0, seed=seed)
    started = time.time()
    result = clf.train_classifier(train, out_dir, config, verbose=0)
    report = clf.evaluate_classifier(result.classifier, test)
    return {"train_images": len(train.labels), "test_images": len(test.labels), "test_accuracy": report.accuracy,
            "seconds": round(time.time() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="weights/kerasemote-tiny")
    parser.add_argument("--data", required=True, help="prepared directory (kerasemote data prepare --size 64)")
    parser.add_argument("--classifier", required=True, help="judge folder; trained here when missing")
    parser.add_argument("--n", type=int, default=32, help="generations per prompt")
    parser.add_argument("--guidance", type=float, nargs="+", default=[7.0])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write images, predictions and scores per guidance here")
    args = parser.parse_args()
    summary: dict = {"model": args.model}
    if not os.path.exists(os.path.join(args.classifier, "labels.json")):
        summary["judge"] = train_judge(args.data, args.classifier, 64, args.epochs, args.seed)
        print("judge:", summary["judge"])
    judge = clf.load_classifier(args.classifier)
    model = load_model(args.model)
    for guidance in args.guidance:
        started = time.time()
        out = os.path.join(args.out, f"guidance-{guidance:g}") if args.out else None
        report = clf.evaluate_concepts(model, judge, "{}", list(EMOTION_PROMPTS.values()), num_images=args.n,
                                       labels=list(EMOTION_PROMPTS), seed=args.seed, batch_size=args.n,
                                       out_dir=out, steps=args.steps, guidance=guidance, progress=False)
        print(f"guidance {guidance:g} ({time.time() - started:.0f} s):")
        print(report.format_table())
        summary[f"guidance {guidance:g}"] = report.to_dict()
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2, default=str)


if __name__ == "__main__":
    main()
