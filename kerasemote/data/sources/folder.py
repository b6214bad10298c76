"""A folder of the user's own images.

Captions, first match wins:

1. ``metadata.jsonl`` or ``metadata.csv`` at the top, with a file column
   (``file_name``, ``path``, ``file``...) and a caption column (``text``, ``caption``...);
   paths are relative to the top folder (the Hugging Face ``imagefolder`` convention).
2. A sidecar ``.txt`` with the image's stem (``cat.png`` + ``cat.txt``).
3. The concept: the first-level subfolder (``happy/001.png`` -> ``"happy"``), which
   also becomes the image's label.

An image with none of these is skipped and counted, and so is a symlink (image or sidecar)
leading outside the folder.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from kerasemote import storage
from kerasemote.data.images import IMAGE_EXTENSIONS, open_image_file
from kerasemote.data.names import safe_id
from kerasemote.data.records import EmojiRecord, SkippedItem
from kerasemote.data.sources.tables import pick_column, read_csv, read_jsonl
from kerasemote.data.sources.captioned import CAPTION_COLUMNS, FILE_COLUMNS

logger = logging.getLogger(__name__)
LINK_OUTSIDE = "link outside the folder"  # the skip reason of a symlink leading out of the folder


@dataclass(frozen=True)
class FolderImage:
    """One image of a user folder.

    Args:
        path: the image file.
        caption: from metadata or a sidecar ``.txt``; ``None`` when neither exists.
        concept: the first-level subfolder name, ``None`` for images at the top.
    """

    path: Path
    caption: str | None
    concept: str | None


def _metadata_captions(root: Path) -> dict[str, str]:
    """Relative POSIX path -> caption, from metadata.jsonl or metadata.csv."""
    jsonl, csv_file = root / "metadata.jsonl", root / "metadata.csv"
    source = jsonl if jsonl.is_file() else csv_file if csv_file.is_file() else None
    if source is None:
        return {}
    if not storage.within(root, source):
        raise ValueError(f"{source}: expected a file inside {root}, found a link to {os.path.realpath(source)}.")
    if source == jsonl:
        rows = list(read_jsonl(jsonl))
        columns = sorted({key for _, row in rows for key in row})
    else:
        columns, row_iter = read_csv(csv_file)
        rows = list(row_iter)
    file_col = pick_column(columns, None, FILE_COLUMNS, source, "file")
    caption_col = pick_column(columns, None, CAPTION_COLUMNS, source, "caption")
    captions = {}
    for number, row in rows:
        if file_col not in row:
            raise ValueError(f"{source}:{number}: missing key {file_col!r}; found keys {sorted(row)}.")
        captions[Path(str(row[file_col]).strip()).as_posix()] = str(row.get(caption_col) or "")
    return captions


def scan_image_folder(directory: str | os.PathLike) -> tuple[list[FolderImage], list[SkippedItem]]:
    """The images of a user folder with their captions and concepts, and the files left out.

    A file (image or its sidecar ``.txt``) that is a symlink leading outside the folder is left
    out and returned as a ``SkippedItem``, so that what was skipped can be counted and told.

    Args:
        directory: the folder; subfolders are concepts, see the module docstring.

    Returns:
        ``(images sorted by path, skipped)``; nothing is decoded.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {root} not found.")
    captions = _metadata_captions(root)
    items, skipped = [], []
    for path in sorted(root.rglob("*")):  # rglob does not enter symlinked folders
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        sidecar = path.with_suffix(".txt")
        link = next((p for p in (path, sidecar) if p.exists() and not storage.within(root, p)), None)
        if link is not None:
            skipped.append(SkippedItem(str(path), LINK_OUTSIDE,
                                       f"{link.name} leads to {os.path.realpath(link)}"))
            continue
        relative = path.relative_to(root)
        caption = captions.get(relative.as_posix())
        if caption is None and sidecar.is_file():
            caption = sidecar.read_text(encoding="utf-8").strip()
        concept = relative.parts[0] if len(relative.parts) > 1 else None
        items.append(FolderImage(path=path, caption=caption, concept=concept))
    return items, skipped


def load_image_folder(directory: str | os.PathLike) -> list[FolderImage]:
    """List the images of a user folder with their captions and concepts (sorted by path).

    Symlinks leading outside the folder are left out, with a warning that counts them
    (:func:`scan_image_folder` returns them).

    Args:
        directory: the folder; subfolders are concepts, see the module docstring.

    Returns:
        One ``FolderImage`` per image file; nothing is decoded.

    Example:
        >>> items = load_image_folder("my_stickers")  # my_stickers/happy/1.png ...
        >>> sorted({item.concept for item in items})
        ['angry', 'happy', 'in love', 'sad']
    """
    items, skipped = scan_image_folder(directory)
    if skipped:
        warn_links(directory, skipped)
    return items


def warn_links(directory: str | os.PathLike, skipped: list[SkippedItem]) -> None:
    """Log how many images were left out as links outside the folder (callers without a report)."""
    logger.warning("%s: skipped %d images whose file or caption is a link outside the folder, e.g. %s (%s).",
                   directory, len(skipped), skipped[0].origin, skipped[0].detail)


def folder_records(
    directory: str | os.PathLike, vendor: str = "user", limit: int | None = None
) -> Iterator[EmojiRecord | SkippedItem]:
    """Records for :func:`kerasemote.data.prepare` from a user folder.

    Explicit captions (metadata, sidecar) are used as written; images with only a
    concept get the caption ``"<concept> emoji"``. The concept is the label. Symlinks leading
    outside the folder are skipped and counted (reason ``"link outside the folder"``).
    """
    items, skipped = scan_image_folder(directory)
    yield from skipped
    for item in items[:limit]:
        origin = str(item.path)
        concept = item.concept.replace("_", " ") if item.concept else None
        if not (item.caption or "").strip() and not concept:
            yield SkippedItem(origin, "empty caption", "no metadata row, sidecar .txt or concept folder")
            continue
        relative = item.path.relative_to(directory).with_suffix("")
        record_id = f"{vendor}_{safe_id(relative.as_posix())}"
        caption = (item.caption or "").strip() or None
        yield EmojiRecord(
            id=record_id,
            load=functools.partial(open_image_file, item.path),
            description=concept or "",
            vendor=vendor,
            label=concept,
            caption=caption,
            origin=origin,
            # Images with only their folder's name share one description; grouping by it would
            # put a whole concept in one split, so each such image is its own group.
            group=None if caption else record_id,
        )
