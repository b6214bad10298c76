"""Model configuration: one frozen dataclass sizes every Stable Diffusion 1.x part.

The same code builds the ``tiny`` model used by tests and CPU demos and the real
``sd-v1`` architecture (SD 1.4 / 1.5) used in Colab; only the config differs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

CLIP_VOCAB_SIZE = 49408
PREDICTION_TYPES = ("epsilon", "v_prediction", "flow")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the text encoder, UNet and VAE, plus the noise schedule.

    Args:
        name: short name of the configuration (``"tiny"``, ``"sd-v1"``...).
        vocab_size: number of CLIP token rows (49,408) before any placeholder rows.
        max_length: tokens per prompt, start and end included (77 for CLIP).
        text_width: CLIP hidden size; also the cross-attention context dim.
        text_layers: number of CLIP transformer layers.
        text_heads: CLIP attention heads.
        text_intermediate: CLIP MLP hidden size.
        unet_channels: output channels of each UNet resolution level.
        unet_attention: whether each level has cross-attention transformer blocks.
        unet_layers_per_block: resnets per down level (up levels have one more).
        unet_heads: attention heads in every UNet transformer (SD 1.x: 8).
        unet_transformer_depth: transformer blocks per spatial transformer.
        norm_groups: GroupNorm groups in the UNet.
        unet_norm_eps: GroupNorm epsilon of the UNet resnets (1e-5).
        unet_attn_norm_eps: GroupNorm epsilon in front of each spatial transformer
            (1e-6 in the original SD and diffusers; keras-cv uses 1e-5).
        gelu_approximate: tanh-approximate GELU in the transformer MLP (keras-cv's
            numerics) instead of the exact erf GELU of the original.
        latent_channels: channels of the VAE latent.
        vae_channels: output channels of each VAE level.
        vae_layers_per_block: resnets per VAE encoder level (decoder: one more).
        vae_norm_groups: GroupNorm groups in the VAE.
        vae_norm_eps: GroupNorm epsilon in the VAE (1e-6; keras-cv uses 1e-5).
        scaling_factor: multiplier that brings VAE latents to unit variance.
        image_size: default generation size in pixels.
        prediction_type: what the UNet predicts: ``epsilon``, ``v_prediction`` or
            ``flow`` (rectified-flow velocity, InstaFlow style).
        num_train_timesteps: length of the training noise schedule.
        beta_start: first beta of the schedule.
        beta_end: last beta of the schedule.
        beta_schedule: ``scaled_linear`` (SD) or ``linear``.
    """

    name: str = "sd-v1"
    vocab_size: int = CLIP_VOCAB_SIZE
    max_length: int = 77
    text_width: int = 768
    text_layers: int = 12
    text_heads: int = 12
    text_intermediate: int = 3072
    unet_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    unet_attention: tuple[bool, ...] = (True, True, True, False)
    unet_layers_per_block: int = 2
    unet_heads: int = 8
    unet_transformer_depth: int = 1
    norm_groups: int = 32
    unet_norm_eps: float = 1e-5
    unet_attn_norm_eps: float = 1e-6
    gelu_approximate: bool = False
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (128, 256, 512, 512)
    vae_layers_per_block: int = 2
    vae_norm_groups: int = 32
    vae_norm_eps: float = 1e-6
    scaling_factor: float = 0.18215
    image_size: int = 512
    prediction_type: str = "epsilon"
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"

    def __post_init__(self) -> None:
        # Lists arrive from JSON; keep the dataclass hashable and comparable.
        for key in ("unet_channels", "unet_attention", "vae_channels"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        if len(self.unet_channels) != len(self.unet_attention):
            raise ValueError(
                f"unet_channels has {len(self.unet_channels)} levels but unet_attention has "
                f"{len(self.unet_attention)}; give one attention flag per level."
            )
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}."
            )
        for ch in self.unet_channels:
            if ch % self.norm_groups:
                raise ValueError(f"UNet channels {ch} not divisible by norm_groups {self.norm_groups}.")
        for ch in self.vae_channels:
            if ch % self.vae_norm_groups:
                raise ValueError(
                    f"VAE channels {ch} not divisible by vae_norm_groups {self.vae_norm_groups}."
                )

    @property
    def context_dim(self) -> int:
        """Width of the encoded prompt that the UNet cross-attends to."""
        return self.text_width

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.unet_channels[0]

    @property
    def vae_downsample(self) -> int:
        """Pixels per latent cell along each axis (8 for SD)."""
        return 2 ** (len(self.vae_channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown ModelConfig keys {unknown}; known keys are {sorted(known)}.")
        return cls(**data)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


SD_V1 = ModelConfig()

# A few million parameters: every part of SD 1.x present (two levels, attention at
# both, a mid block), small enough for tests and CPU demos. Shapes are chosen so
# diffusers can express the same model (GroupNorm 32 needs channels % 32 == 0).
TINY = ModelConfig(
    name="tiny",
    text_width=64,
    text_layers=2,
    text_heads=2,
    text_intermediate=128,
    unet_channels=(32, 64),
    unet_attention=(True, True),
    unet_layers_per_block=1,
    unet_heads=2,
    norm_groups=32,
    vae_channels=(32, 64, 64),  # 4x downsampling: 64 px images, 16x16 latents
    vae_layers_per_block=1,
    vae_norm_groups=32,
    image_size=64,
)

CONFIGS: dict[str, ModelConfig] = {"sd-v1": SD_V1, "tiny": TINY}


def get_config(name: str) -> ModelConfig:
    """Return a named configuration (``tiny`` or ``sd-v1``)."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"Unknown config {name!r}; choose one of {sorted(CONFIGS)}.") from None

# The embedded pretrained model (weights/kerasemote-tiny): trained from scratch on the
# packaged emoji. 64 px with a 4x VAE keeps 16x16 latents, so the few-pixel hearts and
# tears that carry an emotion survive. The text encoder is wider than ``tiny``'s because
# the prompt must control the expression; its 49,408-row embedding is most of its weight.
KERASEMOTE_TINY = TINY.replace(
    name="kerasemote-tiny",
    text_width=128,
    text_layers=4,
    text_heads=4,
    text_intermediate=512,
    unet_channels=(64, 128, 128),
    unet_attention=(False, True, True),
    unet_layers_per_block=1,
    unet_heads=4,
    vae_channels=(32, 64, 64),
    vae_layers_per_block=1,
    # 8 groups, not SD's 32: with 32 the 32-channel level normalizes each channel alone, and a
    # flat colour on white then looks the same whatever its hue (the first VAE lost green).
    vae_norm_groups=8,
)
CONFIGS["kerasemote-tiny"] = KERASEMOTE_TINY
