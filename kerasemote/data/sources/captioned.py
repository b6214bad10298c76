"""Captioned tables: a parquet of image bytes + text (valhalla/emoji-dataset) and a CSV
of image files + captions (the Russian emoji dataset's ``marking.csv``).

Layouts vary between dataset versions, so the file and caption columns can be named;
by default the first familiar column name is used and a missing one is an error that
lists the columns found.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Iterator

from kerasemote import storage
from kerasemote.data.emotions import emotion_label
from kerasemote.data.images import open_image_bytes, open_image_file
from kerasemote.data.records import BadImageError, EmojiRecord, SkippedItem
from kerasemote.data.sources.tables import pick_column, read_csv

FILE_COLUMNS = ("file_name", "path", "file", "filename", "image_path", "image", "img")
CAPTION_COLUMNS = ("text", "caption", "description", "title", "label")
IMAGE_BYTES_COLUMNS = ("image", "img", "png", "bytes")

Item = EmojiRecord | SkippedItem


def _record(vendor: str, row_id: str, caption: object, load, origin: str) -> Item:
    if caption is not None and not isinstance(caption, str):
        # e.g. a numeric class id in a "label" column: a caption is text, so the row is counted, not guessed at
        return SkippedItem(origin, "caption is not text", f"found {type(caption).__name__} {caption!r}")
    caption = " ".join((caption or "").split())
    if not caption:
        return SkippedItem(origin, "empty caption")
    return EmojiRecord(
        id=f"{vendor}_{row_id}", load=load, description=caption, vendor=vendor,
        label=emotion_label(name=caption), origin=origin,
    )


def _cell_loader(cell: Any, parquet_path: Path, origin: str, column: str):
    """The loader of a Hugging Face image cell (``{"bytes", "path"}``) or raw bytes.

    A cell that names a file is checked now: the file must lie in the parquet's folder.
    """
    if isinstance(cell, dict) and not cell.get("bytes") and cell.get("path"):
        file = storage.inside(parquet_path.parent, cell["path"], origin, f"{column}.path")
        return functools.partial(open_image_file, file)
    return functools.partial(_cell_image, cell, origin)


def _cell_image(cell: Any, origin: str):
    data = cell.get("bytes") if isinstance(cell, dict) else cell
    if isinstance(data, (bytes, bytearray)) and data:
        return open_image_bytes(bytes(data), origin)
    if not data:
        raise BadImageError("empty image", origin)
    raise BadImageError("not image bytes", f"{origin}: cell holds {type(data).__name__}")


def parquet_records(
    path: str | os.PathLike,
    image_column: str | None = None,
    caption_column: str | None = None,
    vendor: str = "valhalla",
    limit: int | None = None,
) -> Iterator[Item]:
    """Records from a parquet file with image bytes and a caption (needs ``pyarrow``).

    Args:
        path: the ``.parquet`` file (valhalla/emoji-dataset ships one).
        image_column: column with images; default the first of ``image, img, png, bytes``.
        caption_column: column with captions; default the first of ``text, caption, ...``.
        vendor: style name recorded for these images.
        limit: read at most this many rows.

    Raises:
        ValueError: an image cell without bytes whose ``path`` leaves the parquet's folder.
    """
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("Reading parquet needs pyarrow: pip install pyarrow.") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Parquet file {path} not found.")
    parquet = pq.ParquetFile(path)
    columns = parquet.schema_arrow.names
    image_col = pick_column(columns, image_column, IMAGE_BYTES_COLUMNS, path, "image")
    caption_col = pick_column(columns, caption_column, CAPTION_COLUMNS, path, "caption")
    row = 0
    for batch in parquet.iter_batches(batch_size=256, columns=[image_col, caption_col]):
        images = batch.column(image_col).to_pylist()
        captions = batch.column(caption_col).to_pylist()
        for cell, caption in zip(images, captions):
            if limit is not None and row >= limit:
                return
            origin = f"{path}:row {row}"
            yield _record(vendor, f"{row:06d}", caption, _cell_loader(cell, path, origin, image_col), origin)
            row += 1


def _resolve_image(value: str, csv_path: Path, image_root: Path | None, where: str, column: str) -> Path:
    """The image a CSV cell names: the first base folder holding it; it may not leave that folder."""
    bases = [base for base in (image_root, csv_path.parent, csv_path.parent / "images") if base is not None]
    candidates = [Path(storage.inside(base, value.strip(), where, column)) for base in bases]
    return next((file for file in candidates if file.is_file()), candidates[0])


def csv_image_records(
    path: str | os.PathLike,
    file_column: str | None = None,
    caption_column: str | None = None,
    vendor: str = "russian",
    image_root: str | os.PathLike | None = None,
    limit: int | None = None,
) -> Iterator[Item]:
    """Records from a CSV of image files and captions (the Russian emoji ``marking.csv``).

    Args:
        path: the CSV, or a folder holding ``marking.csv`` and ``images/``.
        file_column: column with image paths; default the first of ``file_name, path, file, ...``.
        caption_column: column with captions; default the first of ``text, caption, ...``.
        vendor: style name recorded for these images.
        image_root: folder the file paths are relative to; default: the CSV's folder,
            then its ``images/`` subfolder.
        limit: read at most this many rows.

    Raises:
        ValueError: a file cell that leaves its folder (absolute, ``..``, or a symlink out).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "marking.csv"
    if not path.is_file():
        raise FileNotFoundError(f"CSV {path} not found.")
    header, rows = read_csv(path)
    file_col = pick_column(header, file_column, FILE_COLUMNS, path, "file")
    caption_col = pick_column(header, caption_column, CAPTION_COLUMNS, path, "caption")
    root = Path(image_root) if image_root else None
    for count, (number, row) in enumerate(rows):
        if limit is not None and count >= limit:
            break
        origin = f"{path}:{number}"
        if not row[file_col].strip():
            yield SkippedItem(origin, "empty file name")
            continue
        image_path = _resolve_image(row[file_col], path, root, origin, file_col)
        yield _record(vendor, f"{number:06d}", row[caption_col], functools.partial(open_image_file, image_path), origin)


valhalla_records = parquet_records
russian_records = csv_image_records
