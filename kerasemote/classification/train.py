"""Train the ResNet-50 classifier on a labelled folder or an in-memory labelled set."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence, Union

import keras
import numpy as np

from kerasemote.classification.images import LabelledImages, PathLike, array_to_rgb, load_labelled_folder
from kerasemote.classification.ensemble import EnsembleClassifier
from kerasemote.classification.model import Classifier, build_classifier
from kerasemote.classification.plots import plot_history
from kerasemote.classification.saving import save_classifier, write_composite_labels, write_json_atomic

HISTORY_PLOT = "history.png"
HISTORY_FILE = "history.json"

TrainData = Union[PathLike, LabelledImages]


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Settings of one classifier training run.

    Args:
        image_size: input side length (128 on CPU; 224 is ResNet-50's native size).
        weights: ``"imagenet"``, a local ResNet-50 no-top ``.h5`` path, or ``"none"``.
        freeze_backbone: train only the head (needs pretrained weights).
        dropout: dropout before the dense head.
        epochs: upper bound; early stopping usually ends sooner.
        batch_size: images per step.
        learning_rate: Adam step; ``None`` picks 1e-4 when fine-tuning pretrained
            weights and 1e-3 otherwise (random init, or head only).
        val_fraction: share of each class held out for validation when no
            separate validation set is given (0 disables validation).
        patience: epochs without validation-loss improvement before stopping.
        augment: use flip / rotation / zoom / contrast augmentation.
        class_weighting: weight classes inversely to their frequency.
        seed: seed of the split, weights init and augmentation.
    """

    image_size: int = 128
    weights: str = "imagenet"
    freeze_backbone: bool = False
    dropout: float = 0.3
    epochs: int = 30
    batch_size: int = 16
    learning_rate: float | None = None
    val_fraction: float = 0.2
    patience: int = 5
    augment: bool = True
    class_weighting: bool = True
    seed: int = 0

    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        pretrained = str(self.weights).lower() != "none"
        return 1e-4 if pretrained and not self.freeze_backbone else 1e-3


@dataclass
class TrainResult:
    """What :func:`train_classifier` produced.

    Attributes:
        classifier: the trained classifier (best validation weights when validating).
        history: per-epoch metrics from ``keras.Model.fit``.
        out_dir: folder holding model.keras, labels.json, history.json, history.png.
        validation: the held-out images (``None`` without validation).
    """

    classifier: Classifier
    history: dict[str, list[float]]
    out_dir: Path
    validation: LabelledImages | None


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split indices per class so every class keeps its share in both parts.

    A class with at least two images gives at least one to validation; a class
    with a single image stays in training.

    Returns:
        (train indices, validation indices), each sorted.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), found {val_fraction}.")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = 0 if val_fraction == 0 or len(idx) < 2 else max(1, round(val_fraction * len(idx)))
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """``n / (num_classes * count_c)`` per class: rare classes weigh more; absent classes get 1."""
    counts = np.bincount(labels, minlength=num_classes)
    total = counts.sum()
    return {c: float(total / (num_classes * n)) if n else 1.0 for c, n in enumerate(counts)}


def _as_labelled(data: TrainData, size: int) -> LabelledImages:
    """A folder read at ``size``, or in-memory images brought to ``size`` as scoring brings them."""
    if not isinstance(data, LabelledImages):
        return load_labelled_folder(data, size)
    if data.images.shape[1:3] == (size, size):
        return data
    return replace(data, images=array_to_rgb(data.images, size))


def _split(
    data: LabelledImages, val_data: TrainData | None, config: ClassifierTrainConfig
) -> tuple[LabelledImages, LabelledImages | None]:
    if isinstance(val_data, LabelledImages):
        if val_data.class_names != data.class_names:
            raise ValueError(
                f"Validation classes {val_data.class_names} differ from training classes {data.class_names}."
            )
        return data, _as_labelled(val_data, config.image_size)
    if val_data is not None:
        return data, load_labelled_folder(val_data, config.image_size, data.class_names)
    train_idx, val_idx = stratified_split(data.labels, config.val_fraction, config.seed)
    return data.subset(train_idx), (data.subset(val_idx) if len(val_idx) else None)


def train_classifier(
    data: TrainData,
    out_dir: PathLike,
    config: ClassifierTrainConfig = ClassifierTrainConfig(),
    val_data: TrainData | None = None,
    verbose: int | str = "auto",
    networks: "CompiledNetworks | None" = None,
) -> TrainResult:
    """Train a ResNet-50 classifier and save it with its labels and history plot.

    Args:
        data: a folder with one subfolder of images per class, or a LabelledImages.
        out_dir: where model.keras, labels.json, history.json and history.png go.
        config: training settings.
        val_data: separate validation set; by default ``config.val_fraction`` of
            each class of ``data`` is held out.
        verbose: Keras ``fit`` verbosity (its own progress bar).
        networks: compiled networks shared with other fits (:class:`CompiledNetworks`).

    Returns:
        The trained classifier, its history and the held-out validation set.

    Example:
        >>> result = train_classifier("emoji_by_emotion/", "clf/",
        ...                           ClassifierTrainConfig(weights="none", image_size=64))
    """
    classifier, history, train, val = fit_classifier(data, config, val_data, verbose, networks=networks)
    n_val = 0 if val is None else len(val.labels)
    out = _save_run(classifier, out_dir, config, history, len(train.labels), n_val)
    return TrainResult(classifier, history, out, val)


def fit_classifier(
    data: TrainData,
    config: ClassifierTrainConfig = ClassifierTrainConfig(),
    val_data: TrainData | None = None,
    verbose: int | str = "auto",
    callbacks: Sequence[keras.callbacks.Callback] = (),
    networks: "CompiledNetworks | None" = None,
) -> tuple[Classifier, dict[str, list[float]], LabelledImages, LabelledImages | None]:
    """Train a ResNet-50 classifier in memory (:func:`train_classifier` also saves it).

    Args: as :func:`train_classifier`; ``callbacks`` go to ``keras.Model.fit`` (e.g. a progress bar);
        ``networks``: compiled networks shared by several fits (:class:`CompiledNetworks`), so that a
        fit of a shape trained before skips tracing the training graph.

    Returns:
        (classifier, per-epoch history, the training images, the validation images or None).
    """
    labelled = _as_labelled(data, config.image_size)
    train, val = _split(labelled, val_data, config)
    keras.utils.set_random_seed(config.seed)
    fresh = build_classifier(
        len(labelled.class_names), config.image_size, config.weights, config.dropout,
        config.freeze_backbone, config.augment, config.seed,
    )
    model = networks.start(fresh, config) if networks is not None else _compiled(fresh, config)
    monitor = "val_loss" if val is not None else "loss"
    # Best epoch restored at the end, also when training runs all epochs.
    stop = keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience, restore_best_weights=True)
    weights = balanced_class_weights(train.labels, len(labelled.class_names)) if config.class_weighting else None
    fit = model.fit(
        train.images.astype(np.float32), train.labels,
        validation_data=(val.images.astype(np.float32), val.labels) if val is not None else None,
        epochs=config.epochs, batch_size=config.batch_size, callbacks=[stop, *callbacks], shuffle=True,
        class_weight=weights, verbose=verbose,
    )
    if model is not fresh:  # the kept network trains the next fit: the result keeps its own copy
        networks.finish(model, fresh)
        _compiled(fresh, config)  # as an ordinary fit leaves it: evaluate() works and saves keep the loss
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    return Classifier(model=fresh, class_names=list(labelled.class_names)), history, train, val


def _compiled(model: keras.Model, config: ClassifierTrainConfig) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(config.resolved_learning_rate()),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


class _ClassMask(keras.layers.Layer):
    """Adds 0 to the logits of the classes in use and -1e9 to the rest: after the softmax those hold
    exactly 0, so they take no probability and get no gradient."""

    def build(self, input_shape):
        self.offsets = self.add_weight(shape=(input_shape[-1],), initializer="zeros", trainable=False,
                                       name="offsets")

    def call(self, logits):  # (B, units)
        return logits + self.offsets


class CompiledNetworks:
    """One compiled classifier network kept between fits of any number of classes (up to 32).

    A ResNet-50's first fit traces its training graph, about 18 s on a 2-core CPU, whatever the
    number of images. A fit given this object trains one kept network instead: the fresh network's
    weights, seed states and optimizer start are copied into it, its head has room for 32 classes
    (the unused ones masked out of the softmax, so they take no probability and no gradient), and
    the trained weights are copied back into the fresh network. The result is the classifier an
    ordinary fit trains (equal within float rounding), without the tracing. Networks of another
    image size or other settings get a kept network of their own. The demo's judges share two (32 and 64 px).

    Example:
        >>> networks = CompiledNetworks()
        >>> gate = fit_classifier(gate_set, config, networks=networks)[0]        # traces once
        >>> faces = fit_classifier(face_set, config, networks=networks)[0]       # no tracing
    """

    UNITS = 32  # the kept head's classes: room for every judge of the demo and most labelled folders

    def __init__(self) -> None:
        self._kept: dict[tuple, tuple[keras.Model, list[np.ndarray]]] = {}

    @property
    def networks(self) -> list[keras.Model]:
        """The kept networks (one per image size and settings)."""
        return [network for network, _ in self._kept.values()]

    def start(self, fresh: keras.Model, config: ClassifierTrainConfig) -> keras.Model:
        """The kept network set to ``fresh``'s start (built and compiled the first time)."""
        classes = fresh.output.shape[-1]
        units = max(self.UNITS, classes)
        key = (units, config.image_size, str(config.weights), config.dropout, config.freeze_backbone,
               config.augment, config.resolved_learning_rate())
        if key not in self._kept:
            network = _compiled(_wide_head(fresh, units), config)
            network.optimizer.build(network.trainable_variables)
            # The optimizer's start (step 0, zero moments, its learning rate), restored before each fit.
            self._kept[key] = network, [np.array(v) for v in network.optimizer.variables]
        network, optimizer_start = self._kept[key]
        body, (kernel, bias, offsets) = network.variables[:-3], network.variables[-3:]
        for src, dst in zip(fresh.variables[:-2], body, strict=True):
            dst.assign(src)
        head_kernel, head_bias = (np.array(v) for v in fresh.variables[-2:])  # (2048, C), (C,)
        kernel.assign(np.pad(head_kernel, ((0, 0), (0, units - classes))))
        bias.assign(np.pad(head_bias, (0, units - classes)))
        offsets.assign(np.where(np.arange(units) < classes, 0.0, -1e9).astype("float32"))
        for variable, value in zip(network.optimizer.variables, optimizer_start, strict=True):
            variable.assign(value)
        return network

    @staticmethod
    def finish(network: keras.Model, fresh: keras.Model) -> None:
        """Copy the trained weights of the kept ``network`` back into ``fresh`` (its classes only)."""
        classes = fresh.output.shape[-1]
        for src, dst in zip(network.variables[:-3], fresh.variables[:-2], strict=True):
            dst.assign(src)
        kernel, bias = (np.array(v) for v in network.variables[-3:-1])
        fresh.variables[-2].assign(kernel[:, :classes])
        fresh.variables[-1].assign(bias[:classes])


def _wide_head(fresh: keras.Model, units: int) -> keras.Model:
    """A copy of ``fresh`` whose softmax head has ``units`` classes behind a :class:`_ClassMask`."""
    copy = keras.models.clone_model(fresh)
    features = copy.get_layer("head_dropout").output  # (B, 2048)
    logits = keras.layers.Dense(units, name="wide_head")(features)
    # The softmax activation keeps its logits beside it, so the loss is computed from the logits as in
    # the fresh network (not from clipped probabilities).
    outputs = keras.layers.Activation("softmax", name="wide_softmax")(_ClassMask(name="class_mask")(logits))
    return keras.Model(copy.input, outputs, name="shared_classifier")


def _save_run(
    classifier: Classifier, out_dir: PathLike, config: ClassifierTrainConfig,
    history: dict[str, list[float]], n_train: int, n_val: int,
) -> Path:
    extra = {"train_config": asdict(config), "num_train": n_train, "num_val": n_val}
    out = save_classifier(classifier, out_dir, extra)
    write_json_atomic(out / HISTORY_FILE, history)
    plot_history(history, out / HISTORY_PLOT)
    return out


def train_ensemble(data: TrainData, out_dir: PathLike, config: ClassifierTrainConfig, members: int,
                   val_data: TrainData | None = None, verbose: int | str = "auto") -> EnsembleClassifier:
    """Train ``members`` classifiers, seeds ``config.seed``, ``config.seed + 1``..., saved as one ensemble.

    Each member is a whole :func:`train_classifier` run in
    ``out_dir/member_<i>`` (model, labels, history plot; its own validation split when one is
    held out); ``out_dir/labels.json``, written last, makes the folder load as one classifier.

    Example:
        >>> judge = train_ensemble("by_emotion/", "judge/", ClassifierTrainConfig(weights="none"), members=3)
    """
    if members < 1:
        raise ValueError(f"An ensemble needs at least one member, found members={members}.")
    networks = CompiledNetworks()  # the members train one network in turn: its graph is traced once
    trained = [train_classifier(data, Path(out_dir) / f"member_{i}", replace(config, seed=config.seed + i),
                                val_data, verbose, networks).classifier
               for i in range(members)]
    ensemble = EnsembleClassifier(trained)
    write_composite_labels(ensemble, out_dir, {"train_config": asdict(config),
                                               "seeds": [config.seed + i for i in range(members)]})
    return ensemble


def load_history(model_dir: PathLike) -> dict[str, list[float]]:
    """Read the history.json written by :func:`train_classifier`."""
    path = Path(model_dir) / HISTORY_FILE
    return json.loads(path.read_text(encoding="utf-8"))

