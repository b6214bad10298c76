"""Saving and loading classifiers: one network, or one made of several, in a folder with ``labels.json``.

A single network is ``model.keras`` beside a ``labels.json`` holding its class names and input
size. A classifier made of several (:class:`~kerasemote.classification.ensemble.EnsembleClassifier`,
:class:`~kerasemote.classification.ensemble.GatedClassifier`) is one folder per part and a
``labels.json`` that names the kind and the parts; :func:`load_classifier` reads both.

Example:
    >>> save_classifier(judge, "judge/", {"note": "four emotions"})
    >>> judge = load_classifier("judge/")
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import keras

from kerasemote.classification.ensemble import EnsembleClassifier, GatedClassifier
from kerasemote.classification.images import PathLike
from kerasemote.classification.model import Classifier, ImageClassifier

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
ENSEMBLE_KIND = "ensemble"
GATED_KIND = "gated"
_MAX_DEPTH = 4  # parts inside parts; a deeper file is refused rather than followed


def save_classifier(classifier: ImageClassifier, out_dir: PathLike, extra: dict | None = None) -> Path:
    """Write ``model.keras`` and ``labels.json`` into ``out_dir`` (each atomically).

    A classifier made of several (an ensemble, a gated pair) is written as a folder per part
    and a ``labels.json`` that names them; :func:`load_classifier` reads both kinds.

    Args:
        classifier: what to save.
        out_dir: folder, created if needed.
        extra: additional JSON-serialisable metadata stored in labels.json.

    Returns:
        ``out_dir`` as a Path.
    """
    if not isinstance(classifier, Classifier):
        return save_composite(classifier, out_dir, extra)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".keras", dir=out)  # Keras insists on the suffix
    os.close(fd)
    try:
        _without_optimizer(classifier.model).save(tmp)
        os.replace(tmp, out / MODEL_FILE)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    meta = {"class_names": list(classifier.class_names), "image_size": classifier.image_size}
    meta.update(extra or {})
    write_json_atomic(out / LABELS_FILE, meta)
    return out


def _without_optimizer(model: keras.Model) -> keras.Model:
    # A judge is only ever run: Adam's two moments would triple the file (~280 MB instead of
    # ~95 MB per ResNet-50). A functional copy over the same layers has no optimizer to save.
    if getattr(model, "optimizer", None) is None:
        return model
    try:
        return keras.Model(model.inputs, model.outputs, name=model.name)
    except (AttributeError, ValueError):  # a subclassed model has no graph to copy
        return model


def write_json_atomic(path: PathLike, data: dict) -> None:
    """Write JSON to a temp file beside ``path``, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_labels(labels_path: PathLike) -> dict:
    """The labels.json of a saved classifier, with errors that name the file and key."""
    labels_path = Path(labels_path)
    try:
        meta = json.loads(labels_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"Label file {os.fspath(labels_path)!r} does not exist.") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"Label file {os.fspath(labels_path)!r} is not valid JSON: {err}") from err
    names = meta.get("class_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"Label file {os.fspath(labels_path)!r}: key 'class_names' must be a list of strings, "
            f"found {names!r}."
        )
    return meta


def load_classifier(model_dir: PathLike) -> ImageClassifier:
    """Load a classifier written by :func:`save_classifier` (one network or one made of several).

    Raises:
        ValueError: the label count does not match the model's outputs.
    """
    model_dir = Path(model_dir)
    meta = read_labels(model_dir / LABELS_FILE)
    if "kind" in meta:
        return load_composite(model_dir, meta)
    return load_network(model_dir, meta)


def load_network(model_dir: Path, meta: dict) -> Classifier:
    """The one network of ``model_dir`` (``model.keras``), given its parsed labels.json."""
    names = meta["class_names"]
    model_path = model_dir / MODEL_FILE
    if not model_path.is_file():
        raise FileNotFoundError(f"Classifier model {os.fspath(model_path)!r} does not exist.")
    if not zipfile.is_zipfile(model_path):
        raise ValueError(f"{os.fspath(model_path)}: expected a .keras zip archive (written by `kerasemote classify "
                         f"train`), found {model_path.stat().st_size} bytes that are not one.")
    try:
        model = keras.saving.load_model(model_path, safe_mode=True)
    except Exception as err:  # Keras reports a damaged archive as "File not found"
        detail = (str(err).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{os.fspath(model_path)}: not a readable Keras model ({type(err).__name__}: "
                         f"{detail}).") from None
    units = int(model.output_shape[-1])
    if units != len(names):
        raise ValueError(
            f"Label file {os.fspath(model_dir / LABELS_FILE)!r}: key 'class_names' has {len(names)} "
            f"names but {os.fspath(model_path)!r} has {units} outputs; expected the same count."
        )
    return Classifier(model=model, class_names=names)


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
