"""Training input: images with captions, cached VAE latents and a stateless tf.data batch plan.

Where the images come from (``load_training_images``):

* a folder of images (``.png``, ``.jpg``, ``.jpeg``, ``.webp``); each image's caption is
  its sidecar ``.txt`` (``cat.png`` + ``cat.txt``; one caption per line), else none;
* a folder of folders: each subfolder is a concept (``happy/``, ``sad/``...), so one run
  can learn ``<happy>``, ``<sad>``... at once;
* a prepared directory of ``kerasemote data prepare`` (``metadata.jsonl``): its captions,
  with the label (or vendor) as the concept.

Every path may be local, a mounted Drive folder or ``gs://``.

Which example, flip and caption each batch position uses is a pure function of
``(seed, step)`` (``batch_plan``): no iterator state exists, so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from kerasemote import storage
from kerasemote.data.dataset import read_metadata
from kerasemote.data.images import IMAGE_EXTENSIONS, read_image
from kerasemote.data.prepare import METADATA_FILE


@dataclass(frozen=True)
class ImageSet:
    """Training images held in memory.

    Args:
        images: uint8 (N, S, S, 3).
        captions: per image, the candidate captions (one is drawn each time it is used);
            empty until ``with_captions`` fills it where no sidecar text existed.
        concepts: per image, its concept name (subfolder, label) or the folder name.
        files: per image, the file it came from (named in errors).
    """

    images: np.ndarray
    captions: tuple[tuple[str, ...], ...]
    concepts: tuple[str, ...]
    files: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def concept_names(self) -> list[str]:
        """Distinct concepts, in first-seen order."""
        return list(dict.fromkeys(self.concepts))

    def with_captions(
        self,
        tokens: Mapping[str, str] | None = None,
        kind: str = "object",
        require_token: bool = False,
    ) -> "ImageSet":
        """Fill in captions: sidecar text where it exists, prompt templates elsewhere.

        Args:
            tokens: concept -> the word or placeholder that names it (``{"happy": "<happy>"}``);
                concepts not listed are named by their own name (``"in-love"`` -> ``"in love"``).
            kind: ``object`` or ``style`` templates.
            require_token: textual inversion: every caption must contain the concept's
                token (sidecar captions without it get ``"<token>, "`` in front; ``{}`` in a
                sidecar caption is replaced by the token).

        Returns:
            A new ImageSet whose every image has at least one caption.
        """
        from kerasemote.training.templates import fill_templates

        tokens = dict(tokens or {})
        captions = []
        for own, concept in zip(self.captions, self.concepts):
            token = tokens.get(concept) or concept.replace("-", " ").replace("_", " ")
            if not own:
                captions.append(tuple(fill_templates(token, kind)))
                continue
            filled = tuple(c.replace("{}", token) for c in own)
            if require_token:
                filled = tuple(c if token in c else f"{token}, {c}" for c in filled)
            captions.append(filled)
        return replace(self, captions=tuple(captions))

    def caption_table(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Distinct captions plus, per image, the rows of its candidates.

        Returns:
            ``(texts, rows, counts)``: ``texts`` the C distinct captions; ``rows`` int32
            (N, K) indices into ``texts`` (padded with each image's first row); ``counts``
            int32 (N,) how many of the K are real.
        """
        if any(not c for c in self.captions):
            missing = [f for f, c in zip(self.files, self.captions) if not c][:3]
            raise ValueError(f"Images without a caption, e.g. {missing}; call with_captions() first.")
        texts = list(dict.fromkeys(c for own in self.captions for c in own))
        index = {text: i for i, text in enumerate(texts)}
        width = max(len(own) for own in self.captions)
        rows = np.zeros((len(self), width), np.int32)
        counts = np.zeros((len(self),), np.int32)
        for i, own in enumerate(self.captions):
            ids = [index[c] for c in own]
            rows[i] = ids + [ids[0]] * (width - len(ids))
            counts[i] = len(ids)
        return texts, rows, counts


# ---------------------------------------------------------------------- reading


def load_training_images(path: str, size: int, background: str = "white",
                         splits: Sequence[str] | None = None) -> ImageSet:
    """Read a training folder (see the module docstring) at ``size`` x ``size`` pixels.

    Args:
        path: a folder of images, a folder of concept folders, or a prepared directory.
        size: side in pixels (a multiple of the model's VAE factor).
        background: colour under transparent pixels (emoji PNGs are transparent).
        splits: a prepared directory's splits to read (e.g. ``("train",)`` keeps its test split
            held out for a judge); ``None`` reads every row. Only prepared directories have splits.

    Returns:
        The ImageSet; captions empty where no sidecar / metadata caption exists.

    Raises:
        FileNotFoundError: ``path`` is not a folder.
        ValueError: no images found, or an unreadable image (named).
    """
    if not storage.isdir(path):
        raise FileNotFoundError(f"--data {path}: not a folder of images.")
    if storage.exists(storage.join(path, METADATA_FILE)):
        return _prepared_entries(path, size, background, splits)
    if splits is not None:
        raise ValueError(f"--data {path}: has no {METADATA_FILE}, so no splits to choose from; expected a prepared "
                         f"directory (kerasemote data prepare) for --split {','.join(splits)}.")
    entries = _folder_entries(path)
    if not entries:
        raise ValueError(
            f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) found at the top or in its subfolders."
        )
    return _load_entries(entries, size, background)


def _folder_entries(path: str) -> list[tuple[str, tuple[str, ...], str]]:
    """(file, captions, concept) for the images at the top and in each first-level subfolder."""
    root_name = storage.basename(path) or "concept"
    entries = _images_in(path, root_name)
    for name in storage.listdir(path):
        sub = storage.join(path, name)
        if not name.startswith(".") and storage.isdir(sub):
            entries += _images_in(sub, name)
    inside = set(storage.keep_within(path, [file for file, _, _ in entries]))
    return [entry for entry in entries if entry[0] in inside]


def _images_in(folder: str, concept: str) -> list[tuple[str, tuple[str, ...], str]]:
    names = storage.listdir(folder)
    entries = []
    for name in names:
        stem, dot, ext = name.rpartition(".")
        if not dot or "." + ext.lower() not in IMAGE_EXTENSIONS or name.startswith("."):
            continue
        captions: tuple[str, ...] = ()
        caption_file = storage.join(folder, f"{stem}.txt")
        if f"{stem}.txt" in names and (storage.is_gcs(folder) or storage.within(folder, caption_file)):
            text = storage.read_bytes(caption_file).decode("utf-8")
            captions = tuple(line.strip() for line in text.splitlines() if line.strip())
        entries.append((storage.join(folder, name), captions, concept))
    return entries


def _prepared_entries(path: str, size: int, background: str, splits: Sequence[str] | None) -> ImageSet:
    """A ``kerasemote data prepare`` directory: the rows of its metadata.jsonl in ``splits``, in file order."""
    entries = []
    for row in read_metadata(path):
        if splits is not None and row["split"] not in splits:
            continue
        concept = row["label"] or row["vendor"] or storage.basename(path)
        entries.append((storage.join(path, row["file"]), (row["caption"],) if row["caption"] else (), str(concept)))
    if not entries:
        where = f" in split {', '.join(splits)}" if splits is not None else ""
        raise ValueError(f"{storage.join(path, METADATA_FILE)}: no rows{where}.")
    return _load_entries(entries, size, background)


def _load_entries(entries, size: int, background: str) -> ImageSet:
    images = np.stack([read_square_image(file, size, background) for file, _, _ in entries])
    return ImageSet(
        images=images,  # (N, size, size, 3) uint8
        captions=tuple(c for _, c, _ in entries),
        concepts=tuple(concept for _, _, concept in entries),
        files=tuple(file for file, _, _ in entries),
    )


def read_square_image(path: str, size: int, background: str = "white") -> np.ndarray:
    """One image as uint8 (size, size, 3): alpha composited, centre-cropped to a square, resized (Lanczos).

    The project's one reader (:func:`kerasemote.data.images.read_image`) with training's settings.
    """
    return read_image(path, size, fit="crop", background=background, resample="lanczos")


# ---------------------------------------------------------------------- latents


# Pixels per VAE encoder call when caching latents: the encoder's full-resolution activations grow
# with it, and the memory they take stays with the process (TensorFlow keeps freed blocks for reuse),
# so 512 px images go one at a time.
CACHE_PIXELS_PER_CALL = 512 * 512


def encode_latent_cache(model, images: np.ndarray, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Encode every distinct image and its mirror image once; training then draws latents from these.

    Repeated images (oversampled faces) are encoded once and shared; the encoder runs as a
    traced graph on fixed-size batches (the last one padded), so one trace serves all.

    Args:
        model: the ``StableDiffusion`` whose VAE encodes.
        images: uint8 (N, S, S, 3).
        batch_size: images per encoder call (their mirror images go in a second call); default
            as many as ``CACHE_PIXELS_PER_CALL`` allows, at most 32.

    Returns:
        ``(mean, std)`` float32 (N, 2, S/f, S/f, C): the scaled latent Gaussian of each image
        (index 0) and of its left-right flip (index 1).
    """
    from kerasemote.models.vae import latent_distribution

    if not len(images):
        raise ValueError("encode_latent_cache: no images to encode.")
    keys = {}
    first = np.array([keys.setdefault(image.tobytes(), i) for i, image in enumerate(images)])  # (N,)
    distinct, where = np.unique(first, return_inverse=True)
    encoder = model._compiled(model.vae_encoder)
    scale = model.config.scaling_factor
    pixels = images.shape[1] * images.shape[2]
    batch_size = min(batch_size or max(1, min(32, CACHE_PIXELS_PER_CALL // pixels)), len(distinct))
    means, stds = [], []
    for start in range(0, len(distinct), batch_size):
        chunk = images[distinct[start : start + batch_size]].astype("float32") / 127.5 - 1.0  # (b, S, S, 3)
        b = len(chunk)
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - b, axis=0)])  # (batch, S, S, 3)
        # Mirrors in a second call of the same shape: one trace, half the activations at a time.
        halves = [latent_distribution(encoder(x)) for x in (padded, np.ascontiguousarray(padded[:, :, ::-1]))]
        mean, std = (np.concatenate([np.asarray(h[i]) for h in halves]) for i in (0, 1))  # (2 batch, h, w, C)
        means.append(np.stack([mean[:b], mean[batch_size : batch_size + b]], axis=1) * scale)  # (b, 2, h, w, C)
        stds.append(np.stack([std[:b], std[batch_size : batch_size + b]], axis=1) * scale)
    mean, std = np.concatenate(means).astype("float32"), np.concatenate(stds).astype("float32")
    return mean[where], std[where]


# ---------------------------------------------------------------------- batches


def batch_plan(
    step: tf.Tensor,
    *,
    seed: int,
    batch_size: int,
    num_examples: int,
    caption_rows: tf.Tensor,
    caption_counts: tf.Tensor,
    flip: bool,
) -> dict[str, tf.Tensor]:
    """Which examples, flips and captions one step uses; a pure function of (seed, step).

    Positions ``step * B ... step * B + B - 1`` walk through a fresh permutation of the
    examples every epoch (``index_shuffle`` keyed by seed and epoch), so every image is
    seen once per epoch.

    Returns:
        ``index`` int32 (B,), ``flip`` int32 (B,) (0 or 1), ``caption`` int32 (B,) rows
        of the caption table.
    """
    step = tf.cast(step, tf.int64)
    positions = step * batch_size + tf.range(batch_size, dtype=tf.int64)  # (B,)
    epoch, within = positions // num_examples, positions % num_examples
    keys = tf.stack([tf.fill([batch_size], tf.cast(seed, tf.int64)), epoch, tf.zeros_like(epoch)], axis=1)
    index = tf.raw_ops.RandomIndexShuffle(index=within, seed=keys, max_index=tf.constant(num_examples - 1, tf.int64))  # (B,)
    index = tf.cast(index, tf.int32)
    draws = tf.random.stateless_uniform([2, batch_size], seed=tf.stack([seed, step]), alg="philox")
    flips = tf.cast(draws[0] < 0.5, tf.int32) if flip else tf.zeros([batch_size], tf.int32)
    counts = tf.gather(caption_counts, index)
    pick = tf.minimum(tf.cast(draws[1] * tf.cast(counts, tf.float32), tf.int32), counts - 1)
    caption = tf.gather_nd(caption_rows, tf.stack([index, pick], axis=1))
    return {"index": index, "flip": flips, "caption": caption}


def plan_dataset(
    start_step: int,
    end_step: int,
    *,
    seed: int,
    batch_size: int,
    caption_rows: np.ndarray,
    caption_counts: np.ndarray,
    flip: bool,
    images: np.ndarray | None = None,
    crop_scale: float | None = None,
) -> tf.data.Dataset:
    """tf.data pipeline of the batches of steps ``start_step .. end_step - 1``.

    Args:
        start_step, end_step: the steps to plan (a resumed run starts where it stopped).
        seed: the run's seed.
        batch_size: examples per step.
        caption_rows, caption_counts: from ``ImageSet.caption_table``.
        flip: random left-right flips.
        images: uint8 (N, S, S, 3) to yield pixels (no latent cache); ``None`` to yield
            only the plan (latents come from the cache).
        crop_scale: with ``images``: random resized crops keeping at least this fraction
            of the area.

    Returns:
        Elements ``{"step", "index", "flip", "caption"}`` plus ``"pixels"`` float32
        (B, S, S, 3) in [-1, 1] when ``images`` is given.
    """
    num_examples = len(caption_counts)
    rows, counts = tf.constant(caption_rows), tf.constant(caption_counts)

    def plan(step):
        out = batch_plan(
            step, seed=seed, batch_size=batch_size, num_examples=num_examples,
            caption_rows=rows, caption_counts=counts, flip=flip,
        )
        out["step"] = step
        return out

    ds = tf.data.Dataset.range(start_step, end_step).map(plan, num_parallel_calls=tf.data.AUTOTUNE)
    if images is not None:
        pixels = tf.constant(images)

        def add_pixels(batch):
            batch["pixels"] = augment_pixels(pixels, batch, seed, crop_scale)
            return batch

        ds = ds.map(add_pixels, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(2)


def augment_pixels(images: tf.Tensor, batch: dict, seed: int, crop_scale: float | None) -> tf.Tensor:
    """Gather a batch of uint8 images, flip and crop them statelessly; float32 (B, S, S, 3) in [-1, 1]."""
    x = tf.cast(tf.gather(images, batch["index"]), tf.float32) / 127.5 - 1.0  # (B, S, S, 3)
    x = tf.where(tf.cast(batch["flip"], tf.bool)[:, None, None, None], x[:, :, ::-1], x)
    if crop_scale is None or crop_scale >= 1.0:
        return x
    size = x.shape[1]
    key = tf.stack([tf.cast(seed, tf.int64) + 1, tf.cast(batch["step"], tf.int64)])
    draws = tf.random.stateless_uniform([3, x.shape[0]], seed=key, alg="philox")  # (3, B)
    side = tf.sqrt(crop_scale + (1.0 - crop_scale) * draws[0])  # kept side fraction
    y0, x0 = draws[1] * (1.0 - side), draws[2] * (1.0 - side)
    boxes = tf.stack([y0, x0, y0 + side, x0 + side], axis=1)  # (B, 4), normalized
    return tf.image.crop_and_resize(x, boxes, tf.range(x.shape[0]), [size, size])


def tokenize_captions(tokenizer, texts: Sequence[str]) -> np.ndarray:
    """int32 (C, 77) token ids of the caption table (placeholders must already be added)."""
    return tokenizer.encode(list(texts))
