"""Real data from the packaged sets: twemoji PNGs, OpenMoji COLRv0 font, Noto Color Emoji."""

import numpy as np
import pytest

from kerasemote.data import EmojiRecord, SkippedItem, noto_available, prepare_image, source_records
from kerasemote.data.records import BadImageError
from kerasemote.data.sources import packaged

FACES = {"😀": "happy", "😭": "sad", "😡": "angry", "😍": "in love"}
needs_noto = pytest.mark.skipif(not noto_available(), reason="fonts-noto-color-emoji is not installed")


def records_for(source, wanted):
    return {r.emoji.replace("\ufe0f", ""): r for r in source_records(source)
            if isinstance(r, EmojiRecord) and r.emoji.replace("\ufe0f", "") in wanted}


def is_colourful(image) -> bool:
    rgb = np.asarray(image.convert("RGB")).astype(int)
    return bool((rgb.max(axis=-1) - rgb.min(axis=-1) > 100).mean() > 0.05)


def test_twemoji_faces_have_names_labels_and_real_pixels():
    records = records_for("twemoji", FACES)
    assert {e: r.label for e, r in records.items()} == FACES
    assert records["😀"].description == "grinning face"
    assert records["😀"].id == "twemoji_1f600"
    image = records["😍"].load()
    assert image.size == (72, 72) and is_colourful(image)


def test_twemoji_skips_lone_regional_indicators_with_a_reason():
    skipped = [i for i in source_records("twemoji") if isinstance(i, SkippedItem)]
    assert "1f1e6" in {s.detail for s in skipped}
    assert {s.reason for s in skipped} == {"not a Unicode emoji"}


def test_openmoji_colr0_font_renders_faces_in_colour_at_any_size():
    renderer = packaged.GlyphRenderer(packaged.openmoji_font_path(), 48)
    small = renderer.render("😀")
    large = packaged.GlyphRenderer(packaged.openmoji_font_path(), 160).render("😀")
    assert is_colourful(small) and is_colourful(large)
    assert large.width > 3 * small.width


def test_openmoji_zwj_sequence_renders_as_one_glyph():
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467"
    image = packaged.GlyphRenderer(packaged.openmoji_font_path(), 64).render(family)
    assert image.width < 1.8 * 64


def test_font_without_the_glyph_is_reported_missing():
    renderer = packaged.GlyphRenderer(packaged.openmoji_font_path(), 32)
    with pytest.raises(BadImageError, match="glyph missing"):
        renderer.render("A")


def test_openmoji_source_limit_and_labels():
    items = list(source_records("openmoji", limit=20, render_size=32))
    assert len(items) == 20
    records = [i for i in items if isinstance(i, EmojiRecord)]
    assert records and all(r.vendor == "openmoji" and r.trim for r in records)


@needs_noto
def test_noto_renders_the_109_strike_in_colour():
    record = next(r for r in source_records("noto") if isinstance(r, EmojiRecord) and r.emoji == "😍")
    image = record.load()
    assert record.label == "in love"
    assert image.size[0] <= 136 and image.size[1] <= 128 and is_colourful(image)
    square = prepare_image(image, 64, trim=True, margin=0.0625)
    assert square.size == (64, 64) and square.mode == "RGB"


def test_missing_noto_font_explains_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y fonts-noto-color-emoji"):
        source_records("noto", font_path=tmp_path / "nope.ttf")
