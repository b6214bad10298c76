"""Score generated images: how often the classifier sees the concept that was asked for."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from kerasemote.classification.images import ImageInput, PathLike, list_labelled_folder, prepare_images
from kerasemote.classification.model import ImageClassifier, class_index
from kerasemote.classification.saving import write_json_atomic

SCORE_CSV = "predictions.csv"
SCORE_JSON = "scores.json"


@dataclass
class ConceptScore:
    """Scores of the images generated for one intended concept.

    Attributes:
        concept: the intended class name.
        num_images: images meant to show it.
        num_success: images whose top class is the concept.
        success_rate: ``num_success / num_images``.
        mean_confidence: mean probability the classifier gives the intended concept.
    """

    concept: str
    num_images: int
    num_success: int
    success_rate: float
    mean_confidence: float


@dataclass
class ImagePrediction:
    """The classifier's verdict on one image (``confidence`` is the top-1 probability)."""

    source: str
    expected: str
    predicted: str
    confidence: float
    expected_probability: float
    correct: bool


@dataclass
class ScoreReport:
    """Result of :func:`score_images`: per-concept scores, per-image predictions, probabilities (N, C)."""

    concepts: list[ConceptScore]
    predictions: list[ImagePrediction]
    class_names: list[str]
    probabilities: np.ndarray

    @property
    def overall_success_rate(self) -> float:
        n = len(self.predictions)
        return sum(p.correct for p in self.predictions) / n if n else 0.0

    def to_dict(self) -> dict:
        return {
            "class_names": self.class_names,
            "overall_success_rate": self.overall_success_rate,
            "concepts": [asdict(c) for c in self.concepts],
        }

    def format_table(self) -> str:
        """Plain-text success-rate table, one row per intended concept."""
        width = max(len("concept"), *(len(c.concept) for c in self.concepts)) if self.concepts else 7
        lines = [f"{'concept':<{width}}  images  success  mean conf"]
        for c in self.concepts:
            lines.append(
                f"{c.concept:<{width}}  {c.num_images:6d}  {c.success_rate:7.1%}  {c.mean_confidence:9.3f}"
            )
        lines.append(f"{'all':<{width}}  {len(self.predictions):6d}  {self.overall_success_rate:7.1%}")
        return "\n".join(lines)

    def to_csv(self) -> str:
        """Every image's prediction, with one probability column per class."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(
            ["source", "expected", "predicted", "confidence", "expected_probability", "correct"]
            + [f"p_{name}" for name in self.class_names]
        )
        for pred, probs in zip(self.predictions, self.probabilities):
            writer.writerow(
                [pred.source, pred.expected, pred.predicted, f"{pred.confidence:.6f}",
                 f"{pred.expected_probability:.6f}", int(pred.correct)]
                + [f"{p:.6f}" for p in probs]
            )
        return buffer.getvalue()


def _expected_list(expected: Union[str, Sequence[str]], n: int) -> list[str]:
    if isinstance(expected, str):
        return [expected] * n
    expected = list(expected)
    if len(expected) != n:
        raise ValueError(f"expected: need one label per image ({n} images), found {len(expected)} labels.")
    return expected


def score_images(
    classifier: ImageClassifier,
    images: ImageInput,
    expected: Union[str, Sequence[str]],
    batch_size: int = 32,
) -> ScoreReport:
    """Classify images and measure, per intended concept, how often it was recognised.

    Args:
        classifier: trained classifier.
        images: uint8 array (N, H, W, 3) or (N, H, W, 4) (e.g. fresh generations),
            a list of image paths, or a folder of images.
        expected: the intended class of every image (one name) or one name per image.
        batch_size: prediction batch size.

    Returns:
        A ScoreReport; concepts appear in the classifier's class order.

    Example:
        >>> report = score_images(clf, generated_uint8, "happy")
        >>> print(report.format_table())
    """
    batch, sources = prepare_images(images, classifier.image_size)
    wanted = _expected_list(expected, len(batch))
    want_idx = np.array([class_index(classifier.class_names, w) for w in wanted], dtype=np.int64)
    probs = classifier.predict_prepared(batch, batch_size)  # (N, C)
    top = np.argmax(probs, axis=-1)
    want_prob = probs[np.arange(len(probs)), want_idx]
    names = classifier.class_names
    predictions = [
        ImagePrediction(src, w, names[t], float(probs[i, t]), float(want_prob[i]), bool(t == want_idx[i]))
        for i, (src, w, t) in enumerate(zip(sources, wanted, top))
    ]
    concepts = _concept_scores(names, want_idx, top, want_prob)
    return ScoreReport(concepts, predictions, list(names), probs)


def _concept_scores(
    class_names: list[str], want_idx: np.ndarray, top: np.ndarray, want_prob: np.ndarray
) -> list[ConceptScore]:
    scores = []
    for c, name in enumerate(class_names):
        mask = want_idx == c
        if not mask.any():
            continue
        hits = int(np.sum(top[mask] == c))
        n = int(mask.sum())
        scores.append(ConceptScore(name, n, hits, hits / n, float(want_prob[mask].mean())))
    return scores


def score_labelled_folder(classifier: ImageClassifier, folder: PathLike, batch_size: int = 32) -> ScoreReport:
    """Score a folder whose subfolder names are the intended concepts."""
    paths, labels = list_labelled_folder(folder)
    return score_images(classifier, paths, labels, batch_size)


def write_score(report: ScoreReport, out_dir: PathLike) -> dict[str, Path]:
    """Write predictions.csv (every image) and scores.json (per concept) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (SCORE_CSV + ".tmp")
    tmp.write_text(report.to_csv(), encoding="utf-8", newline="")
    os.replace(tmp, out / SCORE_CSV)
    write_json_atomic(out / SCORE_JSON, report.to_dict())
    return {"csv": out / SCORE_CSV, "json": out / SCORE_JSON}
