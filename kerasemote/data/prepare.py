"""Write a prepared directory: square RGB PNGs, captions, labels, split and style tokens.

Layout of a prepared directory (everything downstream reads only this)::

    DIR/images/<id>.png     RGB, size x size, transparency composited on the background
    DIR/metadata.jsonl      one JSON object per image: id, file, caption, description,
                            vendor, emoji, label (or null), split, origin
    DIR/vendor_tokens.json  {"<vendor>": "<sN>"}: the style token of each vendor
    DIR/labels.json         {"names": [...]}: label id i is names[i]
    DIR/info.json           size, background, split ratios, counts per split/vendor/label
    DIR/report.json         written / skipped counts by reason, with example rows
"""

from __future__ import annotations

import collections
import concurrent.futures
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from kerasemote.data.captions import caption_for, style_tokens
from kerasemote.data.images import Color, parse_color, prepare_image
from kerasemote.data.names import VARIATION_SELECTOR
from kerasemote.data.records import BadImageError, EmojiRecord, PrepareReport, SkippedItem
from kerasemote.data.split import DEFAULT_RATIOS, split_for_key

FORMAT_NAME = "kerasemote-emoji"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.jsonl"
TOKENS_FILE = "vendor_tokens.json"
LABELS_FILE = "labels.json"
INFO_FILE = "info.json"
REPORT_FILE = "report.json"
IMAGES_DIR = "images"
PACKAGED_MARGIN = 1 / 16  # blank border around trimmed glyphs, so every packaged vendor is framed alike


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def split_key(record: EmojiRecord, group_by_emoji: bool) -> str:
    """Each image its own key; when grouping, the record's group, else its emoji (all vendors), else its caption."""
    if not group_by_emoji:
        return record.id
    if record.group is not None:
        return record.group
    if record.emoji:
        return "emoji:" + record.emoji.replace(VARIATION_SELECTOR, "")
    return "text:" + " ".join((record.caption or record.description).lower().split())


def _encode(record: EmojiRecord, size: int, background: Color, margin: float) -> bytes:
    image = prepare_image(record.load(), size, background, trim=record.trim, margin=margin if record.trim else 0.0)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _start(out_dir: Path, overwrite: bool) -> None:
    if (out_dir / METADATA_FILE).exists():
        if not overwrite:
            raise FileExistsError(f"{out_dir} already holds a prepared set ({METADATA_FILE}); pass overwrite=True.")
        for name in (IMAGES_DIR, "tfds"):
            shutil.rmtree(out_dir / name, ignore_errors=True)
    (out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)


def _work(items: Iterable[EmojiRecord | SkippedItem], report: PrepareReport) -> Iterator[EmojiRecord]:
    """Count skipped items and unusable records; pass the rest on."""
    seen: set[str] = set()
    for item in items:
        if isinstance(item, SkippedItem):
            report.skip(item.reason, item.origin, item.detail)
        elif not (item.caption or item.description).strip():
            report.skip("empty caption", item.origin)
        elif item.id in seen:
            report.skip("duplicate id", item.origin, item.id)
        else:
            seen.add(item.id)
            yield item


def _encode_all(
    records: Iterator[EmojiRecord], size: int, background: Color, margin: float, workers: int
) -> Iterator[tuple[EmojiRecord, bytes | BadImageError]]:
    """Encode in a thread pool, keeping input order; a window bounds memory."""

    def encode(record: EmojiRecord) -> bytes | BadImageError:
        try:
            return _encode(record, size, background, margin)
        except BadImageError as error:
            return error

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        window: collections.deque = collections.deque()
        for record in records:
            window.append((record, pool.submit(encode, record)))
            if len(window) >= 8 * max(1, workers):
                done_record, future = window.popleft()
                yield done_record, future.result()
        while window:
            done_record, future = window.popleft()
            yield done_record, future.result()


def _finish(out_dir: Path, rows: list[dict], report: PrepareReport, settings: dict) -> None:
    tokens = style_tokens(row["vendor"] for row in rows)
    for row in rows:
        if row["caption"] is None:
            row["caption"] = caption_for(row["description"], row["vendor"], tokens)
    labels = sorted({row["label"] for row in rows if row["label"]})
    counts = {key: dict(sorted(collections.Counter(str(row[key]) for row in rows).items()))
              for key in ("split", "vendor", "label")}
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    write_atomic(out_dir / METADATA_FILE, lines.encode("utf-8"))
    write_json(out_dir / TOKENS_FILE, tokens)
    write_json(out_dir / LABELS_FILE, {"names": labels})
    write_json(out_dir / INFO_FILE, {"format": FORMAT_NAME, "version": FORMAT_VERSION, **settings,
                                      "mixed_vendors": len(tokens) > 1, "counts": counts})
    write_json(out_dir / REPORT_FILE, report.to_dict())


def prepare(
    items: Iterable[EmojiRecord | SkippedItem],
    out_dir: str | os.PathLike,
    size: int = 512,
    background: str | Color = "white",
    group_by_emoji: bool = True,
    ratios: Sequence[int] = DEFAULT_RATIOS,
    margin: float = PACKAGED_MARGIN,
    overwrite: bool = False,
    workers: int = 2,
    progress: bool = False,
) -> PrepareReport:
    """Decode, square and save every record; write captions, labels, split and tokens.

    Args:
        items: records and skipped items from one or more sources
            (see :func:`kerasemote.data.source_records`), chained.
        out_dir: the prepared directory to write (created if missing).
        size: side of the saved square images in pixels.
        background: colour that transparency is composited on and padding is filled with.
        group_by_emoji: keep all vendors of one emoji in the same split (no leakage).
        ratios: train, validation, test weights (100:1:20 by default).
        margin: border, as a fraction of ``size``, around trimmed packaged glyphs.
        overwrite: replace an existing prepared set in ``out_dir``.
        workers: threads decoding and encoding images.
        progress: show a tqdm progress bar.

    Returns:
        The report: images written and rows skipped, by reason.

    Example:
        >>> from kerasemote import data
        >>> report = data.prepare(data.source_records("twemoji", limit=50), "/tmp/emoji", size=64)
        >>> print(report.format())
    """
    out_dir = Path(out_dir)
    background = parse_color(background)
    ratios = tuple(int(r) for r in ratios)
    _start(out_dir, overwrite)
    report = PrepareReport()
    records = _work(items, report)
    results = _encode_all(records, size, background, margin, workers)
    if progress:
        from tqdm.auto import tqdm

        results = tqdm(results, desc="prepare", unit="img")
    rows = []
    for record, result in results:
        if isinstance(result, BadImageError):
            report.skip(result.reason, record.origin, result.detail)
            continue
        file = f"{IMAGES_DIR}/{record.id}.png"
        write_atomic(out_dir / file, result)
        rows.append({
            "id": record.id, "file": file, "caption": record.caption, "description": record.description,
            "vendor": record.vendor, "emoji": record.emoji, "label": record.label,
            "split": split_for_key(split_key(record, group_by_emoji), ratios), "origin": record.origin,
        })
    report.written = len(rows)
    settings = {"size": size, "background": list(background), "group_by_emoji": group_by_emoji,
                "ratios": list(ratios), "margin": margin}
    _finish(out_dir, rows, report, settings)
    return report
