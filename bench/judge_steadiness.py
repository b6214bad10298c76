"""How steady is the demo's judge? One 6-class ResNet-50 vs the gate + averaged emotion networks.

    kerasemote demo --out demo
    python bench/judge_steadiness.py --demo demo --seeds 10 20

Trains both kinds of judge from each seed on the demo's own data (``demo/data``, as
``kerasemote demo`` does: ResNet-50s from scratch, 30 epochs) and scores the generations the
demo saved (``demo/scores/*``), so every judge sees the very same images. Prints, per prompt,
each judge's success rate and each design's spread over seeds (max - min), then the lowest
emotion row of each judge. About 2 minutes per single judge and 7 per gated judge on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

from kerasemote import classification as clf  # noqa: E402
from kerasemote import demo  # noqa: E402

SPLITS = ("train", "validation")


def single_judge(data_dir: str, concept_set, config: demo.DemoConfig) -> clf.Classifier:
    """The one-network judge: one network on the four emotions' faces, the concept and ``other`` emoji."""
    emotions = demo.judge_emotion_set(data_dir, config.size, SPLITS)
    rest = demo.judge_gate_set(data_dir, concept_set, config.concept, config.size, SPLITS, faces=0,
                               other=config.judge_other, seed=config.seed)  # no face: the concept and other
    shift = len(emotions.class_names) - 1  # rest's classes are (face, concept, other); face is empty
    data = clf.LabelledImages(np.concatenate([emotions.images, rest.images]),
                              np.concatenate([emotions.labels, rest.labels + shift]),
                              emotions.class_names + rest.class_names[1:], emotions.sources + rest.sources)
    settings = clf.ClassifierTrainConfig(image_size=config.size, weights="none", epochs=config.classifier_epochs,
                                         patience=config.classifier_epochs, val_fraction=0.0, seed=config.seed)
    return clf.fit_classifier(data, settings, verbose=0)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", required=True, help="output folder of a finished `kerasemote demo`")
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 20])
    args = parser.parse_args()
    summary = json.load(open(os.path.join(args.demo, "demo.json"), encoding="utf-8"))
    data_dir = summary["config"]["data"] or os.path.join(args.demo, "data")
    rows = [(s["prompt"], s["kind"], s["intended"], os.path.join(args.demo, s["folder"])) for s in summary["scores"]]
    rates: dict[str, dict[int, list[float]]] = {"single": {}, "gated": {}}
    for seed in args.seeds:
        config = demo.DemoConfig(seed=seed, progress=False)
        concept_set = demo.concept_images(data_dir, config.concept, config.size, config.max_concept_images)
        for design in rates:
            started = time.time()
            if design == "single":
                judge = single_judge(data_dir, concept_set, config)
            else:
                with tempfile.TemporaryDirectory() as folder:
                    judge = demo.train_judge(data_dir, concept_set, folder, config, {}, log=lambda message: None)
            rates[design][seed] = [clf.score_images(judge, folder, intended).concepts[0].success_rate
                                   for _, _, intended, folder in rows]
            print(f"{design} judge, seed {seed}: trained in {time.time() - started:.0f} s", flush=True)

    seeds = args.seeds
    head = " ".join(f"{d[:6]} s{s:<3}" for d in rates for s in seeds)
    print(f"\n{'prompt':<40} {head}  spread single  spread gated")
    for r, (prompt, kind, _, _) in enumerate(rows):
        label = demo.row_label(prompt, kind)
        cells = " ".join(f"{rates[d][s][r]:9.0%}" for d in rates for s in seeds)
        spread = [max(rates[d][s][r] for s in seeds) - min(rates[d][s][r] for s in seeds) for d in rates]
        print(f"{label:<40} {cells}  {spread[0]:13.0%}  {spread[1]:12.0%}")
    emotion_rows = [r for r, (_, kind, _, _) in enumerate(rows) if kind in ("words", "token")]
    for design in rates:
        lowest = {s: min(rates[design][s][r] for r in emotion_rows) for s in seeds}
        print(f"lowest emotion row, {design}: " + ", ".join(f"seed {s} {v:.0%}" for s, v in lowest.items()))


if __name__ == "__main__":
    main()
