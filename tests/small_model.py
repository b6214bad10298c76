"""A model configuration smaller than ``tiny``, for tests that train or take gradients: it builds and traces faster.

One UNet level keeps a down, a mid and an up block with every kind of layer (resnets, attention, each LoRA
target); one text layer keeps the text path; a 2x VAE turns 16 px images into 8x8 latents.
"""

from kerasemote.config import TINY

SMALL = TINY.replace(name="small", text_layers=1, unet_channels=(32,), unet_attention=(True,), vae_channels=(32, 32),
                     image_size=16)
