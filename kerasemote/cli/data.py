"""``kerasemote data prepare`` and ``kerasemote data inspect``: emoji datasets on disk."""

from __future__ import annotations

import argparse
import itertools
import time

from kerasemote.data.sources import SOURCE_NAMES
from kerasemote.data.sources.drawn import DEFAULT_PER_CLASS


def register(subparsers) -> None:
    """Add the ``data`` command group with ``prepare`` and ``inspect``."""
    group = subparsers.add_parser("data", help="prepare and inspect emoji datasets",
                                  description="Prepare emoji datasets for training and look at them.")
    commands = group.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    group.set_defaults(func=lambda args: group.print_help() or 2)

    p = commands.add_parser(
        "prepare",
        help="write images, captions, labels, split and style tokens",
        description=(
            "Write a prepared directory from packaged emoji sets (twemoji, openmoji, noto; offline; noto-sample: "
            "the Noto images the demo needs, shipped with kerasemote, no font needed), "
            "drawn broccoli stickers and emoji faces with emotions (broccoli-stickers, emotion-faces; seeded) "
            "or local files (kaggle full_emoji.csv or its folder, valhalla parquet, russian marking.csv, "
            "a folder of your images). Several sources are mixed with commas: --source twemoji,openmoji,noto "
            "gives captions '<name> emoji in <sN> style' with one style token per vendor."
        ),
    )
    p.add_argument("--source", required=True, action="append",
                   help=f"{', '.join(SOURCE_NAMES)}; comma-separate to mix")
    p.add_argument("path", nargs="?", help="file or folder of a kaggle/valhalla/russian/folder source")
    p.add_argument("--out", required=True, help="prepared directory to write")
    p.add_argument("--vendors", nargs="+", help="kaggle vendor columns to keep (default all)")
    p.add_argument("--size", type=int, default=512, help="side of the square images (default 512)")
    p.add_argument("--background", default="white", help="colour behind transparency (default white)")
    p.add_argument("--limit", type=int, help="at most this many rows per source (quick tries)")
    p.add_argument("--no-group", dest="group_by_emoji", action="store_false",
                   help="split each image on its own instead of keeping all vendors of an emoji together")
    p.add_argument("--image-column", help="valhalla parquet image column (default: image)")
    p.add_argument("--caption-column", help="valhalla/russian caption column (default: text)")
    p.add_argument("--file-column", help="russian CSV image-path column (default: file_name/path/file...)")
    p.add_argument("--font-path", help="NotoColorEmoji.ttf when it is not in a system folder")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of broccoli-stickers and emotion-faces: the same seed draws the same images")
    p.add_argument("--per-class", type=int,
                   help=f"broccoli-stickers or emotion-faces per class (default {DEFAULT_PER_CLASS})")
    p.add_argument("--workers", type=int, default=2, help="image encoding threads (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace a prepared set already in --out")
    p.set_defaults(func=run_prepare)

    p = commands.add_parser("inspect", help="print counts and write a contact sheet",
                            description="Print counts per split / vendor / label and write a contact-sheet PNG.")
    p.add_argument("directory", help="a prepared directory")
    p.add_argument("--sheet", help="contact sheet PNG to write (default DIR/contact_sheet.png)")
    p.add_argument("--count", type=int, default=64, help="images on the sheet (default 64)")
    p.add_argument("--split", choices=["train", "validation", "test"], help="only this split on the sheet")
    p.set_defaults(func=run_inspect)


def _source_names(values: list[str]) -> list[str]:
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def run_prepare(args: argparse.Namespace) -> int:
    from kerasemote import data

    names = _source_names(args.source)
    options = dict(vendors=args.vendors, limit=args.limit, image_column=args.image_column,
                   caption_column=args.caption_column, file_column=args.file_column, font_path=args.font_path,
                   render_size=args.size, seed=args.seed, per_class=args.per_class)
    file_sources = [name for name in names if name not in data.PACKAGED_SOURCES]
    if len(file_sources) > 1:
        raise ValueError(f"--source names {len(file_sources)} file sources {file_sources}; PATH can serve only one.")
    # Open every source before writing anything, so a missing font or file fails first.
    sources = [data.source_records(name, None if name in data.PACKAGED_SOURCES else args.path, **options)
               for name in names]
    items = itertools.chain(*sources)
    start = time.perf_counter()
    report = data.prepare(items, args.out, size=args.size, background=args.background,
                          group_by_emoji=args.group_by_emoji, overwrite=args.overwrite,
                          workers=args.workers, progress=True)
    print(data.format_summary(data.summarize(args.out)))
    print(report.format())
    print(f"prepared {args.out} in {time.perf_counter() - start:.1f} s")
    return 0 if report.written else 1


def run_inspect(args: argparse.Namespace) -> int:
    from kerasemote import data

    print(data.format_summary(data.summarize(args.directory)))
    sheet = args.sheet or f"{args.directory}/contact_sheet.png"
    data.contact_sheet(args.directory, sheet, count=args.count, split=args.split)
    print(f"wrote {sheet}")
    return 0
