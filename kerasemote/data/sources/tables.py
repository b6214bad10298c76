"""Shared helpers for CSV / JSONL / parquet sources: column lookup with clear errors."""

from __future__ import annotations

import csv
import json
import os
from typing import Iterator, Sequence

# Kaggle's full_emoji.csv holds whole PNGs (base64) in cells, far above csv's default limit.
csv.field_size_limit(2**31 - 1)


def pick_column(
    columns: Sequence[str], wanted: str | None, candidates: Sequence[str], path: str | os.PathLike, role: str
) -> str:
    """The column to use for ``role`` (e.g. ``"caption"``): ``wanted`` or the first candidate present.

    Matching is case-insensitive. Raises ``ValueError`` naming the file, the role, what
    was expected and the columns found.
    """
    by_lower = {c.strip().lower(): c for c in columns}
    options = [wanted] if wanted else list(candidates)
    for option in options:
        if option.lower() in by_lower:
            return by_lower[option.lower()]
    expected = repr(wanted) if wanted else f"one of {list(candidates)}"
    raise ValueError(
        f"{path}: no {role} column; expected {expected}, found columns {list(columns)}. "
        f"Name it with the {role}-column option."
    )


def read_csv(path: str | os.PathLike) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Header and ``(row number, row)`` pairs of a CSV; the delimiter (``,;\\t|``) is sniffed.

    Row numbers count the header as row 1, as spreadsheets do.
    """
    handle = open(path, newline="", encoding="utf-8-sig")
    sample = handle.read(8192)
    handle.seek(0)
    try:
        dialect = csv.Sniffer().sniff(sample.split("\n", 1)[0], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(handle, dialect=dialect)
    header = [h for h in (reader.fieldnames or [])]
    if not header:
        handle.close()
        raise ValueError(f"{path}: empty CSV, expected a header row.")

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        with handle:
            for number, row in enumerate(reader, start=2):
                yield number, {k: (v if v is not None else "") for k, v in row.items() if k is not None}

    return header, rows()


def json_object(line: str, path: str | os.PathLike, number: int) -> dict:
    """One JSON Lines line as an object; anything else is an error naming the file and line."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{number}: not valid JSON ({error}).") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}:{number}: expected a JSON object, found {type(obj).__name__}.")
    return obj


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` pairs of a local JSON Lines file, blank lines skipped."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, json_object(line, path, number)
