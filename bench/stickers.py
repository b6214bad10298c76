"""Broccoli stickers in four emotions on a model: tokens, LoRA, a judge, N generations a row.

    python bench/stickers.py --out /tmp/stickers                 # kerasemote-tiny, every default
    python bench/stickers.py --out /tmp/stickers --lora-steps 0   # textual inversion alone

1. data: the broccoli-stickers set (200 a class) and the packaged Twemoji set (the judge's
   ``other`` class), both at ``--size`` px, prepared under ``--out`` (no system font needed);
2. judge: a ResNet-50 from scratch on the sticker train split (happy, sad, angry, in love,
   neutral) and ``--other`` Twemoji that are not broccoli; its accuracy per class on the held-out
   test split (at least 20 images a class) is printed and saved, and its accuracy on the same images after
   a round trip through the model's autoencoder (what every generation passes through);
3. tokens: ``<happy-broccoli>`` ``<sad-broccoli>`` ``<angry-broccoli>`` ``<in-love-broccoli>``
   learned at once by textual inversion from ``--per-emotion`` training stickers each;
4. LoRA: adapters on top of the tokens, same stickers, in a second copy of the model;
5. rows: ``--n`` generations of "a <token> sticker" per emotion, with tokens alone and with the
   LoRA: share whose top judge class is the intended emotion, and the row's spread (mean
   per-pixel standard deviation across its images; near-copies score ~0).

The judge is saved to ``--out/judge/`` and reused by a later run with the same ``--out``.
Writes ``--out/table.json`` (settings, the judge's held-out accuracy per class, every row, timings) and a grid
per row under ``--out/rows/``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

from kerasemote import classification as clf  # noqa: E402
from kerasemote import data  # noqa: E402
from kerasemote import images as image_io  # noqa: E402
from kerasemote.data.emotions import EMOTION_WORDS, emotion_slug  # noqa: E402
from kerasemote.demo.scoring import generate_many  # noqa: E402
from kerasemote.demo.spec import DemoConfig  # noqa: E402
from kerasemote.demo.stickers import (EMOTIONS, JUDGE_CLASSES, STICKER_PROMPT, STICKER_TOKENS,  # noqa: E402
                                      few_stickers, row_spread, sticker_judge_set)
from kerasemote.presets import load_model  # noqa: E402
from kerasemote.training import LoRA, TextualInversion, TrainConfig, train  # noqa: E402


def prepare_sets(out: str, size: int) -> tuple[str, str]:
    sticker_dir, emoji_dir = os.path.join(out, "stickers"), os.path.join(out, "emoji")
    for source, folder in (("broccoli-stickers", sticker_dir), ("twemoji", emoji_dir)):
        if not os.path.exists(os.path.join(folder, "metadata.jsonl")):
            data.prepare(data.source_records(source, render_size=size), folder, size=size, progress=False)
    return sticker_dir, emoji_dir


def train_judge(sticker_dir: str, emoji_dir: str, args) -> tuple[object, dict]:
    train_set = sticker_judge_set(sticker_dir, emoji_dir, args.size, ("train", "validation"), other=args.other)
    test_set = sticker_judge_set(sticker_dir, emoji_dir, args.size, ("test",), other=40)
    settings = clf.ClassifierTrainConfig(image_size=args.judge_size, weights="none",
                                         epochs=args.judge_epochs, batch_size=args.judge_batch_size,
                                         val_fraction=0.0, patience=args.judge_epochs, seed=args.seed)
    start = time.perf_counter()
    classifier = clf.fit_classifier(train_set, settings, verbose=0)[0]
    report = clf.evaluate_classifier(classifier, test_set)
    facts = {"seconds": round(time.perf_counter() - start, 1), "train_images": len(train_set.labels),
             "test_images": {name: int(np.sum(test_set.labels == i)) for i, name in enumerate(JUDGE_CLASSES)},
             "accuracy": report.accuracy,
             "per_class_recall": {m.name: round(m.recall, 3) for m in report.per_class}}
    return classifier, facts


def round_trip_accuracy(classifier, sticker_dir: str, emoji_dir: str, model, args) -> float:
    """The judge's accuracy on the held-out stickers after a round trip through ``model``'s autoencoder: a
    judge that read the decoder's blur as a class (a faceless blur as "happy") would fall here."""
    test_set = sticker_judge_set(sticker_dir, emoji_dir, args.size, ("test",), other=40)
    decoded = np.concatenate([model.decode_latents(model.encode_images(test_set.images[i:i + 64], seed=args.seed))
                              for i in range(0, len(test_set.images), 64)])  # (N, S, S, 3)
    return clf.evaluate_classifier(classifier, clf.LabelledImages(decoded, test_set.labels, test_set.class_names,
                                                                  test_set.sources)).accuracy


def score_row(model, classifier, label: str, kind: str, args, row: int) -> dict:
    prompt = STICKER_PROMPT.format(STICKER_TOKENS[label])
    sampling = DemoConfig(num_images=args.n, sample_steps=args.sample_steps, guidance=args.guidance)
    images = generate_many(model, prompt, sampling, seed=args.seed + 1000 * row)  # (N, S, S, 3)
    probs = clf.score_images(classifier, images, label).probabilities  # (N, C)
    top = probs.argmax(axis=-1)
    wanted = JUDGE_CLASSES.index(label)
    name = f"{emotion_slug(label)}-{kind}"
    image_io.save_grid(images, os.path.join(args.out, "rows", f"{name}.png"), cols=8)
    return {"prompt": prompt, "kind": kind, "intended": label, "n": len(images),
            "success": float(np.mean(top == wanted)),
            "predicted": {c: int(np.sum(top == i)) for i, c in enumerate(JUDGE_CLASSES) if np.any(top == i)},
            "spread": round(row_spread(images), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder; a judge already in OUT/judge is reused")
    parser.add_argument("--model", default="kerasemote-tiny")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--per-emotion", type=int, default=16, help="training stickers per emotion")
    parser.add_argument("--steps", type=int, default=300, help="textual-inversion steps")
    parser.add_argument("--ti-from", help="load the tokens from this earlier run's ti folder instead of training them")
    parser.add_argument("--init", default="broccoli",
                        help="the tokens' starting word; 'emotion': each its emotion's word (happy, sad, angry, love)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--lora-steps", type=int, default=1000, help="0: no LoRA rows")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--lora-learning-rate", type=float, default=1e-3)
    parser.add_argument("--judge-epochs", type=int, default=12)
    parser.add_argument("--judge-size", type=int, default=32, help="the judge's input side")
    parser.add_argument("--judge-batch-size", type=int, default=64)
    parser.add_argument("--lora-batch-size", type=int, default=4)
    parser.add_argument("--other", type=int, default=300, help="'other' emoji in the judge's training set")
    parser.add_argument("--n", type=int, default=DemoConfig.num_images, help="generations per row")
    parser.add_argument("--sample-steps", type=int, default=DemoConfig.sample_steps)
    parser.add_argument("--guidance", type=float, default=DemoConfig.sticker_guidance,
                        help="guidance scale of the rows (the demo's sticker rows' scale)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    timings = {}
    start = time.perf_counter()
    sticker_dir, emoji_dir = prepare_sets(args.out, args.size)
    timings["data"] = time.perf_counter() - start

    start = time.perf_counter()
    judge_dir = os.path.join(args.out, "judge")
    if os.path.exists(os.path.join(judge_dir, "judge.json")):  # a later run with other token settings
        classifier = clf.load_classifier(judge_dir)
        with open(os.path.join(judge_dir, "judge.json"), encoding="utf-8") as f:
            judge = json.load(f)
    else:
        classifier, judge = train_judge(sticker_dir, emoji_dir, args)
        clf.save_classifier(classifier, judge_dir)
        with open(os.path.join(judge_dir, "judge.json"), "w", encoding="utf-8") as f:
            json.dump(judge, f, indent=2)
    timings["judge"] = time.perf_counter() - start
    print(f"judge: {judge['train_images']} training images, held-out accuracy {judge['accuracy']:.1%} "
          f"on {judge['test_images']}")

    stickers = few_stickers(sticker_dir, args.per_emotion, args.size)
    settings = TrainConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                           seed=args.seed, progress=False)
    start = time.perf_counter()
    model = load_model(args.model)
    init = EMOTION_WORDS if args.init == "emotion" else args.init
    ti_dir = args.ti_from or os.path.join(args.out, "ti")
    if args.ti_from:  # tokens learned by an earlier run: compare LoRA settings on the same tokens
        from kerasemote.embeddings import load_embeddings

        load_embeddings(model, ti_dir)
    else:
        train(model, TextualInversion(dict(STICKER_TOKENS), init=init), stickers, settings, ti_dir)
    timings["textual inversion"] = time.perf_counter() - start
    judge["round_trip_accuracy"] = round_trip_accuracy(classifier, sticker_dir, emoji_dir, model, args)
    print(f"judge: held-out accuracy {judge['round_trip_accuracy']:.1%} after the autoencoder's round trip")
    models = {"ti": model}
    if args.lora_steps:
        from kerasemote.embeddings import load_embeddings

        start = time.perf_counter()
        lora_model = load_model(args.model)
        load_embeddings(lora_model, ti_dir)
        lora_settings = TrainConfig(steps=args.lora_steps, batch_size=args.lora_batch_size,
                                    learning_rate=args.lora_learning_rate, seed=args.seed, progress=False)
        train(lora_model, LoRA(rank=args.lora_rank, targets=("attention", "convs"), words=dict(STICKER_TOKENS),
                               seed=args.seed), stickers, lora_settings, os.path.join(args.out, "lora"))
        models["lora"] = lora_model
        timings["lora"] = time.perf_counter() - start

    start = time.perf_counter()
    rows = [score_row(m, classifier, label, kind, args, r)
            for r, (kind, m, label) in enumerate((k, m, e) for k, m in models.items() for e in EMOTIONS)]
    timings["rows"] = time.perf_counter() - start
    print(f"{'prompt':32} {'kind':5} {'success':>8} {'spread':>7}  predicted")
    for row in rows:
        predicted = ", ".join(f"{c} {n}" for c, n in sorted(row["predicted"].items(), key=lambda x: -x[1]))
        print(f"{row['prompt']:32} {row['kind']:5} {row['success']:8.0%} {row['spread']:7.1f}  {predicted}")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    with open(os.path.join(args.out, "table.json"), "w", encoding="utf-8") as f:
        json.dump({"args": vars(args), "judge": judge, "rows": rows,
                   "seconds": {k: round(v, 1) for k, v in timings.items()}}, f, indent=2)


if __name__ == "__main__":
    main()
