"""Same weights, latents, prompt embedding and sampler: our pipeline makes diffusers' image."""

import numpy as np
import pytest

pytestmark = pytest.mark.parity
torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from reference import copy_into_ours, diffusers_parts  # noqa: E402

from kerasemote.config import TINY  # noqa: E402
from kerasemote.model import StableDiffusion  # noqa: E402


@pytest.fixture(scope="module")
def pair():
    unet, vae, text = diffusers_parts(TINY, seed=1, randomize=True)
    ours = StableDiffusion(TINY)
    copy_into_ours(ours, unet, vae, text)
    return ours, unet, vae, text


def _scheduler(name):
    common = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                  timestep_spacing="leading")
    if name == "ddim":
        return diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **common)
    if name == "euler":
        return diffusers.EulerDiscreteScheduler(**common)
    return diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **common)


@pytest.mark.parametrize("sampler", ["ddim", "euler", "dpm++"])
def test_same_image_as_diffusers_pipeline(pair, sampler):
    ours, unet, vae, text = pair
    latents = np.random.default_rng(0).standard_normal((2, 16, 16, 4)).astype("float32")
    context = ours.encode_text(["a happy emoji", "a sad emoji"])
    uncond = ours.encode_text(["", ""])
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=None, unet=unet, scheduler=_scheduler(sampler),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        ref = pipe(
            prompt_embeds=torch.from_numpy(context), negative_prompt_embeds=torch.from_numpy(uncond),
            latents=torch.from_numpy(latents).permute(0, 3, 1, 2), height=64, width=64,
            num_inference_steps=6, guidance_scale=7.5, output_type="np",
        ).images
    images = ours.generate(context=context, negative_context=uncond, init_latents=latents, steps=6,
                           guidance=7.5, sampler=sampler, progress=False)
    assert images.shape == (2, 64, 64, 3)
    # uint8 rounding: at most one level apart where the float images straddle a rounding edge.
    diff = np.abs(images.astype(np.float64) - ref * 255.0)
    assert diff.max() <= 1.0, diff.max()
    assert np.std(ref) > 0.01  # a real picture, not a constant


def test_text_encoder_matches_transformers_on_real_token_ids(pair):
    ours, _, _, text = pair
    ids = ours.tokenize(["a grinning face emoji", "<|endoftext|>"])
    with torch.inference_mode():
        ref = text(torch.from_numpy(ids).long()).last_hidden_state.numpy()
    np.testing.assert_allclose(ours.encode_text(["a grinning face emoji", "<|endoftext|>"]), ref, atol=2e-5)
