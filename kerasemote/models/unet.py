"""The SD 1.x conditional UNet, sized only by a ModelConfig.

Structure (diffusers' ``UNet2DConditionModel`` names): ``conv_in``; ``time_embedding``;
one ``down_blocks.i`` per level (``resnets.j``, ``attentions.j`` where the level
has attention, ``downsamplers.0`` except on the last level); ``mid_block``
(resnet, attention, resnet); ``up_blocks.i`` mirroring the levels with one more
resnet each and skip connections; ``conv_norm_out`` and ``conv_out``.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kerasemote.config import ModelConfig
from kerasemote.models.layers import (
    Composite,
    Downsample,
    ResnetBlock,
    SpatialTransformer,
    Upsample,
    group_norm,
    same_conv,
)
from kerasemote.models.recompute import checkpointed


def timestep_embedding(timesteps, dim: int, max_period: float = 10000.0):
    """Sinusoidal embedding of (B,) timesteps -> (B, dim), ``[cos, sin]`` order.

    Matches diffusers' ``flip_sin_to_cos=True, downscale_freq_shift=0`` and keras-cv.
    """
    half = dim // 2
    freqs = ops.exp(-math.log(max_period) * ops.arange(0, half, dtype="float32") / half)
    args = ops.cast(ops.reshape(timesteps, (-1, 1)), "float32") * freqs[None, :]  # (B, half)
    return ops.concatenate([ops.cos(args), ops.sin(args)], axis=-1)


class TimestepEmbedding(Composite):
    def __init__(self, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.linear_1 = keras.layers.Dense(dim, name="linear_1")
        self.linear_2 = keras.layers.Dense(dim, name="linear_2")

    def call(self, x):
        return self.linear_2(ops.silu(self.linear_1(x)))


class _DownLevel(Composite):
    def __init__(self, resnets, attentions, resampler=None, **kwargs):
        super().__init__(**kwargs)
        self.resnets = resnets
        self.attentions = attentions
        self.resampler = resampler

    def call(self, x, temb, context):
        skips = []
        for j, resnet in enumerate(self.resnets):
            x = checkpointed(resnet, x, temb)
            if self.attentions:
                x = checkpointed(self.attentions[j], x, context)
            skips.append(x)
        if self.resampler is not None:
            x = self.resampler(x)
            skips.append(x)
        return x, skips


class _MidLevel(_DownLevel):
    def call(self, x, temb, context):
        x = checkpointed(self.resnets[0], x, temb)
        x = checkpointed(self.attentions[0], x, context)
        return checkpointed(self.resnets[1], x, temb)


class _UpLevel(_DownLevel):
    def call(self, x, temb, context, skips):
        # ``skips`` holds this level's skip tensors, the last one first.
        for j, resnet in enumerate(self.resnets):
            x = checkpointed(resnet, ops.concatenate([x, skips[j]], axis=-1), temb)
            if self.attentions:
                x = checkpointed(self.attentions[j], x, context)
        if self.resampler is not None:
            x = self.resampler(x)
        return x


class UNet(keras.Model):
    """Conditional denoiser: ``unet(latents, timesteps, context) -> prediction``.

    Args:
        config: the model configuration.

    Call args:
        latents: (B, h, w, unet_in_channels) noisy latents (an inpainting UNet: concatenated with
            the mask and the masked-image latents).
        timesteps: (B,) timesteps (float or int).
        context: (B, 77, context_dim) encoded prompt.

    Returns:
        (B, h, w, latent_channels): epsilon, v or flow velocity, per
        ``config.prediction_type``.
    """

    def __init__(self, config: ModelConfig, name: str = "unet", **kwargs):
        super().__init__(name=name, **kwargs)
        self.config = config
        self.built = True  # sublayers build on the first call, eagerly (see build_with_dummy)
        c = config
        levels = len(c.unet_channels)
        block = dict(groups=c.norm_groups, epsilon=c.unet_norm_eps)
        attention = dict(
            num_heads=c.unet_heads,
            depth=c.unet_transformer_depth,
            groups=c.norm_groups,
            epsilon=c.unet_attn_norm_eps,
            approximate_gelu=c.gelu_approximate,
        )

        self.conv_in = same_conv(c.unet_channels[0], "conv_in")
        self.time_embedding = TimestepEmbedding(c.time_embed_dim, name="time_embedding")

        skip_channels = [c.unet_channels[0]]
        self.down_blocks = []
        ch = c.unet_channels[0]
        for i, (out_ch, has_attn) in enumerate(zip(c.unet_channels, c.unet_attention)):
            resnets, attentions = [], []
            for j in range(c.unet_layers_per_block):
                resnets.append(ResnetBlock(ch, out_ch, name=f"resnets.{j}", **block))
                if has_attn:
                    attentions.append(SpatialTransformer(out_ch, name=f"attentions.{j}", **attention))
                ch = out_ch
                skip_channels.append(ch)
            down = Downsample(ch, name="downsamplers.0") if i < levels - 1 else None
            if down is not None:
                skip_channels.append(ch)
            self.down_blocks.append(_DownLevel(resnets, attentions, down, name=f"down_blocks.{i}"))

        mid_ch = c.unet_channels[-1]
        self.mid_block = _MidLevel(
            [ResnetBlock(mid_ch, mid_ch, name=f"resnets.{j}", **block) for j in range(2)],
            [SpatialTransformer(mid_ch, name="attentions.0", **attention)],
            name="mid_block",
        )

        self.up_blocks = []
        reversed_channels = list(reversed(c.unet_channels))
        reversed_attention = list(reversed(c.unet_attention))
        for i, (out_ch, has_attn) in enumerate(zip(reversed_channels, reversed_attention)):
            resnets, attentions = [], []
            for j in range(c.unet_layers_per_block + 1):
                skip = skip_channels.pop()
                resnets.append(ResnetBlock(ch + skip, out_ch, name=f"resnets.{j}", **block))
                if has_attn:
                    attentions.append(SpatialTransformer(out_ch, name=f"attentions.{j}", **attention))
                ch = out_ch
            up = Upsample(ch, name="upsamplers.0") if i < levels - 1 else None
            self.up_blocks.append(_UpLevel(resnets, attentions, up, name=f"up_blocks.{i}"))

        self.conv_norm_out = group_norm(c.norm_groups, c.unet_norm_eps, "conv_norm_out")
        self.conv_out = same_conv(c.latent_channels, "conv_out")

    def call(self, latents, timesteps, context):
        c = self.config
        temb = timestep_embedding(timesteps, c.unet_channels[0])
        temb = self.time_embedding(ops.cast(temb, self.compute_dtype))  # (B, 4 * C0)
        context = ops.cast(context, self.compute_dtype)

        x = self.conv_in(ops.cast(latents, self.compute_dtype))
        skips = [x]
        for level in self.down_blocks:
            x, level_skips = level(x, temb, context)
            skips.extend(level_skips)
        x = self.mid_block(x, temb, context)
        for level in self.up_blocks:
            n = len(level.resnets)
            x = level(x, temb, context, skips[: -n - 1 : -1])
            del skips[-n:]
        x = self.conv_out(ops.silu(self.conv_norm_out(x)))
        return ops.cast(x, "float32")

    def build_with_dummy(self, latent_size: int | None = None) -> "UNet":
        """Create every variable by one call on small zeros; returns self."""
        c = self.config
        size = latent_size or 2 ** len(c.unet_channels)
        self(
            ops.zeros((1, size, size, c.unet_in_channels)),
            ops.zeros((1,)),
            ops.zeros((1, c.max_length, c.context_dim)),
        )
        return self
