"""diffusers ``config.json`` files <-> our ``ModelConfig``, both ways.

Reading checks every option we cannot express (linear projections, class embeddings,
other block types...) and names the file, the field and its value; writing gives the
``config.json`` of each component that diffusers and transformers load.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from kerasemote import storage
from kerasemote.config import SD_V1, ConfigError, ModelConfig

_DIFFUSERS_VERSION = "0.21.0"  # written into exported configs; any version >= 0.21 reads them

# Options we cannot express: key -> values that mean "SD 1.x behaviour" (checked when present).
_UNET_FIXED: dict[str, tuple[Any, ...]] = {
    "act_fn": ("silu",),
    "center_input_sample": (False,),
    "flip_sin_to_cos": (True,),
    "freq_shift": (0,),
    "downsample_padding": (1,),
    "mid_block_scale_factor": (1,),
    "use_linear_projection": (False,),
    "class_embed_type": (None,),
    "addition_embed_type": (None,),
    "num_class_embeds": (None,),
    "encoder_hid_dim": (None,),
    "time_embedding_type": ("positional",),
    "time_cond_proj_dim": (None,),
    "timestep_post_act": (None,),
    "resnet_time_scale_shift": ("default",),
    "resnet_skip_time_act": (False,),
    "resnet_out_scale_factor": (1,),
    "mid_block_type": ("UNetMidBlock2DCrossAttn",),
    "dual_cross_attention": (False,),
    "cross_attention_norm": (None,),
    "conv_in_kernel": (3,),
    "conv_out_kernel": (3,),
    "attention_type": ("default",),
    "class_embeddings_concat": (False,),
}
_VAE_FIXED: dict[str, tuple[Any, ...]] = {
    "act_fn": ("silu",),
    "in_channels": (3,),
    "out_channels": (3,),
    "use_quant_conv": (True,),
    "use_post_quant_conv": (True,),
    "mid_block_add_attention": (True,),
    "shift_factor": (None, 0),
    "latents_mean": (None,),
    "latents_std": (None,),
}
_TEXT_FIXED: dict[str, tuple[Any, ...]] = {
    "hidden_act": ("quick_gelu",),
    "layer_norm_eps": (1e-5,),
}




# ---------------------------------------------------------------------- reading


def read_json(path: str) -> dict[str, Any]:
    try:
        data = json.loads(storage.read_bytes(path).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: expected UTF-8 JSON, found {type(err).__name__} ({err}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(data).__name__}.")
    return data


def _check_fixed(data: Mapping[str, Any], fixed: Mapping[str, tuple[Any, ...]], source: str) -> None:
    for key, allowed in fixed.items():
        if key not in data:
            continue
        if data[key] not in allowed:
            raise ValueError(
                f"{source}: {key} = {data[key]!r} is not supported (Stable Diffusion 1.x uses "
                f"{allowed[0]!r})."
            )


def _single(data: Mapping[str, Any], key: str, source: str) -> Any:
    """A per-level field that SD 1.x keeps equal on every level (int or list of one value)."""
    value = data[key]
    if isinstance(value, list):
        if len(set(value)) != 1:
            raise ValueError(f"{source}: {key} = {value} differs per level; we support one value.")
        value = value[0]
    return value


def _require(data: Mapping[str, Any], key: str, source: str) -> Any:
    if key not in data:
        raise ValueError(f"{source}: missing required key {key!r}.")
    return data[key]


def _unet_fields(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    _check_fixed(data, _UNET_FIXED, source)
    only_cross = data.get("only_cross_attention", False)
    if any(only_cross if isinstance(only_cross, list) else [only_cross]):
        raise ValueError(f"{source}: only_cross_attention = {only_cross!r} is not supported.")
    down = list(_require(data, "down_block_types", source))
    known = {"CrossAttnDownBlock2D": True, "DownBlock2D": False}
    for block in down:
        if block not in known:
            raise ValueError(f"{source}: down_block_types entry {block!r}; expected one of {sorted(known)}.")
    attention = [known[b] for b in down]
    expected_up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)]
    up = list(data.get("up_block_types", expected_up))
    if up != expected_up:
        raise ValueError(
            f"{source}: up_block_types = {up}; expected the mirror of down_block_types {expected_up}."
        )
    # diffusers' SD 1.x configs store the head count in attention_head_dim.
    heads_key = "num_attention_heads" if data.get("num_attention_heads") is not None else "attention_head_dim"
    return dict(
        unet_channels=tuple(_require(data, "block_out_channels", source)),
        unet_attention=tuple(attention),
        unet_layers_per_block=_single(data, "layers_per_block", source),
        unet_heads=_single(data, heads_key, source),
        unet_transformer_depth=_single(data, "transformer_layers_per_block", source)
        if "transformer_layers_per_block" in data
        else 1,
        norm_groups=data.get("norm_num_groups", 32),
        unet_norm_eps=data.get("norm_eps", 1e-5),
        unet_attn_norm_eps=1e-6,
        gelu_approximate=False,
        # An inpainting UNet takes 2 * latents + 1 channels (latents, mask, masked-image latents).
        latent_channels=data.get("out_channels", 4),
        unet_in_channels=data.get("in_channels", 4),
        text_width=_single(data, "cross_attention_dim", source),
    )


def _vae_fields(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    _check_fixed(data, _VAE_FIXED, source)
    channels = tuple(_require(data, "block_out_channels", source))
    for key, name in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
        blocks = data.get(key, [name] * len(channels))
        if list(blocks) != [name] * len(channels):
            raise ValueError(f"{source}: {key} = {blocks}; expected {[name] * len(channels)}.")
    fields = dict(
        vae_channels=channels,
        vae_layers_per_block=data.get("layers_per_block", 1),
        vae_norm_groups=data.get("norm_num_groups", 32),
        vae_norm_eps=1e-6,
        scaling_factor=float(data.get("scaling_factor") or SD_V1.scaling_factor),
        latent_channels=data.get("latent_channels", 4),
    )
    if "sample_size" in data:
        fields["image_size"] = _single(data, "sample_size", source)
    return fields


def _text_fields(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    _check_fixed(data, _TEXT_FIXED, source)
    model_type = data.get("model_type", "clip_text_model")
    if model_type not in ("clip_text_model", "clip"):
        raise ValueError(f"{source}: model_type = {model_type!r}; expected 'clip_text_model' (CLIP).")
    return dict(
        text_width=_require(data, "hidden_size", source),
        text_layers=_require(data, "num_hidden_layers", source),
        text_heads=_require(data, "num_attention_heads", source),
        text_intermediate=_require(data, "intermediate_size", source),
        max_length=data.get("max_position_embeddings", 77),
        vocab_size=data.get("vocab_size", 49408),
    )


def _scheduler_fields(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    keys = ("prediction_type", "beta_start", "beta_end", "num_train_timesteps")
    fields = {k: data[k] for k in keys if k in data}
    if data.get("trained_betas") is not None:
        raise ValueError(f"{source}: trained_betas is set; only beta_start/beta_end schedules are supported.")
    schedule = data.get("beta_schedule", "scaled_linear")
    if schedule not in ("scaled_linear", "linear"):
        raise ValueError(f"{source}: beta_schedule = {schedule!r}; expected 'scaled_linear' or 'linear'.")
    fields["beta_schedule"] = schedule
    if fields.get("prediction_type", "epsilon") not in ("epsilon", "v_prediction"):
        raise ValueError(
            f"{source}: prediction_type = {fields['prediction_type']!r}; "
            "expected 'epsilon' or 'v_prediction'."
        )
    return fields


def config_from_diffusers(
    folder: storage.PathLike, base: ModelConfig = SD_V1, name: str | None = None
) -> ModelConfig:
    """Our ``ModelConfig`` for a diffusers Stable Diffusion folder.

    ``unet/config.json`` is required; ``vae/``, ``text_encoder/`` and
    ``scheduler/`` configs are read when present, otherwise ``base`` supplies
    those fields.

    Args:
        folder: the folder holding ``unet/``, ``vae/``, ``text_encoder/`` (local or ``gs://``).
        base: values for whatever the folder does not say.
        name: name of the returned config; defaults to the folder's name.

    Raises:
        ValueError: naming the config file, the field and its value, for anything
            outside SD 1.x (linear projections, class embeddings, other block types...).
    """
    root = storage._fspath(folder).rstrip("/")
    fields: dict[str, Any] = {"name": name or storage.basename(root)}
    readers = (
        ("vae/config.json", _vae_fields),
        ("text_encoder/config.json", _text_fields),
        ("scheduler/scheduler_config.json", _scheduler_fields),
    )
    unet_path = storage.join(root, "unet/config.json")
    unet = _read_fields(unet_path, _unet_fields)
    origin = dict.fromkeys(unet, unet_path)  # our field -> the file that gave it, for errors
    for relative, reader in readers:
        path = storage.join(root, relative)
        if storage.exists(path):
            found = _read_fields(path, reader)
            fields.update(found)
            origin.update(dict.fromkeys(found, path))
    _check_agrees(unet, fields, "latent_channels", unet_path, "vae/config.json latent_channels")
    _check_agrees(unet, fields, "text_width", unet_path, "text_encoder/config.json hidden_size")
    fields.update(unet)
    origin.update(dict.fromkeys(unet, unet_path))
    if "image_size" not in fields:
        fields["image_size"] = base.image_size
    try:
        return base.replace(**fields)
    except ConfigError as err:
        raise err.located(origin.get(err.field, unet_path)) from None


def _read_fields(path: str, reader: Any) -> dict[str, Any]:
    """``reader``'s fields from one config file; a value of the wrong JSON type is named, not a traceback."""
    try:
        return reader(read_json(path), path)
    except (TypeError, AttributeError, KeyError) as err:
        raise ValueError(f"{path}: a field has a value of the wrong type ({type(err).__name__}: {err}).") from None


def _check_agrees(unet: dict[str, Any], other: dict[str, Any], key: str, source: str, what: str) -> None:
    if key in other and other[key] != unet[key]:
        raise ValueError(f"{source}: UNet expects {key} = {unet[key]} but {what} is {other[key]}.")


# ---------------------------------------------------------------------- writing


def diffusers_configs(config: ModelConfig) -> dict[str, dict[str, Any]]:
    """The ``config.json`` of each component (and the scheduler) for ``config``."""
    c = config
    attention = list(c.unet_attention)
    unet = {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": _DIFFUSERS_VERSION,
        "act_fn": "silu",
        "attention_head_dim": c.unet_heads,  # diffusers reads this as the head count for SD 1.x
        "block_out_channels": list(c.unet_channels),
        "center_input_sample": False,
        "cross_attention_dim": c.context_dim,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": c.unet_in_channels,
        "layers_per_block": c.unet_layers_per_block,
        "mid_block_scale_factor": 1,
        "norm_eps": c.unet_norm_eps,
        "norm_num_groups": c.norm_groups,
        "out_channels": c.latent_channels,
        "sample_size": c.image_size // c.vae_downsample,
        "transformer_layers_per_block": c.unet_transformer_depth,
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "use_linear_projection": False,
    }
    vae = {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": _DIFFUSERS_VERSION,
        "act_fn": "silu",
        "block_out_channels": list(c.vae_channels),
        "down_block_types": ["DownEncoderBlock2D"] * len(c.vae_channels),
        "in_channels": 3,
        "latent_channels": c.latent_channels,
        "layers_per_block": c.vae_layers_per_block,
        "norm_num_groups": c.vae_norm_groups,
        "out_channels": 3,
        "sample_size": c.image_size,
        "scaling_factor": c.scaling_factor,
        "up_block_types": ["UpDecoderBlock2D"] * len(c.vae_channels),
    }
    text = {
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "hidden_act": "quick_gelu",
        "hidden_size": c.text_width,
        "intermediate_size": c.text_intermediate,
        "num_attention_heads": c.text_heads,
        "num_hidden_layers": c.text_layers,
        "max_position_embeddings": c.max_length,
        "vocab_size": c.vocab_size,
        "layer_norm_eps": 1e-5,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "projection_dim": c.text_width,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
        "torch_dtype": "float32",
    }
    scheduler = {
        "_class_name": "DDIMScheduler",
        "_diffusers_version": _DIFFUSERS_VERSION,
        "beta_start": c.beta_start,
        "beta_end": c.beta_end,
        "beta_schedule": c.beta_schedule,
        "num_train_timesteps": c.num_train_timesteps,
        "prediction_type": c.prediction_type,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
    }
    return {"unet": unet, "vae": vae, "text_encoder": text, "scheduler": scheduler}

