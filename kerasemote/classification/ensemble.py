"""Classifiers made of classifiers: the mean of several, and a gate whose one class a finer one splits.

A ResNet-50 trained from scratch on about a hundred emoji faces changes its mind with its
seed: on the same generated images one run recognised 34 % of the heart-eyes faces, the next
47 % of the crying faces (and each at least 97 % of the other). Averaging the probabilities of a few runs
(:class:`EnsembleClassifier`) keeps what they agree on. A task that mixes an easy split
(face or not) with a hard one (which emotion) is judged by two classifiers
(:class:`GatedClassifier`): the hard one trained on faces only, where the easy classes
cannot pull it off course.

Both are :class:`~kerasemote.classification.model.ImageClassifier` s: score, evaluate and
save them like one network (:mod:`kerasemote.classification.saving` writes each part in a
folder beside a ``labels.json`` that names the kind and the parts).

Example:
    >>> emotions = EnsembleClassifier([load_classifier(f"runs/seed_{i}") for i in range(3)])
    >>> judge = GatedClassifier(load_classifier("runs/gate"), emotions, gate_class="face")
    >>> judge.class_names   # the gate's 'face' split into the four emotions
    ['angry', 'happy', 'in love', 'sad', 'broccoli', 'other']
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kerasemote.classification.model import ImageClassifier


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


