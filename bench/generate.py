"""Generation speed: kerasemote vs diffusers' StableDiffusionPipeline vs keras-cv's StableDiffusion.

Same architecture and sampler (DDIM), same step count, guidance 7.5, batch 1, measured side by side in one
run on this machine. Weights: diffusers' random initialization copied into ours (compute time does not depend
on the values; keras-cv keeps its own random init). Each pipeline runs once to warm up (graph tracing), then
``--repeats`` timed rounds interleaved across the pipelines; the best time counts.

    python bench/generate.py                       # tiny (ours vs diffusers) and sd-v1 at 256 px
    python bench/generate.py --configs tiny --steps 10

Prints seconds per run and the ratios ours / theirs (lower is better for us).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from reference import copy_into_ours, diffusers_parts  # noqa: E402


def best_times(runners: dict, repeats: int) -> dict[str, float]:
    """Best wall time of each runner; the repeats are interleaved (A, B, C, A, B, C...) so
    that load from other processes falls on every pipeline alike."""
    for fn in runners.values():
        fn()  # warm-up: tracing / first-call allocations
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def run(config_name: str, resolution: int, steps: int, repeats: int, kerascv: bool) -> dict[str, float]:
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from kerasemote.config import get_config
    from kerasemote.model import StableDiffusion

    torch.set_num_threads(os.cpu_count() or 1)
    config = get_config(config_name)
    unet, vae, text = diffusers_parts(config)
    ours = StableDiffusion(config)
    copy_into_ours(ours, unet, vae, text)

    factor = config.vae_downsample
    latents = np.random.default_rng(0).standard_normal(
        (1, resolution // factor, resolution // factor, config.latent_channels)
    ).astype("float32")
    context = ours.encode_text(["a happy broccoli emoji"])
    uncond = ours.encode_text([""])

    def ours_run():
        ours.generate(context=context, negative_context=uncond, init_latents=latents, steps=steps,
                      height=resolution, width=resolution,
                      guidance=7.5, sampler="ddim", progress=False)

    scheduler = DDIMScheduler(beta_start=config.beta_start, beta_end=config.beta_end,
                              beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=None, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    torch_latents = torch.from_numpy(latents).permute(0, 3, 1, 2).contiguous()
    prompt_embeds, negative_embeds = torch.from_numpy(context), torch.from_numpy(uncond)

    def diffusers_run():
        with torch.inference_mode():
            pipe(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds, latents=torch_latents,
                 height=resolution, width=resolution, num_inference_steps=steps, guidance_scale=7.5,
                 output_type="np")

    runners = {"ours": ours_run, "diffusers": diffusers_run}
    if kerascv:
        runners["keras-cv"] = kerascv_runner(resolution, steps, latents, context, uncond)
    return best_times(runners, repeats)


def kerascv_runner(resolution: int, steps: int, latents, context, uncond):
    from keras_cv.models import StableDiffusion as KerasCVStableDiffusion
    from keras_cv.src.models.stable_diffusion.decoder import Decoder
    from keras_cv.src.models.stable_diffusion.diffusion_model import DiffusionModel

    sd = KerasCVStableDiffusion(img_height=resolution, img_width=resolution, jit_compile=False)
    sd._diffusion_model = DiffusionModel(resolution, resolution, 77, download_weights=False)
    sd._decoder = Decoder(resolution, resolution, download_weights=False)
    sd._get_unconditional_context = lambda: uncond  # prompts come pre-encoded, as for the others

    def kerascv_run():
        sd.generate_image(context, num_steps=steps, unconditional_guidance_scale=7.5, diffusion_noise=latents)

    return kerascv_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="tiny,sd-v1", help="comma-separated configs (tiny, sd-v1)")
    parser.add_argument("--resolution", type=int, default=256, help="sd-v1 image size (tiny uses 64)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    rows = []
    for name in args.configs.split(","):
        resolution = 64 if name == "tiny" else args.resolution
        times = run(name, resolution, args.steps, args.repeats, kerascv=(name == "sd-v1"))
        rows.append((name, resolution, times))
        print(f"{name} @ {resolution}px, {args.steps} DDIM steps: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()), flush=True)

    print("\nconfig   px   ours/diffusers   ours/keras-cv")
    for name, resolution, times in rows:
        vs_kcv = f"{times['ours'] / times['keras-cv']:.2f}" if "keras-cv" in times else "-"
        print(f"{name:7s} {resolution:4d}   {times['ours'] / times['diffusers']:14.2f}   {vs_kcv:>13s}")


if __name__ == "__main__":
    main()
