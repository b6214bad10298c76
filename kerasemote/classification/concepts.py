"""The whole loop: generate N images per concept prompt, classify them, report success rates."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

from kerasemote.classification.model import ImageClassifier
from kerasemote.classification.score import ScoreReport, score_images, write_score

if TYPE_CHECKING:
    from kerasemote.model import StableDiffusion


def concept_label(concept: str, class_names: Sequence[str]) -> str:
    """The classifier class a concept is meant to show: ``"<in-love>"`` -> ``"in love"``.

    Placeholder brackets are dropped and ``-``/``_``/space are treated alike, so tokens,
    words and folder names all find their class.
    """
    def key(text: str) -> str:
        return " ".join(text.strip("<>").replace("-", " ").replace("_", " ").lower().split())

    matches = [name for name in class_names if key(name) == key(concept)]
    if not matches:
        raise ValueError(
            f"Concept {concept!r} matches none of the classifier's classes {list(class_names)}; "
            "pass --labels to say which class each concept should show."
        )
    return matches[0]


def evaluate_concepts(
    model: "StableDiffusion",
    classifier: ImageClassifier,
    prompt: str,
    concepts: Sequence[str],
    num_images: int = 16,
    labels: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 4,
    out_dir: str | None = None,
    **generate_kwargs,
) -> ScoreReport:
    """Generate ``num_images`` per concept with ``prompt.format(concept)``, classify, score.

    Args:
        model: the generator (with any embeddings / LoRA already applied).
        classifier: the trained classifier.
        prompt: template with ``{}``, e.g. ``"a {} emoji"``.
        concepts: what fills the template: words (``happy``) or learned tokens (``<happy>``).
        num_images: images per concept.
        labels: the intended class of each concept; by default matched by name.
        seed: first seed; batch ``b`` of concept ``c`` uses ``seed + 1000 * c + b``.
        batch_size: images generated at once.
        out_dir: if given, writes ``<concept>/image_*.png`` and ``<concept>/grid.png``,
            ``predictions.csv`` and ``scores.json``.
        **generate_kwargs: steps, guidance, sampler, height, width...

    Returns:
        The ScoreReport (``format_table()`` prints the success-rate table).
    """
    if "{}" not in prompt:
        raise ValueError(f"The prompt {prompt!r} needs a {{}} where each concept goes, e.g. 'a {{}} emoji'.")
    if labels is not None and len(labels) != len(concepts):
        raise ValueError(f"Got {len(labels)} labels for {len(concepts)} concepts; give one per concept.")
    labels = list(labels) if labels is not None else [concept_label(c, classifier.class_names) for c in concepts]
    all_images, expected = [], []
    for c, (concept, label) in enumerate(zip(concepts, labels)):
        images = []
        for b, start in enumerate(range(0, num_images, batch_size)):
            n = min(batch_size, num_images - start)
            images.append(model.generate(prompt.format(concept), num_images=n, seed=seed + 1000 * c + b,
                                         **generate_kwargs))
        images = np.concatenate(images, axis=0)
        if out_dir is not None:
            _write_concept_images(images, os.path.join(out_dir, concept.strip("<>") or f"concept_{c}"))
        all_images.append(images)
        expected += [label] * len(images)
    report = score_images(classifier, np.concatenate(all_images, axis=0), expected)
    if out_dir is not None:
        write_score(report, out_dir)
    return report


def _write_concept_images(images: np.ndarray, folder: str) -> None:
    from kerasemote import images as image_io

    image_io.save_images(images, folder)
    image_io.save_grid(images, os.path.join(folder, "grid.png"))
