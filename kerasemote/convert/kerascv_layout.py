"""keras-cv's Stable Diffusion 1.4 as tables: its files, its config, and its layers in file order.

For each part, ``kerascv_layout`` lists keras-cv's weighted layers in model order and,
for each, the paths and shapes of our variables that receive its arrays, in that
layer's weight order (the rules are in ``kerasemote.convert.kerascv``'s docstring).
Pure data: nothing here reads a file or imports NumPy, so the preset table uses it too.
"""

from __future__ import annotations

from typing import NamedTuple

from kerasemote.config import SD_V1, ModelConfig

KERASCV_CONFIG = SD_V1.replace(gelu_approximate=True, unet_attn_norm_eps=1e-5, vae_norm_eps=1e-5)

_URL = "https://huggingface.co/fchollet/stable-diffusion/resolve/main/"

# part -> (published file name, URL, sha256), as keras-cv 0.9.0 downloads them.
KERASCV_FILES: dict[str, tuple[str, str, str]] = {
    "text_encoder": (
        "kcv_encoder.h5",
        _URL + "kcv_encoder.h5",
        "4789e63e07c0e54d6a34a29b45ce81ece27060c499a709d556c7755b42bb0dc4",
    ),
    "unet": (
        "kcv_diffusion_model.h5",
        _URL + "kcv_diffusion_model.h5",
        "8799ff9763de13d7f30a683d653018e114ed24a6a819667da4f5ee10f9e805fe",
    ),
    "vae_decoder": (
        "kcv_decoder.h5",
        _URL + "kcv_decoder.h5",
        "ad350a65cc8bc4a80c8103367e039a3329b4231c2469a1093869a345f55b1962",
    ),
    "vae_encoder": (
        "vae_encoder.h5",
        _URL + "vae_encoder.h5",
        "c60fb220a40d090e0f86a6ab4c312d113e115c87c40ff75d11ffcf380aab7ebb",
    ),
}
PARTS = tuple(KERASCV_FILES)

Shape = tuple[int, ...]
WeightSpec = tuple[str, Shape]  # (our variable path, our variable shape)


class LayerSpec(NamedTuple):
    """One weighted keras-cv layer: its class, our matching scope, our variables in its weight order."""

    kind: str
    scope: str
    weights: list[WeightSpec]



# ---------------------------------------------------------------------- layouts


def _dense(path: str, n_in: int, n_out: int, bias: bool = True) -> list[WeightSpec]:
    specs = [(f"{path}/kernel", (n_in, n_out))]
    return specs + [(f"{path}/bias", (n_out,))] if bias else specs


def _conv(path: str, size: int, n_in: int, n_out: int) -> list[WeightSpec]:
    return [(f"{path}/kernel", (size, size, n_in, n_out)), (f"{path}/bias", (n_out,))]


def _norm(path: str, width: int) -> list[WeightSpec]:
    return [(f"{path}/gamma", (width,)), (f"{path}/beta", (width,))]


def _resnet(path: str, n_in: int, n_out: int, temb_dim: int | None = None) -> LayerSpec:
    """keras-cv ``ResBlock`` (UNet, with ``temb_dim``) or ``ResnetBlock`` (VAE)."""
    specs = _norm(f"{path}/norm1", n_in) + _conv(f"{path}/conv1", 3, n_in, n_out)
    if temb_dim is not None:
        specs += _dense(f"{path}/time_emb_proj", temb_dim, n_out)
    specs += _norm(f"{path}/norm2", n_out) + _conv(f"{path}/conv2", 3, n_out, n_out)
    if n_in != n_out:  # residual_projection, created last in build()
        specs += _conv(f"{path}/conv_shortcut", 1, n_in, n_out)
    return LayerSpec("ResBlock" if temb_dim else "ResnetBlock", path, specs)


def _attention(path: str, width: int, context_dim: int) -> list[WeightSpec]:
    return (
        _dense(f"{path}/to_q", width, width, bias=False)
        + _dense(f"{path}/to_k", context_dim, width, bias=False)
        + _dense(f"{path}/to_v", context_dim, width, bias=False)
        + _dense(f"{path}/to_out.0", width, width)
    )


def _spatial_transformer(path: str, width: int, context_dim: int) -> LayerSpec:
    block = f"{path}/transformer_blocks.0"
    specs = _norm(f"{path}/norm", width) + _conv(f"{path}/proj_in", 1, width, width)
    specs += _norm(f"{block}/norm1", width) + _attention(f"{block}/attn1", width, width)
    specs += _norm(f"{block}/norm2", width) + _attention(f"{block}/attn2", width, context_dim)
    specs += _norm(f"{block}/norm3", width)
    specs += _dense(f"{block}/ff/net.0.proj", width, 8 * width)  # GEGLU: value and gate
    specs += _dense(f"{block}/ff/net.2", 4 * width, width)
    specs += _conv(f"{path}/proj_out", 1, width, width)
    return LayerSpec("SpatialTransformer", path, specs)


def _vae_attention(path: str, width: int) -> LayerSpec:
    specs = _norm(f"{path}/group_norm", width)
    for name in ("to_q", "to_k", "to_v", "to_out.0"):
        specs += _dense(f"{path}/{name}", width, width)  # 1x1 convs in keras-cv
    return LayerSpec("AttentionBlock", path, specs)


def _padded_conv(path: str, size: int, n_in: int, n_out: int) -> LayerSpec:
    return LayerSpec("PaddedConv2D", path, _conv(path, size, n_in, n_out))


def _text_encoder_layout(c: ModelConfig) -> list[LayerSpec]:
    root, w = "text_encoder/text_model", c.text_width
    layers = [
        LayerSpec(
            "CLIPEmbedding",
            f"{root}/embeddings",
            [
                (f"{root}/embeddings/token_embedding/embeddings", (c.vocab_size, w)),
                (f"{root}/embeddings/position_embedding/embeddings", (c.max_length, w)),
            ],
        )
    ]
    for i in range(c.text_layers):
        path = f"{root}/encoder.layers.{i}"
        specs = _norm(f"{path}/layer_norm1", w)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            specs += _dense(f"{path}/self_attn/{name}", w, w)
        specs += _norm(f"{path}/layer_norm2", w)
        specs += _dense(f"{path}/mlp/fc1", w, c.text_intermediate)
        specs += _dense(f"{path}/mlp/fc2", c.text_intermediate, w)
        layers.append(LayerSpec("CLIPEncoderLayer", path, specs))
    final = f"{root}/final_layer_norm"
    layers.append(LayerSpec("LayerNormalization", final, _norm(final, w)))
    return layers


def _unet_layout(c: ModelConfig) -> list[LayerSpec]:
    if c.unet_transformer_depth != 1:
        raise ValueError(
            f"keras-cv's UNet has one transformer block per spatial transformer; config {c.name!r} "
            f"has unet_transformer_depth={c.unet_transformer_depth}."
        )
    c0, temb, ctx, last = c.unet_channels[0], c.time_embed_dim, c.context_dim, len(c.unet_channels) - 1
    linear_1, linear_2 = "unet/time_embedding/linear_1", "unet/time_embedding/linear_2"
    layers = [  # graph-depth order of keras-cv's functional model
        LayerSpec("Dense", linear_1, _dense(linear_1, c0, temb)),
        _padded_conv("unet/conv_in", 3, c.unet_in_channels, c0),
        LayerSpec("Dense", linear_2, _dense(linear_2, temb, temb)),
    ]
    skips, ch = [c0], c0  # channels of the skip tensors the up path concatenates
    for i, (out, has_attn) in enumerate(zip(c.unet_channels, c.unet_attention)):
        for j in range(c.unet_layers_per_block):
            layers.append(_resnet(f"unet/down_blocks.{i}/resnets.{j}", ch, out, temb))
            if has_attn:
                layers.append(_spatial_transformer(f"unet/down_blocks.{i}/attentions.{j}", out, ctx))
            ch = out
            skips.append(ch)
        if i < last:
            layers.append(_padded_conv(f"unet/down_blocks.{i}/downsamplers.0/conv", 3, ch, ch))
            skips.append(ch)
    layers += [
        _resnet("unet/mid_block/resnets.0", ch, ch, temb),
        _spatial_transformer("unet/mid_block/attentions.0", ch, ctx),
        _resnet("unet/mid_block/resnets.1", ch, ch, temb),
    ]
    levels = list(zip(reversed(c.unet_channels), reversed(c.unet_attention)))
    for i, (out, has_attn) in enumerate(levels):
        for j in range(c.unet_layers_per_block + 1):
            layers.append(_resnet(f"unet/up_blocks.{i}/resnets.{j}", ch + skips.pop(), out, temb))
            if has_attn:
                layers.append(_spatial_transformer(f"unet/up_blocks.{i}/attentions.{j}", out, ctx))
            ch = out
        if i < last:  # keras-cv's Upsample layer holds only the conv
            scope = f"unet/up_blocks.{i}/upsamplers.0"
            layers.append(LayerSpec("Upsample", scope, _conv(f"{scope}/conv", 3, ch, ch)))
    layers.append(LayerSpec("GroupNormalization", "unet/conv_norm_out", _norm("unet/conv_norm_out", ch)))
    layers.append(_padded_conv("unet/conv_out", 3, ch, c.latent_channels))
    return layers


def _vae_mid_block(path: str, width: int) -> list[LayerSpec]:
    return [
        _resnet(f"{path}/resnets.0", width, width),
        _vae_attention(f"{path}/attentions.0", width),
        _resnet(f"{path}/resnets.1", width, width),
    ]


def _vae_encoder_layout(c: ModelConfig) -> list[LayerSpec]:
    root, last = "vae_encoder/encoder", len(c.vae_channels) - 1
    ch = c.vae_channels[0]
    layers = [_padded_conv(f"{root}/conv_in", 3, 3, ch)]
    for i, out in enumerate(c.vae_channels):
        for j in range(c.vae_layers_per_block):
            layers.append(_resnet(f"{root}/down_blocks.{i}/resnets.{j}", ch, out))
            ch = out
        if i < last:
            layers.append(_padded_conv(f"{root}/down_blocks.{i}/downsamplers.0/conv", 3, ch, ch))
    layers += _vae_mid_block(f"{root}/mid_block", ch)
    moments = 2 * c.latent_channels
    layers += [
        LayerSpec("GroupNormalization", f"{root}/conv_norm_out", _norm(f"{root}/conv_norm_out", ch)),
        _padded_conv(f"{root}/conv_out", 3, ch, moments),
        _padded_conv("vae_encoder/quant_conv", 1, moments, moments),
    ]
    return layers


def _vae_decoder_layout(c: ModelConfig) -> list[LayerSpec]:
    root, latent = "vae_decoder/decoder", c.latent_channels
    channels = list(reversed(c.vae_channels))
    ch = channels[0]
    layers = [
        _padded_conv("vae_decoder/post_quant_conv", 1, latent, latent),
        _padded_conv(f"{root}/conv_in", 3, latent, ch),
    ]
    layers += _vae_mid_block(f"{root}/mid_block", ch)
    for i, out in enumerate(channels):
        for j in range(c.vae_layers_per_block + 1):
            layers.append(_resnet(f"{root}/up_blocks.{i}/resnets.{j}", ch, out))
            ch = out
        if i < len(channels) - 1:  # after keras-cv's UpSampling2D, which has no weights
            layers.append(_padded_conv(f"{root}/up_blocks.{i}/upsamplers.0/conv", 3, ch, ch))
    layers += [
        LayerSpec("GroupNormalization", f"{root}/conv_norm_out", _norm(f"{root}/conv_norm_out", ch)),
        _padded_conv(f"{root}/conv_out", 3, ch, 3),
    ]
    return layers


_LAYOUTS = {
    "text_encoder": _text_encoder_layout,
    "unet": _unet_layout,
    "vae_encoder": _vae_encoder_layout,
    "vae_decoder": _vae_decoder_layout,
}


def kerascv_layout(part: str, config: ModelConfig = KERASCV_CONFIG) -> list[LayerSpec]:
    """keras-cv's weighted layers of one part, in file order, mapped to our variables.

    Args:
        part: ``text_encoder``, ``unet``, ``vae_encoder`` or ``vae_decoder``.
        config: sizes; keras-cv's own models are ``KERASCV_CONFIG``'s sizes.

    Returns:
        One ``LayerSpec(kind, scope, weights)`` per keras-cv layer that has weights;
        ``weights`` lists ``(our variable path, our shape)`` in that layer's weight order.
    """
    if part not in _LAYOUTS:
        raise ValueError(f"Unknown part {part!r}; expected one of {PARTS}.")
    return _LAYOUTS[part](config)
