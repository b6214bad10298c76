"""Model configuration: one frozen dataclass sizes every Stable Diffusion 1.x part.

The same code builds the ``tiny`` model used by tests and CPU demos and the real
``sd-v1`` architecture (SD 1.4 / 1.5) used in Colab; only the config differs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

CLIP_VOCAB_SIZE = 49408
PREDICTION_TYPES = ("epsilon", "v_prediction", "flow")
# Compute dtype -> Keras' mixed-precision policy (variables stay float32). bfloat16 keeps float32's range, so it
# needs no loss scaling; float16 does (training wraps its optimizer in a LossScaleOptimizer).
PRECISION_POLICIES = {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}

# Largest value of each size field: far above any Stable Diffusion (SD 1.x: text_width 768,
# channels up to 1280), low enough that a config file cannot ask for terabytes before the
# memory check runs. ``unet_channels`` / ``vae_channels`` limits apply to every level.
LIMITS: dict[str, int] = {
    "vocab_size": 262_144,
    "max_length": 1024,
    "text_width": 4096,
    "text_layers": 64,
    "text_heads": 128,
    "text_intermediate": 16_384,
    "unet_channels": 4096,
    "unet_layers_per_block": 8,
    "unet_heads": 128,
    "unet_transformer_depth": 16,
    "norm_groups": 1024,
    "latent_channels": 64,
    "unet_in_channels": 2 * 64 + 1,
    "vae_channels": 2048,
    "vae_layers_per_block": 8,
    "vae_norm_groups": 1024,
    "image_size": 8192,
    "num_train_timesteps": 100_000,
}
MAX_LEVELS = 8  # resolution levels of the UNet and of the VAE
_POSITIVE_FLOATS = ("unet_norm_eps", "unet_attn_norm_eps", "vae_norm_eps", "scaling_factor")


class ConfigError(ValueError):
    """A config field of the wrong type or out of range.

    The message is one line: the source (file), the field, what was expected and what was found.
    """

    def __init__(self, field: str, expected: str, found: Any, source: str = "ModelConfig"):
        self.field, self.expected, self.found, self.source = field, expected, found, source
        super().__init__(f"{source}: {field}: expected {expected}, found {found}.")

    def located(self, source: str, prefix: str = "") -> ConfigError:
        """The same problem named as coming from ``source`` (the field under ``prefix``)."""
        return ConfigError(prefix + self.field, self.expected, self.found, source)


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
        unet_in_channels: channels the UNet takes: ``latent_channels`` (the default, None) or, for
            an inpainting UNet, ``2 * latent_channels + 1`` (latents, mask, masked-image latents).
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
    unet_in_channels: int | None = None
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
            value = getattr(self, key)
            if not isinstance(value, (list, tuple)):
                raise ConfigError(key, "a list", value)
            object.__setattr__(self, key, tuple(value))
        if self.unet_in_channels is None:
            object.__setattr__(self, "unet_in_channels", self.latent_channels)
        _check_fields(self)

    @property
    def context_dim(self) -> int:
        """Width of the encoded prompt that the UNet cross-attends to."""
        return self.text_width

    @property
    def inpainting(self) -> bool:
        """Whether the UNet also takes a mask and masked-image latents (``unet_in_channels`` > latents)."""
        return self.unet_in_channels != self.latent_channels

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
    def from_dict(cls, data: Any, source: str = "ModelConfig", field: str = "") -> ModelConfig:
        """A config from JSON data (a model directory's ``config.json``), every field checked.

        Missing keys take the ``sd-v1`` values; the parameter count is checked against the
        machine's memory (``check_memory``) before the caller builds anything.

        Args:
            data: the JSON object.
            source: the file it came from, named in errors.
            field: where ``data`` sits in that file (``"config"``), named in errors.

        Raises:
            ConfigError: one line naming ``source``, the field, what was expected and what was found.
        """
        prefix = f"{field}." if field else ""
        if not isinstance(data, dict):
            found = "nothing (no such key)" if data is None else _found(data)
            raise ConfigError(field or "config", "a JSON object", found, source)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(field or "config", f"only the keys {sorted(known)}", f"unknown keys {unknown}", source)
        try:
            config = cls(**data)
        except ConfigError as err:
            raise err.located(source, prefix) from None
        check_memory(config, source)
        return config

    def parameter_count(self) -> int:
        """How many weights the four parts hold (placeholder rows excluded), computed without building them."""
        return _text_parameters(self) + _unet_parameters(self) + _vae_parameters(self)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with ``changes``; a plain UNet's input channels follow a new ``latent_channels``."""
        if "latent_channels" in changes and "unet_in_channels" not in changes and not self.inpainting:
            changes["unet_in_channels"] = None
        return dataclasses.replace(self, **changes)


def _found(value: Any) -> str:
    text = repr(value) if isinstance(value, (int, float, str, bool, type(None))) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_size(field: str, value: Any) -> None:
    if not _is_int(value) or not 1 <= value <= LIMITS[field]:
        raise ConfigError(field, f"an integer from 1 to {LIMITS[field]}", _found(value))


def _check_fields(c: ModelConfig) -> None:
    """Types, ranges and the divisions the layers rely on; the first problem is raised."""
    if not isinstance(c.name, str):
        raise ConfigError("name", "a string", _found(c.name))
    for field in LIMITS:
        values = getattr(c, field)
        for value in values if isinstance(values, tuple) else (values,):
            _check_size(field, value)
    for field in ("unet_channels", "vae_channels"):
        if not 1 <= len(getattr(c, field)) <= MAX_LEVELS:
            raise ConfigError(field, f"1 to {MAX_LEVELS} levels", len(getattr(c, field)))
    if len(c.unet_attention) != len(c.unet_channels) or not all(isinstance(a, bool) for a in c.unet_attention):
        expected = f"{len(c.unet_channels)} true/false flags (one per level)"
        raise ConfigError("unet_attention", expected, list(c.unet_attention))
    for field in (*_POSITIVE_FLOATS, "beta_start", "beta_end"):
        value = getattr(c, field)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
            raise ConfigError(field, "a finite number > 0", _found(value))
    if not c.beta_start <= c.beta_end < 1:
        raise ConfigError("beta_end", f"a number from beta_start ({c.beta_start}) to below 1", c.beta_end)
    if not isinstance(c.gelu_approximate, bool):
        raise ConfigError("gelu_approximate", "true or false", _found(c.gelu_approximate))
    if c.prediction_type not in PREDICTION_TYPES:
        raise ConfigError("prediction_type", f"one of {PREDICTION_TYPES}", _found(c.prediction_type))
    if c.unet_in_channels not in (c.latent_channels, 2 * c.latent_channels + 1):
        expected = (f"{c.latent_channels} (latent_channels) or {2 * c.latent_channels + 1} "
                    "(an inpainting UNet: latents, mask, masked-image latents)")
        raise ConfigError("unet_in_channels", expected, c.unet_in_channels)
    _check_divides(c)


def _check_divides(c: ModelConfig) -> None:
    if c.text_width % c.text_heads:
        raise ConfigError("text_heads", f"a divisor of text_width ({c.text_width})", c.text_heads)
    # Attention splits channels into equal heads; the mid block attends at the last level's width.
    attending = {ch for ch, attention in zip(c.unet_channels, c.unet_attention) if attention} | {c.unet_channels[-1]}
    for ch in sorted(attending):
        if ch % c.unet_heads:
            expected = f"a divisor of every attending UNet width {sorted(attending)}"
            raise ConfigError("unet_heads", expected, c.unet_heads)
    for field, groups, channels in (
        ("norm_groups", c.norm_groups, c.unet_channels),
        ("vae_norm_groups", c.vae_norm_groups, c.vae_channels),
    ):
        for ch in channels:
            if ch % groups:
                raise ConfigError(field, f"a divisor of every channel count {list(channels)}", groups)


# ---------------------------------------------------------------------- size before building
#
# The weight count of each part in closed form, so a config can be weighed before its (possibly
# huge) layers exist. It mirrors ``kerasemote.convert.naming.variable_shapes`` exactly; a test
# compares the two.


def _dense(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _conv(n_in: int, n_out: int, size: int) -> int:
    return size * size * n_in * n_out + n_out


def _resnet(n_in: int, n_out: int, temb: int) -> int:
    shortcut = _conv(n_in, n_out, 1) if n_in != n_out else 0
    time = _dense(temb, n_out) if temb else 0
    return 2 * n_in + _conv(n_in, n_out, 3) + time + 2 * n_out + _conv(n_out, n_out, 3) + shortcut


def _transformer(c: ModelConfig, ch: int) -> int:
    attention = 2 * ch * ch + ch  # to_q, to_out (with bias)
    block = 6 * ch + (attention + 2 * ch * ch) + (attention + 2 * c.context_dim * ch)
    block += _dense(ch, 8 * ch) + _dense(4 * ch, ch)
    return 2 * ch + 2 * _conv(ch, ch, 1) + c.unet_transformer_depth * block


def _unet_parameters(c: ModelConfig) -> int:
    temb, first = c.time_embed_dim, c.unet_channels[0]
    total = _conv(c.unet_in_channels, first, 3) + _dense(first, temb) + _dense(temb, temb)
    ch, skips, levels = first, [first], len(c.unet_channels)
    for i, (width, attention) in enumerate(zip(c.unet_channels, c.unet_attention)):
        for _ in range(c.unet_layers_per_block):
            total += _resnet(ch, width, temb) + (_transformer(c, width) if attention else 0)
            ch = width
            skips.append(ch)
        if i < levels - 1:
            total += _conv(ch, ch, 3)
            skips.append(ch)
    total += 2 * _resnet(ch, ch, temb) + _transformer(c, ch)
    for i, (width, attention) in enumerate(zip(reversed(c.unet_channels), reversed(c.unet_attention))):
        for _ in range(c.unet_layers_per_block + 1):
            total += _resnet(ch + skips.pop(), width, temb) + (_transformer(c, width) if attention else 0)
            ch = width
        if i < levels - 1:
            total += _conv(ch, ch, 3)
    return total + 2 * ch + _conv(ch, c.latent_channels, 3)


def _vae_parameters(c: ModelConfig) -> int:
    def mid(ch: int) -> int:
        return 2 * _resnet(ch, ch, 0) + 2 * ch + 4 * _dense(ch, ch)

    latent, widths = c.latent_channels, list(c.vae_channels)
    ch, total = widths[0], _conv(3, widths[0], 3)  # encoder
    for i, width in enumerate(widths):
        for _ in range(c.vae_layers_per_block):
            total, ch = total + _resnet(ch, width, 0), width
        total += _conv(ch, ch, 3) if i < len(widths) - 1 else 0
    total += mid(ch) + 2 * ch + _conv(ch, 2 * latent, 3) + _conv(2 * latent, 2 * latent, 1)
    ch = widths[-1]  # decoder
    total += _conv(latent, latent, 1) + _conv(latent, ch, 3) + mid(ch)
    for i, width in enumerate(reversed(widths)):
        for _ in range(c.vae_layers_per_block + 1):
            total, ch = total + _resnet(ch, width, 0), width
        total += _conv(ch, ch, 3) if i < len(widths) - 1 else 0
    return total + 2 * ch + _conv(ch, 3, 3)


def _text_parameters(c: ModelConfig) -> int:
    w = c.text_width
    layer = 4 * w + 4 * _dense(w, w) + _dense(w, c.text_intermediate) + _dense(c.text_intermediate, w)
    return (c.vocab_size + c.max_length) * w + c.text_layers * layer + 2 * w


def memory_bytes() -> int | None:
    """Physical memory of this machine in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(config: ModelConfig, source: str = "ModelConfig") -> None:
    """Refuse a config whose float32 weights alone would not fit in this machine's memory.

    Building a model holds each weight once as float32; loading a checkpoint briefly holds
    a second copy, so a config that fails here could never be used.

    Raises:
        ConfigError: naming ``source``, the parameter count, the bytes needed and the memory present.
    """
    needed, present = 4 * config.parameter_count(), memory_bytes()
    if present is not None and needed > present:
        raise ConfigError(
            "parameter count",
            f"float32 weights that fit in this machine's {present / 2**30:.1f} GiB",
            f"{config.parameter_count():,} weights needing {needed / 2**30:.1f} GiB",
            source,
        )


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
