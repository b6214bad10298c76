"""Seeded drawn sets: the id, random generator, record and split machinery every drawn source shares.

A :class:`DrawnSet` names its vendor, its classes (label -> caption) and how one image is
drawn from a generator. Image ``k`` of a class comes from its own generator, keyed by
``(seed, label, k)``: the same seed gives the same pixels, and asking for fewer images
(``per_class``, ``limit``) never changes the ones kept. Records come class by class in turn
(the first of each class, then the second, ...), so ``limit`` keeps the classes balanced.
Each image is its own split group: the captions of one class are all alike, and grouping by
caption would put a whole class in one split.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from kerasemote.data.emotions import emotion_slug
from kerasemote.data.records import EmojiRecord

# 200 per class puts at least 20 of each class in the test split (100:1:20 by id hash) for every drawn set.
DEFAULT_PER_CLASS = 200
MIN_SIZE = 16

# (generator, label, side in pixels) -> an RGB image on white.
Draw = Callable[[np.random.Generator, str, int], Image.Image]


@dataclass(frozen=True)
class DrawnSet:
    """A labelled set drawn from a seed.

    Args:
        vendor: the source's name, the records' vendor and the first part of every id.
        captions: label -> caption, in the order records take the classes.
        draw: draws one image of a label from its generator at a side in pixels.
        noun: what one image is called in messages (``"Sticker"``, ``"Face"``).
    """

    vendor: str
    captions: Mapping[str, str]
    draw: Draw
    noun: str

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.captions)

    def check_label(self, label: str) -> None:
        if label not in self.captions:
            raise ValueError(f"{self.noun} label must be one of {list(self.labels)}; found {label!r}.")

    def rng(self, seed: int, label: str, index: int) -> np.random.Generator:
        """The generator of one image: keyed by the seed, the label (by CRC-32) and the index."""
        self.check_label(label)
        return np.random.default_rng([int(seed), zlib.crc32(label.encode("utf-8")), int(index)])

    def image(self, label: str, index: int, seed: int = 0, size: int = 64) -> Image.Image:
        """Image number ``index`` of one class: RGB, ``size`` x ``size``, on white."""
        if size < MIN_SIZE:
            raise ValueError(f"{self.noun} size must be at least {MIN_SIZE} pixels; found {size}.")
        if index < 0:
            raise ValueError(f"{self.noun} index must be non-negative; found {index}.")
        return self.draw(self.rng(seed, label, index), label, size)

    def record_id(self, label: str, index: int) -> str:
        """``"<vendor>_in-love_0007"``: file-system safe, the same for every seed."""
        self.check_label(label)
        return f"{self.vendor}_{emotion_slug(label)}_{index:04d}"

    def records(self, per_class: int = DEFAULT_PER_CLASS, seed: int = 0, size: int = 512,
                limit: int | None = None) -> Iterator[EmojiRecord]:
        """Records for :func:`kerasemote.data.prepare`, drawn when they are loaded.

        Args:
            per_class: images of each class.
            seed: the set's seed; the same seed gives byte-identical images.
            size: side the images are drawn at; match the prepare ``size`` (a different one is
                resized by prepare).
            limit: at most this many records in all (classes stay balanced).
        """
        if per_class < 1:
            raise ValueError(f"per_class must be a positive number of images; found {per_class}.")
        count = 0
        for index in range(per_class):
            for label, caption in self.captions.items():
                if limit is not None and count >= limit:
                    return
                record_id = self.record_id(label, index)
                yield EmojiRecord(
                    id=record_id,
                    load=functools.partial(self.image, label, index, seed, size),
                    description=caption,
                    vendor=self.vendor,
                    label=label,
                    caption=caption,
                    origin=f"{self.vendor}:seed {seed}:{label}:{index}",
                    group=record_id,
                )
                count += 1

    def examples(self, per_class: int = 6, size: int = 64, seed: int = 0) -> tuple[np.ndarray, list[str]]:
        """The first ``per_class`` images of each class, class by class, for a contact sheet.

        Returns:
            ``(images, labels)``: uint8 (N, size, size, 3) with N = classes * per_class, and each one's label.
        """
        labels = [label for label in self.labels for _ in range(per_class)]
        images = [np.asarray(self.image(label, index, seed, size)) for label in self.labels
                  for index in range(per_class)]
        return np.stack(images), labels  # (N, size, size, 3)
