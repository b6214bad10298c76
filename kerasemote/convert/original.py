"""Original single-file Stable Diffusion checkpoints (CompVis / LDM layout) <-> our parts.

Files such as ``v1-5-pruned-emaonly.ckpt`` or ``.safetensors`` hold the three
parts under one key space:

* ``model.diffusion_model.*`` - the UNet: ``input_blocks.N.M``, ``middle_block.M``,
  ``output_blocks.N.M``, ``time_embed.0/2``, ``out.0/2``;
* ``first_stage_model.*`` - the VAE: ``encoder.down.i.block.j``, ``encoder.mid.block_1``,
  ``encoder.mid.attn_1`` (1x1-conv ``q/k/v/proj_out``), ``decoder.up.i`` (numbered from
  the lowest resolution up, the reverse of diffusers), ``norm_out``;
* ``cond_stage_model.transformer.text_model.*`` - the CLIP text encoder, already
  in transformers' names.

Other keys (``model_ema.*``, the noise-schedule buffers ``betas``,
``alphas_cumprod``...) are ignored, except that ``betas`` gives the schedule.

The key map is generated from a ``ModelConfig`` (any number of levels), going through
diffusers' names, which are ours: ``input_blocks`` count one ``conv_in``, then per
level ``layers_per_block`` (resnet, attention) blocks and a downsampler (``op``);
``output_blocks`` count ``layers_per_block + 1`` blocks per level, the upsampler
(``conv``) sitting in the level's last block after its resnet (index 1) and attention
(index 2 when the level has one). Inside a resnet ``in_layers.0/2`` are
``norm1/conv1``, ``emb_layers.1`` is ``time_emb_proj``, ``out_layers.0/3`` are
``norm2/conv2`` and ``skip_connection`` is ``conv_shortcut`` (``nin_shortcut`` in the VAE).

Only SD 1.x is supported, inpainting checkpoints included (a UNet taking ``2 * latent + 1``
channels: ``unet_in_channels`` is read off ``input_blocks.0.0``); SD 2.x (OpenCLIP text encoder,
linear ``proj_in``) and SDXL are refused with a message saying what was found.

Example:
    >>> config, arrays = convert_single_file("v1-5-pruned-emaonly.safetensors")  # doctest: +SKIP
    >>> export_single_file(arrays, config, "mine.safetensors")  # doctest: +SKIP
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import numpy as np

from kerasemote import storage
from kerasemote.config import SD_V1, ConfigError, ModelConfig
from kerasemote.convert import naming, torchfile
from kerasemote.convert.layout import (
    COMPONENTS,
    Entry,
    arrays_from_state,
    diffusers_layout,
    part_arrays,
    state_from_arrays,
)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
_PREFIXES = {"unet": UNET_PREFIX, "vae": VAE_PREFIX, "text_encoder": TEXT_PREFIX}
_TEXT_BUFFER = TEXT_PREFIX + "text_model.embeddings.position_ids"

# Renames inside one module, applied to the start of the rest of the key.
_UNET_RESNET = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("time_emb_proj.", "emb_layers.1."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("conv_shortcut.", "skip_connection."),
)
_VAE_RESNET = (("conv_shortcut.", "nin_shortcut."),)
_VAE_ATTENTION = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)

ModuleMap = dict[str, tuple[str, tuple[tuple[str, str], ...]]]


# ---------------------------------------------------------------------- key map


def _unet_modules(config: ModelConfig) -> ModuleMap:
    """diffusers module -> (LDM module, renames inside it) for the UNet."""
    per_level = config.unet_layers_per_block + 1
    levels = len(config.unet_channels)
    modules: ModuleMap = {
        "conv_in": ("input_blocks.0.0", ()),
        "time_embedding.linear_1": ("time_embed.0", ()),
        "time_embedding.linear_2": ("time_embed.2", ()),
        "mid_block.resnets.0": ("middle_block.0", _UNET_RESNET),
        "mid_block.attentions.0": ("middle_block.1", ()),
        "mid_block.resnets.1": ("middle_block.2", _UNET_RESNET),
        "conv_norm_out": ("out.0", ()),
        "conv_out": ("out.2", ()),
    }
    for i, attention in enumerate(config.unet_attention):
        for j in range(config.unet_layers_per_block):
            block = 1 + i * per_level + j
            modules[f"down_blocks.{i}.resnets.{j}"] = (f"input_blocks.{block}.0", _UNET_RESNET)
            modules[f"down_blocks.{i}.attentions.{j}"] = (f"input_blocks.{block}.1", ())
        if i < levels - 1:
            block = 1 + i * per_level + config.unet_layers_per_block
            modules[f"down_blocks.{i}.downsamplers.0.conv"] = (f"input_blocks.{block}.0.op", ())
    for i, attention in enumerate(reversed(config.unet_attention)):
        for j in range(per_level):
            modules[f"up_blocks.{i}.resnets.{j}"] = (f"output_blocks.{i * per_level + j}.0", _UNET_RESNET)
            modules[f"up_blocks.{i}.attentions.{j}"] = (f"output_blocks.{i * per_level + j}.1", ())
        if i < levels - 1:
            last = i * per_level + per_level - 1
            slot = 2 if attention else 1  # after the resnet, and the attention if any
            modules[f"up_blocks.{i}.upsamplers.0.conv"] = (f"output_blocks.{last}.{slot}.conv", ())
    return modules


def _vae_modules(config: ModelConfig) -> ModuleMap:
    """diffusers module -> (LDM module, renames inside it) for the VAE."""
    levels = len(config.vae_channels)
    modules: ModuleMap = {
        "encoder.conv_norm_out": ("encoder.norm_out", ()),
        "decoder.conv_norm_out": ("decoder.norm_out", ()),
    }
    for coder in ("encoder", "decoder"):
        modules[f"{coder}.mid_block.resnets.0"] = (f"{coder}.mid.block_1", _VAE_RESNET)
        modules[f"{coder}.mid_block.resnets.1"] = (f"{coder}.mid.block_2", _VAE_RESNET)
        modules[f"{coder}.mid_block.attentions.0"] = (f"{coder}.mid.attn_1", _VAE_ATTENTION)
    for i in range(levels):
        for j in range(config.vae_layers_per_block):
            modules[f"encoder.down_blocks.{i}.resnets.{j}"] = (f"encoder.down.{i}.block.{j}", _VAE_RESNET)
        modules[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = (f"encoder.down.{i}.downsample.conv", ())
        ldm = levels - 1 - i  # the LDM decoder numbers its levels from the latent side
        for j in range(config.vae_layers_per_block + 1):
            modules[f"decoder.up_blocks.{i}.resnets.{j}"] = (f"decoder.up.{ldm}.block.{j}", _VAE_RESNET)
        modules[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = (f"decoder.up.{ldm}.upsample.conv", ())
    return modules


def _ldm_key(key: str, modules: ModuleMap) -> str:
    """Translate one diffusers key with the longest module prefix that matches."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        if module in modules:
            target, renames = modules[module]
            rest = ".".join(parts[cut:])
            for before, after in renames:
                if rest.startswith(before):
                    rest = after + rest[len(before) :]
                    break
            return f"{target}.{rest}"
    return key  # same name in both layouts (quant_conv, encoder.conv_in, text keys...)


def single_file_layout(config: ModelConfig, components: Iterable[str] = COMPONENTS) -> dict[str, Entry]:
    """Original-layout key -> ``Entry`` (our part, path, Keras shape) for ``config``."""
    module_maps = {"unet": _unet_modules(config), "vae": _vae_modules(config), "text_encoder": {}}
    layout = {}
    for component in components:
        for key, entry in diffusers_layout(config, component).items():
            layout[_PREFIXES[component] + _ldm_key(key, module_maps[component])] = entry
    return layout


# ---------------------------------------------------------------------- config from weights


def _refuse_unsupported(state: Mapping[str, np.ndarray], source: str) -> None:
    checks = (
        ("cond_stage_model.model.", "an SD 2.x OpenCLIP text encoder (cond_stage_model.model.*)"),
        ("conditioner.embedders.", "an SDXL conditioner (conditioner.embedders.*)"),
        (UNET_PREFIX + "label_emb.", "UNet class/label embeddings (label_emb.*, SDXL or the x4 upscaler)"),
    )
    for prefix, what in checks:
        if any(k.startswith(prefix) for k in state):
            raise ValueError(f"{source}: found {what}; only Stable Diffusion 1.x checkpoints are supported.")
    proj_in = [k for k in state if k.startswith(UNET_PREFIX) and k.endswith(".proj_in.weight")]
    if proj_in and state[proj_in[0]].ndim == 2:
        raise ValueError(
            f"{source}: key {proj_in[0]!r} is a Linear layer of shape {state[proj_in[0]].shape} "
            "(SD 2.x use_linear_projection); expected a 1x1 convolution (SD 1.x)."
        )


def _indices(keys: Iterable[str], pattern: str) -> list[int]:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return sorted(found)


def _need(state: Mapping[str, np.ndarray], key: str, source: str) -> np.ndarray:
    if key not in state:
        raise ValueError(f"{source}: missing key {key!r}, needed to read the model's sizes.")
    return state[key]


def _unet_config(state: Mapping[str, np.ndarray], source: str) -> dict[str, Any]:
    u = {k[len(UNET_PREFIX) :]: v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    blocks = _indices(u, r"input_blocks\.(\d+)\.")
    levels = len(_indices(u, r"input_blocks\.(\d+)\.0\.op\.weight")) + 1
    if not blocks or len(blocks) % levels:
        raise ValueError(f"{source}: {len(blocks)} input_blocks do not split into {levels} levels.")
    per_level = len(blocks) // levels  # layers_per_block resnets + a downsampler (or conv_in)
    firsts = [1 + i * per_level for i in range(levels)]
    mid_blocks = _indices(u, r"middle_block\.1\.transformer_blocks\.(\d+)\.")
    return dict(
        # An inpainting UNet takes more channels (latents, mask, masked-image latents) than it predicts.
        latent_channels=int(_need(u, "out.2.weight", source).shape[0]),
        unet_in_channels=int(_need(u, "input_blocks.0.0.weight", source).shape[1]),
        unet_channels=tuple(
            int(_need(u, f"input_blocks.{b}.0.in_layers.2.weight", source).shape[0]) for b in firsts
        ),
        unet_attention=tuple(f"input_blocks.{b}.1.proj_in.weight" in u for b in firsts),
        unet_layers_per_block=per_level - 1,
        unet_transformer_depth=len(mid_blocks),
        text_width=int(_need(u, "middle_block.1.transformer_blocks.0.attn2.to_k.weight", source).shape[1]),
    )


def _vae_config(state: Mapping[str, np.ndarray], source: str) -> dict[str, Any]:
    v = {k[len(VAE_PREFIX) :]: a for k, a in state.items() if k.startswith(VAE_PREFIX)}
    levels = _indices(v, r"encoder\.down\.(\d+)\.block\.0\.conv1\.weight")
    return dict(
        vae_channels=tuple(int(v[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in levels),
        vae_layers_per_block=len(_indices(v, r"encoder\.down\.0\.block\.(\d+)\.conv1\.weight")),
        latent_channels=int(_need(v, "post_quant_conv.weight", source).shape[0]),
    )


def _text_config(state: Mapping[str, np.ndarray], base: ModelConfig, source: str) -> dict[str, Any]:
    t = TEXT_PREFIX + "text_model."
    vocab, width = _need(state, t + "embeddings.token_embedding.weight", source).shape
    layers = _indices(state, re.escape(t) + r"encoder\.layers\.(\d+)\.")
    return dict(
        vocab_size=int(vocab),
        text_width=int(width),
        max_length=int(_need(state, t + "embeddings.position_embedding.weight", source).shape[0]),
        text_layers=len(layers),
        text_intermediate=int(_need(state, t + "encoder.layers.0.mlp.fc1.weight", source).shape[0]),
        # Head count is not in the weights: CLIP uses 64-wide heads.
        text_heads=base.text_heads if width == base.text_width else max(1, int(width) // 64),
    )


def _schedule_config(state: Mapping[str, np.ndarray]) -> dict[str, Any]:
    if "betas" not in state or np.asarray(state["betas"]).ndim != 1:
        return {}
    betas = np.asarray(state["betas"], dtype=np.float64)
    start, end, n = float(f"{betas[0]:.6g}"), float(f"{betas[-1]:.6g}"), len(betas)
    scaled = np.linspace(start**0.5, end**0.5, n) ** 2
    schedule = "scaled_linear" if np.allclose(betas, scaled, rtol=1e-4) else "linear"
    return dict(beta_start=start, beta_end=end, num_train_timesteps=n, beta_schedule=schedule)


def config_from_single_file(
    state: Mapping[str, np.ndarray],
    source: str = "<checkpoint>",
    base: ModelConfig = SD_V1,
    name: str | None = None,
) -> ModelConfig:
    """Read our ``ModelConfig`` off an original-layout state dict's shapes.

    Sizes, level counts, attention levels and the beta schedule come from the
    weights; what weights cannot show (UNet head count, GroupNorm groups and eps,
    scaling factor, prediction type) comes from ``base`` (SD 1.x values by default).
    """
    _refuse_unsupported(state, source)
    fields: dict[str, Any] = {"name": name or base.name}
    if any(k.startswith(VAE_PREFIX) for k in state):
        fields.update(_vae_config(state, source))
    if any(k.startswith(TEXT_PREFIX) for k in state):
        fields.update(_text_config(state, base, source))
    unet = _unet_config(state, source)
    for key in ("latent_channels", "text_width"):
        if key in fields and fields[key] != unet[key]:
            raise ValueError(
                f"{source}: the UNet expects {key} = {unet[key]} but the file's other parts have {fields[key]}."
            )
    fields.update(unet)
    fields.update(_schedule_config(state))
    try:
        return base.replace(**fields)
    except ConfigError as err:
        raise err.located(source) from None


# ---------------------------------------------------------------------- convert / export


def _components_for(parts: Iterable[str]) -> list[str]:
    parts = set(parts)
    unknown = parts - set(naming.PARTS)
    if unknown:
        raise ValueError(f"Unknown parts {sorted(unknown)}; expected some of {naming.PARTS}.")
    return [c for c, members in COMPONENTS.items() if parts & set(members)]


def convert_single_file(
    path: storage.PathLike,
    config: ModelConfig | None = None,
    parts: Iterable[str] = naming.PARTS,
    base: ModelConfig = SD_V1,
    lazy: bool = False,
) -> tuple[ModelConfig, dict[str, dict[str, np.ndarray]]]:
    """Read an original single-file checkpoint into our config and arrays.

    Args:
        path: ``.ckpt`` / ``.bin`` (read without running pickled code) or
            ``.safetensors``; local, Drive or ``gs://``.
        config: the config to convert to; None reads it off the weights
            (``config_from_single_file`` with ``base``).
        parts: which of ``unet``, ``vae_encoder``, ``vae_decoder``, ``text_encoder`` to read.
        base: values the weights cannot show, when ``config`` is None.
        lazy: arrays are ``LazyArray``s, read and converted one by one when assigned
            (a local ``.safetensors`` is then never held whole in memory).

    Returns:
        ``(config, {part: {variable_path: float32 array}})``.

    Raises:
        WeightFileError: missing or unexpected keys under the requested parts'
            prefixes, or wrong shapes, naming the file.
        ValueError: an SD 2.x / SDXL checkpoint, or a UNet whose input channels are neither the
            latent's nor an inpainting UNet's.
    """
    source = storage._fspath(path)
    state = torchfile.load_state_dict(source, lazy=lazy)
    if config is None:
        config = config_from_single_file(state, source, base, name=storage.basename(source).split(".")[0])
    else:
        _refuse_unsupported(state, source)
    parts = list(parts)
    components = _components_for(parts)
    prefixes = tuple(_PREFIXES[c] for c in components)
    wanted = {k: state.pop(k) for k in list(state) if k.startswith(prefixes) and k != _TEXT_BUFFER}
    del state  # EMA copies and buffers go before the conversion allocates
    arrays = arrays_from_state(wanted, single_file_layout(config, components), source, release=True, lazy=lazy)
    return config, {p: arrays[p] for p in parts}


def export_single_file(
    parts: Mapping[str, Any],
    config: ModelConfig,
    path: storage.PathLike,
    dtype: str = "float32",
) -> None:
    """Write our parts as an original-layout ``.safetensors`` (what A1111/ComfyUI load).

    Args:
        parts: ``{part: {variable_path: array}}`` or ``{part: built Keras model}``;
            a VAE needs both ``vae_encoder`` and ``vae_decoder``.
        config: the config the parts were built with.
        path: output ``.safetensors`` path (written atomically). Pickled ``.ckpt``
            output is not offered: safetensors cannot carry code.
        dtype: ``"float32"`` or ``"float16"``.
    """
    target = storage._fspath(path)
    if not target.endswith(".safetensors"):
        raise ValueError(f"{target}: export writes .safetensors only (no pickled .ckpt); rename the target.")
    arrays = part_arrays(parts)
    components = _components_for(arrays)
    for component in components:
        missing = set(COMPONENTS[component]) - set(arrays)
        if missing:
            raise ValueError(
                f"Exporting {component} needs {COMPONENTS[component]}; missing {sorted(missing)}."
            )
    layout = single_file_layout(config, components)
    state = state_from_arrays(arrays, layout, target, dtype)
    for key, value in state.items():
        if ".mid.attn_1." in key and value.ndim == 2:
            state[key] = value[:, :, None, None]  # the LDM VAE attention uses 1x1 convolutions
    torchfile.save_safetensors(target, state)
