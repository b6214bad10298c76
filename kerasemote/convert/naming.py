"""Map our Keras variable paths to PyTorch (diffusers / transformers) state-dict keys.

Our layers are named after the reference modules (see ``kerasemote.models.layers``),
so a path ``unet/down_blocks.0/resnets.0/conv1/kernel`` is the key
``down_blocks.0.resnets.0.conv1.weight``; only the last name and the tensor layout
change:

* Dense ``kernel`` (in, out)          <-> Linear ``weight`` (out, in)
* Conv2D ``kernel`` (kh, kw, in, out) <-> Conv2d ``weight`` (out, in, kh, kw)
* norms ``gamma`` / ``beta``          <-> ``weight`` / ``bias``
* Embedding ``embeddings``            <-> ``weight``
"""

from __future__ import annotations

import numpy as np

_LEAF = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias", "embeddings": "weight"}


def torch_key(path: str) -> str | None:
    """Reference key for one of our variable paths (model name dropped); None if it has none.

    Placeholder rows (``extra_embeddings``) have no counterpart in a base checkpoint.
    """
    parts = path.split("/")[1:]
    leaf = parts[-1]
    if leaf not in _LEAF:
        return None
    return ".".join(parts[:-1] + [_LEAF[leaf]])


def to_keras(path: str, array: np.ndarray, keras_shape: tuple[int, ...]) -> np.ndarray:
    """Reorder a reference tensor into the layout of our variable at ``path``.

    A 1x1 convolution and a Linear layer are interchangeable (older VAE checkpoints
    store attention projections as 1x1 convs; SD 2 uses Linear proj_in/out).
    """
    array = np.asarray(array)
    if path.endswith("/embeddings") or len(keras_shape) == 1:
        return array
    if len(keras_shape) == 4:
        if array.ndim == 2:
            array = array[:, :, None, None]
        return np.transpose(array, (2, 3, 1, 0))  # (out, in, kh, kw) -> (kh, kw, in, out)
    if array.ndim == 4:
        array = array[:, :, 0, 0]
    return array.T  # (out, in) -> (in, out)


def to_torch(path: str, value: np.ndarray) -> np.ndarray:
    """Our variable value in the reference layout (inverse of ``to_keras``)."""
    value = np.asarray(value)
    if path.endswith("/embeddings") or value.ndim == 1:
        return value
    if value.ndim == 4:
        return np.transpose(value, (3, 2, 0, 1))
    return value.T


# ---------------------------------------------------------------------- layout from a config
#
# The converters check a checkpoint against the variables our models will have, without
# building them (building the sd-v1 UNet costs minutes and ~4 GB). ``variable_shapes``
# lists those variables from the config alone; tests compare it with built models.

PARTS = ("unet", "vae_encoder", "vae_decoder", "text_encoder")

Shapes = dict[str, tuple[int, ...]]


def _dense(out: Shapes, prefix: str, n_in: int, n_out: int, bias: bool = True) -> None:
    out[f"{prefix}/kernel"] = (n_in, n_out)
    if bias:
        out[f"{prefix}/bias"] = (n_out,)


def _conv(out: Shapes, prefix: str, n_in: int, n_out: int, size: int) -> None:
    out[f"{prefix}/kernel"] = (size, size, n_in, n_out)
    out[f"{prefix}/bias"] = (n_out,)


def _norm(out: Shapes, prefix: str, channels: int) -> None:
    out[f"{prefix}/gamma"] = (channels,)
    out[f"{prefix}/beta"] = (channels,)


def _resnet(out: Shapes, prefix: str, n_in: int, n_out: int, temb: int | None) -> None:
    _norm(out, f"{prefix}/norm1", n_in)
    _conv(out, f"{prefix}/conv1", n_in, n_out, 3)
    if temb:
        _dense(out, f"{prefix}/time_emb_proj", temb, n_out)
    _norm(out, f"{prefix}/norm2", n_out)
    _conv(out, f"{prefix}/conv2", n_out, n_out, 3)
    if n_in != n_out:
        _conv(out, f"{prefix}/conv_shortcut", n_in, n_out, 1)


def _attention(out: Shapes, prefix: str, channels: int, context: int) -> None:
    _dense(out, f"{prefix}/to_q", channels, channels, bias=False)
    _dense(out, f"{prefix}/to_k", context, channels, bias=False)
    _dense(out, f"{prefix}/to_v", context, channels, bias=False)
    _dense(out, f"{prefix}/to_out.0", channels, channels)


def _transformer(out: Shapes, prefix: str, channels: int, config) -> None:
    _norm(out, f"{prefix}/norm", channels)
    _conv(out, f"{prefix}/proj_in", channels, channels, 1)
    for i in range(config.unet_transformer_depth):
        block = f"{prefix}/transformer_blocks.{i}"
        _norm(out, f"{block}/norm1", channels)
        _attention(out, f"{block}/attn1", channels, channels)
        _norm(out, f"{block}/norm2", channels)
        _attention(out, f"{block}/attn2", channels, config.context_dim)
        _norm(out, f"{block}/norm3", channels)
        _dense(out, f"{block}/ff/net.0.proj", channels, 8 * channels)  # GEGLU: value and gate
        _dense(out, f"{block}/ff/net.2", 4 * channels, channels)
    _conv(out, f"{prefix}/proj_out", channels, channels, 1)


def _unet_shapes(config, root: str) -> Shapes:
    c, out = config, {}
    temb = c.time_embed_dim
    _conv(out, f"{root}/conv_in", c.unet_in_channels, c.unet_channels[0], 3)
    _dense(out, f"{root}/time_embedding/linear_1", c.unet_channels[0], temb)
    _dense(out, f"{root}/time_embedding/linear_2", temb, temb)
    ch, skips, levels = c.unet_channels[0], [c.unet_channels[0]], len(c.unet_channels)
    for i, (width, attention) in enumerate(zip(c.unet_channels, c.unet_attention)):
        for j in range(c.unet_layers_per_block):
            _resnet(out, f"{root}/down_blocks.{i}/resnets.{j}", ch, width, temb)
            if attention:
                _transformer(out, f"{root}/down_blocks.{i}/attentions.{j}", width, c)
            ch = width
            skips.append(ch)
        if i < levels - 1:
            _conv(out, f"{root}/down_blocks.{i}/downsamplers.0/conv", ch, ch, 3)
            skips.append(ch)
    _resnet(out, f"{root}/mid_block/resnets.0", ch, ch, temb)
    _transformer(out, f"{root}/mid_block/attentions.0", ch, c)
    _resnet(out, f"{root}/mid_block/resnets.1", ch, ch, temb)
    levels_up = zip(reversed(c.unet_channels), reversed(c.unet_attention))
    for i, (width, attention) in enumerate(levels_up):
        for j in range(c.unet_layers_per_block + 1):
            _resnet(out, f"{root}/up_blocks.{i}/resnets.{j}", ch + skips.pop(), width, temb)
            if attention:
                _transformer(out, f"{root}/up_blocks.{i}/attentions.{j}", width, c)
            ch = width
        if i < levels - 1:
            _conv(out, f"{root}/up_blocks.{i}/upsamplers.0/conv", ch, ch, 3)
    _norm(out, f"{root}/conv_norm_out", ch)
    _conv(out, f"{root}/conv_out", ch, c.latent_channels, 3)
    return out


def _vae_mid(out: Shapes, prefix: str, channels: int) -> None:
    _resnet(out, f"{prefix}/resnets.0", channels, channels, None)
    attention = f"{prefix}/attentions.0"
    _norm(out, f"{attention}/group_norm", channels)
    for name in ("to_q", "to_k", "to_v", "to_out.0"):
        _dense(out, f"{attention}/{name}", channels, channels)
    _resnet(out, f"{prefix}/resnets.1", channels, channels, None)


def _vae_encoder_shapes(config, root: str) -> Shapes:
    c, out = config, {}
    enc = f"{root}/encoder"
    ch = c.vae_channels[0]
    _conv(out, f"{enc}/conv_in", 3, ch, 3)
    for i, width in enumerate(c.vae_channels):
        for j in range(c.vae_layers_per_block):
            _resnet(out, f"{enc}/down_blocks.{i}/resnets.{j}", ch, width, None)
            ch = width
        if i < len(c.vae_channels) - 1:
            _conv(out, f"{enc}/down_blocks.{i}/downsamplers.0/conv", ch, ch, 3)
    _vae_mid(out, f"{enc}/mid_block", ch)
    _norm(out, f"{enc}/conv_norm_out", ch)
    _conv(out, f"{enc}/conv_out", ch, 2 * c.latent_channels, 3)
    _conv(out, f"{root}/quant_conv", 2 * c.latent_channels, 2 * c.latent_channels, 1)
    return out


def _vae_decoder_shapes(config, root: str) -> Shapes:
    c, out = config, {}
    dec = f"{root}/decoder"
    widths = list(reversed(c.vae_channels))
    _conv(out, f"{root}/post_quant_conv", c.latent_channels, c.latent_channels, 1)
    ch = widths[0]
    _conv(out, f"{dec}/conv_in", c.latent_channels, ch, 3)
    _vae_mid(out, f"{dec}/mid_block", ch)
    for i, width in enumerate(widths):
        for j in range(c.vae_layers_per_block + 1):
            _resnet(out, f"{dec}/up_blocks.{i}/resnets.{j}", ch, width, None)
            ch = width
        if i < len(widths) - 1:
            _conv(out, f"{dec}/up_blocks.{i}/upsamplers.0/conv", ch, ch, 3)
    _norm(out, f"{dec}/conv_norm_out", ch)
    _conv(out, f"{dec}/conv_out", ch, 3, 3)
    return out


def _text_encoder_shapes(config, root: str) -> Shapes:
    c, out = config, {}
    model = f"{root}/text_model"
    out[f"{model}/embeddings/token_embedding/embeddings"] = (c.vocab_size, c.text_width)
    out[f"{model}/embeddings/position_embedding/embeddings"] = (c.max_length, c.text_width)
    for i in range(c.text_layers):
        layer = f"{model}/encoder.layers.{i}"
        _norm(out, f"{layer}/layer_norm1", c.text_width)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _dense(out, f"{layer}/self_attn/{name}", c.text_width, c.text_width)
        _norm(out, f"{layer}/layer_norm2", c.text_width)
        _dense(out, f"{layer}/mlp/fc1", c.text_width, c.text_intermediate)
        _dense(out, f"{layer}/mlp/fc2", c.text_intermediate, c.text_width)
    _norm(out, f"{model}/final_layer_norm", c.text_width)
    return out


_SHAPE_BUILDERS = {
    "unet": _unet_shapes,
    "vae_encoder": _vae_encoder_shapes,
    "vae_decoder": _vae_decoder_shapes,
    "text_encoder": _text_encoder_shapes,
}


def variable_shapes(config, part: str) -> dict[str, tuple[int, ...]]:
    """Path -> Keras shape of every variable of one of our parts, computed from the config.

    These are exactly the variables of ``UNet(config)``, ``VAEEncoder(config)``,
    ``VAEDecoder(config)`` or ``TextEncoder(config)`` (no placeholder rows) once
    built, under their default model names.

    Args:
        config: a ``ModelConfig``.
        part: one of ``PARTS``.

    Returns:
        e.g. ``{"unet/conv_in/kernel": (3, 3, 4, 320), ...}``.
    """
    if part not in _SHAPE_BUILDERS:
        raise ValueError(f"Unknown part {part!r}; expected one of {PARTS}.")
    return _SHAPE_BUILDERS[part](config, part)


def torch_shape(path: str, keras_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of the reference tensor for our variable ``path`` of shape ``keras_shape``."""
    if path.endswith("/embeddings") or len(keras_shape) == 1:
        return tuple(keras_shape)
    if len(keras_shape) == 4:
        kh, kw, n_in, n_out = keras_shape
        return (n_out, n_in, kh, kw)
    return tuple(reversed(keras_shape))
