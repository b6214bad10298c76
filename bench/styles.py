"""Vendor styles on a model: does "X emoji in <sN> style" draw X in the style of the vendor <sN> names?

    python bench/styles.py --out /tmp/styles                       # kerasemote-tiny, every default
    python bench/styles.py --out /tmp/styles32 --judge-size 32     # the judge at another input size

1. data: Twemoji and OpenMoji (pip packages) and the shipped Noto sample (``noto-sample``, no font needed)
   prepared together at ``--size`` px under ``--out/emoji`` (style tokens noto <s0>, openmoji <s1>,
   twemoji <s2>, as the model was trained);
2. judge: a ResNet-50 from scratch that tells the three vendors apart, trained on every vendor's image of
   the training names of ``kerasemote.demo.styles.style_judge_names`` (400 emoji); its accuracy per vendor on
   the 30 held-out test names is printed and saved, and so is its verdict on the rows' own references
   (each vendor's image of ``ROW_NAMES``, names the judge never saw);
3. rows: one row per vendor token, ``--per-name`` generations of "<name> emoji in <sN> style" for each of
   the eight ``ROW_NAMES`` (the same seed for a name in every row, so only the token differs): the share
   whose top judge class is the vendor the token names, the predicted vendors, and the row's spread (mean
   per-pixel standard deviation across its images).

The judge is saved to ``--out/judge/`` and reused by a later run with the same ``--out`` and the same judge
size, epochs and number of training names (otherwise it is trained again).
Writes ``--out/table.json`` (settings, the judge's accuracy, every row, timings), a grid per row under
``--out/rows/`` (a line per name, each image labelled with the judge's vendor) and ``--out/references.png``
(a line per name: its Noto, OpenMoji and Twemoji image).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

from kerasemote import classification as clf  # noqa: E402
from kerasemote import data  # noqa: E402
from kerasemote import images as image_io  # noqa: E402
from kerasemote.demo.scoring import generate_many  # noqa: E402
from kerasemote.demo.spec import DemoConfig  # noqa: E402
from kerasemote.demo.stickers import row_spread  # noqa: E402
from kerasemote.demo.styles import (ROW_NAMES, STYLE_PROMPT, STYLE_TOKENS, VENDORS,  # noqa: E402
                                    style_judge_names, style_judge_set)
from kerasemote.presets import load_model  # noqa: E402

SOURCES = ("twemoji", "openmoji", "noto-sample")


def prepare_set(out: str, size: int) -> str:
    emoji_dir = os.path.join(out, "emoji")
    if not os.path.exists(os.path.join(emoji_dir, "metadata.jsonl")):
        records = itertools.chain(*(data.source_records(name, render_size=size) for name in SOURCES))
        data.prepare(records, emoji_dir, size=size, progress=False)
    tokens = data.vendor_tokens(emoji_dir)
    if tokens != STYLE_TOKENS:
        raise ValueError(f"{emoji_dir}/vendor_tokens.json: expected {STYLE_TOKENS}, found {tokens}.")
    return emoji_dir


def _recall(classifier, labelled) -> tuple[dict, dict]:
    report = clf.evaluate_classifier(classifier, labelled)
    return ({m.name: round(m.recall, 3) for m in report.per_class},
            {name: int(np.sum(labelled.labels == i)) for i, name in enumerate(labelled.class_names)})


def train_judge(emoji_dir: str, train_names: list[str], test_names: list[str], args) -> tuple[object, dict]:
    train_set = style_judge_set(emoji_dir, train_names, args.size)
    test_set = style_judge_set(emoji_dir, test_names, args.size)
    settings = clf.ClassifierTrainConfig(image_size=args.judge_size, weights="none", epochs=args.judge_epochs,
                                         batch_size=args.judge_batch_size, val_fraction=0.0,
                                         patience=args.judge_epochs, seed=args.seed)
    start = time.perf_counter()
    classifier, history = clf.fit_classifier(train_set, settings, verbose=0)[:2]
    seconds = time.perf_counter() - start
    test_recall, test_images = _recall(classifier, test_set)
    reference_recall, _ = _recall(classifier, style_judge_set(emoji_dir, ROW_NAMES, args.size))
    facts = {"train_seconds": round(seconds, 1), "image_size": args.judge_size, "epochs": args.judge_epochs,
             "train_names": len(train_names), "train_images": len(train_set.labels),
             "last_epoch_train_accuracy": round(float(history["accuracy"][-1]), 3),
             "test_names": test_names, "test_images": test_images,
             "test_accuracy": round(float(np.mean(list(test_recall.values()))), 3), "test_recall": test_recall,
             "reference_recall": reference_recall}
    return classifier, facts


def score_row(model, classifier, vendor: str, args) -> tuple[dict, np.ndarray, list[str]]:
    sampling = DemoConfig(num_images=args.per_name, sample_steps=args.sample_steps, guidance=args.guidance)
    token = STYLE_TOKENS[vendor]
    images = np.concatenate([generate_many(model, STYLE_PROMPT.format(name=name, token=token), sampling,
                                           seed=args.seed + 1000 * j)
                             for j, name in enumerate(ROW_NAMES)])  # (8 * per_name, S, S, 3), name by name
    probs = clf.score_images(classifier, images, vendor).probabilities  # (N, 3)
    top = probs.argmax(axis=-1)
    wanted = VENDORS.index(vendor)
    hits = (top == wanted).reshape(len(ROW_NAMES), args.per_name)
    row = {"prompt": STYLE_PROMPT.format(name="{name}", token=token), "intended": vendor, "n": len(images),
           "success": float(np.mean(top == wanted)),
           "predicted": {v: int(np.sum(top == i)) for i, v in enumerate(VENDORS) if np.any(top == i)},
           "per_name": {name: int(h.sum()) for name, h in zip(ROW_NAMES, hits)},
           "spread": round(row_spread(images), 1)}
    return row, images, [VENDORS[i] for i in top]


def _saved_judge(judge_dir: str) -> dict | None:
    """The facts of a judge an earlier run saved in ``judge_dir`` (its size, epochs, names), or None."""
    try:
        with open(os.path.join(judge_dir, "judge.json"), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder; a judge already in OUT/judge is reused")
    parser.add_argument("--model", default="kerasemote-tiny")
    parser.add_argument("--size", type=int, default=64, help="side of the prepared images")
    parser.add_argument("--judge-epochs", type=int, default=DemoConfig.style_judge_epochs)
    parser.add_argument("--judge-size", type=int, default=DemoConfig.style_judge_size, help="the judge's input side")
    parser.add_argument("--judge-batch-size", type=int, default=64)
    parser.add_argument("--per-name", type=int, default=4, help="generations per row name (8 names a row)")
    parser.add_argument("--sample-steps", type=int, default=DemoConfig.sample_steps)
    parser.add_argument("--guidance", type=float, default=DemoConfig.guidance)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    timings = {}
    start = time.perf_counter()
    emoji_dir = prepare_set(args.out, args.size)
    timings["data"] = time.perf_counter() - start

    start = time.perf_counter()
    judge_dir = os.path.join(args.out, "judge")
    judge = _saved_judge(judge_dir)
    train_names, test_names = style_judge_names(data.read_metadata(emoji_dir))
    wanted = {"image_size": args.judge_size, "epochs": args.judge_epochs, "train_names": len(train_names)}
    if judge and all(judge.get(key) == value for key, value in wanted.items()):  # other sampling settings only
        classifier = clf.load_classifier(judge_dir)
    else:  # none yet, or one trained with other settings: train (and replace) it
        classifier, judge = train_judge(emoji_dir, train_names, test_names, args)
        clf.save_classifier(classifier, judge_dir)
        with open(os.path.join(judge_dir, "judge.json"), "w", encoding="utf-8") as f:
            json.dump(judge, f, indent=2)
    timings["judge"] = time.perf_counter() - start
    print(f"judge: {judge['train_images']} training images ({judge['train_names']} names x 3 vendors), "
          f"{judge['image_size']} px, {judge['epochs']} epochs, trained in {judge['train_seconds']:.0f} s")
    print(f"judge held-out recall {judge['test_recall']} on {judge['test_images']} test images; "
          f"on the row names' references {judge['reference_recall']}")

    references = [style_judge_set(emoji_dir, [name], args.size) for name in ROW_NAMES]  # a line per name
    image_io.save_grid(np.concatenate([r.images[np.argsort(r.labels)] for r in references]),
                       os.path.join(args.out, "references.png"), cols=len(VENDORS),
                       labels=list(VENDORS) * len(ROW_NAMES))

    start = time.perf_counter()
    model = load_model(args.model)
    rows = []
    for vendor in VENDORS:
        row, images, predicted = score_row(model, classifier, vendor, args)
        image_io.save_grid(images, os.path.join(args.out, "rows", f"{vendor}.png"), cols=args.per_name,
                           labels=predicted)
        rows.append(row)
    timings["rows"] = time.perf_counter() - start
    print(f"{'prompt':34} {'success':>8} {'spread':>7}  predicted")
    for row in rows:
        predicted = ", ".join(f"{v} {n}" for v, n in sorted(row["predicted"].items(), key=lambda x: -x[1]))
        print(f"{row['prompt']:34} {row['success']:8.0%} {row['spread']:7.1f}  {predicted}")
        print(f"{'':34} per name: " + ", ".join(f"{name} {n}/{args.per_name}" for name, n in row["per_name"].items()))
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    with open(os.path.join(args.out, "table.json"), "w", encoding="utf-8") as f:
        json.dump({"args": vars(args), "judge": judge, "rows": rows,
                   "seconds": {k: round(v, 1) for k, v in timings.items()}}, f, indent=2)


if __name__ == "__main__":
    main()
