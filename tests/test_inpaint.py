"""Inpainting: latent blending on any model, inpainting UNets (9 channels), masks, conversion, the CLI."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from kerasemote.cli import main
from kerasemote.config import TINY, ConfigError, ModelConfig
from kerasemote.convert import naming
from kerasemote.inpaint import mask_array, read_mask
from kerasemote.model import StableDiffusion
from kerasemote.pipeline import generate
from kerasemote.schedulers import SAMPLERS

REPO = Path(__file__).resolve().parents[1]
INPAINT_TINY = TINY.replace(name="tiny-inpainting", unet_in_channels=9)
FAST = dict(steps=2, progress=False)


@pytest.fixture(scope="module")
def tiny():
    return StableDiffusion.random("tiny", seed=0)


@pytest.fixture(scope="module")
def shipped():
    import kerasemote

    return kerasemote.load_model()  # kerasemote-tiny: a trained VAE, so a round trip keeps the picture


@pytest.fixture(scope="module")
def emoji():
    """A 64 px emoji and a mask over its mouth (whole 4 px latent cells: rows 9..12, columns 5..10)."""
    from kerasemote import images

    image = images.load_image(str(REPO / "dataset/noto-emoji/images/noto_1f600.png"), size=(64, 64))[None]
    mask = np.zeros((64, 64), np.uint8)
    mask[36:52, 20:44] = 255
    return image, mask


def _picture(size: int = 32) -> np.ndarray:
    """A smooth picture with a disc, uint8 (1, size, size, 3)."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([255 * x, 255 * y, 128 + 0 * x], -1)
    image[(x - 0.5) ** 2 + (y - 0.4) ** 2 < 0.05] = (240, 200, 40)
    return image.astype(np.uint8)[None]


# ---------------------------------------------------------------------- config


def test_inpainting_unet_takes_latents_mask_and_masked_image_latents():
    assert not TINY.inpainting and TINY.unet_in_channels == TINY.latent_channels
    assert INPAINT_TINY.inpainting
    assert naming.variable_shapes(INPAINT_TINY, "unet")["unet/conv_in/kernel"] == (3, 3, 9, 32)
    counts = sum(int(np.prod(s)) for p in naming.PARTS for s in naming.variable_shapes(INPAINT_TINY, p).values())
    assert INPAINT_TINY.parameter_count() == counts == TINY.parameter_count() + 5 * 9 * 32
    # A plain config's input channels follow its latent channels; an old config.json without the key loads.
    assert TINY.replace(latent_channels=8).unet_in_channels == 8
    data = INPAINT_TINY.to_dict()
    del data["unet_in_channels"]
    assert ModelConfig.from_dict(data).unet_in_channels == 4


def test_unet_input_channels_other_than_plain_or_inpainting_are_refused():
    with pytest.raises(ConfigError, match=r"unet_in_channels: expected 4 \(latent_channels\) or 9 .*found 5"):
        TINY.replace(unet_in_channels=5)


# ---------------------------------------------------------------------- route (a): latent blending


def test_outside_the_mask_the_image_is_kept_within_the_vae_round_trip_error(shipped, emoji):
    image, mask = emoji
    encoded = shipped.encode_images(image, seed=0)  # the pipeline encodes with the generation's seed
    round_trip = shipped.decode_latents(encoded).astype(float)
    latents = shipped.generate("a sad face emoji", init_image=image, mask=mask, steps=8, seed=0, progress=False,
                               return_latents=True)
    result = shipped.decode_latents(latents)
    plain = shipped.generate("a sad face emoji", steps=8, seed=0, progress=False)
    # Outside the mask the final latents are the image's own.
    keep = mask[::4, ::4] == 0
    np.testing.assert_array_equal(latents[0][keep], encoded[0][keep])
    # The VAE decoder's 3x3 convolutions carry each latent cell into its neighbours' pixels: judge the
    # pixels at least one latent cell (4 px) away from the mask.
    far = np.ones((64, 64), bool)
    far[32:56, 16:48] = False

    def error(x, where=far):
        return np.abs(x.astype(float) - image)[0][where].mean()

    assert error(result) <= 1.1 * error(round_trip), (error(result), error(round_trip))
    assert error(plain) > 1.1 * error(round_trip)  # the check tells a new picture from the kept one
    assert error(result, mask > 0) > 2 * error(round_trip, mask > 0)  # the mouth is repainted


def test_latent_blending_keeps_the_image_latents_with_every_sampler_and_strength(shipped, emoji):
    image, mask = emoji
    keep = mask[::4, ::4] == 0
    encoded = shipped.encode_images(image, seed=5)
    for i, sampler in enumerate(SAMPLERS):
        strength = 0.6 if i % 2 else None  # None: inpainting's default, from pure noise
        latents = shipped.generate("x", init_image=image, mask=mask, seed=5, sampler=sampler, strength=strength,
                                   return_latents=True, steps=4, progress=False)
        np.testing.assert_array_equal(latents[0][keep], encoded[0][keep])
        assert np.abs(latents[0][~keep] - encoded[0][~keep]).mean() > 0.05, sampler  # repainted


# ---------------------------------------------------------------------- masks


def test_gray_masks_are_binarized_at_one_half_and_rgb_masks_by_luminance():
    gray = np.array([[0, 127, 128, 255]], np.uint8)
    np.testing.assert_array_equal(mask_array(gray, 1, 1, 4)[0, :, :, 0], [[0, 0, 1, 1]])
    floats = np.array([[0.0, 0.49, 0.5, 1.0]], np.float32)
    np.testing.assert_array_equal(mask_array(floats, 2, 1, 4)[:, 0, :, 0], [[0, 0, 1, 1]] * 2)
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [255, 255, 255]]], np.uint8)  # luminance 76, 150, 255
    np.testing.assert_array_equal(mask_array(rgb, 1, 1, 3)[0, 0, :, 0], [0, 1, 1])


@pytest.mark.parametrize("kwargs, message", [
    (dict(mask=np.ones((32, 32), np.uint8)), "mask: expected an init_image too"),
    (dict(init_image=_picture(), mask=np.ones((16, 32), np.uint8)),
     r"mask: expected 32x32 pixels \(the init image's size\), found 16x32"),
    (dict(init_image=_picture(), mask=np.full((32, 32), 2.0)), r"mask: expected values in \[0, 1\].*found 2\.\.2"),
    (dict(init_image=_picture(), mask=np.full((32, 32), np.nan)), "found NaN or infinity"),
    (dict(init_image=_picture(), mask=np.ones((32, 32), np.int64)), "expected uint8 .* found int64"),
    (dict(init_image=_picture(), mask=np.ones((3, 32, 32), np.uint8), num_images=2),
     r"expected 1 mask or one per image \(2\), found 3"),
], ids=["no-init-image", "wrong-size", "out-of-range", "nan", "int64", "count"])
def test_bad_masks_are_one_line_errors_naming_mask(kwargs, message):
    model = SimpleNamespace(config=TINY)  # refused before any part of the model runs
    with pytest.raises(ValueError, match=message) as err:
        generate(model, "x", **FAST, **kwargs)
    assert "\n" not in str(err.value)


def test_an_inpainting_model_needs_a_mask():
    model = SimpleNamespace(config=INPAINT_TINY)  # refused before any part of the model runs
    with pytest.raises(ValueError, match="takes 9 channels .*expected init_image and mask, found no mask"):
        generate(model, "x", height=32, width=32, **FAST)


def test_mask_files_read_as_gray_and_must_match_the_image_size(tmp_path):
    Image.fromarray(_picture()[0]).save(tmp_path / "image.png")
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, :16] = (255, 255, 255, 255)  # white, opaque: repaint
    rgba[:, 16:] = (255, 255, 255, 0)  # transparent: keep
    Image.fromarray(rgba).save(tmp_path / "mask.png")
    mask = read_mask(tmp_path / "mask.png", tmp_path / "image.png")
    assert mask.shape == (32, 32) and mask[:, :16].min() == 1.0 and mask[:, 16:].max() == 0.0
    Image.new("L", (32, 16)).save(tmp_path / "small.png")
    with pytest.raises(ValueError) as err:
        read_mask(tmp_path / "small.png", tmp_path / "image.png")
    assert str(err.value) == (f"{tmp_path / 'small.png'}: expected 32x32 pixels (the size of "
                              f"{tmp_path / 'image.png'}), found 16x32.")


# ---------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny):
    folder = tmp_path_factory.mktemp("models") / "tiny"
    tiny.save(str(folder))
    return folder


@pytest.mark.slow
def test_cli_inpaints_with_a_mask_png(model_dir, tiny, tmp_path):
    Image.fromarray(_picture()[0]).save(tmp_path / "image.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    args = ["generate", "x", "--model", str(model_dir), "--steps", "2", "--seed", "1",
            "--init-image", str(tmp_path / "image.png"), "--mask", str(tmp_path / "mask.png")]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    made = np.asarray(Image.open(tmp_path / "out" / "image_000.png"))
    library = tiny.generate("x", init_image=_picture(), mask=mask, steps=2, seed=1, progress=False)
    np.testing.assert_array_equal(made, library[0])


def test_cli_mask_errors_name_the_option_and_the_file(tmp_path, capsys):
    Image.fromarray(_picture()[0]).save(tmp_path / "image.png")
    Image.new("L", (16, 16)).save(tmp_path / "mask.png")
    # Refused before the model loads (this folder holds none).
    base = ["generate", "x", "--model", str(tmp_path / "no-model"), "--steps", "1", "--out", str(tmp_path / "o")]
    assert main([*base, "--mask", str(tmp_path / "mask.png")]) == 1
    err = capsys.readouterr().err
    assert "--mask" in err and "mask.png: expected --init-image too" in err
    assert main([*base, "--init-image", str(tmp_path / "image.png"), "--mask", str(tmp_path / "mask.png")]) == 1
    err = capsys.readouterr().err
    assert "mask.png: expected 32x32 pixels" in err and "found 16x16" in err


# ---------------------------------------------------------------------- parity with diffusers


def _parity_pair(config):
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from reference import copy_into_ours, diffusers_parts

    unet, vae, text = diffusers_parts(config, seed=1, randomize=True)
    with torch.no_grad():
        # A posterior of (nearly) zero variance: both sides' image latents are the mean, whatever
        # their random draws.
        moments = vae.quant_conv
        moments.weight[config.latent_channels:] = 0.0
        moments.bias[config.latent_channels:] = -30.0
    ours = StableDiffusion(config)
    copy_into_ours(ours, unet, vae, text)
    return ours, unet, vae, text


@pytest.fixture(scope="module")
def blending_pair():
    return _parity_pair(TINY)


@pytest.fixture(scope="module")
def inpainting_pair():
    return _parity_pair(INPAINT_TINY)


def _parity_inputs():
    image = _picture(64)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:43, 21:50] = 200  # gray above one half, edges off the 4-pixel latent grid
    mask[30:60, 5:15] = 100  # gray below one half: kept
    return image, mask


@pytest.mark.parity
@pytest.mark.parametrize("route, sampler", [
    ("unet", "ddim"),
    pytest.param("blending", "ddim", marks=pytest.mark.slow),
    pytest.param("blending", "euler", marks=pytest.mark.slow),
])
def test_same_image_as_diffusers_inpaint_pipeline(request, route, sampler):
    import diffusers
    import torch
    from test_pipeline_parity import _scheduler

    ours, unet, vae, text = request.getfixturevalue("blending_pair" if route == "blending" else "inpainting_pair")
    image, mask = _parity_inputs()
    latents = np.random.default_rng(0).standard_normal((2, 16, 16, 4)).astype("float32")
    context = ours.encode_text(["a happy emoji", "a sad emoji"])
    uncond = ours.encode_text(["", ""])
    pipe = diffusers.StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text, tokenizer=None, unet=unet, scheduler=_scheduler(sampler),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        ref = pipe(
            prompt_embeds=torch.from_numpy(context), negative_prompt_embeds=torch.from_numpy(uncond),
            image=Image.fromarray(image[0]), mask_image=Image.fromarray(mask, "L"),
            latents=torch.from_numpy(latents).permute(0, 3, 1, 2), height=64, width=64,
            num_inference_steps=5, guidance_scale=7.5, output_type="np",
        ).images
    images = ours.generate(context=context, negative_context=uncond, init_latents=latents, init_image=image,
                           mask=mask, steps=5, guidance=7.5, sampler=sampler, progress=False)
    diff = np.abs(images.astype(np.float64) - ref * 255.0)
    assert diff.max() <= 1.0, diff.max()
    assert np.std(ref) > 0.01


@pytest.mark.parity
def test_nine_channel_unet_converts_from_a_diffusers_folder_and_a_single_file(inpainting_pair, tmp_path):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from safetensors.torch import load_file

    from kerasemote.convert.diffusers import convert_diffusers_folder
    from kerasemote.convert.original import convert_single_file, export_single_file

    ours, unet, vae, text = inpainting_pair
    for name, part in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        part.save_pretrained(tmp_path / "sd" / name)
    want = unet.conv_in.weight.detach().numpy().transpose(2, 3, 1, 0)  # (3, 3, 9, 32)
    config, arrays = convert_diffusers_folder(tmp_path / "sd")
    assert config.unet_in_channels == 9 and config.inpainting
    np.testing.assert_array_equal(arrays["unet"]["unet/conv_in/kernel"], want)
    ours.load_part_arrays(arrays, str(tmp_path / "sd"))  # every key and shape checked

    export_single_file(arrays, config, tmp_path / "inpaint.safetensors")
    # diffusers' own reader of original single files finds its 9-channel UNet in the file.
    state = convert_ldm_unet_checkpoint(load_file(str(tmp_path / "inpaint.safetensors")), config=unet.config)
    assert all((state[k] == v).all() for k, v in unet.state_dict().items())
    config, single = convert_single_file(tmp_path / "inpaint.safetensors")  # sizes read off the weights
    assert config.unet_in_channels == 9 and config.latent_channels == 4
    ours.load_part_arrays(single, str(tmp_path / "inpaint.safetensors"))
    np.testing.assert_array_equal(ours.unet.get_layer("conv_in").kernel.numpy(), want)


def test_training_an_inpainting_model_is_refused_in_one_line(tmp_path):
    from kerasemote.training import TextualInversion, TrainConfig, train

    model = SimpleNamespace(config=INPAINT_TINY)  # refused before the run folder or any part of the model is used
    with pytest.raises(ValueError, match="expected a text-to-image model .*found an inpainting model"):
        train(model, TextualInversion({"happy": "<h>"}), None, TrainConfig(steps=1), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
