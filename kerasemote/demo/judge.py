"""The demo's judge: what its networks learn, training the gated judge, and its held-out accuracy.

The judge is a ResNet-50 gate (face / the concept / other emoji) whose ``face`` class is split
by ResNet-50s trained on the four emotions' faces alone, their probabilities averaged.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Sequence

import numpy as np

from kerasemote.data.emotions import EMOTION_PROMPTS
from kerasemote.demo.result import DemoResult
from kerasemote.demo.sets import count_names, is_concept
from kerasemote.demo.spec import FACE_CLASS, OTHER_CLASS, DemoConfig, concept_slug

# Images per step of every judge network: small images and few layers per image make a step cheap, and
# 64 a step run about three times as many images a second as 16 on a 2-core CPU.
JUDGE_BATCH_SIZE = 64


def judge_emotion_set(data_dir: str, size: int, splits: Sequence[str],
                      drawn: Sequence[tuple[str, str]] = ()):
    """The four-emotion faces of ``splits``, and the ``drawn`` (file, label) faces: what each emotion
    judge learns (classes in sorted order)."""
    from kerasemote.data import read_metadata

    rows = [r for r in read_metadata(data_dir) if r.get("label") in EMOTION_PROMPTS and r.get("split") in splits]
    classes = sorted(EMOTION_PROMPTS)
    faces = [(os.path.join(data_dir, r["file"]), r["label"]) for r in rows] + list(drawn)
    return _labelled([f for f, _ in faces], [classes.index(label) for _, label in faces], classes, size)


def labelled_rows(data_dir: str, splits: Sequence[str], per_class: int | None,
                  labels: Sequence[str]) -> list[tuple[str, str]]:
    """(file, label) of the first ``per_class`` rows of each of ``labels`` in ``splits`` of a prepared
    directory (a drawn set: emotion-faces, broccoli-stickers); ``None``: all of them."""
    from kerasemote.data import read_metadata

    rows = [r for r in read_metadata(data_dir) if r.get("split") in splits]
    return [(os.path.join(data_dir, r["file"]), label) for label in labels
            for r in [r for r in rows if r.get("label") == label][:per_class]]


def judge_gate_set(data_dir: str, concept_set, concept: str, size: int, splits: Sequence[str],
                   faces: int | None = None, other: int = 0, seed: int = 0,
                   drawn_faces: Sequence[str] = ()):
    """What the gate learns: ``face``, the concept, and (with ``other`` > 0) ``other``.

    ``face`` holds the four-emotion faces of ``splits`` (``faces``: a seeded draw of that many,
    round robin over the emotions so that the rare ones are all in); the concept
    class (the concept's slug, ``broccoli``) all of its images; ``other`` that many images of
    the other emoji of ``splits`` (:func:`other_emoji_rows`: no face, person or hand; not the
    concept), so that a generation that is neither has a class of its own instead of landing on
    the nearer of the two.
    ``drawn_faces`` (files) join the ``face`` class.
    """
    from kerasemote.data import read_metadata

    metadata = read_metadata(data_dir)
    rng = np.random.default_rng(seed)
    face_rows = [r for r in metadata if r.get("label") in EMOTION_PROMPTS and r.get("split") in splits]
    # As even a draw over the four emotions as their counts allow: a plain draw of 60 could hold
    # few of the 15 angry faces, and the gate then calls red angry faces "other".
    groups = [rng.permutation([i for i, r in enumerate(face_rows) if r["label"] == label])
              for label in sorted(EMOTION_PROMPTS)]
    # faces=None keeps them all.
    picked = sorted([g[k] for k in range(max(map(len, groups))) for g in groups if k < len(g)][:faces])
    classes = [FACE_CLASS, concept_slug(concept)]
    files = [os.path.join(data_dir, face_rows[i]["file"]) for i in picked] + list(drawn_faces)
    labels = [0] * len(files)
    files += list(concept_set.files)
    labels += [1] * len(concept_set)
    pool = other_emoji_rows(metadata, concept, concept_set.files, splits) if other else []
    if pool:  # no class without an image
        drawn = rng.choice(len(pool), size=min(other, len(pool)), replace=False)
        classes.append(OTHER_CLASS)
        files += [os.path.join(data_dir, pool[i]["file"]) for i in sorted(drawn)]
        labels += [len(classes) - 1] * len(drawn)
    return _labelled(files, labels, classes, size)


def _labelled(files: Sequence[str], labels: Sequence[int], classes: list[str], size: int):
    from kerasemote.classification import LabelledImages
    from kerasemote.classification.images import load_image

    if not files:
        raise ValueError(f"No images for the judge's classes {classes}.")
    images = np.stack([load_image(f, size) for f in files])  # (N, S, S, 3)
    return LabelledImages(images, np.asarray(labels, np.int64), classes, list(files))


# Skin-tone modifiers: an emoji that takes one is a person or a body part (Unicode's Emoji_Modifier_Base).
_SKIN_TONES = frozenset(map(chr, range(0x1F3FB, 0x1F400)))
_EMOTICONS = range(0x1F600, 0x1F650)  # the Emoticons block: smileys, cat faces, monkeys, gesturing people
# Faces and people that take no skin tone and have no "face" in their names: Unicode's face-costume subgroup
# (ogre, goblin, ghost, alien, alien monster, robot, skull, skull and crossbones, pile of poo), exploding head,
# and people: family, genie, zombie, people hugging, person fencing, bust and busts in silhouette, speaking head.
_TONELESS_FACES = frozenset(map(chr, (0x1F479, 0x1F47A, 0x1F47B, 0x1F47D, 0x1F47E, 0x1F916, 0x1F480, 0x2620, 0x1F4A9,
                                      0x1F92F, 0x1F46A, 0x1F9DE, 0x1F9DF, 0x1FAC2, 0x1F93A, 0x1F464, 0x1F465,
                                      0x1F5E3)))


def other_emoji_rows(metadata: Sequence[dict], concept: str, concept_files: Sequence[str],
                     splits: Sequence[str]) -> list[dict]:
    """Rows of ``splits`` that show no face or person and are not the concept.

    Left out: labelled faces, names with "face", emoji of the Emoticons block (cat faces, monkeys,
    gesturing people), faces and people that take no skin tone (ogre, ghost, robot, skull, zombie,
    family...), and people and body parts:
    every emoji holding a character that carries a skin tone anywhere in ``metadata`` (``man``
    in ``man: bald`` and in the family sequences). Those draw heads and faces; as ``other`` they
    taught the gate that a face in another colour is not a face.
    """
    taken = {os.path.basename(f) for f in concept_files}
    # The character each skin tone follows: the person or body part it colours.
    toned = {emoji[i - 1] for emoji in (str(r.get("emoji") or "") for r in metadata)
             for i, ch in enumerate(emoji) if ch in _SKIN_TONES and i > 0}
    people = toned | _SKIN_TONES | _TONELESS_FACES

    def shows_a_person(row: dict) -> bool:
        emoji = str(row.get("emoji") or "")
        return any(ch in people or ord(ch) in _EMOTICONS for ch in emoji)

    return [r for r in metadata
            if r.get("split") in splits and r.get("label") is None
            and "face" not in str(r.get("description", "")).lower() and not shows_a_person(r)
            and not is_concept(r, concept) and os.path.basename(r["file"]) not in taken]


def held_out_faces(data_dir: str, class_names: Sequence[str], size: int):
    """Test-split faces of the four emotions in the judge's class order, or None if there are none."""
    from kerasemote.classification import LabelledImages, concept_label
    from kerasemote.classification.images import load_image
    from kerasemote.data import read_metadata

    rows = [r for r in read_metadata(data_dir) if r.get("label") in EMOTION_PROMPTS and r.get("split") == "test"]
    if not rows:
        return None
    labels = [list(class_names).index(concept_label(r["label"], class_names)) for r in rows]
    files = [os.path.join(data_dir, r["file"]) for r in rows]
    return LabelledImages(np.stack([load_image(f, size) for f in files]), np.asarray(labels, np.int64),
                          list(class_names), files)


def judge_for_run(data_dir: str, concept_set, out_dir: str, config: DemoConfig, result: DemoResult,
                  log: Callable[[str], None], faces_dir: str | None = None, networks=None):
    """The run's judge: ``config.classifier`` loaded, or one trained into ``out_dir/classifier``.

    Either way it is evaluated on the held-out faces (real, and drawn from ``faces_dir``);
    ``result`` records what was done; ``networks``: a ``CompiledNetworks`` shared by the run's judges.
    """
    from kerasemote import classification as clf

    if config.classifier:
        log(f"  loading the judge {config.classifier}")
        classifier = clf.load_classifier(config.classifier)
        result.judge.update(source=config.classifier)
    else:
        judge_dir = os.path.join(out_dir, "classifier")
        classifier = train_judge(data_dir, concept_set, judge_dir, config, result.judge, log, faces_dir, networks)
        result.files["classifier_history"] = os.path.relpath(os.path.join(judge_dir, "history.png"), out_dir)
    result.judge["class_names"] = list(classifier.class_names)
    _evaluate_judge(classifier, data_dir, out_dir, result, log)
    if faces_dir and all(label in classifier.class_names for label in EMOTION_PROMPTS):
        pairs = labelled_rows(faces_dir, ("test",), None, list(EMOTION_PROMPTS))
        evaluate_held_out(classifier, pairs, "drawn faces", out_dir, result, log)
    return classifier


def judge_settings(config: DemoConfig, epochs: int, seed: int, size: int | None = None):
    """How every judge network trains: from scratch at ``size`` px (default ``config.judge_size``), ``epochs``
    epochs without early stopping or a validation split, seeded by ``seed``."""
    from kerasemote import classification as clf

    return clf.ClassifierTrainConfig(image_size=size or config.judge_size, weights="none", epochs=epochs,
                                     batch_size=JUDGE_BATCH_SIZE, val_fraction=0.0, patience=epochs, seed=seed)


def fit_checked_judge(train, test, epochs: int, config: DemoConfig, folder: str, name: str, result: DemoResult,
                      log: Callable[[str], None], networks=None, members: int = 1, size: int | None = None):
    """``members`` ResNet-50s from scratch at ``size`` px (default ``config.judge_size``; the images of ``train``
    and ``test`` at that size) on ``train`` (LabelledImages), one seed each
    (``config.seed + k``), their probabilities averaged (one network alone, for ``members=1``); saved to
    ``folder`` and checked on the held-out ``test``: ``result.judge["held_out"][name]`` gets its accuracy, and
    ``(judge, seconds)`` comes back. ``networks``: a ``CompiledNetworks`` shared by the run's judges."""
    from kerasemote import classification as clf

    counts = count_names([train.class_names[i] for i in train.labels])
    nets = "ResNet-50" if members == 1 else f"{members} ResNet-50s (one seed each, averaged)"
    size = size or config.judge_size
    log(f"  {name} judge: {nets} from scratch at {size} px, {len(train.labels)} images {counts}, {epochs} epochs")
    started = time.perf_counter()
    trained = []
    for k in range(members):
        settings = judge_settings(config, epochs, config.seed + k, size)
        trained.append(clf.fit_classifier(train, settings, verbose=0, networks=networks)[0])
    judge = trained[0] if members == 1 else clf.EnsembleClassifier(trained)
    seconds = round(time.perf_counter() - started, 1)
    clf.save_classifier(judge, folder)
    report = clf.evaluate_and_write(judge, test, os.path.join(folder, "evaluation"))
    held = record_held_out(result, name, report.accuracy, [test.class_names[i] for i in test.labels])
    log(f"    {seconds:.0f} s; accuracy on {len(test.labels)} held-out images {held}: {report.accuracy:.1%}")
    return judge, seconds


def record_held_out(result: DemoResult, name: str, accuracy: float, labels: Sequence[str]) -> dict[str, int]:
    """Record one judge's check on held-out images as ``result.judge["held_out"][name]`` (images, accuracy,
    images per class); the per-class counts come back for the log."""
    counts = count_names(labels)
    result.judge.setdefault("held_out", {})[name] = {"images": len(labels), "accuracy": accuracy, "classes": counts}
    return counts


def evaluate_held_out(classifier, pairs: Sequence[tuple[str, str]], name: str, out_dir: str, result: DemoResult,
                      log: Callable[[str], None]) -> None:
    """Evaluate ``classifier`` on (file, class) pairs held out of its training; record it as
    ``result.judge["held_out"][name]`` (accuracy, images per class) and write the confusion matrix to
    ``out_dir/classifier/evaluation/<name>/``."""
    from kerasemote import classification as clf

    classes = list(classifier.class_names)
    test = _labelled([f for f, _ in pairs], [classes.index(c) for _, c in pairs], classes, classifier.image_size)
    folder = os.path.join(out_dir, "classifier", "evaluation", name.replace(" ", "-"))
    report = clf.evaluate_and_write(classifier, test, folder)
    counts = record_held_out(result, name, report.accuracy, [c for _, c in pairs])
    log(f"  judge accuracy on {len(pairs)} held-out {name} {counts}: {report.accuracy:.1%}")


def train_judge(data_dir: str, concept_set, judge_dir: str, config: DemoConfig, facts: dict | None = None,
                log: Callable[[str], None] = print, faces_dir: str | None = None, networks=None):
    """Train the demo's judge from scratch and save it to ``judge_dir`` (``--classifier`` reloads it).

    The judge is a ResNet-50 gate (face / the concept / other) whose ``face`` class is split by
    ``config.judge_members`` ResNet-50s trained on the four emotions' faces alone, each from its
    own seed, their probabilities averaged: P(angry) = P(face) * mean P(angry | face). One
    network for all six classes and one seed was unsteady: five trainings scored the same
    plainly angry faces 28 to 69 % "angry" (docs/classifier.md).

    ``faces_dir`` (a prepared emotion-faces set) adds ``config.judge_drawn_faces`` drawn faces of
    each emotion to the face class and to the emotion networks.

    Args:
        facts: filled with what was trained (runs, images, epochs, seconds).
        networks: a ``kerasemote.classification.CompiledNetworks`` its networks train in (traced once).

    Returns:
        The judge (a GatedClassifier) with classes (four emotions, the concept, ``other``).
    """
    from kerasemote import classification as clf
    from kerasemote.classification.plots import plot_histories

    facts = {} if facts is None else facts
    splits = ("train", "validation")
    drawn = labelled_rows(faces_dir, splits, config.judge_drawn_faces, list(EMOTION_PROMPTS)) if faces_dir else []
    emotions = judge_emotion_set(data_dir, config.judge_size, splits, drawn)
    gate_set = judge_gate_set(data_dir, concept_set, config.concept, config.judge_size, splits,
                              faces=config.judge_faces, other=config.judge_other, seed=config.seed,
                              drawn_faces=[f for f, _ in drawn])
    runs = [("gate", gate_set, config.seed)]
    runs += [(f"emotions {i + 1}", emotions, config.seed + i) for i in range(config.judge_members)]
    trained, histories, facts["runs"] = {}, {}, {}
    for r, (name, data, seed) in enumerate(runs):
        counts = count_names([data.class_names[i] for i in data.labels])
        log(f"  judge {r + 1}/{len(runs)}, {name}: ResNet-50 from scratch, {len(data.labels)} images {counts}, "
            f"{config.classifier_epochs} epochs, seed {seed}")
        settings = judge_settings(config, config.classifier_epochs, seed)
        started = time.perf_counter()
        bar = _epoch_bar(f"judge {r + 1}/{len(runs)}", config.classifier_epochs, config.progress)
        trained[name], histories[name], _, _ = clf.fit_classifier(data, settings, verbose=0, callbacks=[bar],
                                                                  networks=networks)
        bar.close()
        facts["runs"][name] = {"images": counts, "seed": seed, "seconds": round(time.perf_counter() - started, 1),
                               "final_train_accuracy": histories[name].get("accuracy", [None])[-1]}
        log(f"    {facts['runs'][name]['seconds']:.0f} s, training accuracy "
            f"{facts['runs'][name]['final_train_accuracy']:.0%}")
    members = [trained[name] for name, _, _ in runs[1:]]
    judge = clf.GatedClassifier(trained["gate"], clf.EnsembleClassifier(members), FACE_CLASS)
    clf.save_classifier(judge, judge_dir, {"histories": histories})
    plot_histories(histories, os.path.join(judge_dir, "history.png"))
    facts.update(source="trained", epochs=config.classifier_epochs, members=config.judge_members)
    return judge


def _epoch_bar(desc: str, epochs: int, enabled: bool):
    """A Keras callback that moves a tqdm bar one step per epoch; ``close()`` ends the bar."""
    import keras
    from tqdm.auto import tqdm

    class EpochBar(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.bar = tqdm(total=epochs, desc=desc, unit="epoch", disable=not enabled, leave=False)

        def on_epoch_end(self, epoch, logs=None):
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{(logs or {}).get('loss', float('nan')):.3f}")

        def close(self):
            self.bar.close()

    return EpochBar()


def _evaluate_judge(classifier, data_dir: str, out_dir: str, result: DemoResult, log) -> None:
    from kerasemote import classification as clf

    try:
        test = held_out_faces(data_dir, classifier.class_names, classifier.image_size)
    except ValueError as err:  # a given judge without the four emotions
        result.notes.append(f"judge not evaluated on held-out faces: {err}")
        return
    if test is None:
        result.notes.append("no test-split faces to evaluate the judge on")
        return
    folder = os.path.join(out_dir, "classifier", "evaluation")
    report = clf.evaluate_and_write(classifier, test, folder)
    # The split keeps every vendor of an emoji together, so few faces (not every class) are held out.
    classes = record_held_out(result, "real faces", report.accuracy, [test.class_names[i] for i in test.labels])
    result.judge.update(test_images=len(test.labels), test_accuracy=report.accuracy, test_classes=classes)
    result.files["confusion_matrix"] = os.path.relpath(os.path.join(folder, "confusion_matrix.png"), out_dir)
    result.files["misclassified"] = os.path.relpath(os.path.join(folder, "misclassified.png"), out_dir)
    log(f"  judge accuracy on {len(test.labels)} held-out real faces {result.judge['test_classes']}: "
        f"{report.accuracy:.1%}")
