"""Generation speed: kerasemote vs keras-cv's StableDiffusion vs diffusers' StableDiffusionPipeline.

sd-v1 architecture with random weights (diffusers' initialization copied into ours; keras-cv keeps its
own: compute time does not depend on the values), DDIM, guidance 7.5, a prompt to uint8 images, at each
size and batch. Each pipeline runs once to warm up (graph tracing), then ``--repeats`` rounds interleaved
across the pipelines (A, B, C, A, B, C...) so that load from other processes falls on each alike; the best
time counts. Every pipeline encodes its prompt and the empty negative prompt inside the timed run; keras-cv's
prompt ids come from our tokenizer (its own downloads its vocabulary).

Stages, timed the same interleaved way: text encoding of prompt and negative prompt; one guided UNet step
(ours and diffusers: one call on the 2N batch; keras-cv: its two calls on N); VAE decoding to uint8 images;
everything else is the best total minus text, steps x UNet step and decode.

    python bench/generate.py                                     # sd-v1, 256 and 512 px, batch 1 and 4
    python bench/generate.py --sizes 256 --batches 1 --repeats 1  # a quick run
    python bench/generate.py --configs tiny --steps 10           # tiny, 64 px: ours vs diffusers
    python bench/generate.py --sizes 256 --batches 1 --first-image   # and time to first image

``--first-image`` also times, per framework in a fresh process, loading a saved model (ours: a model
directory through ``load_model``; keras-cv: its three parts' ``.h5`` weight files; diffusers:
``from_pretrained`` of a saved pipeline folder) up to the first image (first ``--sizes`` entry, batch 1);
see ``bench/first_image.py``. ``bench/gpu.py`` runs the same tables on a CUDA GPU.

Prints seconds and the ratios ours / theirs (lower is better for us).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# torch's OpenMP threads otherwise spin while they wait: on a machine shared with other jobs that makes
# diffusers several times slower than on an idle one (a tiny model 70x), which would flatter the ratios.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))

PROMPT = "a happy broccoli emoji"
GUIDANCE = 7.5
FRAMEWORKS = ("ours", "keras-cv", "diffusers")
STAGES = ("text", "unet step", "decode")


@dataclass
class Settings:
    """How every pipeline runs: XLA, mixed precision (float16 compute, or bfloat16 with ``bf16``) and the torch
    device. The caller sets Keras' global policy to match before building (``run_tables`` does for ``bf16``)."""

    jit: bool = False
    mixed: bool = False
    bf16: bool = False
    device: str = "cpu"


@dataclass
class Runner:
    """One pipeline at one size and batch: the whole generation and its timed stages."""

    run: Callable[[], Any]
    stages: dict[str, Callable[[], Any]] = field(default_factory=dict)


def best_times(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Best wall time of each call after one warm-up each; the repeats are interleaved."""
    for fn in calls.values():
        fn()  # warm-up: tracing, first-call allocations
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


# ---------------------------------------------------------------------- the three pipelines


class Ours:
    """Our model with diffusers' weights; ``generate`` as a user calls it."""

    def __init__(self, config, unet, vae, text, settings: Settings):
        from kerasemote.model import StableDiffusion
        from reference import copy_into_ours

        self.model = StableDiffusion(config)
        copy_into_ours(self.model, unet, vae, text)
        self.settings = settings

    def runner(self, noise: np.ndarray, steps: int) -> Runner:
        import tensorflow as tf

        model, batch, jit = self.model, len(noise), self.settings.jit
        size = noise.shape[1] * model.config.vae_downsample

        def run():
            return model.generate(PROMPT, num_images=batch, init_latents=noise, steps=steps, height=size,
                                  width=size, guidance=GUIDANCE, sampler="ddim", jit_compile=jit, progress=False)

        def text():
            return model.encode_text([PROMPT] * batch), model.encode_text([""] * batch)

        context, uncond = (tf.constant(c) for c in text())

        @tf.function(jit_compile=jit)
        def guided(latents, t):  # the pipeline's guided step: one UNet call on [uncond, cond]
            both = model.unet(tf.concat([latents, latents], 0), tf.fill([2 * batch], t),
                              tf.concat([uncond, context], 0))
            out_uncond, out_cond = tf.split(both, 2, axis=0)
            return out_uncond + GUIDANCE * (out_cond - out_uncond)

        latents = tf.constant(noise)
        stages = {"text": text, "unet step": lambda: guided(latents, tf.constant(500.0)).numpy(),
                  "decode": lambda: model.decode_latents(latents, jit_compile=jit)}
        return Runner(run, stages)


class KerasCV:
    """keras-cv's ``StableDiffusion`` (SD 1.x parts, random init), one per image size."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.sd = None
        self.size = None

    def _build(self, size: int):
        from keras_cv.models import StableDiffusion
        from keras_cv.src.models.stable_diffusion.decoder import Decoder
        from keras_cv.src.models.stable_diffusion.diffusion_model import DiffusionModel
        from keras_cv.src.models.stable_diffusion.text_encoder import TextEncoder

        text_encoder = self.sd._text_encoder if self.sd is not None else TextEncoder(77, download_weights=False)
        self.sd = None  # free the previous size's UNet before building the next
        sd = StableDiffusion(img_height=size, img_width=size, jit_compile=self.settings.jit)
        sd._text_encoder = text_encoder
        sd._diffusion_model = DiffusionModel(size, size, 77, download_weights=False)
        sd._decoder = Decoder(size, size, download_weights=False)
        if self.settings.jit:  # what its own properties do when it builds a part with jit_compile
            for part in (sd._text_encoder, sd._diffusion_model, sd._decoder):
                part.compile(jit_compile=True)
        self.sd, self.size = sd, size

    def runner(self, noise: np.ndarray, steps: int, ids: np.ndarray) -> Runner:
        size = noise.shape[1] * 8
        if self.size != size:
            self._build(size)
        sd, batch = self.sd, len(noise)
        positions = np.arange(77, dtype="int32")[None]

        def encode():  # its ``encode_text`` after tokenizing, then its unconditional context
            return sd.text_encoder.predict_on_batch({"tokens": ids, "positions": positions})

        def run():
            return sd.generate_image(encode(), batch_size=batch, num_steps=steps,
                                     unconditional_guidance_scale=GUIDANCE, diffusion_noise=noise)

        context = np.repeat(encode(), batch, axis=0)
        uncond = np.repeat(sd._get_unconditional_context(), batch, axis=0)

        def unet_step():  # its loop body: a timestep embedding, two UNet calls
            t_emb = sd._get_timestep_embedding(500, batch)
            out_uncond = sd.diffusion_model.predict_on_batch(
                {"latent": noise, "timestep_embedding": t_emb, "context": uncond})
            out = sd.diffusion_model.predict_on_batch(
                {"latent": noise, "timestep_embedding": t_emb, "context": context})
            return out_uncond + GUIDANCE * (out - out_uncond)

        def decode():
            decoded = sd.decoder.predict_on_batch(noise)
            return np.clip((decoded + 1) / 2 * 255, 0, 255).astype("uint8")

        stages = {"text": lambda: (encode(), sd._get_unconditional_context()), "unet step": unet_step,
                  "decode": decode}
        return Runner(run, stages)


class Diffusers:
    """diffusers' ``StableDiffusionPipeline`` on the same parts; float16 and SDPA on a GPU."""

    def __init__(self, config, unet, vae, text, settings: Settings):
        import torch
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        scheduler = DDIMScheduler(beta_start=config.beta_start, beta_end=config.beta_end,
                                  beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                                  steps_offset=1)
        self.pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=None, unet=unet,
                                            scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                            requires_safety_checker=False)
        self.dtype = torch.bfloat16 if settings.bf16 else torch.float16 if settings.mixed else torch.float32
        self.pipe.to(settings.device, self.dtype)
        self.pipe.set_progress_bar_config(disable=True)
        self.device = settings.device

    def runner(self, noise: np.ndarray, steps: int, ids: np.ndarray, empty_ids: np.ndarray) -> Runner:
        import torch

        pipe, batch, size = self.pipe, len(noise), noise.shape[1] * 8
        latents = torch.from_numpy(noise).permute(0, 3, 1, 2).contiguous().to(self.device, self.dtype)
        ids_t, empty_t = (torch.from_numpy(i).long().to(self.device) for i in (ids, empty_ids))

        def text():  # its ``encode_prompt`` after tokenizing: one row each, repeated
            with torch.inference_mode():
                return tuple(pipe.text_encoder(i)[0].repeat(batch, 1, 1) for i in (ids_t, empty_t))

        def run():
            context, uncond = text()
            with torch.inference_mode():
                return pipe(prompt_embeds=context, negative_prompt_embeds=uncond, latents=latents, height=size,
                            width=size, num_inference_steps=steps, guidance_scale=GUIDANCE, output_type="np")

        context, uncond = text()
        both = torch.cat([uncond, context])

        def unet_step():  # its loop body: one UNet call on [uncond, cond], then the guidance
            with torch.inference_mode():
                out = pipe.unet(torch.cat([latents, latents]), 500, encoder_hidden_states=both).sample
                out_uncond, out = out.chunk(2)
                return (out_uncond + GUIDANCE * (out - out_uncond)).cpu()

        def decode():
            with torch.inference_mode():
                images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
                return pipe.image_processor.postprocess(images, output_type="np")

        return Runner(run, {"text": lambda: [t.cpu() for t in text()], "unet step": unet_step, "decode": decode})


# ---------------------------------------------------------------------- one config


def build(config_name: str, frameworks: list[str], settings: Settings) -> dict[str, Any]:
    """Every pipeline asked for, on one set of random weights."""
    import torch
    from reference import diffusers_parts

    from kerasemote.config import get_config

    torch.set_num_threads(os.cpu_count() or 1)
    config = get_config(config_name)
    unet, vae, text = diffusers_parts(config)
    built: dict[str, Any] = {"config": config}
    if "ours" in frameworks:
        built["ours"] = Ours(config, unet, vae, text, settings)
    if "keras-cv" in frameworks and config_name == "sd-v1":  # keras-cv builds SD 1.x sizes only
        built["keras-cv"] = KerasCV(settings)
    if "diffusers" in frameworks:
        built["diffusers"] = Diffusers(config, unet, vae, text, settings)
    return built


def measure(built: dict[str, Any], size: int, batch: int, steps: int, repeats: int,
            stages: bool) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Best totals per framework and, with ``stages``, best stage times of ours and keras-cv."""
    from kerasemote.tokenizer import Tokenizer

    config = built["config"]
    factor = config.vae_downsample
    noise = np.random.default_rng(0).standard_normal(
        (batch, size // factor, size // factor, config.latent_channels)).astype("float32")
    tokenizer = Tokenizer.from_config(config)
    ids, empty_ids = tokenizer.encode([PROMPT]).astype("int32"), tokenizer.encode([""]).astype("int32")
    runners: dict[str, Runner] = {}
    if "ours" in built:
        runners["ours"] = built["ours"].runner(noise, steps)
    if "keras-cv" in built:
        runners["keras-cv"] = built["keras-cv"].runner(noise, steps, ids)
    if "diffusers" in built:
        runners["diffusers"] = built["diffusers"].runner(noise, steps, ids, empty_ids)
    totals = best_times({name: r.run for name, r in runners.items()}, repeats)
    breakdown: dict[str, dict[str, float]] = {}
    if stages:
        calls = {(name, stage): fn for name, r in runners.items() for stage, fn in r.stages.items()}
        best = best_times({f"{name}|{stage}": fn for (name, stage), fn in calls.items()}, repeats)
        for (name, stage) in calls:
            breakdown.setdefault(name, {})[stage] = best[f"{name}|{stage}"]
        for name, parts in breakdown.items():
            parts["other"] = totals[name] - parts["text"] - steps * parts["unet step"] - parts["decode"]
    return totals, breakdown


# ---------------------------------------------------------------------- tables


def ratio(times: dict[str, float], other: str) -> str:
    return f"{times['ours'] / times[other]:.2f}" if "ours" in times and other in times else "-"


def print_tables(title: str, rows: list[tuple[int, int, dict, dict]], steps: int) -> None:
    """Markdown tables: totals with ratios, then the stage breakdown."""
    names = [n for n in FRAMEWORKS if any(n in totals for _, _, totals, _ in rows)]
    print(f"\n{title}\n")
    print("| px | batch | " + " | ".join(f"{n} s" for n in names) + " | ours / keras-cv | ours / diffusers |")
    print("|---:|---:|" + "---:|" * (len(names) + 2))
    for size, batch, totals, _ in rows:
        cells = " | ".join(f"{totals[n]:.2f}" if n in totals else "-" for n in names)
        print(f"| {size} | {batch} | {cells} | {ratio(totals, 'keras-cv')} | {ratio(totals, 'diffusers')} |")
    if not any(breakdown for *_, breakdown in rows):
        return
    print(f"\nStages, seconds (unet step: mean of one guided step; other: total - text - {steps} x unet step"
          " - decode)\n")
    print("| px | batch | framework | text | unet step | decode | other | total |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for size, batch, totals, breakdown in rows:
        for name, parts in breakdown.items():
            cells = " | ".join(f"{parts[s]:.2f}" for s in (*STAGES, "other"))
            print(f"| {size} | {batch} | {name} | {cells} | {totals[name]:.2f} |")


def run_tables(configs: list[str], sizes: list[int], batches: list[int], steps: int, repeats: int,
               frameworks: list[str], settings: Settings, stages: bool = True) -> None:
    """Measure and print every config's table (``bench/gpu.py`` calls this too)."""
    import keras

    if settings.bf16:  # every pipeline holds bfloat16 weights and computes in bfloat16, as diffusers' .to(bfloat16)
        keras.mixed_precision.set_global_policy("bfloat16")
    for config_name in configs:
        built = build(config_name, frameworks, settings)
        config_sizes = [built["config"].image_size] if config_name == "tiny" else sizes
        rows = []
        for size in config_sizes:
            for batch in batches:
                totals, breakdown = measure(built, size, batch, steps, repeats, stages)
                rows.append((size, batch, totals, breakdown))
                print(f"{config_name} {size} px batch {batch}: "
                      + ", ".join(f"{k} {v:.2f} s" for k, v in totals.items()), flush=True)
        precision = "bfloat16" if settings.bf16 else "float16" if settings.mixed else "float32"
        print_tables(f"{config_name}, {precision}, {steps} DDIM steps, guidance {GUIDANCE}, best of {repeats} "
                     "(interleaved)", rows, steps)
        del built


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="sd-v1", help="comma-separated configs (sd-v1, tiny)")
    parser.add_argument("--sizes", type=int_list, default=[256, 512], help="sd-v1 image sizes (tiny: 64)")
    parser.add_argument("--batches", type=int_list, default=[1, 4], help="images per generation")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="which pipelines run")
    parser.add_argument("--no-stages", action="store_true", help="skip the per-stage breakdown")
    parser.add_argument("--jit", action="store_true", help="XLA for ours and keras-cv")
    parser.add_argument("--bf16", action="store_true",
                        help="every pipeline with bfloat16 weights and compute: ours and keras-cv under Keras' "
                             "bfloat16 policy, diffusers .to(torch.bfloat16) (fast on CPUs with AMX or AVX512-BF16)")
    parser.add_argument("--first-image", action="store_true",
                        help="also time loading saved sd-v1 files up to the first image (bench/first_image.py)")
    args = parser.parse_args()

    frameworks = args.frameworks.split(",")
    run_tables(args.configs.split(","), args.sizes, args.batches, args.steps, args.repeats, frameworks,
               Settings(jit=args.jit, bf16=args.bf16), stages=not args.no_stages)
    if args.first_image:
        from first_image import first_image_table

        first_image_table(args.sizes[0], args.steps, args.repeats, frameworks)


if __name__ == "__main__":
    main()
