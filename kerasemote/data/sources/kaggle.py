"""Full Emoji Image Dataset (Kaggle, subinium/emojiimage-dataset).

``full_emoji.csv`` has the columns ``#, emoji, unicode, name`` and one column per
vendor (Apple, Google, Facebook, Windows, Twitter, JoyPixels, Samsung, Gmail,
SoftBank, DoCoMo, KDDI) holding a ``data:image/png;base64,...`` URI, empty where the
vendor has no image. The archive also has ``image/<Vendor>/<#>.png``; when that
folder sits next to the CSV, images are read from it and the CSV gives the names.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Iterator, Sequence

from kerasemote import storage
from kerasemote.data.emotions import emotion_label
from kerasemote.data.images import decode_data_uri, open_image_bytes, open_image_file
from kerasemote.data.names import emoji_to_codepoints, parse_unicode_column, safe_id
from kerasemote.data.records import EmojiRecord, SkippedItem
from kerasemote.data.sources.tables import read_csv

KAGGLE_CSV = "full_emoji.csv"
KAGGLE_REQUIRED = ("#", "emoji", "unicode", "name")


def _resolve(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """``(csv path, image folder or None)`` from a CSV path or the unpacked archive folder."""
    path = Path(path)
    if path.is_dir():
        csv_path = path / KAGGLE_CSV
        image_dir = path / "image"
        if not csv_path.is_file():
            raise FileNotFoundError(f"{path}: expected {KAGGLE_CSV} inside the Kaggle folder; not found.")
        return csv_path, image_dir if image_dir.is_dir() else None
    if not path.is_file():
        raise FileNotFoundError(f"Kaggle CSV {path} not found.")
    return path, None


def _select_vendors(columns: list[str], vendors: Sequence[str] | None, csv_path: Path) -> list[str]:
    available = [c for c in columns if c not in KAGGLE_REQUIRED and c.strip()]
    if not vendors:
        return available
    by_lower = {c.lower(): c for c in available}
    unknown = [v for v in vendors if v.lower() not in by_lower]
    if unknown:
        raise ValueError(f"{csv_path}: vendors {unknown} not in the CSV; found vendor columns {available}.")
    return [by_lower[v.lower()] for v in vendors]


def _load_cell(value: str, origin: str):
    return open_image_bytes(decode_data_uri(value, origin), origin)


def kaggle_records(
    path: str | os.PathLike, vendors: Sequence[str] | None = None, limit: int | None = None
) -> Iterator[EmojiRecord | SkippedItem]:
    """Records from ``full_emoji.csv`` (or the folder holding it and ``image/``).

    Args:
        path: the CSV, or the unpacked archive folder.
        vendors: vendor columns to use (case-insensitive); all by default.
        limit: read at most this many CSV rows.

    Yields:
        One record per (row, vendor) with an image; vendor names are lower case.
        An empty cell or a missing image file is a ``SkippedItem``.

    Raises:
        ValueError: a row whose ``#`` (with its vendor) names a file outside ``image/``.
    """
    csv_path, image_dir = _resolve(path)
    header, rows = read_csv(csv_path)
    missing = [c for c in KAGGLE_REQUIRED if c not in header]
    if missing:
        raise ValueError(f"{csv_path}: missing columns {missing}; expected {list(KAGGLE_REQUIRED)} "
                         f"plus vendor columns, found {header}.")
    chosen = _select_vendors(header, vendors, csv_path)
    for count, (number, row) in enumerate(rows):
        if limit is not None and count >= limit:
            break
        text = row["emoji"].strip() or parse_unicode_column(row["unicode"])
        row_id = safe_id(row["#"].strip() or str(number))
        name = row["name"].strip()
        for vendor in chosen:
            origin = f"{csv_path}:{number}:{vendor}"
            if image_dir is not None:
                # Both the vendor (a header) and the number come from the CSV: keep them in image/.
                file = Path(storage.inside(image_dir, f"{vendor}/{row['#'].strip()}.png", f"{csv_path}:{number}", "#"))
                if not file.is_file():
                    yield SkippedItem(origin, "vendor has no image", str(file))
                    continue
                load = functools.partial(open_image_file, file)
            else:
                if not row.get(vendor, "").strip():
                    yield SkippedItem(origin, "vendor has no image")
                    continue
                load = functools.partial(_load_cell, row[vendor], origin)
            yield EmojiRecord(
                id=f"{vendor.lower()}_{row_id}_{emoji_to_codepoints(text)}"[:120],
                load=load,
                description=name,
                vendor=vendor.lower(),
                emoji=text,
                label=emotion_label(text, name),
                origin=origin,
            )
