"""The two things every source yields: an image record, or a reason it was skipped.

Sources decode nothing up front; ``EmojiRecord.load`` decodes on demand so that a
corrupt file costs one skipped row, counted in the :class:`PrepareReport`, not a crash.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Callable

from PIL import Image


class BadImageError(ValueError):
    """An image could not be used. ``reason`` is a short category for the report.

    Args:
        reason: category counted in the report (``"unreadable image"``...).
        detail: what exactly went wrong, with the file or row.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class EmojiRecord:
    """One image with its text, before preparation.

    Args:
        id: unique, file-system-safe name within its source (``"twemoji_1f600"``).
        load: decodes the image (any PIL mode); raises ``BadImageError``.
        description: what the image shows (``"grinning face"``); the caption is built from it.
        vendor: the style the image comes in (``"twemoji"``, ``"apple"``...).
        emoji: the emoji characters, ``""`` when the image is not a Unicode emoji.
        label: class label (an emotion, or a folder concept), ``None`` when unlabelled.
        caption: a caption to use as is (sidecar ``.txt``, metadata); ``None`` builds one.
        origin: the file or ``file:row`` the record came from, for messages.
        trim: crop to the opaque pixels before fitting (font renders and packaged PNGs).
        group: records with the same group share a split; ``None`` groups by the emoji, else by
            the caption (generated images, each unique, use their own id).
    """

    id: str
    load: Callable[[], Image.Image]
    description: str
    vendor: str
    emoji: str = ""
    label: str | None = None
    caption: str | None = None
    origin: str = ""
    trim: bool = False
    group: str | None = None


@dataclass(frozen=True)
class SkippedItem:
    """A row or file a source could not turn into a record."""

    origin: str
    reason: str
    detail: str = ""


@dataclass
class PrepareReport:
    """Counts of what was written and of what was skipped, by reason.

    ``examples`` keeps the first few origins per reason so a user can find them.
    """

    written: int = 0
    skipped: collections.Counter = field(default_factory=collections.Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5

    def skip(self, reason: str, origin: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.max_examples:
            shown.append(f"{origin} ({detail})" if detail and detail not in origin else origin)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict:
        return {
            "written": self.written,
            "skipped": dict(sorted(self.skipped.items())),
            "examples": self.examples,
        }

    def format(self) -> str:
        """A few lines for the end of a run: written count, then each skip reason."""
        lines = [f"wrote {self.written} images; skipped {self.total_skipped}"]
        for reason, count in sorted(self.skipped.items()):
            lines.append(f"  skipped {count:6d}  {reason}")
            for example in self.examples.get(reason, []):
                lines.append(f"           e.g. {example}")
        return "\n".join(lines)
