"""``sampler="ddim-kerascv"``: generate() makes keras-cv 0.9's ``generate_image`` image from the same weights,
context and initial latents (within one uint8 level)."""

import gc

import numpy as np
import pytest

pytestmark = pytest.mark.parity
kcv = pytest.importorskip("keras_cv")

from keras_cv.src.models.stable_diffusion.constants import _UNCONDITIONAL_TOKENS  # noqa: E402

from kerasemote.model import StableDiffusion  # noqa: E402

GUIDANCE = 7.5
# keras-cv's timestep embedding: [cos(t * f), sin(t * f)], f_i = 10000^(-i / 160), i < 160.
_LOWEST_FREQUENCY = float(np.exp(-np.log(10000.0) * 159 / 160))


class _Part:
    """Stands in for a keras-cv model: ``predict_on_batch`` runs ``fn``."""

    def __init__(self, fn):
        self.predict_on_batch = fn


def _timestep_of(embedding) -> np.ndarray:
    """The timesteps keras-cv embedded: its last column is sin(t * f_min), with t * f_min < 0.11."""
    t = np.arcsin(np.asarray(embedding, np.float64)[:, -1]) / _LOWEST_FREQUENCY
    return np.round(t).astype("float32")  # (B,)


def _kerascv_pipeline(text_encoder, unet, decoder):
    """keras-cv's StableDiffusion with the given parts; nothing downloaded."""
    pipeline = kcv.models.StableDiffusion(img_height=128, img_width=128, jit_compile=False)
    pipeline._text_encoder, pipeline._diffusion_model, pipeline._decoder = text_encoder, unet, decoder
    return pipeline


def _max_level_difference(ours, reference) -> int:
    return int(np.max(np.abs(ours.astype(int) - reference.astype(int))))


def test_ddim_kerascv_follows_kerascv_generate_image_on_tiny_parts():
    """keras-cv's sampling loop around our tiny UNet and decoder vs. generate(sampler="ddim-kerascv")."""
    ours = StableDiffusion.random("tiny", seed=0)
    scaling = ours.config.scaling_factor
    steps, shape = 3, (1, 8, 8, ours.config.latent_channels)  # 32 px at the tiny VAE's factor 4
    context = ours.encode_text(["a happy emoji"])
    uncond = ours.encode_text([""])
    noise = np.random.default_rng(2).standard_normal(shape).astype("float32")
    pipeline = _kerascv_pipeline(
        _Part(lambda inputs: uncond),  # asked only for the unconditional context
        _Part(lambda inputs: np.asarray(ours.unet(
            inputs["latent"], _timestep_of(inputs["timestep_embedding"]), inputs["context"]))),
        _Part(lambda latents: np.asarray(ours.vae_decoder(np.asarray(latents) / scaling))),  # keras-cv rescales inside
    )
    reference = pipeline.generate_image(context, num_steps=steps, unconditional_guidance_scale=GUIDANCE,
                                        diffusion_noise=noise)
    options = dict(context=context, negative_context=uncond, init_latents=noise, steps=steps, guidance=GUIDANCE,
                   height=32, width=32, progress=False)
    images = ours.generate(sampler="ddim-kerascv", **options)
    assert images.shape == reference.shape == (1, 32, 32, 3)
    assert _max_level_difference(images, reference) <= 1  # keras-cv truncates to uint8 where we may round
    assert np.std(reference) > 2.0  # a picture, not a constant
    # The rule matters: diffusers' DDIM (leading timesteps, stride steps) makes another image.
    assert _max_level_difference(ours.generate(sampler="ddim", **options), reference) > 1


@pytest.mark.slow
def test_ddim_kerascv_on_converted_kerascv_weights_makes_kerascv_image(tmp_path):
    """keras-cv's full-size parts with random weights, saved as its published files, converted by
    ``kerasemote convert``; generate(sampler="ddim-kerascv") vs. keras-cv's own generate_image."""
    import h5py
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    from kerasemote.convert import convert_checkpoint
    from kerasemote.convert.kerascv_layout import KERASCV_FILES

    sd = kcv.models.stable_diffusion
    parts = {
        "text_encoder": sd.TextEncoder(77, download_weights=False),
        "unet": sd.DiffusionModel(64, 64, 77, download_weights=False),
        "vae_decoder": sd.Decoder(64, 64, download_weights=False),
        "vae_encoder": sd.ImageEncoder(download_weights=False),
    }
    folder = tmp_path / "kcv"
    folder.mkdir()
    for part, model in parts.items():  # the legacy layout of keras-cv's published files
        with h5py.File(folder / KERASCV_FILES[part][0], "w") as f:
            save_weights_to_hdf5_group(f, model)
    pipeline = _kerascv_pipeline(parts["text_encoder"], parts["unet"], parts["vae_decoder"])
    steps = 3
    tokens = np.array([[49406, 320, 1746, 49407] + [49407] * 73], "int32")
    positions = np.arange(77, dtype="int32")[None]
    context = np.asarray(parts["text_encoder"].predict_on_batch({"tokens": tokens, "positions": positions}))
    uncond = np.asarray(parts["text_encoder"].predict_on_batch(
        {"tokens": np.array([_UNCONDITIONAL_TOKENS], "int32"), "positions": positions}))
    noise = np.random.default_rng(2).standard_normal((1, 8, 8, 4)).astype("float32")
    reference = pipeline.generate_image(context, num_steps=steps, unconditional_guidance_scale=GUIDANCE,
                                        diffusion_noise=noise)
    del pipeline, parts, model
    gc.collect()

    ours = convert_checkpoint(str(folder))  # what ``kerasemote convert`` runs
    images = ours.generate(context=context, negative_context=uncond, init_latents=noise, steps=steps,
                           guidance=GUIDANCE, sampler="ddim-kerascv", height=64, width=64, progress=False)
    assert images.shape == reference.shape == (1, 64, 64, 3)
    assert _max_level_difference(images, reference) <= 1
    assert np.std(reference) > 2.0
