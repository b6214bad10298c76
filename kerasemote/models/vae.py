"""The SD 1.x VAE (``AutoencoderKL``): an image encoder and a latent decoder.

``VAEEncoder`` maps images in [-1, 1] to the Gaussian moments of the latent
(mean and log-variance, after ``quant_conv``); ``VAEDecoder`` maps an unscaled
latent (``latents / scaling_factor``) back to an image in about [-1, 1]. Scaling
and sampling live in ``encode_images`` / ``decode_latents`` so both models stay
pure functions of their weights.
"""

from __future__ import annotations

import keras
from keras import ops

from kerasemote.config import ModelConfig
from kerasemote.models.layers import (
    Composite,
    Downsample,
    ResnetBlock,
    Upsample,
    VAEAttentionBlock,
    conv,
    group_norm,
    same_conv,
)


class _Block(Composite):
    """Resnets, then an optional attention (mid block) or resampler (up/down block)."""

    def __init__(self, resnets, resampler=None, attentions=(), **kwargs):
        super().__init__(**kwargs)
        self.resnets = list(resnets)
        self.attentions = list(attentions)
        self.resampler = resampler

    def call(self, x):
        if self.attentions:  # mid block: resnet, attention, resnet
            return self.resnets[1](self.attentions[0](self.resnets[0](x)))
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.resampler is None else self.resampler(x)


def _mid_block(channels: int, groups: int, epsilon: float) -> _Block:
    args = dict(groups=groups, epsilon=epsilon, use_time_embedding=False)
    return _Block(
        [ResnetBlock(channels, channels, name=f"resnets.{j}", **args) for j in range(2)],
        attentions=[VAEAttentionBlock(channels, groups, epsilon, name="attentions.0")],
        name="mid_block",
    )


class _Encoder(keras.layers.Layer):
    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.built = True  # sublayers build on the first call
        c = config
        args = dict(groups=c.vae_norm_groups, epsilon=c.vae_norm_eps, use_time_embedding=False)
        self.conv_in = same_conv(c.vae_channels[0], "conv_in")
        self.down_blocks = []
        ch = c.vae_channels[0]
        for i, out_ch in enumerate(c.vae_channels):
            resnets = []
            for j in range(c.vae_layers_per_block):
                resnets.append(ResnetBlock(ch, out_ch, name=f"resnets.{j}", **args))
                ch = out_ch
            last = i == len(c.vae_channels) - 1
            down = None if last else Downsample(ch, asymmetric=True, name="downsamplers.0")
            self.down_blocks.append(_Block(resnets, down, name=f"down_blocks.{i}"))
        self.mid_block = _mid_block(ch, c.vae_norm_groups, c.vae_norm_eps)
        self.conv_norm_out = group_norm(c.vae_norm_groups, c.vae_norm_eps, "conv_norm_out")
        self.conv_out = same_conv(2 * c.latent_channels, "conv_out")

    def call(self, x):
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(ops.silu(self.conv_norm_out(x)))


class _Decoder(keras.layers.Layer):
    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.built = True  # sublayers build on the first call
        c = config
        args = dict(groups=c.vae_norm_groups, epsilon=c.vae_norm_eps, use_time_embedding=False)
        channels = list(reversed(c.vae_channels))
        ch = channels[0]
        self.conv_in = same_conv(ch, "conv_in")
        self.mid_block = _mid_block(ch, c.vae_norm_groups, c.vae_norm_eps)
        self.up_blocks = []
        for i, out_ch in enumerate(channels):
            resnets = []
            for j in range(c.vae_layers_per_block + 1):
                resnets.append(ResnetBlock(ch, out_ch, name=f"resnets.{j}", **args))
                ch = out_ch
            last = i == len(channels) - 1
            up = None if last else Upsample(ch, name="upsamplers.0")
            self.up_blocks.append(_Block(resnets, up, name=f"up_blocks.{i}"))
        self.conv_norm_out = group_norm(c.vae_norm_groups, c.vae_norm_eps, "conv_norm_out")
        self.conv_out = same_conv(3, "conv_out")

    def call(self, z):
        x = self.conv_in(z)
        x = self.mid_block(x)
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(ops.silu(self.conv_norm_out(x)))


class VAEEncoder(keras.Model):
    """Images (B, H, W, 3) in [-1, 1] -> latent moments (B, H/f, W/f, 2 * latent_channels).

    The first half of the channels is the mean, the second the log-variance.
    """

    def __init__(self, config: ModelConfig, name: str = "vae_encoder", **kwargs):
        super().__init__(name=name, **kwargs)
        self.config = config
        self.built = True
        self.encoder = _Encoder(config, name="encoder")
        self.quant_conv = conv(2 * config.latent_channels, 1, "quant_conv")

    def call(self, images):
        moments = self.quant_conv(self.encoder(ops.cast(images, self.compute_dtype)))
        return ops.cast(moments, "float32")

    def build_with_dummy(self) -> "VAEEncoder":
        size = 2 * self.config.vae_downsample
        self(ops.zeros((1, size, size, 3)))
        return self


class VAEDecoder(keras.Model):
    """Unscaled latents (B, h, w, latent_channels) -> images (B, h*f, w*f, 3), about [-1, 1]."""

    def __init__(self, config: ModelConfig, name: str = "vae_decoder", **kwargs):
        super().__init__(name=name, **kwargs)
        self.config = config
        self.built = True
        self.post_quant_conv = conv(config.latent_channels, 1, "post_quant_conv")
        self.decoder = _Decoder(config, name="decoder")

    def call(self, z):
        images = self.decoder(self.post_quant_conv(ops.cast(z, self.compute_dtype)))
        return ops.cast(images, "float32")

    def build_with_dummy(self) -> "VAEDecoder":
        self(ops.zeros((1, 2, 2, self.config.latent_channels)))
        return self


def latent_distribution(moments):
    """Split moments into (mean, std), clipping the log-variance like the reference."""
    mean, logvar = ops.split(moments, 2, axis=-1)
    logvar = ops.clip(logvar, -30.0, 20.0)
    return mean, ops.exp(0.5 * logvar)
