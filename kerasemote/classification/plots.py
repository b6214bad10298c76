"""Matplotlib figures of the classifier: training history, confusion matrix, image grids."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; Colab still shows them with IPython.display.Image
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig: plt.Figure, path: os.PathLike | str) -> Path:
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)  # the suffix tells matplotlib the format
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_history(history: dict[str, Sequence[float]], path: os.PathLike | str) -> Path:
    """Loss and accuracy per epoch (train and validation) as a two-panel PNG."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            if key in history:
                ax.plot(range(1, len(history[key]) + 1), history[key], style, label=key)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    return _save(fig, path)


def plot_histories(histories: Mapping[str, Mapping[str, Sequence[float]]], path: os.PathLike | str) -> Path:
    """Training loss and accuracy per epoch of several runs (one line each, named) as a two-panel PNG."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for name, history in histories.items():
            if metric in history:
                ax.plot(range(1, len(history[metric]) + 1), history[metric], label=name)
        ax.set_xlabel("epoch")
        ax.set_title(f"training {metric}")
        ax.legend(fontsize="small")
    return _save(fig, path)


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: os.PathLike | str
) -> Path:
    """Counts matrix (rows: true class, columns: predicted class) as a PNG."""
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2, 1.2 * n + 1.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    return _save(fig, path)


def plot_image_grid(
    images: np.ndarray, titles: Sequence[str], path: os.PathLike | str, columns: int = 6
) -> Path:
    """uint8 images (N, S, S, 3) in a titled grid; an empty batch gives a one-line note."""
    if len(images) == 0:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no images", ha="center", va="center")
        return _save(fig, path)
    cols = min(columns, len(images))
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=8)
    return _save(fig, path)
