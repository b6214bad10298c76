"""Prepared sample sets that ship with kerasemote: ``noto-sample``, Noto Color Emoji without the font.

The repository holds ``dataset/noto-emoji/``, a prepared directory (64 px) of the Noto Color
Emoji images that the demo and the vendor-style judge need; ``setup.py`` installs it as the
data package ``kerasemote.samples``. :func:`prepared_records` reads such a folder back as
records, so ``kerasemote data prepare --source noto-sample`` works offline on a machine
without ``fonts-noto-color-emoji``, and writes, at 64 px, the same pixels as ``--source noto``
writes for the same emoji.

Every row of the folder is checked as any input is: its ``file`` must name a file inside the
folder, and its ``emoji`` must be a non-empty string. Ids, names and labels are derived from
the emoji the way the font source derives them, not taken from the file.

Example:
    >>> from kerasemote import data
    >>> report = data.prepare(data.source_records("noto-sample"), "noto_64", size=64)
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Iterator, NamedTuple

from kerasemote import storage
from kerasemote.data.emotions import emotion_label
from kerasemote.data.images import open_image_file
from kerasemote.data.names import VARIATION_SELECTOR, emoji_name, emoji_to_codepoints
from kerasemote.data.records import EmojiRecord, SkippedItem
from kerasemote.data.sources.tables import read_jsonl

NOTO_SAMPLE = "noto-emoji"  # the folder under dataset/ (and kerasemote/samples/ in a wheel)
NOTO_VENDOR = "noto"  # the vendor of --source noto, so both give the same style token
_METADATA = "metadata.jsonl"  # the prepared layout's file (kerasemote.data.prepare.METADATA_FILE)
_PACKAGE = Path(__file__).resolve().parents[2]  # the kerasemote package folder


def shipped_sample_dir(name: str) -> Path:
    """The folder of a prepared sample that ships with kerasemote.

    The repository commits it as ``dataset/<name>``; ``setup.py`` installs ``dataset/<name>`` as
    part of the data package ``kerasemote.samples``. So an installed wheel has it at
    ``kerasemote/samples/<name>`` and a source checkout or editable install at
    ``dataset/<name>`` beside the package.

    Args:
        name: the sample folder's name, e.g. ``"noto-emoji"``.

    Returns:
        The first of those two folders that holds a ``metadata.jsonl``; the checkout's path
        when neither does (reading it then names the missing file).
    """
    installed, checkout = _PACKAGE / "samples" / name, _PACKAGE.parent / "dataset" / name
    return installed if (installed / _METADATA).is_file() else checkout


def _field(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {key!r} must be a non-empty string, found {value!r}.")
    return value


def prepared_records(directory: str | os.PathLike, vendor: str, limit: int | None = None
                     ) -> Iterator[EmojiRecord | SkippedItem]:
    """Records of one vendor's rows of a prepared directory, read back for :func:`kerasemote.data.prepare`.

    The images are already framed and square, so they are not trimmed again: preparing them at
    their own size keeps every pixel. ``metadata.jsonl`` is read and checked in full here, before
    any image is loaded, so a bad folder fails before anything is written.

    Args:
        directory: a prepared directory (``metadata.jsonl`` + ``images/``).
        vendor: the vendor whose rows become records; other rows are skipped and counted.
        limit: at most this many rows.

    Raises:
        FileNotFoundError: the directory has no ``metadata.jsonl``.
        ValueError: a row's ``file`` leaves the directory, or its ``file``, ``emoji`` or
            ``vendor`` is not a string (one line naming the file, the row and the field).
    """
    root = Path(directory)
    metadata = root / _METADATA
    if not metadata.is_file():
        raise FileNotFoundError(f"{metadata} not found; is {root} a prepared directory (`kerasemote data prepare`)?")
    rows = []
    for number, row in list(read_jsonl(metadata))[:limit]:
        where = f"{metadata}:{number}"
        vendor_name, emoji = _field(row, "vendor", where), _field(row, "emoji", where)
        file = Path(storage.inside(root, _field(row, "file", where), where, "file"))
        rows.append(_Row(where, vendor_name, emoji, file, row.get("description")))
    return _records(rows, root, vendor)


class _Row(NamedTuple):
    where: str  # metadata.jsonl:<line>, for messages
    vendor: str
    emoji: str
    path: Path  # checked: inside the folder
    description: object  # as stored; used only when the emoji package does not know the emoji


def _records(rows: list[_Row], root: Path, vendor: str) -> Iterator[EmojiRecord | SkippedItem]:
    for row in rows:
        if row.vendor != vendor:
            yield SkippedItem(row.where, "other vendor", f"{row.vendor}, not {vendor}")
            continue
        name = emoji_name(row.emoji) or (row.description if isinstance(row.description, str) else None)
        if not name:
            yield SkippedItem(row.where, "no emoji name", emoji_to_codepoints(row.emoji))
            continue
        yield EmojiRecord(
            id=f"{vendor}_{emoji_to_codepoints(row.emoji.replace(VARIATION_SELECTOR, ''))}",
            load=functools.partial(open_image_file, row.path),
            description=name,
            vendor=vendor,
            emoji=row.emoji,
            label=emotion_label(row.emoji, name),
            origin=f"{root.name}/{row.path.relative_to(root).as_posix()}",
        )


def noto_sample_records(limit: int | None = None) -> Iterator[EmojiRecord | SkippedItem]:
    """The shipped Noto Color Emoji sample (vendor ``"noto"``), no font needed.

    It holds 64 px images of the emoji the demo and the vendor-style judge use
    (``dataset/noto-emoji/README.md``); ``--source noto`` renders every emoji from the font.
    """
    return prepared_records(shipped_sample_dir(NOTO_SAMPLE), NOTO_VENDOR, limit)
