"""Image loading for the classifier: RGBA composited on white, brought to its size, uint8.

Everything the classifier sees passes through :func:`prepare_images`, so a folder of PNGs,
a list of paths and an in-memory batch of generated images are treated the same way; each
image goes through the project's one reader (:mod:`kerasemote.data.images`) with the settings
training uses (centre crop, Lanczos, white), so the judge sees what the model learned from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image

from kerasemote import storage
from kerasemote.data.images import IMAGE_EXTENSIONS, read_image, shape_image

# The contact sheets kerasemote writes beside the images it generates (generate, interpolate, demo):
# a folder of generations is scored without them.
CONTACT_SHEETS = ("grid.png", "sweep.gif")

PathLike = Union[str, os.PathLike]
ImageInput = Union[np.ndarray, Sequence[PathLike], PathLike]


@dataclass
class LabelledImages:
    """An in-memory labelled image set.

    Attributes:
        images: uint8 array (N, S, S, 3), RGB.
        labels: int array (N,), indices into ``class_names``.
        class_names: one name per class, in label order.
        sources: where each image came from (file path or ``"#i"``).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    sources: list[str]

    def __post_init__(self) -> None:
        n = len(self.images)
        if len(self.labels) != n or len(self.sources) != n:
            raise ValueError(
                f"LabelledImages needs one label and one source per image: {n} images, "
                f"{len(self.labels)} labels, {len(self.sources)} sources."
            )

    def subset(self, index: np.ndarray) -> "LabelledImages":
        """Return the images at ``index`` (same class list)."""
        return LabelledImages(
            images=self.images[index],
            labels=self.labels[index],
            class_names=list(self.class_names),
            sources=[self.sources[i] for i in index],
        )


def load_image(path: PathLike, size: int) -> np.ndarray:
    """Read one image file as uint8 (size, size, 3) RGB, composited on white, centre-cropped.

    Raises:
        ValueError: the file is missing or not an image Pillow can read (names the file).
    """
    return read_image(path, size)


def array_to_rgb(images: np.ndarray, size: int, name: str = "images") -> np.ndarray:
    """Check an in-memory batch and bring it to uint8 (N, size, size, 3).

    Args:
        images: uint8 (N, H, W, 3) RGB or (N, H, W, 4) RGBA. Float arrays are
            accepted when they lie in [0, 255].
        size: output side length.
        name: what to call the array in error messages.
    """
    if images.ndim != 4 or images.shape[-1] not in (3, 4):
        raise ValueError(
            f"{name}: expected an array of shape (N, H, W, 3) or (N, H, W, 4), found {images.shape}."
        )
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.number):
            raise ValueError(f"{name}: expected dtype uint8, found {images.dtype}.")
        lo, hi = float(np.min(images)), float(np.max(images))
        if lo < 0.0 or hi > 255.0:
            raise ValueError(
                f"{name}: expected uint8 values in [0, 255], found dtype {images.dtype} "
                f"with range [{lo:.3g}, {hi:.3g}]."
            )
        images = np.round(images).astype(np.uint8)
    mode = "RGBA" if images.shape[-1] == 4 else "RGB"
    out = [np.asarray(shape_image(Image.fromarray(im, mode), size), dtype=np.uint8) for im in images]
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def list_images(folder: PathLike, root: PathLike | None = None) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; links resolving outside ``root`` (default
    ``folder``) are left out and counted in a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder {os.fspath(folder)!r} does not exist.")
    files = sorted(str(p) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    return [Path(p) for p in storage.keep_within(folder if root is None else root, files)]


def list_labelled_folder(folder: PathLike, split: str | None = None) -> tuple[list[Path], list[str]]:
    """Paths and labels of a folder with one subfolder of images per class, or of the
    labelled rows of a prepared dataset directory (``kerasemote data prepare``).

    Subfolders without images are skipped; hidden folders (``.x``) are ignored.

    Args:
        folder: the labelled folder or prepared directory.
        split: prepared directories only: keep this split (``train``, ``validation``,
            ``test``); None keeps every split.

    Raises:
        ValueError: no subfolder holds an image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Labelled folder {os.fspath(folder)!r} does not exist.")
    if (folder / "metadata.jsonl").is_file():
        return _list_prepared(folder, split)
    paths: list[Path] = []
    labels: list[str] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = list_images(sub, root=folder)
        paths.extend(files)
        labels.extend([sub.name] * len(files))
    if not paths:
        raise ValueError(
            f"Labelled folder {os.fspath(folder)!r}: expected one subfolder of images per class "
            f"(extensions {IMAGE_EXTENSIONS}), found no images in any subfolder."
        )
    return paths, labels


def _list_prepared(folder: Path, split: str | None) -> tuple[list[Path], list[str]]:
    from kerasemote.data import read_metadata

    rows = [r for r in read_metadata(folder) if r.get("label") and (split is None or r.get("split") == split)]
    if not rows:
        raise ValueError(
            f"Prepared directory {os.fspath(folder)!r} has no labelled images"
            + (f" in split {split!r}." if split else ".")
        )
    return [folder / r["file"] for r in rows], [str(r["label"]) for r in rows]


def load_labelled_folder(
    folder: PathLike, size: int, class_names: Sequence[str] | None = None, split: str | None = None
) -> LabelledImages:
    """Load a labelled folder (one subfolder per class) into memory.

    Args:
        folder: root folder; each subfolder name is a class.
        size: side length the images are resized to.
        class_names: fix the class order (e.g. a trained classifier's classes).
            Subfolders not in this list raise an error; by default the sorted
            subfolder names are the classes.
        split: prepared dataset directories only: which split to load.
    """
    paths, names = list_labelled_folder(folder, split)
    classes = list(class_names) if class_names is not None else sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise ValueError(
            f"Labelled folder {os.fspath(folder)!r}: subfolders {unknown} are not among the "
            f"classifier's classes {classes}."
        )
    images = np.stack([load_image(p, size) for p in paths])  # (N, S, S, 3)
    labels = np.array([index[n] for n in names], dtype=np.int64)
    return LabelledImages(images, labels, classes, [os.fspath(p) for p in paths])


def prepare_images(images: ImageInput, size: int) -> tuple[np.ndarray, list[str]]:
    """Bring any supported image input to uint8 (N, size, size, 3) plus sources.

    Args:
        images: an array (N, H, W, 3|4), a list of image paths, or a folder of images
            (its ``grid.png`` / ``sweep.gif``, kerasemote's contact sheets, left out).
        size: side length.

    Returns:
        The batch and one source string per image (path, or ``"#i"`` for arrays).
    """
    if isinstance(images, np.ndarray):
        return array_to_rgb(images, size), [f"#{i}" for i in range(len(images))]
    if isinstance(images, (str, os.PathLike)):
        paths: Sequence[PathLike] = [p for p in list_images(images) if p.name not in CONTACT_SHEETS]
        if not paths:
            raise ValueError(f"Image folder {os.fspath(images)!r} holds no images {IMAGE_EXTENSIONS}.")
    else:
        paths = list(images)
    if not paths:
        return np.zeros((0, size, size, 3), np.uint8), []
    return np.stack([load_image(p, size) for p in paths]), [os.fspath(p) for p in paths]
