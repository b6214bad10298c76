"""Look at a prepared directory: counts per split / vendor / label, and a contact sheet."""

from __future__ import annotations

import collections
import io
import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from kerasemote.data.dataset import read_metadata
from kerasemote.data.images import read_image
from kerasemote.data.prepare import write_atomic


def summarize(directory: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Counts per split, vendor, label and (split, label) from ``metadata.jsonl``."""
    rows = read_metadata(directory)
    count = lambda key: dict(sorted(collections.Counter(key(r) for r in rows).items()))  # noqa: E731
    return {
        "total": {"images": len(rows)},
        "split": count(lambda r: r["split"]),
        "vendor": count(lambda r: r["vendor"]),
        "label": count(lambda r: r["label"] or "(none)"),
        "split/label": count(lambda r: f"{r['split']}/{r['label'] or '(none)'}"),
    }


def format_summary(summary: dict[str, dict[str, int]]) -> str:
    """Readable lines of :func:`summarize`'s counts."""
    lines = []
    for group, counts in summary.items():
        lines.append(f"{group}:")
        lines.extend(f"  {name:<28} {value:7d}" for name, value in counts.items())
    return "\n".join(lines)


def contact_sheet(
    directory: str | os.PathLike,
    out_path: str | os.PathLike,
    count: int = 64,
    columns: int = 8,
    thumb: int = 96,
    split: str | None = None,
) -> Path:
    """Save a grid of evenly spaced images with their vendor and label under each.

    Args:
        directory: a prepared directory.
        out_path: the PNG to write.
        count: images on the sheet (fewer if the set is smaller).
        columns: images per row.
        thumb: thumbnail side in pixels.
        split: only this split; all by default.

    Returns:
        ``out_path``.
    """
    directory, out_path = Path(directory), Path(out_path)
    rows = [r for r in read_metadata(directory) if split is None or r["split"] == split]
    if not rows:
        raise ValueError(f"{directory}: no images" + (f" in split {split!r}" if split else "") + " to show.")
    step = max(1, len(rows) // count)
    chosen = rows[::step][:count]
    text_height = 14
    grid_rows = -(-len(chosen) // columns)
    sheet = Image.new("RGB", (columns * thumb, grid_rows * (thumb + text_height)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for index, row in enumerate(chosen):
        x, y = (index % columns) * thumb, (index // columns) * (thumb + text_height)
        sheet.paste(Image.fromarray(read_image(directory / row["file"], thumb)), (x, y))
        label = f"{row['vendor']} {row['label'] or ''}".strip()
        draw.text((x + 2, y + thumb), label[: thumb // 6], fill="black", font=font)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    write_atomic(out_path, buffer.getvalue())
    return out_path
