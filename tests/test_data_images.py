"""The one image reader: every part of kerasemote reads a file to the same pixels."""

import io

import numpy as np
import pytest
from PIL import Image

from kerasemote.data import BadImageError
from kerasemote.data.images import prepare_image, read_image, shape_image


def _wide_rgba(path, width=60, height=40):
    """A non-square, half-transparent noise image: any difference in crop, alpha or resampling shows."""
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 4), dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(path)
    return pixels


def _training_recipe(path, size, background):
    """What training has always read (the shipped weights and tokens are tuned on these pixels):
    composite on the background, centre square crop, Lanczos."""
    image = Image.open(path).convert("RGBA")
    image = Image.alpha_composite(Image.new("RGBA", image.size, background), image).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return np.asarray(image.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS))


def test_classifier_and_training_read_a_file_to_identical_pixels(tmp_path):
    from kerasemote.classification import load_image, load_labelled_folder, prepare_images
    from kerasemote.training.data import load_training_images, read_square_image

    (tmp_path / "happy").mkdir()
    pixels = _wide_rgba(tmp_path / "happy" / "a.png")
    training = read_square_image(str(tmp_path / "happy" / "a.png"), 24)
    assert training.shape == (24, 24, 3) and training.dtype == np.uint8
    np.testing.assert_array_equal(load_image(tmp_path / "happy" / "a.png", 24), training)
    np.testing.assert_array_equal(load_labelled_folder(tmp_path, 24).images[0], training)
    np.testing.assert_array_equal(load_training_images(str(tmp_path), 24).images[0], training)
    # An in-memory batch (generated images) is brought to size the same way as its file.
    np.testing.assert_array_equal(prepare_images(pixels[None], 24)[0][0], training)


@pytest.mark.parametrize("background", ["white", "black"])
def test_training_pixels_are_the_composite_centre_crop_lanczos_recipe(tmp_path, background):
    from kerasemote.training.data import read_square_image

    _wide_rgba(tmp_path / "a.png")
    for size in (16, 40, 64):
        np.testing.assert_array_equal(read_square_image(str(tmp_path / "a.png"), size, background),
                                      _training_recipe(tmp_path / "a.png", size, background))


def test_bytes_and_file_read_alike_and_pad_is_data_preparations_recipe(tmp_path):
    _wide_rgba(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    np.testing.assert_array_equal(read_image(data, 32), read_image(tmp_path / "a.png", 32))
    padded = read_image(data, 32, fit="pad", trim=True, margin=0.125)
    with Image.open(io.BytesIO(data)) as image:
        np.testing.assert_array_equal(padded, np.asarray(prepare_image(image, 32, trim=True, margin=0.125)))
    assert tuple(padded[0, 0]) == (255, 255, 255)  # the margin


def test_crop_keeps_the_centre_box_of_a_non_square_target():
    image = Image.new("RGB", (30, 10), "red")
    image.paste((0, 0, 255), (10, 0, 20, 10))  # blue middle third
    out = np.asarray(shape_image(image, (10, 10), resample="nearest"))
    assert out.shape == (10, 10, 3) and (out == (0, 0, 255)).all()
    assert np.asarray(shape_image(image, (5, 30))).shape == (5, 30, 3)
    assert np.asarray(shape_image(image, None)).shape == (10, 30, 3)


def test_reader_errors_name_the_file_and_the_setting(tmp_path):
    with pytest.raises(BadImageError, match="missing file: .*nope.png"):
        read_image(tmp_path / "nope.png", 8)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="unreadable image: .*bad.png"):
        read_image(tmp_path / "bad.png", 8)
    with pytest.raises(ValueError, match="fit is 'stretch'; expected one of"):
        shape_image(Image.new("RGB", (4, 4)), 8, fit="stretch")
    with pytest.raises(ValueError, match="resample is 'cubic'"):
        shape_image(Image.new("RGB", (4, 6)), 8, resample="cubic")
