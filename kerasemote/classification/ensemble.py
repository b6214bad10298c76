"""Classifiers made of classifiers: the mean of several, and a gate whose one class a finer one splits.

A ResNet-50 trained from scratch on about a hundred emoji faces changes its mind with its
seed: on the same generated images one run recognised 34 % of the heart-eyes faces, the next
47 % of the crying faces (and each at least 97 % of the other). Averaging the probabilities of a few runs
(:class:`EnsembleClassifier`) keeps what they agree on. A task that mixes an easy split
(face or not) with a hard one (which emotion) is judged by two classifiers
(:class:`GatedClassifier`): the hard one trained on faces only, where the easy classes
cannot pull it off course.

Both are :class:`~kerasemote.classification.model.ImageClassifier` s: score, evaluate and
save them like one network. On disk each part is a folder beside a ``labels.json`` that
names the kind and the parts.

Example:
    >>> emotions = EnsembleClassifier([load_classifier(f"runs/seed_{i}") for i in range(3)])
    >>> judge = GatedClassifier(load_classifier("runs/gate"), emotions, gate_class="face")
    >>> judge.class_names   # the gate's 'face' split into the four emotions
    ['angry', 'happy', 'in love', 'sad', 'broccoli', 'other']
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from kerasemote.classification.images import PathLike
from kerasemote.classification.model import (
    LABELS_FILE,
    ImageClassifier,
    load_network,
    read_labels,
    save_classifier,
    write_json_atomic,
)
from kerasemote.classification.train import ClassifierTrainConfig, TrainData, train_classifier

ENSEMBLE_KIND = "ensemble"
GATED_KIND = "gated"
_MAX_DEPTH = 4  # parts inside parts; a deeper file is refused rather than followed


class EnsembleClassifier(ImageClassifier):
    """The mean of the class probabilities of several classifiers with the same classes.

    Args:
        members: classifiers with equal ``class_names`` (same order) and ``image_size``.
    """

    def __init__(self, members: Sequence[ImageClassifier]):
        members = list(members)
        if not members:
            raise ValueError("An ensemble needs at least one member.")
        first = members[0]
        for i, member in enumerate(members[1:], start=1):
            if list(member.class_names) != list(first.class_names):
                raise ValueError(f"Ensemble member {i} has classes {list(member.class_names)}; member 0 has "
                                 f"{list(first.class_names)}; expected the same classes in the same order.")
            if member.image_size != first.image_size:
                raise ValueError(f"Ensemble member {i} takes {member.image_size} px images; member 0 takes "
                                 f"{first.image_size} px; expected one size.")
        self.members = members

    @property
    def class_names(self) -> list[str]:
        return list(self.members[0].class_names)

    @property
    def image_size(self) -> int:
        return self.members[0].image_size

    def predict_prepared(self, batch: np.ndarray, batch_size: int = 32) -> np.ndarray:
        return np.mean([m.predict_prepared(batch, batch_size) for m in self.members], axis=0, dtype=np.float32)


class GatedClassifier(ImageClassifier):
    """A coarse classifier whose class ``gate_class`` a finer classifier splits.

    ``P(c) = P_gate(gate_class) * P_expert(c)`` for each expert class ``c``; every other gate
    class keeps its own probability, so each row still sums to one. The expert's classes
    take the gate class's place: gate (face, broccoli, other) and expert (angry, happy,
    in love, sad) give (angry, happy, in love, sad, broccoli, other).

    Args:
        gate: the coarse classifier.
        expert: the classifier of what ``gate_class`` holds.
        gate_class: the gate's class the expert splits.
    """

    def __init__(self, gate: ImageClassifier, expert: ImageClassifier, gate_class: str):
        if gate_class not in gate.class_names:
            raise ValueError(f"The gate has no class {gate_class!r} to split; its classes: {list(gate.class_names)}.")
        if gate.image_size != expert.image_size:
            raise ValueError(f"The gate takes {gate.image_size} px images and the expert {expert.image_size} px; "
                             "expected one size.")
        kept = [c for c in gate.class_names if c != gate_class]
        shared = sorted(set(kept) & set(expert.class_names))
        if shared:
            raise ValueError(f"Classes {shared} are both the gate's and the expert's; expected distinct names.")
        self.gate, self.expert, self.gate_class = gate, expert, gate_class
        self._at = list(gate.class_names).index(gate_class)

    @property
    def class_names(self) -> list[str]:
        names = list(self.gate.class_names)
        return names[:self._at] + list(self.expert.class_names) + names[self._at + 1:]

    @property
    def image_size(self) -> int:
        return self.gate.image_size

    def predict_prepared(self, batch: np.ndarray, batch_size: int = 32) -> np.ndarray:
        gate = self.gate.predict_prepared(batch, batch_size)  # (N, G)
        expert = self.expert.predict_prepared(batch, batch_size)  # (N, E)
        at = self._at
        return np.concatenate([gate[:, :at], gate[:, at:at + 1] * expert, gate[:, at + 1:]], axis=1)


def _parts(classifier: ImageClassifier) -> tuple[str, dict[str, ImageClassifier], dict]:
    if isinstance(classifier, EnsembleClassifier):
        return ENSEMBLE_KIND, {f"member_{i}": m for i, m in enumerate(classifier.members)}, {}
    if isinstance(classifier, GatedClassifier):
        return GATED_KIND, {"gate": classifier.gate, "expert": classifier.expert}, {"gate_class": classifier.gate_class}
    raise TypeError(f"Cannot save a {type(classifier).__name__}; expected a Classifier, an EnsembleClassifier "
                    "or a GatedClassifier.")


def save_composite(classifier: ImageClassifier, out_dir: PathLike, extra: dict | None = None) -> Path:
    """Write each part into its own folder of ``out_dir``, then the ``labels.json`` that names them.

    The labels file comes last, so an interrupted save leaves no folder that loads half a judge.
    """
    _, parts, _ = _parts(classifier)
    for name, part in parts.items():
        save_classifier(part, Path(out_dir) / name)
    return write_composite_labels(classifier, out_dir, extra)


def write_composite_labels(classifier: ImageClassifier, out_dir: PathLike, extra: dict | None = None) -> Path:
    """Write only the ``labels.json`` that names the parts (already saved in their folders)."""
    kind, parts, facts = _parts(classifier)
    out = Path(out_dir)
    meta = {"class_names": classifier.class_names, "image_size": classifier.image_size, "kind": kind,
            "parts": list(parts), **facts}
    meta.update(extra or {})
    write_json_atomic(out / LABELS_FILE, meta)
    return out


def train_ensemble(data: TrainData, out_dir: PathLike, config: ClassifierTrainConfig, members: int,
                   val_data: TrainData | None = None, verbose: int | str = "auto") -> EnsembleClassifier:
    """Train ``members`` classifiers, seeds ``config.seed``, ``config.seed + 1``..., saved as one ensemble.

    Each member is a whole :func:`~kerasemote.classification.train.train_classifier` run in
    ``out_dir/member_<i>`` (model, labels, history plot; its own validation split when one is
    held out); ``out_dir/labels.json``, written last, makes the folder load as one classifier.

    Example:
        >>> judge = train_ensemble("by_emotion/", "judge/", ClassifierTrainConfig(weights="none"), members=3)
    """
    if members < 1:
        raise ValueError(f"An ensemble needs at least one member, found members={members}.")
    trained = [train_classifier(data, Path(out_dir) / f"member_{i}", replace(config, seed=config.seed + i),
                                val_data, verbose).classifier
               for i in range(members)]
    ensemble = EnsembleClassifier(trained)
    write_composite_labels(ensemble, out_dir, {"train_config": asdict(config),
                                               "seeds": [config.seed + i for i in range(members)]})
    return ensemble


def load_composite(model_dir: PathLike, meta: dict, depth: int = 0) -> ImageClassifier:
    """Rebuild a classifier written by :func:`save_composite` from its folder and parsed labels.json."""
    model_dir = Path(model_dir)
    labels = os.fspath(model_dir / LABELS_FILE)
    if depth >= _MAX_DEPTH:
        raise ValueError(f"Label file {labels!r} nests parts more than {_MAX_DEPTH} deep.")
    kind = meta.get("kind")
    parts = meta.get("parts")
    expected_parts = {ENSEMBLE_KIND: None, GATED_KIND: ["gate", "expert"]}
    if kind not in expected_parts:
        raise ValueError(f"Label file {labels!r}: key 'kind' is {kind!r}; expected one of {sorted(expected_parts)}.")
    if (not isinstance(parts, list) or not parts or not all(_is_plain_name(p) for p in parts)
            or (expected_parts[kind] is not None and parts != expected_parts[kind])):
        want = expected_parts[kind] or "a non-empty list of sub-folder names"
        raise ValueError(f"Label file {labels!r}: key 'parts' is {parts!r}; expected {want}.")
    loaded = [_load_part(model_dir / p, depth + 1) for p in parts]
    if kind == ENSEMBLE_KIND:
        classifier: ImageClassifier = EnsembleClassifier(loaded)
    else:
        gate_class = meta.get("gate_class")
        if not isinstance(gate_class, str):
            raise ValueError(f"Label file {labels!r}: key 'gate_class' is {gate_class!r}; expected a class name.")
        classifier = GatedClassifier(loaded[0], loaded[1], gate_class)
    if classifier.class_names != meta["class_names"]:
        raise ValueError(f"Label file {labels!r}: key 'class_names' is {meta['class_names']}, but its parts give "
                         f"{classifier.class_names}; expected the same.")
    return classifier


def _load_part(folder: Path, depth: int) -> ImageClassifier:
    meta = read_labels(folder / LABELS_FILE)
    return load_composite(folder, meta, depth) if "kind" in meta else load_network(folder, meta)


def _is_plain_name(part: object) -> bool:
    # A part is a folder right inside the judge's folder: no separators, no way up.
    return isinstance(part, str) and part not in ("", ".", "..") and "/" not in part and "\\" not in part
