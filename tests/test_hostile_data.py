"""Hostile data and concept files: names that leave their folder, images too large to decode,
captions that are not text, non-finite embeddings and LoRAs, manifests of the wrong shape.

Each case builds its files in ``tmp_path`` and asserts the one-line refusal (exception type and
the key words of its message) or the safe behaviour (the item skipped and counted).
"""

import base64
import csv
import io
import json
import os

import numpy as np
import pytest
from PIL import Image, ImageFile

from kerasemote import weights
from kerasemote.data import prepare, source_records
from kerasemote.data.dataset import read_metadata
from kerasemote.data.images import MAX_IMAGE_PIXELS, read_image
from kerasemote.data.records import BadImageError
from kerasemote.data.sources.folder import load_image_folder
from kerasemote.embeddings import read_embeddings
from kerasemote.lora_files import A_SUFFIX, B_SUFFIX, FORMAT, check_scale, combine_loras, read_lora

LAYER = "unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q"


def png(color=(255, 0, 0), size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png() -> bytes:
    """A 12000 x 12000 PNG of a few kilobytes (one bit per pixel, all zero): 144 million pixels to decode."""
    buffer = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buffer, format="PNG")
    return buffer.getvalue()


def outside_file(tmp_path, name="secret.png", data=None):
    """A file outside the data folder ``tmp_path/data`` (which is created)."""
    (tmp_path / "data").mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_bytes(png() if data is None else data)
    return path


# ---------------------------------------------------------------------- embeddings


def embeddings_folder(tmp_path, manifest=None, entry_file="happy.npy", rows=None):
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    np.save(folder / "happy.npy", np.full((1, 8), 0.1, "float32") if rows is None else rows)
    if manifest is None:
        manifest = {"format": "kerasemote-embeddings", "version": 1, "dims": 8,
                    "tokens": [{"token": "<happy>", "file": entry_file, "num_vectors": 1}]}
    (folder / "embeddings.json").write_text(json.dumps(manifest))
    return str(folder / "embeddings.json")


def manifest_escape_up(tmp_path):
    return embeddings_folder(tmp_path, entry_file="../../etc/passwd")


def manifest_absolute(tmp_path):
    secret = tmp_path / "secret.npy"
    np.save(secret, np.zeros((1, 8), "float32"))
    return embeddings_folder(tmp_path, entry_file=str(secret))


def manifest_symlink_out(tmp_path):
    secret = tmp_path / "secret.npy"
    np.save(secret, np.zeros((1, 8), "float32"))
    path = embeddings_folder(tmp_path, entry_file="link.npy")
    os.symlink(secret, tmp_path / "data" / "link.npy")
    return path


def manifest_file_not_text(tmp_path):
    return embeddings_folder(tmp_path, entry_file=7)


def manifest_list(tmp_path):
    return embeddings_folder(tmp_path, manifest=[{"token": "<happy>", "file": "happy.npy"}])


def manifest_without_tokens(tmp_path):
    return embeddings_folder(tmp_path, manifest={"format": "kerasemote-embeddings", "version": 1})


def manifest_empty(tmp_path):
    return embeddings_folder(tmp_path, manifest={})


def manifest_version_text(tmp_path):
    return embeddings_folder(tmp_path, manifest={"format": "kerasemote-embeddings", "version": "1",
                                                 "tokens": [{"token": "<happy>", "file": "happy.npy"}]})


def manifest_token_missing(tmp_path):
    return embeddings_folder(tmp_path, manifest={"format": "kerasemote-embeddings", "version": 1,
                                                 "tokens": [{"file": "happy.npy"}]})


def sibling_manifest_not_json(tmp_path):
    embeddings_folder(tmp_path)
    (tmp_path / "data" / "embeddings.json").write_text("{not json")
    return str(tmp_path / "data" / "happy.npy")


def nan_embedding(tmp_path):
    rows = np.full((1, 8), 0.1, "float32")
    rows[0, 3] = np.nan
    return embeddings_folder(tmp_path, rows=rows)


def huge_embedding(tmp_path):
    return embeddings_folder(tmp_path, rows=np.full((1, 8), 1e38, "float32"))


def inf_seed_style_embedding(tmp_path):
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "alone.npy", np.array([[0.1, np.inf]], "float64"))
    return str(tmp_path / "data" / "alone.npy")


def nan_in_bundle(tmp_path):
    path = tmp_path / "embeddings.npz"
    weights.save_arrays(path, {"<happy>": np.full((1, 8), np.nan, "float32")},
                        {"format": "kerasemote-embeddings", "version": 1, "tokens": [{"token": "<happy>"}]})
    return str(path)


EMBEDDING_REFUSALS = [
    pytest.param(manifest_escape_up, ValueError, r"embeddings.json: field 'tokens\[0\].file' expected a relative "
                 r"path inside .*, found '../../etc/passwd'", id="manifest-file-dotdot"),
    pytest.param(manifest_absolute, ValueError, r"field 'tokens\[0\].file' expected a relative path .* found '/",
                 id="manifest-file-absolute"),
    pytest.param(manifest_symlink_out, ValueError, r"field 'tokens\[0\].file' .* found 'link.npy' "
                 r"\(it resolves to .*secret.npy\)", id="manifest-file-symlink-out"),
    pytest.param(manifest_file_not_text, ValueError, r"field 'tokens\[0\].file' expected .* found 7",
                 id="manifest-file-number"),
    pytest.param(manifest_list, weights.WeightFileError, r"embeddings.json: expected a JSON object .* found list",
                 id="manifest-list"),
    pytest.param(manifest_without_tokens, weights.WeightFileError,
                 r"embeddings.json: key 'tokens' expected a list of token entries, found None",
                 id="manifest-no-tokens"),
    pytest.param(manifest_empty, weights.WeightFileError, r"embeddings.json: key 'format' expected",
                 id="manifest-empty"),
    pytest.param(manifest_version_text, weights.WeightFileError,
                 r"embeddings.json: key 'version' expected an integer, found '1'", id="manifest-version-text"),
    pytest.param(manifest_token_missing, weights.WeightFileError,
                 r"embeddings.json: key 'tokens\[0\].token' expected a token .* found None", id="manifest-no-token"),
    pytest.param(sibling_manifest_not_json, ValueError, r"data/embeddings.json: not valid JSON",
                 id="sibling-manifest-not-json"),
    pytest.param(nan_embedding, weights.WeightFileError,
                 r"happy.npy: key '<happy>' expected finite values within \+-1000, found nan at index \(0, 3\)",
                 id="nan-rows"),
    pytest.param(huge_embedding, weights.WeightFileError, r"happy.npy: key '<happy>' expected finite values .* "
                 r"found 1e\+38", id="1e38-rows"),
    pytest.param(inf_seed_style_embedding, weights.WeightFileError, r"alone.npy: key '<alone>' .* found inf",
                 id="inf-seed-style"),
    pytest.param(nan_in_bundle, weights.WeightFileError, r"embeddings.npz: key '<happy>' .* found nan",
                 id="nan-in-npz"),
]


@pytest.mark.parametrize("build, error, message", EMBEDDING_REFUSALS)
def test_a_hostile_embedding_file_is_refused_in_one_line_naming_file_and_field(tmp_path, build, error, message):
    path = build(tmp_path)
    with pytest.raises(error, match=message) as caught:
        read_embeddings(path)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------------- LoRA files


def lora_file(tmp_path, a=None, b=None, **manifest):
    arrays = {LAYER + A_SUFFIX: np.full((4, 2), 0.1, "float32") if a is None else a,
              LAYER + B_SUFFIX: np.full((2, 4), 0.1, "float32") if b is None else b}
    path = tmp_path / "lora.npz"
    weights.save_arrays(path, arrays, {"format": FORMAT, "version": 1, "rank": 2, "alpha": 2.0,
                                       "targets": ["attention"], **manifest})
    return str(path)


def lora_nan_value(tmp_path):
    b = np.zeros((2, 4), "float32")
    b[1, 2] = np.nan
    return lora_file(tmp_path, b=b)


LORA_REFUSALS = [
    pytest.param(lora_nan_value, r"lora.npz: key '.*to_q/lora_kernel_b' expected finite values .* found nan at "
                 r"index \(1, 2\)", id="nan-value"),
    pytest.param(lambda t: lora_file(t, a=np.full((4, 2), -np.inf, "float32")), r"lora_kernel_a' .* found -inf",
                 id="inf-value"),
    pytest.param(lambda t: lora_file(t, a=np.full((4, 2), 1e30, "float32")), r"lora_kernel_a' .* found 1e\+30",
                 id="huge-value"),
    pytest.param(lambda t: lora_file(t, alpha=float("nan")), r"lora.npz: key 'alpha' expected a finite number "
                 r"with \|alpha / rank\| <= 1000, found nan", id="nan-alpha"),
    pytest.param(lambda t: lora_file(t, alpha=float("inf")), r"key 'alpha' expected a finite number .* found inf",
                 id="inf-alpha"),
    pytest.param(lambda t: lora_file(t, alpha=1e30), r"key 'alpha' .* found 1e\+30", id="absurd-alpha"),
    pytest.param(lambda t: lora_file(t, alpha="2"), r"key 'alpha' expected a number, found '2'", id="text-alpha"),
    pytest.param(lambda t: lora_file(t, rank=True), r"lora.npz: key 'rank' expected a positive integer, found True",
                 id="rank-true"),
    pytest.param(lambda t: lora_file(t, rank=0), r"key 'rank' expected a positive integer, found 0", id="rank-zero"),
    pytest.param(lambda t: lora_file(t, version="1"), r"key 'version' expected an integer <= 1, found '1'",
                 id="version-text"),
    pytest.param(lambda t: lora_file(t, targets=3), r"key 'targets' expected a list of target names, found 3",
                 id="targets-number"),
]


@pytest.mark.parametrize("build, message", LORA_REFUSALS)
def test_a_hostile_lora_file_is_refused_in_one_line_naming_file_and_key(tmp_path, build, message):
    path = build(tmp_path)
    with pytest.raises(weights.WeightFileError, match=message) as caught:
        read_lora(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 1e999, -1e6, True, "0.5", None])
def test_a_lora_scale_that_is_not_a_sane_number_is_refused_naming_the_file(tmp_path, scale):
    lora = read_lora(lora_file(tmp_path))
    with pytest.raises(ValueError, match=r"lora.npz: LoRA scale expected a finite number within \+-1000"):
        combine_loras([(lora, scale)])
    with pytest.raises(ValueError, match="LoRA scale expected a finite number"):
        check_scale(scale, "style.npz")


# ---------------------------------------------------------------------- data sources


def kaggle_number_escape(tmp_path):
    root = tmp_path / "data"
    (root / "image" / "Apple").mkdir(parents=True)
    (tmp_path / "x.png").write_bytes(png())
    (root / "full_emoji.csv").write_text("#,emoji,unicode,name,Apple\n../../../x,😀,U+1F600,grinning face,\n",
                                         encoding="utf-8")
    return lambda: list(source_records("kaggle", root))


def russian_csv(tmp_path, name):
    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    (root / "marking.csv").write_text(f"file_name,text\n{name},grinning face\n", encoding="utf-8")
    return lambda: list(source_records("russian", root))


def russian_escape_up(tmp_path):
    outside_file(tmp_path)
    return russian_csv(tmp_path, "../secret.png")


def russian_absolute(tmp_path):
    return russian_csv(tmp_path, str(outside_file(tmp_path)))


def russian_symlink_out(tmp_path):
    os.symlink(outside_file(tmp_path), tmp_path / "data" / "link.png")
    return russian_csv(tmp_path, "link.png")


def parquet_with(tmp_path, image_cell, caption, caption_type=None):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    (tmp_path / "data").mkdir(exist_ok=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"image": pa.array([image_cell], type=image_type),
                      "text": pa.array([caption], type=caption_type or pa.string())})
    path = tmp_path / "data" / "train.parquet"
    pq.write_table(table, path)
    return path


def parquet_path_escape(tmp_path):
    outside_file(tmp_path)
    path = parquet_with(tmp_path, {"bytes": None, "path": "../secret.png"}, "grinning face")
    return lambda: list(source_records("valhalla", path))


def parquet_path_absolute(tmp_path):
    path = parquet_with(tmp_path, {"bytes": None, "path": str(outside_file(tmp_path))}, "grinning face")
    return lambda: list(source_records("valhalla", path))


def prepared_set(tmp_path, **row):
    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "images" / "a.png").write_bytes(png())
    full = {"id": "a", "file": "images/a.png", "caption": "a emoji", "vendor": "user", "label": None,
            "split": "train", **row}
    (folder / "metadata.jsonl").write_text(json.dumps(full) + "\n")
    return lambda: read_metadata(folder)


def prepared_file_escape(tmp_path):
    outside_file(tmp_path)
    return prepared_set(tmp_path, file="../secret.png")


def folder_metadata_link_out(tmp_path):
    (tmp_path / "data" / "happy").mkdir(parents=True)
    (tmp_path / "data" / "happy" / "a.png").write_bytes(png())
    (tmp_path / "captions.csv").write_text("file_name,text\nhappy/a.png,x\n")
    os.symlink(tmp_path / "captions.csv", tmp_path / "data" / "metadata.csv")
    return lambda: load_image_folder(tmp_path / "data")


DATA_REFUSALS = [
    pytest.param(kaggle_number_escape, r"full_emoji.csv:2: field '#' expected a relative path inside .*image, "
                 r"found 'Apple/../../../x.png'", id="kaggle-number-dotdot"),
    pytest.param(russian_escape_up, r"marking.csv:2: field 'file_name' expected a relative path inside .* "
                 r"found '../secret.png'", id="csv-file-dotdot"),
    pytest.param(russian_absolute, r"marking.csv:2: field 'file_name' .* found '/.*secret.png'",
                 id="csv-file-absolute"),
    pytest.param(russian_symlink_out, r"marking.csv:2: field 'file_name' .* found 'link.png' \(it resolves to "
                 r".*secret.png\)", id="csv-file-symlink-out"),
    pytest.param(parquet_path_escape, r"train.parquet:row 0: field 'image.path' expected a relative path inside "
                 r".* found '../secret.png'", id="parquet-path-dotdot"),
    pytest.param(parquet_path_absolute, r"train.parquet:row 0: field 'image.path' .* found '/.*secret.png'",
                 id="parquet-path-absolute"),
    pytest.param(prepared_file_escape, r"metadata.jsonl:1: field 'file' expected a relative path inside .* "
                 r"found '../secret.png'", id="prepared-file-dotdot"),
    pytest.param(lambda t: prepared_set(t, caption=5), r"metadata.jsonl:1: key 'caption' expected text, found 5",
                 id="prepared-caption-number"),
    pytest.param(folder_metadata_link_out, r"metadata.csv: expected a file inside .*data, found a link to "
                 r".*captions.csv", id="folder-metadata-link-out"),
]


@pytest.mark.parametrize("build, message", DATA_REFUSALS)
def test_a_data_file_naming_a_file_outside_its_folder_is_refused_in_one_line(tmp_path, build, message):
    read = build(tmp_path)
    with pytest.raises(ValueError, match=message) as caught:
        read()
    assert "\n" not in str(caught.value)


def folder_image_link_out(tmp_path):
    (tmp_path / "data" / "happy").mkdir(parents=True)
    (tmp_path / "data" / "happy" / "a.png").write_bytes(png())
    os.symlink(outside_file(tmp_path), tmp_path / "data" / "happy" / "b.png")
    return source_records("folder", tmp_path / "data")


def folder_sidecar_link_out(tmp_path):
    (tmp_path / "data" / "happy").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        (tmp_path / "data" / "happy" / name).write_bytes(png())
    os.symlink(outside_file(tmp_path, "secret.txt", b"root:x:0:0"), tmp_path / "data" / "happy" / "b.txt")
    return source_records("folder", tmp_path / "data")


def kaggle_huge_cell(tmp_path):
    uri = "data:image/png;base64," + base64.b64encode(huge_png()).decode()
    small = "data:image/png;base64," + base64.b64encode(png()).decode()
    path = tmp_path / "full_emoji.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["#", "emoji", "unicode", "name", "Apple"],
                                      ["1", "😀", "U+1F600", "grinning face", small],
                                      ["2", "😍", "U+1F60D", "smiling face with heart-eyes", uri]])
    return source_records("kaggle", path)


def parquet_numeric_caption(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    cell_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"image": pa.array([{"bytes": png(), "path": None}] * 2, type=cell_type),
                      "label": pa.array([7, None], type=pa.int64()),
                      "text": pa.array(["grinning face", "crying face"])})
    path = tmp_path / "train.parquet"
    pq.write_table(table, path)
    # the "label" column of class ids is the wrong caption column: row 0 holds a number, row 1 nothing
    return [*source_records("valhalla", path, caption_column="label"), *source_records("valhalla", path, limit=1)]


DATA_SKIPS = [
    pytest.param(folder_image_link_out, "link outside the folder", id="folder-image-symlink-out"),
    pytest.param(folder_sidecar_link_out, "link outside the folder", id="folder-sidecar-symlink-out"),
    pytest.param(kaggle_huge_cell, "image too large", id="csv-cell-12000x12000-png"),
    pytest.param(parquet_numeric_caption, "caption is not text", id="parquet-caption-number"),
]


@pytest.mark.parametrize("build, reason", DATA_SKIPS)
def test_a_hostile_data_item_is_skipped_and_counted_while_the_rest_is_written(tmp_path, build, reason):
    report = prepare(build(tmp_path), tmp_path / "out", size=8)
    assert report.written == 1
    assert report.skipped[reason] == 1
    assert reason in report.format()
    written = [json.loads(line) for line in (tmp_path / "out" / "metadata.jsonl").read_text().splitlines()]
    assert all("root:x" not in row["caption"] for row in written)


def test_a_symlink_out_of_a_user_folder_is_left_out_of_its_listing(tmp_path, caplog):
    folder_image_link_out(tmp_path)
    assert [item.path.name for item in load_image_folder(tmp_path / "data")] == ["a.png"]
    assert "skipped 1 images whose file or caption is a link outside the folder" in caplog.text


def test_a_huge_image_is_refused_from_its_header_before_any_pixel_is_decoded(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    path.write_bytes(huge_png())
    assert path.stat().st_size < 140_000 and 12000 * 12000 > MAX_IMAGE_PIXELS

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(BadImageError, match=r"image too large: .*huge.png: 12000 x 12000 = 144,000,000 pixels, "
                                            r"above the limit of 67,108,864") as caught:
        read_image(str(path), 64)
    assert "\n" not in str(caught.value)


def test_training_and_classifier_folders_leave_out_images_that_link_outside(tmp_path, caplog):
    from kerasemote.classification.images import list_labelled_folder
    from kerasemote.training.data import load_training_images

    data = tmp_path / "data"
    (data / "happy").mkdir(parents=True)
    (data / "happy" / "a.png").write_bytes(png())
    (data / "happy" / "a.txt").write_text("a happy emoji")
    os.symlink(outside_file(tmp_path), data / "happy" / "b.png")
    os.symlink(outside_file(tmp_path, "secret.txt", b"root:x:0:0"), data / "happy" / "c.txt")
    (data / "happy" / "c.png").write_bytes(png((0, 255, 0)))
    os.symlink(tmp_path / "elsewhere", data / "sad")  # a whole class folder outside
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.png").write_bytes(png())
    with caplog.at_level("WARNING"):
        images = load_training_images(str(data), 8)
        paths, labels = list_labelled_folder(data)
    assert sorted(os.path.basename(f) for f in images.files) == ["a.png", "c.png"]
    assert all("root:x" not in c for caps in images.captions for c in caps)
    assert [p.name for p in paths] == ["a.png", "c.png"] and labels == ["happy", "happy"]
    assert "links outside the folder" in caplog.text


@pytest.mark.parametrize("content, message", [
    (b"not a zip at all", r"model.keras: expected a .keras zip archive .* found 16 bytes that are not one"),
    (None, r"model.keras: not a readable Keras model \("),
], ids=["not-zip", "zip-without-model"])
def test_a_damaged_classifier_model_file_is_refused_naming_it(tmp_path, content, message):
    import zipfile

    from kerasemote.classification import load_classifier

    (tmp_path / "labels.json").write_text(json.dumps({"class_names": ["happy", "sad"], "image_size": 32}))
    if content is None:
        with zipfile.ZipFile(tmp_path / "model.keras", "w") as archive:
            archive.writestr("metadata.json", "{}")
    else:
        (tmp_path / "model.keras").write_bytes(content)
    with pytest.raises(ValueError, match=message) as caught:
        load_classifier(tmp_path)
    assert "\n" not in str(caught.value) and "File not found" not in str(caught.value)
