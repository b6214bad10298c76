"""Evaluate a classifier on a labelled set: accuracy, per-class precision/recall, figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from kerasemote.classification.images import LabelledImages, PathLike, load_labelled_folder
from kerasemote.classification.model import ImageClassifier
from kerasemote.classification.plots import plot_confusion_matrix, plot_image_grid
from kerasemote.classification.saving import write_json_atomic

REPORT_FILE = "evaluation.json"
CONFUSION_PLOT = "confusion_matrix.png"
MISCLASSIFIED_PLOT = "misclassified.png"


@dataclass
class ClassMetrics:
    """Precision, recall and support of one class (precision is 0 when never predicted)."""

    name: str
    precision: float
    recall: float
    support: int


@dataclass
class EvaluationReport:
    """Result of :func:`evaluate_classifier`.

    Attributes:
        accuracy: share of images whose top class is the true class.
        per_class: one ClassMetrics per class, in class order.
        confusion: counts (C, C); rows are true classes, columns predictions.
        class_names: class order of ``confusion``.
        true: true label index per image (N,).
        predicted: predicted label index per image (N,).
        confidence: top-1 probability per image (N,).
        sources: where each image came from.
    """

    accuracy: float
    per_class: list[ClassMetrics]
    confusion: np.ndarray
    class_names: list[str]
    true: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready summary plus every misclassified image."""
        wrong = np.flatnonzero(self.true != self.predicted)
        return {
            "accuracy": self.accuracy,
            "num_images": int(len(self.true)),
            "class_names": self.class_names,
            "per_class": [vars(m) for m in self.per_class],
            "confusion_matrix": self.confusion.tolist(),
            "misclassified": [
                {
                    "source": self.sources[i] if self.sources else f"#{i}",
                    "true": self.class_names[self.true[i]],
                    "predicted": self.class_names[self.predicted[i]],
                    "confidence": float(self.confidence[i]),
                }
                for i in wrong
            ],
        }

    def format_table(self) -> str:
        """Plain-text table: one row per class, then overall accuracy."""
        width = max(len("class"), *(len(n) for n in self.class_names))
        lines = [f"{'class':<{width}}  precision  recall  support"]
        for m in self.per_class:
            lines.append(f"{m.name:<{width}}  {m.precision:9.3f}  {m.recall:6.3f}  {m.support:7d}")
        lines.append(f"accuracy {self.accuracy:.3f} on {len(self.true)} images")
        return "\n".join(lines)


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (C, C): entry [i, j] is how many images of class i were predicted as j."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    return matrix


def per_class_metrics(matrix: np.ndarray, class_names: list[str]) -> list[ClassMetrics]:
    """Precision and recall per class from a confusion matrix (0 where undefined)."""
    hits = np.diag(matrix)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    return [
        ClassMetrics(
            name=name,
            precision=float(hits[c] / predicted[c]) if predicted[c] else 0.0,
            recall=float(hits[c] / support[c]) if support[c] else 0.0,
            support=int(support[c]),
        )
        for c, name in enumerate(class_names)
    ]


def as_labelled_set(classifier: ImageClassifier, data: Union[PathLike, LabelledImages]) -> LabelledImages:
    """Load a labelled folder in the classifier's class order, or check a LabelledImages' classes."""
    if not isinstance(data, LabelledImages):
        return load_labelled_folder(data, classifier.image_size, classifier.class_names)
    if data.class_names != classifier.class_names:
        raise ValueError(
            f"Evaluation classes {data.class_names} differ from the classifier's {classifier.class_names}."
        )
    return data


def evaluate_classifier(
    classifier: ImageClassifier, data: Union[PathLike, LabelledImages], batch_size: int = 32
) -> EvaluationReport:
    """Classify a labelled set and measure accuracy and per-class precision/recall.

    Args:
        classifier: trained classifier.
        data: labelled folder (subfolder names must be among the classifier's
            classes) or a LabelledImages with the same class order.
        batch_size: prediction batch size.
    """
    data = as_labelled_set(classifier, data)
    probs = classifier.predict_proba(data.images, batch_size)  # (N, C), brought to the classifier's size
    predicted = np.argmax(probs, axis=-1)
    matrix = confusion_matrix(data.labels, predicted, len(classifier.class_names))
    return EvaluationReport(
        accuracy=float(np.mean(predicted == data.labels)) if len(predicted) else 0.0,
        per_class=per_class_metrics(matrix, classifier.class_names),
        confusion=matrix,
        class_names=list(classifier.class_names),
        true=np.asarray(data.labels),
        predicted=predicted,
        confidence=probs.max(axis=-1),
        sources=list(data.sources),
    )


def evaluate_and_write(
    classifier: ImageClassifier, data: Union[PathLike, LabelledImages], out_dir: PathLike
) -> EvaluationReport:
    """:func:`evaluate_classifier`, then :func:`write_evaluation` into ``out_dir``."""
    data = as_labelled_set(classifier, data)
    report = evaluate_classifier(classifier, data)
    write_evaluation(report, data.images, out_dir)
    return report


def write_evaluation(
    report: EvaluationReport, images: np.ndarray, out_dir: PathLike, max_examples: int = 36
) -> dict[str, Path]:
    """Write evaluation.json, confusion_matrix.png and misclassified.png.

    Args:
        report: from :func:`evaluate_classifier`.
        images: the evaluated uint8 images (N, S, S, 3), for the misclassified grid.
        out_dir: folder, created if needed.
        max_examples: most misclassified images shown.

    Returns:
        Paths of the written files by kind (``report``, ``confusion``, ``misclassified``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / REPORT_FILE, report.to_dict())
    wrong = np.flatnonzero(report.true != report.predicted)[:max_examples]
    names = report.class_names
    titles = [
        f"{names[report.true[i]]} -> {names[report.predicted[i]]} ({report.confidence[i]:.2f})" for i in wrong
    ]
    return {
        "report": out / REPORT_FILE,
        "confusion": plot_confusion_matrix(report.confusion, names, out / CONFUSION_PLOT),
        "misclassified": plot_image_grid(images[wrong], titles, out / MISCLASSIFIED_PLOT),
    }
