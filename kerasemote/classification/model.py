"""ResNet-50 emotion classifier: backbone from keras.applications, new head.

The saved model takes RGB pixels in [0, 255] at its own input size; ResNet's
caffe-style preprocessing and the training-time augmentation live inside it,
so callers never preprocess by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from kerasemote.classification.images import ImageInput, prepare_images

IMAGENET_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_NOTOP_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + IMAGENET_NOTOP_FILE
IMAGENET_NOTOP_MD5 = "4d473c1dd8becc155b73f8504c6f6626"  # the hash keras.applications checks
# ImageNet channel means in BGR order, the "caffe" preprocessing ResNet-50 was trained with.
_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="kerasemote")
class ResNetPreprocess(keras.layers.Layer):
    """RGB [0, 255] -> BGR minus the ImageNet mean, as keras.applications ResNet-50 expects."""

    def call(self, x):  # (B, S, S, 3)
        bgr = keras.ops.flip(x, axis=-1)
        return bgr - keras.ops.convert_to_tensor(_BGR_MEAN, dtype=x.dtype)


def augmentation(seed: int | None = None) -> keras.Sequential:
    """Flip, small rotation and zoom, contrast; active only while training.

    Empty space from rotation/zoom is filled white, like the emoji backgrounds.
    """
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(0.05, fill_mode="constant", fill_value=255.0, seed=seed),
            keras.layers.RandomZoom(0.1, fill_mode="constant", fill_value=255.0, seed=seed),
            keras.layers.RandomContrast(0.1, seed=seed),
        ],
        name="augmentation",
    )


def resolve_backbone_weights(weights: str | None) -> str | None:
    """Turn the user's ``weights`` choice into what keras.applications accepts.

    Args:
        weights: ``"imagenet"`` (cached file, else a download), a path to a local
            ResNet-50 no-top ``.h5`` file, or ``None`` / ``"none"`` for random init.

    Raises:
        FileNotFoundError: a local path that does not exist.
        RuntimeError: ImageNet weights are neither cached nor downloadable.
    """
    if weights is None or str(weights).lower() == "none":
        return None
    if weights != "imagenet":
        if not Path(weights).is_file():
            raise FileNotFoundError(
                f"ResNet-50 weights file {weights!r} does not exist; expected a local "
                f"{IMAGENET_NOTOP_FILE} (or 'imagenet' to download, or 'none' for random init)."
            )
        return os.fspath(weights)
    return _imagenet_weights_path()


def _imagenet_weights_path() -> str:
    # get_file returns the ~/.keras/models copy when present and downloads otherwise.
    try:
        return keras.utils.get_file(
            IMAGENET_NOTOP_FILE, IMAGENET_NOTOP_URL, cache_subdir="models", file_hash=IMAGENET_NOTOP_MD5
        )
    except Exception as err:  # offline machines raise URLError, OSError or ValueError
        raise RuntimeError(
            f"Could not download ImageNet weights for ResNet-50 from {IMAGENET_NOTOP_URL} ({err}). "
            f"Copy {IMAGENET_NOTOP_FILE} to this machine and pass its path as weights "
            "(--weights PATH), or pass 'none' (--weights none) to train from random init."
        ) from err


def build_classifier(
    num_classes: int,
    image_size: int = 128,
    weights: str | None = "imagenet",
    dropout: float = 0.3,
    freeze_backbone: bool = False,
    augment: bool = True,
    seed: int | None = None,
) -> keras.Model:
    """ResNet-50 (include_top=False, average pooling) + dropout + softmax dense.

    Args:
        num_classes: number of output classes.
        image_size: input side length in pixels (at least 32).
        weights: see :func:`resolve_backbone_weights`.
        dropout: dropout rate before the dense head.
        freeze_backbone: train the head only; needs pretrained weights.
        augment: put the augmentation layers in front of the backbone.
        seed: seed of the augmentation layers.

    Returns:
        An uncompiled model mapping (B, S, S, 3) pixels in [0, 255] to (B, num_classes) probabilities.
    """
    if num_classes < 2:
        raise ValueError(f"A classifier needs at least 2 classes, found {num_classes}.")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 (ResNet-50 downsamples 32x), found {image_size}.")
    path = resolve_backbone_weights(weights)
    if freeze_backbone and path is None:
        raise ValueError(
            "freeze_backbone=True needs pretrained weights ('imagenet' or a local .h5); "
            "a frozen random backbone cannot learn features."
        )
    backbone = keras.applications.ResNet50(
        include_top=False, weights=path, input_shape=(image_size, image_size, 3), pooling="avg"
    )
    if path is None:
        _speed_up_batchnorm_statistics(backbone)
    backbone.trainable = not freeze_backbone  # frozen BatchNorm also runs in inference mode

    inputs = keras.Input((image_size, image_size, 3), name="pixels")  # (B, S, S, 3) in [0, 255]
    x = augmentation(seed)(inputs) if augment else inputs
    x = ResNetPreprocess(name="resnet_preprocess")(x)
    x = backbone(x)  # (B, 2048)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head")(x)  # (B, C)
    return keras.Model(inputs, outputs, name="emoji_classifier")


def _speed_up_batchnorm_statistics(model: keras.Model) -> None:
    # From scratch a short run makes only a few hundred steps; with Keras' default
    # momentum 0.99 the moving statistics would still mostly hold their initial
    # values and the trained model would predict garbage in inference mode.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9


class ImageClassifier:
    """What every judge offers: class names, an input size and class probabilities per image.

    Subclasses give ``class_names``, ``image_size`` and :meth:`predict_prepared`; a single
    network (:class:`Classifier`) and classifiers made of several
    (:mod:`kerasemote.classification.ensemble`) are used the same way.
    """

    @property
    def image_size(self) -> int:
        raise NotImplementedError

    def predict_prepared(self, batch: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Probabilities (N, C) of uint8 images already at (N, S, S, 3)."""
        raise NotImplementedError

    def predict_proba(self, images: ImageInput, batch_size: int = 32) -> np.ndarray:
        """Class probabilities (N, C) of an image batch, a list of paths or a folder."""
        batch, _ = prepare_images(images, self.image_size)
        return self.predict_prepared(batch, batch_size)

    def predict_labels(self, images: ImageInput, batch_size: int = 32) -> list[str]:
        """Most likely class name of each image."""
        probs = self.predict_proba(images, batch_size)
        return [self.class_names[i] for i in np.argmax(probs, axis=-1)]


@dataclass
class Classifier(ImageClassifier):
    """A trained classifier and the names of its classes.

    Attributes:
        model: Keras model, pixels (B, S, S, 3) in [0, 255] -> probabilities (B, C).
        class_names: class name of each output unit.
    """

    model: keras.Model
    class_names: list[str]

    @property
    def image_size(self) -> int:
        return int(self.model.input_shape[1])

    def predict_prepared(self, batch: np.ndarray, batch_size: int = 32) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        probs = self.model.predict(batch.astype(np.float32), batch_size=batch_size, verbose=0)
        return np.asarray(probs, dtype=np.float32)


def class_index(classifier_names: Sequence[str], label: str) -> int:
    """Index of ``label`` among the classifier's classes, with a helpful error."""
    try:
        return list(classifier_names).index(label)
    except ValueError:
        raise ValueError(
            f"Label {label!r} is not one of the classifier's classes {list(classifier_names)}."
        ) from None
