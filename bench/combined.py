"""Two concepts combined: a broccoli sticker and a happy emoji face, mixed in a prompt or in token space.

    python bench/stickers.py --out /tmp/stickers            # first: the sets and the sticker judge
    python bench/combined.py --stickers /tmp/stickers --out /tmp/combined

1. tokens: ``<broccoli-sticker>`` from ``--per-concept`` neutral stickers (broccoli without a face) and
   ``<happy>`` from the happy emoji faces of the prepared emoji set (``--faces``: another set), learned at
   once by textual inversion; then LoRA adapters on top, trained on both concepts together (``--lora-steps 0``: none).
   ``--compose`` learns all four emotion tokens from the emoji faces, and the LoRA also sees ``--per-concept``
   sad, angry and in-love stickers captioned ``a <sad> <broccoli-sticker> sticker``...: the emotion token
   beside the body token puts that face on the body. No happy sticker is ever shown, so the prompt route
   asks for a composition the model never saw;
2. routes, each drawn ``--n`` times by the token model and by the LoRA model, and judged by the sticker
   judge of ``bench/stickers.py`` (``--stickers/judge``): the share whose top class is ``happy``
   (a happy broccoli sticker):

   - prompt: ``"a <happy> <broccoli-sticker> sticker"`` (both tokens in one prompt);
   - alpha A: ``"a {} sticker"`` with a token mixed from the two, A the share of ``<happy>``
     (``kerasemote.interpolate.add_mixed_token``, slerp), for every A of ``--alphas``;
   - the two concepts alone, for reference.

Writes ``--out/table.json`` (settings, every row: success, predicted classes, spread) and one grid per
row under ``--out/rows/``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

from kerasemote import classification as clf  # noqa: E402
from kerasemote import images as image_io  # noqa: E402
from kerasemote import interpolate  # noqa: E402
from kerasemote.demo.scoring import generate_many  # noqa: E402
from kerasemote.demo.sets import emotion_images  # noqa: E402
from kerasemote.demo.spec import DemoConfig  # noqa: E402
from kerasemote.data.emotions import EMOTION_TOKENS, EMOTION_WORDS  # noqa: E402
from kerasemote.demo.stickers import STICKER_PROMPT, few_stickers, neutral_stickers, row_spread  # noqa: E402
from kerasemote.presets import load_model  # noqa: E402
from kerasemote.training import LoRA, TextualInversion, TrainConfig, train  # noqa: E402

BODY, FACE = "<broccoli-sticker>", "<happy>"
TOKENS = {"neutral": BODY, "happy": FACE}  # concept (label) -> token
INIT = {"neutral": "broccoli", "happy": "happy"}
MIXED = "<mixed>"


def training_set(stickers_dir: str, emoji_dir: str, per_concept: int, size: int, emotions=("happy",)):
    """Neutral stickers (concept ``neutral``) and the emoji faces of ``emotions`` (concepts: the emotions)."""
    body = neutral_stickers(stickers_dir, per_concept, size)
    faces = emotion_images(emoji_dir, size)
    return _joined(body, _subset(faces, [i for i, c in enumerate(faces.concepts) if c in emotions]))


def composed_stickers(stickers_dir: str, per_concept: int, size: int):
    """``per_concept`` stickers of each emotion but happy, captioned ``a {} <broccoli-sticker> sticker`` with
    the emotion's token in ``{}`` (concepts: the emotions)."""
    from dataclasses import replace

    stickers = few_stickers(stickers_dir, per_concept, size)
    keep = [i for i, c in enumerate(stickers.concepts) if c != "happy"]
    return replace(_subset(stickers, keep), captions=((f"a {{}} {BODY} sticker",),) * len(keep))


def _subset(images, keep):
    from kerasemote.training import ImageSet

    return ImageSet(images=images.images[keep], captions=tuple(images.captions[i] for i in keep),
                    concepts=tuple(images.concepts[i] for i in keep), files=tuple(images.files[i] for i in keep))


def _joined(first, second):
    from kerasemote.training import ImageSet

    return ImageSet(images=np.concatenate([first.images, second.images]), captions=first.captions + second.captions,
                    concepts=first.concepts + second.concepts, files=first.files + second.files)


def score(judge, images: np.ndarray, row: dict, out: str) -> dict:
    probs = judge.predict_proba(images)  # (N, C)
    top = probs.argmax(axis=-1)
    names = judge.class_names
    row.update(n=len(images), success=float(np.mean(top == names.index("happy"))),
               predicted={c: int(np.sum(top == i)) for i, c in enumerate(names) if np.any(top == i)},
               spread=round(row_spread(images), 1))
    name = f"{row['model']}-{row['route']}".replace(" ", "_")
    image_io.save_grid(images, os.path.join(out, "rows", f"{name}.png"), cols=8)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stickers", required=True, help="the --out folder of bench/stickers.py (sets and judge)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="kerasemote-tiny")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--per-concept", type=int, default=16, help="neutral stickers learned as the body")
    parser.add_argument("--steps", type=int, default=300, help="textual-inversion steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--lora-steps", type=int, default=400, help="0: no LoRA model")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--lora-learning-rate", type=float, default=2e-3)
    parser.add_argument("--alphas", default="0.25,0.5,0.75", help="shares of <happy> in the mixed token")
    parser.add_argument("--compose", action="store_true",
                        help="four emotion tokens, and the LoRA also learns sad, angry and in-love stickers "
                             "captioned with the emotion token beside the body token")
    parser.add_argument("--faces", help="a prepared set whose labelled emotion faces teach the emotion tokens "
                                        "(default: the emoji set of --stickers; e.g. an emotion-faces set)")
    parser.add_argument("--guidance", type=float, default=DemoConfig.sticker_guidance)
    parser.add_argument("--n", type=int, default=DemoConfig.num_images, help="generations per row")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    judge = clf.load_classifier(os.path.join(args.stickers, "judge"))
    sticker_dir, emoji_dir = os.path.join(args.stickers, "stickers"), args.faces or os.path.join(args.stickers, "emoji")
    tokens, init = dict(TOKENS), dict(INIT)
    if args.compose:
        tokens.update(EMOTION_TOKENS)
        init.update({label: EMOTION_WORDS[label] for label in EMOTION_TOKENS})
    images = training_set(sticker_dir, emoji_dir, args.per_concept, args.size, emotions=tuple(tokens))
    lora_images = _joined(images, composed_stickers(sticker_dir, args.per_concept, args.size)) if args.compose \
        else images
    settings = TrainConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                           seed=args.seed, progress=False)
    timings, start = {}, time.perf_counter()
    model = load_model(args.model)
    train(model, TextualInversion(tokens, init=init), images, settings, os.path.join(args.out, "ti"))
    timings["textual inversion"] = time.perf_counter() - start
    models = {"ti": model}
    if args.lora_steps:
        from kerasemote.embeddings import load_embeddings

        start = time.perf_counter()
        lora_model = load_model(args.model)
        load_embeddings(lora_model, os.path.join(args.out, "ti"))
        train(lora_model, LoRA(rank=args.lora_rank, targets=("attention", "convs"), words=tokens, seed=args.seed),
              lora_images, TrainConfig(steps=args.lora_steps, batch_size=args.batch_size,
                                  learning_rate=args.lora_learning_rate, seed=args.seed, progress=False),
              os.path.join(args.out, "lora"))
        models["lora"] = lora_model
        timings["lora"] = time.perf_counter() - start

    sampling = DemoConfig(num_images=args.n, guidance=args.guidance)
    rows, start = [], time.perf_counter()
    for kind, m in models.items():
        routes = [("prompt", f"a {FACE} {BODY} sticker"), ("body alone", STICKER_PROMPT.format(BODY)),
                  ("face alone", f"a {FACE} emoji")]
        for alpha in (float(a) for a in args.alphas.split(",")):
            interpolate.add_mixed_token(m, BODY, FACE, alpha, name=MIXED)
            rows.append(score(judge, generate_many(m, STICKER_PROMPT.format(MIXED), sampling, seed=args.seed + 1),
                              {"model": kind, "route": f"alpha {alpha:g}", "prompt": STICKER_PROMPT.format(MIXED)},
                              args.out))
        for route, prompt in routes:
            rows.append(score(judge, generate_many(m, prompt, sampling, seed=args.seed + 1),
                              {"model": kind, "route": route, "prompt": prompt}, args.out))
    timings["rows"] = time.perf_counter() - start
    print(f"{'model':5} {'route':12} {'happy broccoli':>14} {'spread':>7}  predicted")
    for row in rows:
        predicted = ", ".join(f"{c} {n}" for c, n in sorted(row["predicted"].items(), key=lambda x: -x[1]))
        print(f"{row['model']:5} {row['route']:12} {row['success']:14.0%} {row['spread']:7.1f}  {predicted}")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    with open(os.path.join(args.out, "table.json"), "w", encoding="utf-8") as f:
        json.dump({"args": vars(args), "rows": rows, "seconds": {k: round(v, 1) for k, v in timings.items()}}, f,
                  indent=2)


if __name__ == "__main__":
    main()
