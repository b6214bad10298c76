"""Prepared directories end to end: images, split grouping, tf.data, TFDS offline, CLI."""

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from kerasemote import data
from kerasemote.data import EmojiRecord, images

RED = (255, 0, 0, 255)


def solid(color, size=(8, 8)):
    return lambda: Image.new("RGBA", size, color)


def left_red_right_blue():
    image = Image.new("RGBA", (8, 8), (0, 0, 255, 255))
    image.paste((255, 0, 0, 255), (0, 0, 4, 8))
    return image


def record(id_, emoji, vendor, load=None, label=None, description=None):
    return EmojiRecord(id=id_, load=load or solid(RED), description=description or f"face {emoji}",
                       vendor=vendor, emoji=emoji, label=label, origin=id_)


def test_half_transparent_pixel_is_composited_on_the_background():
    pixel = Image.new("RGBA", (1, 1), (255, 0, 0, 128))
    assert images.composite(pixel).getpixel((0, 0)) == (255, 127, 127)
    assert images.composite(pixel, images.parse_color("black")).getpixel((0, 0)) == (128, 0, 0)


def test_fit_square_pads_wide_images_with_the_background():
    out = images.fit_square(Image.new("RGB", (20, 10), "red"), 10, background=(0, 255, 0))
    pixels = np.asarray(out)
    assert out.size == (10, 10)
    assert tuple(pixels[0, 5]) == (0, 255, 0) and tuple(pixels[5, 5]) == (255, 0, 0)


def test_trim_then_margin_frames_the_glyph():
    glyph = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    glyph.paste((255, 0, 0, 255), (30, 30, 40, 40))  # a small opaque corner
    out = np.asarray(images.prepare_image(glyph, 32, trim=True, margin=0.125))
    assert tuple(out[16, 16]) == (255, 0, 0) and tuple(out[1, 1]) == (255, 255, 255)


@pytest.fixture
def mixed_set(tmp_path):
    recs = []
    for emoji, label in [("😀", "happy"), ("😢", "sad"), ("😠", "angry"), ("😍", "in love"), ("🎉", None)] * 1:
        for vendor in ("apple", "noto", "twemoji"):
            load = left_red_right_blue if emoji == "😀" else solid(RED)
            recs.append(record(f"{vendor}_{ord(emoji):x}", emoji, vendor, load, label))
    out = tmp_path / "prepared"
    report = data.prepare(recs, out, size=16, workers=1)
    assert report.written == 15
    return out


def test_prepared_layout_tokens_labels_and_mixed_captions(mixed_set):
    assert data.vendor_tokens(mixed_set) == {"apple": "<s0>", "noto": "<s1>", "twemoji": "<s2>"}
    assert data.label_names(mixed_set) == ["angry", "happy", "in love", "sad"]
    rows = data.read_metadata(mixed_set)
    assert rows[1]["caption"] == "face 😀 emoji in <s1> style"
    assert Image.open(mixed_set / rows[0]["file"]).size == (16, 16)
    assert json.loads((mixed_set / "info.json").read_text())["counts"]["vendor"] == {"apple": 5, "noto": 5, "twemoji": 5}


def test_all_vendors_of_an_emoji_share_a_split(mixed_set):
    by_emoji = {}
    for row in data.read_metadata(mixed_set):
        by_emoji.setdefault(row["emoji"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in by_emoji.values())


def test_no_group_splits_each_image_on_its_own(tmp_path):
    recs = [record(f"{v}_{i}", chr(0x1F600 + i), v) for i in range(40) for v in ("a", "b")]
    data.prepare(recs, tmp_path / "o", size=8, group_by_emoji=False, workers=1)
    rows = data.read_metadata(tmp_path / "o")
    mismatched = [i for i in range(40) if rows[2 * i]["split"] != rows[2 * i + 1]["split"]]
    assert mismatched, "with grouping off, some emoji should have vendors in different splits"


def test_prepare_refuses_to_overwrite_without_the_flag(mixed_set):
    with pytest.raises(FileExistsError, match="overwrite"):
        data.prepare([record("x", "😀", "apple")], mixed_set, size=16)
    data.prepare([record("x", "😀", "apple")], mixed_set, size=16, overwrite=True)
    assert [r["id"] for r in data.read_metadata(mixed_set)] == ["x"]
    assert len(list((mixed_set / "images").iterdir())) == 1


def test_load_dataset_yields_float_images_in_range_and_captions(mixed_set):
    ds = data.load_dataset(mixed_set, "all", batch_size=15, shuffle=False)
    image, caption = next(iter(ds))
    assert image.shape == (15, 16, 16, 3) and image.dtype.name == "float32"
    assert float(image.numpy().min()) == -1.0 and float(image.numpy().max()) == 1.0
    assert caption.numpy()[0].decode() == "face 😀 emoji in <s0> style"


def test_load_dataset_resizes_and_gives_label_ids(mixed_set):
    ds = data.load_dataset(mixed_set, "all", size=8, with_labels=True, shuffle=False)
    elements = list(ds)
    names = data.label_names(mixed_set)
    assert len(elements) == 12  # the party popper has no emotion
    image, caption, label = elements[0]
    assert image.shape == (8, 8, 3)
    assert names[int(label)] == "happy"


def test_flip_mirrors_some_images_and_is_reproducible_with_a_seed(mixed_set):
    def first_pixels(seed):
        ds = data.load_dataset(mixed_set, "all", vendors=["apple"], flip=True, shuffle=False, seed=seed)
        return [tuple(np.round(img.numpy()[8, 0])) for img, cap in ds if "😀" in cap.numpy().decode()]

    runs = [first_pixels(seed)[0] for seed in range(8)]
    assert (1.0, -1.0, -1.0) in runs and (-1.0, -1.0, 1.0) in runs  # red left (kept) and blue left (flipped)
    assert first_pixels(3) == first_pixels(3)


def test_crop_keeps_the_output_shape(mixed_set):
    ds = data.load_dataset(mixed_set, "all", crop_scale=0.5, batch_size=4, repeat=True)
    image, _ = next(iter(ds))
    assert image.shape == (4, 16, 16, 3)


def test_bad_metadata_row_names_file_line_and_keys(mixed_set):
    (mixed_set / "metadata.jsonl").write_text('{"file": "images/a.png", "caption": "x"}\n')
    with pytest.raises(ValueError, match=r"metadata.jsonl:1: missing keys \['vendor', 'label', 'split'\]"):
        data.load_dataset(mixed_set)


def test_dataset_from_folder_uses_concepts_as_labels(tmp_path):
    for concept in ("happy", "sad"):
        (tmp_path / concept).mkdir()
        Image.new("RGB", (10, 6), "red").save(tmp_path / concept / "1.png")
    ds, names = data.dataset_from_folder(tmp_path, size=8, with_labels=True, shuffle=False)
    got = [(cap.numpy().decode(), names[int(lab)], img.shape) for img, cap, lab in ds]
    assert got == [("happy emoji", "happy", (8, 8, 3)), ("sad emoji", "sad", (8, 8, 3))]


def test_dataset_from_folder_names_images_without_captions(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "orphan.png")
    with pytest.raises(ValueError, match="orphan.png"):
        data.dataset_from_folder(tmp_path, size=8)


def test_lazy_data_functions_stay_callable_after_their_module_is_imported():
    # Importing a submodule sets it as an attribute of the package: no lazy function may share its name.
    import importlib

    for name, module in data._LAZY.items():
        importlib.import_module(module)
        assert callable(getattr(data, name)), f"kerasemote.data.{name} is shadowed by a module"


def test_tfds_load_works_offline_on_a_prepared_directory(mixed_set):
    import tensorflow_datasets as tfds

    builder = data.tfds_builder(mixed_set)
    counts = {name: split.num_examples for name, split in builder.info.splits.items()}
    assert sum(counts.values()) == 15
    split = next(iter(counts))
    ds = tfds.load("kerasemote_emoji", split=split, data_dir=str(mixed_set / "tfds"),
                   download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=str(mixed_set))})
    example = next(iter(ds))
    assert example["image"].shape == (16, 16, 3)
    assert example["caption"].numpy().decode().endswith("style")


def cli(argv):
    from kerasemote.cli import data as data_cli

    parser = argparse.ArgumentParser(prog="kerasemote")
    data_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_prepare_and_inspect_packaged_sets(tmp_path, capsys):
    out = tmp_path / "emoji"
    assert cli(["data", "prepare", "--source", "twemoji,openmoji", "--limit", "12", "--size", "16",
                "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "openmoji" in printed and "twemoji" in printed and "skipped" in printed
    assert cli(["data", "inspect", str(out), "--count", "9"]) == 0
    assert Image.open(out / "contact_sheet.png").size[0] == 8 * 96


def test_cli_rejects_two_file_sources(tmp_path):
    with pytest.raises(ValueError, match="PATH can serve only one"):
        cli(["data", "prepare", "--source", "kaggle,russian", str(tmp_path), "--out", str(tmp_path / "o")])


def test_a_metadata_row_that_is_not_an_object_is_named_by_file_and_line(tmp_path):
    row = '{"file": "a.png", "caption": "a", "vendor": "v", "label": null, "split": "train"}'
    (tmp_path / "metadata.jsonl").write_text(row + "\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"metadata.jsonl:2: expected a JSON object, found list"):
        data.read_metadata(tmp_path)
