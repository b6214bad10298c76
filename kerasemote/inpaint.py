"""Inpainting: repaint the white part of a mask, keep the rest of the image.

``generate(model, prompt, init_image=image, mask=mask)`` picks one of two routes from the model's
UNet (``ModelConfig.unet_in_channels``):

* **latent blending**, any SD 1.x model (the UNet takes the latents alone). After every sampler
  step the latents outside the mask are replaced by the image's latents noised to the noise level
  of the next step, and by the clean image latents after the last step; only the masked part is
  ever denoised freely. The decoded image is not pasted over the original afterwards: pixels
  outside the mask are the VAE's reconstruction of the image, so no seam appears at the mask's
  edge.
* **an inpainting UNet** (SD inpainting checkpoints: ``2 * latent_channels + 1`` input channels).
  The UNet sees ``concat([latents, mask, masked_image_latents])`` on the channel axis, where the
  masked image is the image with its masked part set to 0 (mid-gray in [-1, 1]), and repaints by
  itself; nothing is blended.

Both follow diffusers' ``StableDiffusionInpaintPipeline`` (4- and 9-channel UNets): the mask is
binarized at 0.5 (gray counts as white from 0.5 up), brought to the latent grid by nearest
sampling (each latent cell takes the pixel at its top-left corner), and ``strength`` 1 starts from
pure noise while a lower strength starts from the image noised as in image to image.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from kerasemote.data.images import open_image_file, shape_image
from kerasemote.schedulers import Sampler

MASK_THRESHOLD = 0.5
"""Mask values (0 = keep, 1 = repaint) from this one up repaint; diffusers binarizes at the same value."""

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601-2, PIL's RGB -> "L" weights


def read_mask(
    path: str | os.PathLike,
    image_path: str | os.PathLike | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read a mask image (white = repaint, black = keep) as float32 (H, W) gray values in [0, 1].

    A grayscale or RGB file; transparent pixels count as black (keep). ``generate`` binarizes
    the values at ``MASK_THRESHOLD``.

    Args:
        path: the mask file (local, Drive or gs://).
        image_path: the picture it applies to; the two must have the same pixel size.
        size: (height, width) to bring the mask to, cropped and resized as ``images.load_image``
            brings the picture (so both still line up).

    Raises:
        ValueError: the sizes differ (naming the file, the size expected and the size found), or the
            file is missing or unreadable.
    """
    mask = open_image_file(path)
    if image_path is not None:
        width, height = open_image_file(image_path).size
        if mask.size != (width, height):
            raise ValueError(f"{os.fspath(path)}: expected {height}x{width} pixels (the size of "
                             f"{os.fspath(image_path)}), found {mask.size[1]}x{mask.size[0]}.")
    rgb = np.asarray(shape_image(mask, size, "crop", background="black"), np.float32)  # (H, W, 3)
    return np.clip(rgb @ _LUMA / 255.0, 0.0, 1.0)  # the weights' float32 sum may pass 1 by an ulp


def mask_array(mask: Any, num_images: int, height: int, width: int) -> np.ndarray:
    """A ``generate(mask=...)`` value as binary float32 (num_images, height, width, 1): 1 = repaint.

    Args:
        mask: (H, W), (N, H, W), (H, W, C) or (N, H, W, C) with C 1 or 3 (RGB: luminance) and N 1 or
            ``num_images``; uint8 (0..255), bool, or float in [0, 1]. Gray values are binarized at
            ``MASK_THRESHOLD``.
        num_images, height, width: the generation's image count and size.

    Raises:
        ValueError: one line naming ``mask``, what was expected and what was found.
    """
    values = np.asarray(mask)
    if values.dtype == np.uint8:
        values = values.astype(np.float32) / 255.0
    elif values.dtype == bool or np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float32)
        if values.size and not (np.isfinite(values).all() and 0.0 <= values.min() and values.max() <= 1.0):
            found = "NaN or infinity" if not np.isfinite(values).all() else f"{values.min():g}..{values.max():g}"
            raise ValueError(f"mask: expected values in [0, 1] (0 keep, 1 repaint), found {found}.")
    else:
        raise ValueError(f"mask: expected uint8 (0..255), bool or float values in [0, 1], found {values.dtype}.")
    values = _batched(values, height, width)
    if values.shape[-1] == 3:
        values = values @ _LUMA[:, None]  # (N, H, W, 1)
    if values.shape[1:3] != (height, width):
        raise ValueError(f"mask: expected {height}x{width} pixels (the init image's size), "
                         f"found {values.shape[1]}x{values.shape[2]}.")
    if len(values) not in (1, num_images):
        raise ValueError(f"mask: expected 1 mask or one per image ({num_images}), found {len(values)}.")
    values = np.repeat(values, num_images // len(values), axis=0)
    return (values >= MASK_THRESHOLD).astype(np.float32)


def _batched(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) / (N, H, W) / (H, W, C) / (N, H, W, C) -> (N, H, W, C)."""
    if values.ndim == 2:
        return values[None, :, :, None]
    if values.ndim == 3:
        # (H, W, C) only when the leading axes are the image's size and C a channel count.
        if values.shape[:2] == (height, width) and values.shape[2] in (1, 3):
            return values[None]
        return values[..., None]
    if values.ndim == 4 and values.shape[3] in (1, 3):
        return values
    raise ValueError(f"mask: expected (H, W), (N, H, W) or (N, H, W, 1 or 3) values, found shape {values.shape}.")


def image_array(init_image: Any, num_images: int, height: int, width: int) -> np.ndarray:
    """``generate(init_image=...)`` as (num_images, height, width, 3), its size checked."""
    image = np.asarray(init_image)
    if image.ndim != 4 or image.shape[3] != 3:
        raise ValueError(f"init_image: expected (N, H, W, 3) RGB pixels, found shape {image.shape}.")
    if image.shape[1:3] != (height, width):
        raise ValueError(f"init_image: expected {height}x{width} pixels, found {image.shape[1]}x{image.shape[2]}.")
    if len(image) not in (1, num_images):
        raise ValueError(f"init_image: expected 1 image or one per image made ({num_images}), found {len(image)}.")
    return np.repeat(image, num_images // len(image), axis=0)


class Inpainting:
    """What one inpainting generation adds to the denoising loop.

    Usage (``generate`` does this)::

        inpainting = Inpainting(model, image, mask, sampler, noise, seed)
        timesteps, x = inpainting.start(strength)
        for i, t in enumerate(timesteps):
            out = unet(inpainting.unet_input(sampler.scale_model_input(x, t)), t, context)
            x = inpainting.after_step(sampler.step(out, t, x), i)

    Args:
        model: encodes images (``encode_images``) and has ``config``.
        image: (N, H, W, 3) uint8 pixels, or floats in [-1, 1].
        mask: (N, H, W, 1) binary float32, 1 = repaint (``mask_array``).
        sampler: the sampler, its timesteps set.
        noise: (N, H/f, W/f, C) standard normal starting noise.
        seed: seed of the VAE's latent samples.
    """

    def __init__(self, model: Any, image: np.ndarray, mask: np.ndarray, sampler: Sampler, noise: Any,
                 seed: int | None) -> None:
        config = model.config
        factor = config.vae_downsample
        self.model, self.sampler, self.seed = model, sampler, seed
        self.noise = tf.convert_to_tensor(noise, tf.float32)
        self.image = image.astype(np.float32) / 127.5 - 1.0 if image.dtype == np.uint8 else image.astype(np.float32)
        self.uses_unet = config.inpainting
        # torch's nearest interpolation to an exact divisor takes each cell's top-left pixel.
        self.latent_mask = tf.constant(mask[:, ::factor, ::factor, :])  # (N, h, w, 1)
        self.masked_latents = None
        if self.uses_unet:
            masked = self.image * (mask < MASK_THRESHOLD)  # the part to repaint becomes 0 (mid-gray)
            self.masked_latents = tf.constant(model.encode_images(masked, seed=seed))
        self._image_latents: tf.Tensor | None = None
        self._timesteps: Sequence[Any] = sampler.timesteps

    @property
    def image_latents(self) -> tf.Tensor:
        """The init image's latents (N, h, w, C), encoded once when first needed."""
        if self._image_latents is None:
            self._image_latents = tf.constant(self.model.encode_images(self.image, seed=self.seed))
        return self._image_latents

    def start(self, strength: float) -> tuple[np.ndarray, tf.Tensor]:
        """The timesteps to run and the starting latents.

        ``strength`` 1 starts from pure noise (scaled by the sampler's ``init_noise_sigma``);
        below 1 the image's latents are noised to the first kept timestep, as in image to image.
        """
        if strength >= 1.0:
            self._timesteps = self.sampler.timesteps
            return self._timesteps, self.noise * self.sampler.init_noise_sigma
        self._timesteps, start_sample = self.sampler.timesteps_for_strength(strength)
        return self._timesteps, start_sample(self.image_latents, self.noise)

    def unet_input(self, model_input: tf.Tensor) -> tf.Tensor:
        """An inpainting UNet's input: latents, mask and masked-image latents on the channel axis."""
        if not self.uses_unet:
            return model_input
        return tf.concat([model_input, self.latent_mask, self.masked_latents], axis=-1)

    def after_step(self, latents: tf.Tensor, index: int) -> tf.Tensor:
        """Latent blending: outside the mask, the image's latents at the noise level ``latents`` reached.

        Args:
            latents: the sampler's output after step ``index`` of the timesteps ``start`` returned.
            index: that step's position.
        """
        if self.uses_unet:
            return latents
        known = self.image_latents
        if index + 1 < len(self._timesteps):
            known = self.sampler.add_noise(known, self.noise, self._timesteps[index + 1])
        return (1.0 - self.latent_mask) * known + self.latent_mask * latents
