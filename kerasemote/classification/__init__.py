"""ResNet-50 classifier: train on labelled emoji, evaluate, score generated images.

Typical use::

    from kerasemote import classification as clf
    result = clf.train_classifier("by_emotion/", "clf/", clf.ClassifierTrainConfig(weights="none"))
    report = clf.score_images(clf.load_classifier("clf/"), generated_uint8, expected="happy")
    print(report.format_table())
"""

from kerasemote.classification.concepts import concept_label, evaluate_concepts
from kerasemote.classification.ensemble import EnsembleClassifier, GatedClassifier
from kerasemote.classification.evaluate import (
    ClassMetrics,
    EvaluationReport,
    evaluate_and_write,
    evaluate_classifier,
    write_evaluation,
)
from kerasemote.classification.images import (
    LabelledImages,
    list_labelled_folder,
    load_image,
    load_labelled_folder,
    prepare_images,
)
from kerasemote.classification.model import Classifier, ImageClassifier, build_classifier, resolve_backbone_weights
from kerasemote.classification.saving import load_classifier, save_classifier
from kerasemote.classification.score import (
    ConceptScore,
    ImagePrediction,
    ScoreReport,
    score_images,
    score_labelled_folder,
    write_score,
)
from kerasemote.classification.train import (
    ClassifierTrainConfig,
    CompiledNetworks,
    TrainResult,
    balanced_class_weights,
    fit_classifier,
    stratified_split,
    train_classifier,
    train_ensemble,
)

__all__ = [
    "ClassMetrics",
    "Classifier",
    "ClassifierTrainConfig",
    "CompiledNetworks",
    "ConceptScore",
    "EnsembleClassifier",
    "EvaluationReport",
    "GatedClassifier",
    "ImageClassifier",
    "ImagePrediction",
    "LabelledImages",
    "ScoreReport",
    "TrainResult",
    "balanced_class_weights",
    "concept_label",
    "evaluate_concepts",
    "build_classifier",
    "evaluate_and_write",
    "evaluate_classifier",
    "fit_classifier",
    "list_labelled_folder",
    "load_classifier",
    "load_image",
    "load_labelled_folder",
    "prepare_images",
    "resolve_backbone_weights",
    "save_classifier",
    "score_images",
    "score_labelled_folder",
    "stratified_split",
    "train_classifier",
    "train_ensemble",
    "write_evaluation",
    "write_score",
]
