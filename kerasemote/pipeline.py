"""Text to image, image to image and inpainting: encode_text -> denoise -> decode.

The denoising loop is written once; it takes encoded prompts, so interpolation in
context space and combined concepts reuse it unchanged.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, NoReturn, Protocol, Sequence

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from kerasemote.config import ModelConfig
from kerasemote.inpaint import Inpainting, image_array, mask_array
from kerasemote.schedulers import NoiseSchedule, Sampler, resolve_sampler


class DiffusionModel(Protocol):
    """What ``generate`` needs of a model; ``kerasemote.model.StableDiffusion`` is one.

    The pipeline knows no model class, so the model can offer ``generate`` as a method
    without an import running back from here to it.
    """

    config: ModelConfig
    unet: Any  # called as unet(latents (B, h, w, C), timesteps (B,), context (B, 77, dim))

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray: ...

    def encode_images(self, images: np.ndarray, seed: int | None = None) -> np.ndarray: ...

    def decode_latents(self, latents: Any, jit_compile: bool = False) -> np.ndarray: ...


IMAGE_TO_IMAGE_STRENGTH = 0.8
"""``strength`` when ``generate`` is given an ``init_image`` and no mask, and no strength."""

INPAINT_STRENGTH = 1.0
"""``strength`` when ``generate`` is given a mask and no strength: start from pure noise (as diffusers)."""

MAX_IMAGE_SIDE = 2048
"""The largest height or width, in pixels, that ``generate`` makes."""

BYTES_PER_OUTPUT_PIXEL = 1024
"""Memory one output pixel needs at the peak of a generation (the VAE decoder's full-resolution layers:
128 float32 channels, two tensors alive), the budget ``check_generation`` holds ``num_images * height *
width`` to against the memory available."""


class NonFiniteError(ValueError):
    """A generation's inputs or latents hold NaN or infinity; decoding them would give black images."""


def check_generation(
    *,
    steps: int,
    guidance: float,
    num_images: int | None = None,
    height: int | None = None,
    width: int | None = None,
    strength: float = 0.8,
    eta: float = 0.0,
    factor: int = 1,
    name: Callable[[str], str] = str,
) -> None:
    """Refuse sampling options no generation can use, before any work: one line naming the option.

    ``generate`` calls it; the command line calls it before loading a model (``factor`` 1) and
    again with the model's VAE factor.

    Args:
        steps, guidance, num_images, height, width, strength, eta: as ``generate`` takes them;
            None leaves a count or size unchecked (the model's own default).
        factor: height and width must be multiples of it (the VAE's downsampling factor).
        name: how a message names an argument (the CLI gives ``num_images`` -> ``--num-images``).

    Raises:
        ValueError: a value is not finite, out of its range, or the images would not fit in memory.
    """
    def refuse(arg: str, expected: str, found: Any) -> NoReturn:
        raise ValueError(f"{name(arg)}: expected {expected}, found {found!r}.")

    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        refuse("steps", "a whole number of at least 1", steps)
    for arg, value in (("guidance", guidance), ("strength", strength), ("eta", eta)):
        if not math.isfinite(float(value)):
            refuse(arg, "a finite number", value)
    if not 0.0 <= strength <= 1.0:
        refuse("strength", "a number in [0, 1]", strength)
    if eta < 0:
        refuse("eta", "a number of at least 0", eta)
    if num_images is not None and (isinstance(num_images, bool) or num_images < 1):
        refuse("num_images", "at least 1 image", num_images)
    for arg, value in (("height", height), ("width", width)):
        if value is not None and not (0 < value <= MAX_IMAGE_SIDE and value % factor == 0):
            multiples = f" in multiples of {factor}" if factor > 1 else ""
            refuse(arg, f"a size from {factor} to {MAX_IMAGE_SIDE} pixels{multiples}", value)
    available = _available_memory()
    if None not in (num_images, height, width, available):
        needed = num_images * height * width * BYTES_PER_OUTPUT_PIXEL
        if needed > available:
            refuse("num_images", f"at most {available // (height * width * BYTES_PER_OUTPUT_PIXEL)} images of "
                                 f"{height}x{width} pixels in the {available / 2**30:.1f} GiB of memory available",
                   num_images)


def _available_memory() -> int | None:
    """Bytes of memory free for new allocations (Linux MemAvailable, else free pages); None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def initial_noise(shape: Sequence[int], seed: int | None) -> np.ndarray:
    """Standard normal latents from a seed: the same seed gives the same image on any device."""
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _as_list(prompt: str | Sequence[str] | None, n: int) -> list[str]:
    if prompt is None:
        return [""] * n
    if isinstance(prompt, str):
        return [prompt] * n
    prompt = list(prompt)
    if len(prompt) == 1:
        return prompt * n
    if len(prompt) != n:
        raise ValueError(f"Got {len(prompt)} prompts for {n} images; give one prompt or one per image.")
    return prompt


class _Denoiser:
    """The UNet with classifier-free guidance as one tf.function, traced once per input shape.

    Kept on the UNet, so repeated ``generate`` calls reuse the traced graph.
    """

    def __init__(self, unet, jit_compile: bool):
        self.unet = unet
        self._call = tf.function(self._guided, jit_compile=jit_compile, reduce_retracing=True)

    def _guided(self, latents, timestep, context, uncond, guidance):
        batch = tf.shape(latents)[0]
        t = tf.fill([batch], timestep)
        if uncond is None:
            return self.unet(latents, t, context)
        # One UNet call on [unconditional, conditional] halves of a 2B batch.
        both = self.unet(tf.concat([latents, latents], 0), tf.concat([t, t], 0), tf.concat([uncond, context], 0))
        out_uncond, out_cond = tf.split(both, 2, axis=0)
        return out_uncond + guidance * (out_cond - out_uncond)

    def __call__(self, latents, timestep, context, uncond, guidance: float):
        return self._call(
            latents, tf.constant(float(timestep), tf.float32), context, uncond, tf.constant(guidance, tf.float32)
        )

    @classmethod
    def for_unet(cls, unet, jit_compile: bool) -> "_Denoiser":
        # Keyed by the variable count too: after ``enable_lora`` the UNet has more
        # variables and an old graph would silently leave the adapters out.
        cache = unet.__dict__.setdefault("_kerasemote_denoisers", {})
        key = (jit_compile, len(unet.weights))
        if key not in cache:
            cache[key] = cls(unet, jit_compile)
        return cache[key]


def generate(
    model: DiffusionModel,
    prompt: str | Sequence[str] | None = None,
    negative_prompt: str | Sequence[str] | None = None,
    num_images: int | None = None,
    steps: int = 25,
    guidance: float = 7.5,
    sampler: str | Sampler = "ddim",
    seed: int | None = None,
    height: int | None = None,
    width: int | None = None,
    init_latents: np.ndarray | None = None,
    init_image: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    strength: float | None = None,
    timestep_spacing: str | None = None,
    eta: float = 0.0,
    set_alpha_to_one: bool = False,
    context: np.ndarray | None = None,
    negative_context: np.ndarray | None = None,
    jit_compile: bool = False,
    return_latents: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """Generate images.

    Args:
        model: the model, e.g. a ``StableDiffusion`` (anything ``DiffusionModel`` describes).
        prompt: one prompt, or one per image. Ignored when ``context`` is given.
        negative_prompt: what to steer away from (replaces the empty unconditional prompt).
        num_images: images to make; defaults to the number of prompts / contexts / latents.
        steps: sampler steps.
        guidance: classifier-free guidance scale; 1 disables the unconditional pass.
        sampler: a name in ``kerasemote.schedulers.SAMPLERS`` (``ddim``, ``ddim-kerascv``, ``euler``,
            ``euler-a``, ``dpm++``, ``dpm++-karras``; flow models: ``euler``) or a ready ``Sampler`` built
            on the model's schedule with any options, e.g. ``DDIMSampler(schedule, eta=0.3)``; a ready
            sampler keeps its own settings, so ``timestep_spacing``, ``eta`` and ``set_alpha_to_one``
            must then be left at their defaults (see ``kerasemote.schedulers.resolve_sampler``).
        seed: seed of the initial noise (and of the step noise of DDIM's eta and of ``euler-a``);
            same seed, same image.
        height, width: image size in pixels, multiples of the VAE factor (8 for SD);
            default ``config.image_size``.
        init_latents: (N, H/8, W/8, 4) starting noise instead of the seeded one.
        init_image: uint8 (N or 1, H, W, 3) image to start from (image to image), or to repaint
            part of with ``mask``.
        mask: inpainting: what of ``init_image`` to repaint, white (1) repaint, black (0) keep, of
            the image's size; (H, W), (N or 1, H, W) or with a last axis of 1 or 3 (RGB), uint8,
            bool or float in [0, 1], binarized at 0.5 (see ``kerasemote.inpaint``). Any model
            repaints by latent blending; an inpainting model (``config.inpainting``) needs a mask.
        strength: how much of the schedule to run (0..1); default 0.8 for image to image and 1
            (from pure noise) for inpainting.
        timestep_spacing: ``leading`` / ``linspace`` / ``trailing``; default the sampler's own
            (``leading``, SD 1.x; flow models step on their own grid).
        eta: DDIM stochasticity (DDIM samplers only).
        set_alpha_to_one: DDIM's final alpha (``ddim-kerascv`` sets it).
        context: encoded prompts (N, 77, dim) instead of ``prompt`` (interpolation).
        negative_context: encoded negative prompts to pair with ``context``.
        jit_compile: compile the UNet and the VAE decoder with XLA.
        return_latents: return the final latents instead of decoded images.
        progress: show a progress bar.

    Returns:
        uint8 images (N, H, W, 3), or float32 latents with ``return_latents``.
    """
    config = model.config
    factor = config.vae_downsample
    if height is None:
        height = init_image.shape[1] if init_image is not None else config.image_size
    if width is None:
        width = init_image.shape[2] if init_image is not None else config.image_size
    n = _infer_count(prompt, context, init_latents, init_image) if num_images is None else num_images
    if strength is None:
        strength = IMAGE_TO_IMAGE_STRENGTH if mask is None else INPAINT_STRENGTH
    check_generation(steps=steps, guidance=guidance, num_images=n, height=height, width=width,
                     strength=strength, eta=eta, factor=factor)
    if mask is not None and init_image is None:
        raise ValueError("mask: expected an init_image too (the picture the mask repaints), found none.")
    if config.inpainting and mask is None:
        raise ValueError(f"mask: the model's UNet takes {config.unet_in_channels} channels (an inpainting model): "
                         "expected init_image and mask, found no mask.")
    if init_image is not None:
        init_image = image_array(init_image, n, height, width)
        if mask is not None:
            mask = mask_array(mask, n, height, width)

    if context is None:
        context = model.encode_text(_as_list(prompt, n))
    context = np.asarray(context, "float32")
    _require_finite(context, "the encoded prompt", "a token embedding (--embeddings) or the text encoder's weights")
    if len(context) == 1 and n > 1:
        context = np.repeat(context, n, axis=0)
    if len(context) != n:
        raise ValueError(f"context has {len(context)} rows for {n} images.")
    uncond = None
    if guidance != 1.0:
        if negative_context is None:
            negative_context = model.encode_text(_as_list(negative_prompt or "", n))
        uncond = np.asarray(negative_context, "float32")
        if len(uncond) == 1 and n > 1:
            uncond = np.repeat(uncond, n, axis=0)
        _require_finite(uncond, "the encoded negative prompt", "a token embedding or the text encoder's weights")

    schedule = NoiseSchedule.from_config(config)
    # Only the options the caller set (None: not set): a name fills in the rest, a ready sampler refuses them.
    scheduler = resolve_sampler(sampler, schedule, timestep_spacing=timestep_spacing, eta=eta or None,
                                set_alpha_to_one=set_alpha_to_one or None)
    scheduler.set_timesteps(steps)

    latent_shape = (n, height // factor, width // factor, config.latent_channels)
    if init_latents is not None:
        noise = np.asarray(init_latents, "float32")
        if noise.shape != latent_shape:
            raise ValueError(f"init_latents: expected shape {latent_shape}, found {noise.shape}.")
        _require_finite(noise, "init_latents", "the starting noise given (--init-noise)")
    else:
        noise = initial_noise(latent_shape, seed)

    timesteps, inpainting = scheduler.timesteps, None
    if mask is not None:
        inpainting = Inpainting(model, init_image, mask, scheduler, noise, seed)
        timesteps, latents = inpainting.start(strength)
    elif init_image is not None:
        timesteps, start_sample = scheduler.timesteps_for_strength(strength)
        latents = start_sample(model.encode_images(init_image, seed=seed), noise)
    else:
        latents = tf.convert_to_tensor(noise) * scheduler.init_noise_sigma

    denoiser = _Denoiser.for_unet(model.unet, jit_compile)
    context_t = tf.convert_to_tensor(context)
    uncond_t = None if uncond is None else tf.convert_to_tensor(uncond)
    for i, t in enumerate(tqdm(timesteps, desc="sampling", disable=not progress, leave=False)):
        model_in = scheduler.scale_model_input(latents, t)
        if inpainting is not None:
            model_in = inpainting.unet_input(model_in)
        out = denoiser(model_in, t, context_t, uncond_t, guidance)
        latents = scheduler.step(out, t, latents, seed=seed)
        if inpainting is not None:
            latents = inpainting.after_step(latents, i)

    # One check after the loop: NaN and infinity persist through the steps, and a check
    # per step would wait on the device every step.
    if not bool(tf.reduce_all(tf.math.is_finite(latents))):
        raise NonFiniteError(f"the latents became NaN or infinite during sampling ({_non_finite_cause(model)}); "
                             "stopped before decoding them into black images.")
    if return_latents:
        return np.asarray(latents)
    return model.decode_latents(latents, jit_compile=jit_compile)


def _require_finite(values: np.ndarray, what: str, cause: str) -> None:
    if not np.isfinite(values).all():
        raise NonFiniteError(f"{what} holds NaN or infinite values: check {cause}.")


def _non_finite_cause(model: DiffusionModel) -> str:
    """The likeliest reason the latents left the finite range; runs only once they have."""
    for variable in model.unet.weights:
        if not bool(tf.reduce_all(tf.math.is_finite(variable))):
            path = getattr(variable, "path", variable.name)
            return (f"UNet weight {path} holds NaN or infinite values: a LoRA merged with non-finite values "
                    "or scale (--lora FILE:SCALE), or a damaged model file")
    if keras.mixed_precision.global_policy().compute_dtype == "float16":
        return "float16 overflowed: generate without --mixed-precision (in float32)"
    return "the UNet's weights or the guidance scale drive the values out of range: lower --guidance"


def _infer_count(prompt, context, init_latents, init_image) -> int:
    for value in (context, init_latents):
        if value is not None:
            return len(value)
    if prompt is not None and not isinstance(prompt, str):
        return len(list(prompt))
    if init_image is not None:
        return len(init_image)
    return 1
