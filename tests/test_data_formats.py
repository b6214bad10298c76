"""External formats, written by the tests: Kaggle full_emoji.csv (real base64 PNGs and the
image/<Vendor>/<#>.png layout), a valhalla-style parquet, a Russian marking.csv, user folders."""

import base64
import csv
import io
import json

import pytest
from PIL import Image

from kerasemote.data import EmojiRecord, SkippedItem, load_image_folder, prepare, source_records
from kerasemote.data.sources.packaged import twemoji_png_dir

KAGGLE_HEADER = ["#", "emoji", "unicode", "name", "Apple", "Google", "Twitter"]


def real_png(codepoints: str) -> bytes:
    """A real emoji PNG from the packaged twemoji set."""
    return (twemoji_png_dir() / f"{codepoints}.png").read_bytes()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def split_items(items):
    items = list(items)
    return [i for i in items if isinstance(i, EmojiRecord)], [i for i in items if isinstance(i, SkippedItem)]


@pytest.fixture
def kaggle_csv(tmp_path):
    rows = [
        ["1", "😀", "U+1F600", "grinning face", data_uri(real_png("1f600")), data_uri(real_png("1f603")), ""],
        ["2", "😍", "U+1F60D", "smiling face with heart-eyes", data_uri(real_png("1f60d")), "", data_uri(real_png("1f60d"))],
        ["3", "😢", "U+1F622", "crying face", "data:image/png;base64,bm90IGEgcG5n", "", ""],  # "not a png"
    ]
    path = tmp_path / "full_emoji.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(KAGGLE_HEADER)
        writer.writerows(rows)
    return path


def test_kaggle_csv_gives_one_record_per_vendor_image_and_counts_empty_cells(kaggle_csv):
    records, skipped = split_items(source_records("kaggle", kaggle_csv))
    assert [(r.vendor, r.description, r.label) for r in records] == [
        ("apple", "grinning face", "happy"), ("google", "grinning face", "happy"),
        ("apple", "smiling face with heart-eyes", "in love"), ("twitter", "smiling face with heart-eyes", "in love"),
        ("apple", "crying face", "sad"),
    ]
    assert records[0].load().size == (72, 72)
    assert sorted(s.reason for s in skipped) == ["vendor has no image"] * 4


def test_kaggle_corrupt_cell_is_skipped_and_reported_with_its_row(kaggle_csv, tmp_path):
    report = prepare(source_records("kaggle", kaggle_csv, vendors=["apple"]), tmp_path / "out", size=16)
    assert report.written == 2
    assert report.skipped == {"unreadable image": 1}
    assert "full_emoji.csv:4:Apple" in report.examples["unreadable image"][0]
    assert "unreadable image" in report.format()


def test_kaggle_unknown_vendor_lists_the_vendor_columns(kaggle_csv):
    with pytest.raises(ValueError, match=r"vendors \['Samsung'\].*\['Apple', 'Google', 'Twitter'\]"):
        list(source_records("kaggle", kaggle_csv, vendors=["Samsung"]))


def test_kaggle_missing_column_names_file_and_columns(tmp_path):
    path = tmp_path / "full_emoji.csv"
    path.write_text("#,emoji,Apple\n1,😀,\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"full_emoji.csv: missing columns \['unicode', 'name'\]"):
        list(source_records("kaggle", path))


def test_kaggle_image_folder_layout_is_read_next_to_the_csv(tmp_path):
    (tmp_path / "image" / "Apple").mkdir(parents=True)
    (tmp_path / "image" / "Apple" / "1.png").write_bytes(real_png("1f620"))
    (tmp_path / "full_emoji.csv").write_text("#,emoji,unicode,name,Apple\n1,😠,U+1F620,angry face,\n"
                                             "2,😭,U+1F62D,loudly crying face,\n", encoding="utf-8")
    records, skipped = split_items(source_records("kaggle", tmp_path))
    assert [(r.emoji, r.label) for r in records] == [("😠", "angry")]
    assert records[0].load().size == (72, 72)
    assert [s.reason for s in skipped] == ["vendor has no image"]


def write_parquet(path, rows):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "image": pa.array([{"bytes": b, "path": None} for b, _ in rows], type=image_type),
        "text": pa.array([t for _, t in rows], type=pa.string()),
    })
    pq.write_table(table, path)


def test_valhalla_parquet_reads_image_structs_and_counts_bad_rows(tmp_path):
    path = tmp_path / "train.parquet"
    write_parquet(path, [(real_png("1f602"), "face with tears of joy"), (b"\x89PNG broken", "crying face"),
                         (real_png("1f44d"), "  ")])
    report = prepare(source_records("valhalla", path), tmp_path / "out", size=16)
    assert report.written == 1
    assert report.skipped == {"unreadable image": 1, "empty caption": 1}
    row = json.loads((tmp_path / "out" / "metadata.jsonl").read_text(encoding="utf-8"))
    assert (row["caption"], row["vendor"], row["label"]) == ("face with tears of joy emoji", "valhalla", "happy")


def test_valhalla_wrong_caption_column_lists_columns(tmp_path):
    path = tmp_path / "train.parquet"
    write_parquet(path, [(real_png("1f602"), "x")])
    with pytest.raises(ValueError, match=r"no caption column; expected 'prompt', found columns \['image', 'text'\]"):
        list(source_records("valhalla", path, caption_column="prompt"))


def russian_dir(tmp_path):
    (tmp_path / "images").mkdir()
    for name, codepoints in [("0001.png", "1f600"), ("0002.png", "1f621")]:
        (tmp_path / "images" / name).write_bytes(real_png(codepoints))
    (tmp_path / "marking.csv").write_text(
        "img_name;desc\n0001.png;улыбающееся лицо\n0002.png;злое лицо\n0003.png;нет файла\n", encoding="utf-8")
    return tmp_path


def test_russian_marking_csv_with_named_columns_and_missing_file(tmp_path):
    root = russian_dir(tmp_path)
    report = prepare(source_records("russian", root, file_column="img_name", caption_column="desc"),
                     tmp_path / "out", size=16)
    assert report.written == 2
    assert report.skipped == {"missing file": 1}
    captions = [json.loads(l)["caption"] for l in (tmp_path / "out" / "metadata.jsonl").open(encoding="utf-8")]
    assert captions == ["улыбающееся лицо emoji", "злое лицо emoji"]


def test_russian_unknown_columns_error_names_file_and_found_columns(tmp_path):
    root = russian_dir(tmp_path)
    with pytest.raises(ValueError, match=r"marking.csv: no file column.*found columns \['img_name', 'desc'\]"):
        list(source_records("russian", root))


def save_png(path, color=(255, 0, 0, 255), size=(12, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", size, color).save(path)


def test_image_folder_concepts_sidecars_and_uncaptioned_files(tmp_path):
    save_png(tmp_path / "happy" / "a.png")
    save_png(tmp_path / "happy" / "b.png")
    (tmp_path / "happy" / "b.txt").write_text("a cheerful cat sticker\n", encoding="utf-8")
    save_png(tmp_path / "sad" / "c.png")
    save_png(tmp_path / "loose.png")
    items = load_image_folder(tmp_path)
    assert [(i.path.name, i.caption, i.concept) for i in items] == [
        ("a.png", None, "happy"), ("b.png", "a cheerful cat sticker", "happy"),
        ("loose.png", None, None), ("c.png", None, "sad")]
    report = prepare(source_records("folder", tmp_path), tmp_path / "out", size=16)
    assert report.written == 3 and report.skipped == {"empty caption": 1}
    rows = [json.loads(l) for l in (tmp_path / "out" / "metadata.jsonl").open(encoding="utf-8")]
    assert [(r["caption"], r["label"]) for r in rows] == [
        ("happy emoji", "happy"), ("a cheerful cat sticker", "happy"), ("sad emoji", "sad")]


def test_image_folder_concept_without_captions_is_spread_over_the_splits(tmp_path):
    # Images named only by their folder share one caption; they must not all fall in one split.
    for i in range(60):
        save_png(tmp_path / "happy" / f"{i:02d}.png")
    prepare(source_records("folder", tmp_path), tmp_path / "out", size=8)
    rows = [json.loads(l) for l in (tmp_path / "out" / "metadata.jsonl").open(encoding="utf-8")]
    assert {r["caption"] for r in rows} == {"happy emoji"}
    assert {r["split"] for r in rows} >= {"train", "test"}


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_image_folder_metadata_file_gives_captions(tmp_path, kind):
    save_png(tmp_path / "x" / "one.png")
    save_png(tmp_path / "two.png")
    if kind == "jsonl":
        (tmp_path / "metadata.jsonl").write_text(
            '{"file_name": "x/one.png", "text": "first"}\n{"file_name": "two.png", "text": "second"}\n')
    else:
        (tmp_path / "metadata.csv").write_text("file_name,caption\nx/one.png,first\ntwo.png,second\n")
    assert [(i.path.name, i.caption) for i in load_image_folder(tmp_path)] == [("two.png", "second"), ("one.png", "first")]


def test_image_folder_truncated_image_is_counted_not_fatal(tmp_path):
    save_png(tmp_path / "happy" / "good.png")
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), "blue").save(buffer, format="PNG")
    (tmp_path / "happy" / "bad.png").write_bytes(buffer.getvalue()[:60])
    report = prepare(source_records("folder", tmp_path), tmp_path / "out", size=16)
    assert report.written == 1
    assert report.skipped == {"unreadable image": 1}
    assert "bad.png" in report.examples["unreadable image"][0]
