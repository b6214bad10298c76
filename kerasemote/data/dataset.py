"""tf.data pipelines over a prepared directory (or a user image folder).

Every pipeline yields ``image`` float32 in [-1, 1] with shape (size, size, 3) and the
caption as a ``tf.string``; with ``with_labels=True`` also the label id (int32),
keeping only labelled images. Augmentation (horizontal flip, random resized crop) is
stateless and seeded, so a seed reproduces an epoch while each epoch differs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from kerasemote import storage
from kerasemote.data.images import Color, parse_color, prepare_image
from kerasemote.data.prepare import INFO_FILE, LABELS_FILE, METADATA_FILE, TOKENS_FILE
from kerasemote.data.records import EmojiRecord, SkippedItem
from kerasemote.data.sources.tables import json_object
from kerasemote.data.split import SPLITS

REQUIRED_KEYS = ("file", "caption", "vendor", "label", "split")


def _read_text(directory: str | os.PathLike, name: str) -> tuple[str, str]:
    """``(path, text)`` of a file of a prepared directory (local, Drive or ``gs://``)."""
    path = storage.join(directory, name)
    if not storage.exists(path):
        raise FileNotFoundError(f"{path} not found; is {directory} a prepared directory (`kerasemote data prepare`)?")
    return path, storage.read_bytes(path).decode("utf-8")


def _read_json(directory: str | os.PathLike, name: str) -> Any:
    path, text = _read_text(directory, name)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from None


def read_metadata(directory: str | os.PathLike) -> list[dict]:
    """Rows of ``metadata.jsonl`` in file order, each checked for the keys downstream code reads.

    ``directory`` may be local, a mounted Drive folder or ``gs://``.
    """
    path, text = _read_text(directory, METADATA_FILE)
    rows = []
    # split on \n only: a caption may hold U+2028, which splitlines() would cut (json.dumps keeps it raw)
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        row = json_object(line, path, number)
        missing = [key for key in REQUIRED_KEYS if key not in row]
        if missing:
            raise ValueError(f"{path}:{number}: missing keys {missing}; expected {list(REQUIRED_KEYS)}, "
                             f"found {sorted(row)}.")
        if row["split"] not in SPLITS:
            raise ValueError(f"{path}:{number}: key 'split' must be one of {list(SPLITS)}, found {row['split']!r}.")
        for key in ("caption", "vendor", "label"):
            if not isinstance(row[key], str) and not (key == "label" and row[key] is None):
                raise ValueError(f"{path}:{number}: key {key!r} expected text, found {row[key]!r}.")
        storage.inside(directory, row["file"], f"{path}:{number}", "file")  # image names stay in the set
        rows.append(row)
    return rows


def label_names(directory: str | os.PathLike) -> list[str]:
    """Label names of a prepared set; label id ``i`` is ``label_names(dir)[i]``."""
    return list(_read_json(directory, LABELS_FILE)["names"])


def vendor_tokens(directory: str | os.PathLike) -> dict[str, str]:
    """Vendor -> style token (``<s0>``...) saved next to the data."""
    return dict(_read_json(directory, TOKENS_FILE))


def dataset_info(directory: str | os.PathLike) -> dict:
    """``info.json``: size, background, ratios and counts of a prepared set."""
    return _read_json(directory, INFO_FILE)


def augment(image: tf.Tensor, seed: tf.Tensor, flip: bool, crop_scale: float | None) -> tf.Tensor:
    """Stateless flip and random resized crop of one (H, W, 3) image.

    Args:
        image: float image (H, W, 3), H == W.
        seed: int64 tensor of shape (2,).
        flip: flip left-right with probability 0.5.
        crop_scale: smallest kept area fraction, in (0, 1]; ``None`` for no crop.
    """
    size = tf.shape(image)[0]
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seed)
    if crop_scale is not None and crop_scale < 1.0:
        seeds = tf.random.experimental.stateless_split(seed, 2)
        area = tf.random.stateless_uniform([], seeds[0], minval=crop_scale, maxval=1.0)
        side = tf.maximum(1, tf.cast(tf.round(tf.sqrt(area) * tf.cast(size, tf.float32)), tf.int32))
        image = tf.image.stateless_random_crop(image, tf.stack([side, side, 3]), seed=seeds[1])  # (side, side, 3)
        image = tf.image.resize(image[None], tf.stack([size, size]), method="bilinear")[0]  # (size, size, 3)
    return image


def _check_augment(crop_scale: float | None) -> None:
    if crop_scale is not None and not 0.0 < crop_scale <= 1.0:
        raise ValueError(f"crop_scale is the smallest kept area fraction, in (0, 1]; got {crop_scale}.")


def _finish_pipeline(
    ds: tf.data.Dataset, count: int, *, flip: bool, crop_scale: float | None, shuffle: bool, seed: int,
    batch_size: int | None, repeat: bool, with_labels: bool,
) -> tf.data.Dataset:
    """Shuffle, augment, batch. Elements enter as (image, caption, label)."""
    if shuffle:
        ds = ds.shuffle(max(1, count), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if flip or (crop_scale is not None and crop_scale < 1.0):
        seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda item, s: (augment(item[0], s, flip, crop_scale), item[1], item[2]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if not with_labels:
        ds = ds.map(lambda image, caption, label: (image, caption))
    if batch_size:
        ds = ds.batch(batch_size, drop_remainder=repeat)
    return ds.prefetch(tf.data.AUTOTUNE)


def load_dataset(
    directory: str | os.PathLike,
    split: str = "train",
    *,
    size: int | None = None,
    with_labels: bool = False,
    flip: bool = False,
    crop_scale: float | None = None,
    shuffle: bool | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    repeat: bool = False,
    vendors: list[str] | None = None,
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of a prepared directory.

    Args:
        directory: written by :func:`kerasemote.data.prepare`.
        split: ``"train"``, ``"validation"``, ``"test"`` or ``"all"``.
        size: output side; default the prepared size (resized with antialiasing otherwise).
        with_labels: also yield the label id (int32) and keep only labelled images.
        flip: random horizontal flips.
        crop_scale: random resized crops keeping at least this fraction of the area.
        shuffle: shuffle each epoch; default True for ``"train"``.
        seed: seed of the shuffle and the augmentation.
        batch_size: batch the elements (last partial batch kept unless ``repeat``).
        repeat: repeat forever.
        vendors: keep only these vendors.

    Returns:
        Elements ``(image, caption)`` or ``(image, caption, label)``; image float32
        (size, size, 3) in [-1, 1], caption ``tf.string``, label ``tf.int32``.

    Example:
        >>> ds = load_dataset("emoji_512", "train", flip=True, batch_size=4)
        >>> images, captions = next(iter(ds))   # (4, 512, 512, 3), (4,)
    """
    if split not in SPLITS + ("all",):
        raise ValueError(f"split must be one of {list(SPLITS) + ['all']}; got {split!r}.")
    _check_augment(crop_scale)
    directory = Path(directory)
    rows = [r for r in read_metadata(directory) if split == "all" or r["split"] == split]
    if vendors is not None:
        rows = [r for r in rows if r["vendor"] in set(vendors)]
    names = label_names(directory)
    if with_labels:
        rows = [r for r in rows if r["label"]]
    if not rows:
        raise ValueError(f"{directory}: no images in split {split!r}" + (" with labels" if with_labels else "") + ".")
    stored = int(dataset_info(directory)["size"])
    size = size or stored
    files = [str(directory / r["file"]) for r in rows]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"{directory}/{METADATA_FILE} lists {len(missing)} missing images, e.g. {missing[0]}.")
    labels = [names.index(r["label"]) if r["label"] else -1 for r in rows]

    def decode(file: tf.Tensor, caption: tf.Tensor, label: tf.Tensor):
        image = tf.io.decode_png(tf.io.read_file(file), channels=3)  # (stored, stored, 3) uint8
        image = tf.cast(image, tf.float32) / 127.5 - 1.0
        if size != stored:
            image = tf.image.resize(image, [size, size], antialias=True)
        image = tf.clip_by_value(tf.ensure_shape(image, [size, size, 3]), -1.0, 1.0)
        return image, caption, label

    ds = tf.data.Dataset.from_tensor_slices((files, [r["caption"] for r in rows], tf.constant(labels, tf.int32)))
    if shuffle is None:
        shuffle = split == "train"
    # Shuffle file names, not decoded images: the buffer then costs nothing.
    if shuffle:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return _finish_pipeline(ds, len(rows), flip=flip, crop_scale=crop_scale, shuffle=False, seed=seed,
                            batch_size=batch_size, repeat=repeat, with_labels=with_labels)


def dataset_from_records(
    records: list[EmojiRecord],
    size: int = 512,
    background: str | Color = "white",
    *,
    with_labels: bool = False,
    flip: bool = False,
    crop_scale: float | None = None,
    shuffle: bool = True,
    seed: int = 0,
    batch_size: int | None = None,
    repeat: bool = False,
) -> tuple[tf.data.Dataset, list[str]]:
    """Decode a few records in memory (a user folder) into the same pipeline as :func:`load_dataset`.

    Captions are the records' own or ``"<description> emoji"``. Unreadable images raise.

    Returns:
        The dataset and the label names (label id ``i`` is ``names[i]``).
    """
    from kerasemote.data.captions import build_caption

    _check_augment(crop_scale)
    color = parse_color(background)
    if with_labels:
        records = [r for r in records if r.label]
    if not records:
        raise ValueError("No images to build a dataset from" + (" with labels." if with_labels else "."))
    names = sorted({r.label for r in records if r.label})
    images = np.stack([np.asarray(prepare_image(r.load(), size, color, r.trim)) for r in records])  # (N, S, S, 3)
    images = images.astype(np.float32) / 127.5 - 1.0
    captions = [r.caption or build_caption(r.description) for r in records]
    labels = np.array([names.index(r.label) if r.label else -1 for r in records], np.int32)
    ds = tf.data.Dataset.from_tensor_slices((images, captions, labels))
    return _finish_pipeline(ds, len(records), flip=flip, crop_scale=crop_scale, shuffle=shuffle, seed=seed,
                            batch_size=batch_size, repeat=repeat, with_labels=with_labels), names


def dataset_from_folder(directory: str | os.PathLike, size: int = 512, **options: Any) -> tuple[tf.data.Dataset, list[str]]:
    """:func:`dataset_from_records` over a user image folder (see :func:`load_image_folder`).

    Raises:
        ValueError: naming the images that have no caption, metadata row or concept folder.
    """
    from kerasemote.data.sources.folder import LINK_OUTSIDE, folder_records, warn_links

    items = list(folder_records(directory))
    links = [item for item in items if isinstance(item, SkippedItem) and item.reason == LINK_OUTSIDE]
    skipped = [item for item in items if isinstance(item, SkippedItem) and item.reason != LINK_OUTSIDE]
    if skipped:
        raise ValueError(f"{directory}: {len(skipped)} images have no caption ({skipped[0].detail}), e.g. "
                         f"{', '.join(item.origin for item in skipped[:3])}.")
    if links:
        warn_links(directory, links)
    return dataset_from_records([item for item in items if isinstance(item, EmojiRecord)], size, **options)
