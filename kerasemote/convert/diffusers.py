"""diffusers folders <-> our parts: configs, weights, every key and shape checked.

A diffusers Stable Diffusion folder holds one sub-folder per component::

    unet/config.json          unet/diffusion_pytorch_model[.fp16].safetensors|.bin
    vae/config.json           vae/diffusion_pytorch_model[.fp16].safetensors|.bin
    text_encoder/config.json  text_encoder/model[.fp16].safetensors | pytorch_model[.fp16].bin
    scheduler/scheduler_config.json (optional)

Our variable paths mirror those modules (``kerasemote.convert.naming``), so a
conversion is a key-for-key copy with a layout change. The expected keys are
computed from the ``ModelConfig`` (``naming.variable_shapes``), so nothing is built
and any number of levels works. ``.bin`` files are read without torch (see
``kerasemote.convert.torchfile``).

Converted arrays are returned as ``{part: {variable_path: array}}`` with parts
``unet``, ``vae_encoder``, ``vae_decoder``, ``text_encoder``, ready for
``kerasemote.weights.assign_arrays(model, arrays[part], source)``.

Example:
    >>> config, arrays = convert_diffusers_folder("stable-diffusion-v1-5")  # doctest: +SKIP
    >>> unet = UNet(config).build_with_dummy()  # doctest: +SKIP
    >>> assign_arrays(unet, arrays["unet"], "stable-diffusion-v1-5/unet")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np

from kerasemote import storage
from kerasemote.config import SD_V1, ModelConfig
from kerasemote.convert import naming, torchfile
from kerasemote.weights import WeightFileError

# diffusers component folder -> our parts that its weights fill.
COMPONENTS: dict[str, tuple[str, ...]] = {
    "unet": ("unet",),
    "vae": ("vae_encoder", "vae_decoder"),
    "text_encoder": ("text_encoder",),
}
_WEIGHT_STEMS = {
    "unet": ("diffusion_pytorch_model",),
    "vae": ("diffusion_pytorch_model",),
    "text_encoder": ("model", "pytorch_model"),
}
_DIFFUSERS_VERSION = "0.21.0"  # written into exported configs; any version >= 0.21 reads them
_MAX_LISTED = 10

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


# ---------------------------------------------------------------------- configs


def _read_json(path: str) -> dict[str, Any]:
    try:
        data = json.loads(storage.read_bytes(path).decode("utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}).") from None
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
    if data.get("in_channels", 4) != data.get("out_channels", 4):
        raise ValueError(
            f"{source}: in_channels {data.get('in_channels')} != out_channels {data.get('out_channels')} "
            "(inpainting UNets are not supported)."
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
        latent_channels=data.get("in_channels", 4),
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
    unet = _unet_fields(_read_json(unet_path), unet_path)
    for relative, reader in readers:
        path = storage.join(root, relative)
        if storage.exists(path):
            fields.update(reader(_read_json(path), path))
    _check_agrees(unet, fields, "latent_channels", unet_path, "vae/config.json latent_channels")
    _check_agrees(unet, fields, "text_width", unet_path, "text_encoder/config.json hidden_size")
    fields.update(unet)
    if "image_size" not in fields:
        fields["image_size"] = base.image_size
    return base.replace(**fields)


def _check_agrees(unet: dict[str, Any], other: dict[str, Any], key: str, source: str, what: str) -> None:
    if key in other and other[key] != unet[key]:
        raise ValueError(f"{source}: UNet expects {key} = {unet[key]} but {what} is {other[key]}.")


# ---------------------------------------------------------------------- key layout


class Entry(NamedTuple):
    """Where one reference tensor goes: our part, variable path and Keras shape."""

    part: str
    path: str
    shape: tuple[int, ...]


def diffusers_layout(config: ModelConfig, component: str) -> dict[str, Entry]:
    """diffusers / transformers key -> ``Entry`` for one component folder.

    Text encoder keys carry the ``text_model.`` prefix of published checkpoints.
    """
    layout = {}
    for part in COMPONENTS[component]:
        for path, shape in naming.variable_shapes(config, part).items():
            layout[naming.torch_key(path)] = Entry(part, path, shape)
    return layout


def _listed(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:_MAX_LISTED])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else "")


def _fit_shape(array: np.ndarray, want: tuple[int, ...]) -> np.ndarray | None:
    """``array`` in the expected reference shape, or None; 1x1 convs stand in for Linear."""
    if array.shape == want:
        return array
    if len(want) == 2 and array.ndim in (3, 4) and array.shape[2:] == (1,) * (array.ndim - 2):
        if array.shape[:2] == want:
            return array.reshape(want)
    if len(want) == 4 and array.ndim == 2 and want[2:] == (1, 1) and array.shape == want[:2]:
        return array.reshape(want)
    return None


def arrays_from_state(
    state: dict[str, np.ndarray],
    layout: Mapping[str, Entry],
    source: str,
    dtype: str = "float32",
    release: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """Check every key and shape of a reference state dict, then convert to our layout.

    Args:
        state: reference key -> array (PyTorch layout).
        layout: reference key -> ``Entry`` (from ``diffusers_layout``...).
        source: the file the state came from, named in errors.
        dtype: dtype of the returned arrays.
        release: pop each array from ``state`` once converted, so a full-size
            checkpoint is never held twice (the caller must own ``state``).

    Returns:
        ``{part: {variable_path: array}}`` in Keras layout.

    Raises:
        WeightFileError: listing missing keys, unexpected keys and wrong shapes;
            nothing is converted unless every check passes.
    """
    problems = []
    missing, unexpected = set(layout) - set(state), set(state) - set(layout)
    if missing:
        problems.append(f"{source}: missing keys {_listed(missing)}.")
    if unexpected:
        problems.append(f"{source}: unexpected keys {_listed(unexpected)}.")
    fitted = {}
    for key in sorted(set(layout) & set(state)):
        want = naming.torch_shape(layout[key].path, layout[key].shape)
        fitted[key] = _fit_shape(np.asarray(state[key]), want)
        if fitted[key] is None:
            problems.append(f"{source}: key {key!r} expected shape {want}, found {tuple(state[key].shape)}.")
    if problems:
        raise WeightFileError("\n".join(problems[: 2 + _MAX_LISTED]))
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in list(fitted):
        entry = layout[key]
        value = naming.to_keras(entry.path, fitted.pop(key), entry.shape)
        out.setdefault(entry.part, {})[entry.path] = np.array(value, dtype=dtype, order="C")  # one copy
        if release:
            del state[key]
    return out


def state_from_arrays(
    arrays: Mapping[str, Mapping[str, np.ndarray]],
    layout: Mapping[str, Entry],
    source: str,
    dtype: str = "float32",
) -> dict[str, np.ndarray]:
    """Inverse of ``arrays_from_state``: our parts -> reference key -> array (PyTorch layout).

    Every variable the layout names must be present with its shape; any other
    variable of those parts (e.g. placeholder ``extra_embeddings``) is an error,
    since a reference checkpoint has nowhere to keep it.
    """
    parts = {entry.part for entry in layout.values()}
    given = {path: value for part in parts for path, value in arrays.get(part, {}).items()}
    by_path = {entry.path: (key, entry) for key, entry in layout.items()}
    problems = []
    missing, unexpected = set(by_path) - set(given), set(given) - set(by_path)
    if missing:
        problems.append(f"{source}: missing variables {_listed(missing)}.")
    if unexpected:
        problems.append(
            f"{source}: variables with no place in the checkpoint {_listed(unexpected)} "
            "(placeholder token rows are saved separately, as an embedding file)."
        )
    state = {}
    for path in sorted(set(by_path) & set(given)):
        key, entry = by_path[path]
        value = np.asarray(given[path])
        if tuple(value.shape) != tuple(entry.shape):
            problems.append(f"{source}: variable {path!r} expected shape {entry.shape}, found {value.shape}.")
            continue
        state[key] = np.array(naming.to_torch(path, value), dtype=dtype, order="C")
    if problems:
        raise WeightFileError("\n".join(problems[: 2 + _MAX_LISTED]))
    return state


def part_arrays(parts: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """``{part: arrays or built Keras model}`` -> ``{part: {variable_path: array}}``.

    A model's paths are re-rooted at the part name, so a UNet named ``"my_unet"``
    exports like one named ``"unet"``.
    """
    from kerasemote.weights import model_arrays

    out = {}
    for part, value in parts.items():
        if part not in naming.PARTS:
            raise ValueError(f"Unknown part {part!r}; expected some of {naming.PARTS}.")
        if hasattr(value, "weights"):
            value = {part + "/" + path.split("/", 1)[1]: a for path, a in model_arrays(value).items()}
        out[part] = dict(value)
    return out


# ---------------------------------------------------------------------- reading folders


def _normalize_keys(state: dict[str, np.ndarray], component: str) -> dict[str, np.ndarray]:
    """Accept the key spellings found in the wild for one component."""
    out = {}
    for key, value in state.items():
        if component == "text_encoder":
            if key.endswith("embeddings.position_ids"):
                continue  # a buffer (0..76), not a weight
            if not key.startswith("text_model."):
                key = "text_model." + key  # transformers >= 5 saves without the prefix
        if component == "vae" and ".attentions.0." in key:
            # diffusers < 0.14 named the VAE attention query/key/value/proj_attn.
            head, _, leaf = key.partition(".attentions.0.")
            old = {"query.": "to_q.", "key.": "to_k.", "value.": "to_v.", "proj_attn.": "to_out.0."}
            for before, after in old.items():
                if leaf.startswith(before):
                    leaf = after + leaf[len(before) :]
            key = f"{head}.attentions.0.{leaf}"
        out[key] = value
    return out


def _weight_candidates(component: str, variant: str | None) -> list[str]:
    suffixes = [".safetensors", ".bin"]
    variants = [f".{variant}"] if variant else ["", ".fp16"]
    return [stem + v + s for v in variants for s in suffixes for stem in _WEIGHT_STEMS[component]]


def find_weights(folder: storage.PathLike, component: str, variant: str | None = None) -> str:
    """Path of the weight file of one component (``unet``, ``vae``, ``text_encoder``).

    Full precision files are preferred; ``*.fp16.*`` files are used when they are
    the only ones (or when ``variant="fp16"``).
    """
    sub = storage.join(folder, component)
    candidates = _weight_candidates(component, variant)
    for name in candidates:
        path = storage.join(sub, name)
        if storage.exists(path) or storage.exists(path + ".index.json"):
            return path
    raise FileNotFoundError(f"{sub}: no weight file; looked for {candidates}.")


def read_component_state(path: str) -> dict[str, np.ndarray]:
    """One weight file, or all the shards listed by ``<path>.index.json``."""
    index = path + ".index.json"
    if storage.exists(path) or not storage.exists(index):
        return torchfile.load_state_dict(path)
    folder = path.rsplit("/", 1)[0]
    weight_map = _read_json(index).get("weight_map", {})
    state = {}
    for shard in sorted(set(weight_map.values())):
        state.update(torchfile.load_state_dict(storage.join(folder, shard)))
    return state


def convert_diffusers_folder(
    folder: storage.PathLike,
    parts: Iterable[str] = naming.PARTS,
    variant: str | None = None,
    base: ModelConfig = SD_V1,
) -> tuple[ModelConfig, dict[str, dict[str, np.ndarray]]]:
    """Read a diffusers Stable Diffusion folder into our config and arrays.

    Args:
        folder: holds ``unet/``, ``vae/``, ``text_encoder/`` (local, Drive or ``gs://``).
        parts: which of ``unet``, ``vae_encoder``, ``vae_decoder``, ``text_encoder`` to read.
        variant: ``"fp16"`` to prefer ``*.fp16.*`` weight files.
        base: config values the folder does not give (see ``config_from_diffusers``).

    Returns:
        ``(config, {part: {variable_path: float32 array}})``.

    Raises:
        WeightFileError: a weight file's keys or shapes do not match the config.
    """
    root = storage._fspath(folder).rstrip("/")
    config = config_from_diffusers(root, base)
    parts = set(parts)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for component, component_parts in COMPONENTS.items():
        if not parts & set(component_parts):
            continue
        path = find_weights(root, component, variant)
        state = _normalize_keys(read_component_state(path), component)
        converted = arrays_from_state(state, diffusers_layout(config, component), path, release=True)
        arrays.update({p: converted[p] for p in component_parts if p in parts})
    return config, arrays


# ---------------------------------------------------------------------- writing folders


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
        "in_channels": c.latent_channels,
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


def export_diffusers_folder(
    parts: Mapping[str, Any],
    config: ModelConfig,
    folder: storage.PathLike,
    dtype: str = "float32",
) -> list[str]:
    """Write our parts as a diffusers folder that ``from_pretrained(subfolder=...)`` loads.

    Writes ``unet/``, ``vae/`` (needs both VAE parts) and ``text_encoder/`` for the
    parts given, each a ``config.json`` plus ``diffusion_pytorch_model.safetensors``
    or ``model.safetensors``, and ``scheduler/scheduler_config.json``. No tokenizer
    or ``model_index.json`` is written: load components one by one, e.g.
    ``UNet2DConditionModel.from_pretrained(folder, subfolder="unet")``.

    Args:
        parts: ``{part: {variable_path: array}}`` or ``{part: built Keras model}``.
        config: the config the parts were built with.
        folder: output folder (local, Drive or ``gs://``); files are written atomically.
        dtype: ``"float32"`` or ``"float16"``.

    Returns:
        The files written.
    """
    arrays = part_arrays(parts)
    root = storage._fspath(folder).rstrip("/")
    configs = diffusers_configs(config)
    written = []
    for component, component_parts in COMPONENTS.items():
        present = [p for p in component_parts if p in arrays]
        if not present:
            continue
        if len(present) != len(component_parts):
            raise ValueError(f"Exporting {component}/ needs all of {component_parts}; got only {present}.")
        stem = "model" if component == "text_encoder" else "diffusion_pytorch_model"
        weights_path = storage.join(root, component, f"{stem}.safetensors")
        state = state_from_arrays(arrays, diffusers_layout(config, component), weights_path, dtype)
        torchfile.save_safetensors(weights_path, state)
        config_path = storage.join(root, component, "config.json")
        storage.write_bytes(config_path, json.dumps(configs[component], indent=2).encode("utf-8"))
        written += [weights_path, config_path]
    scheduler_path = storage.join(root, "scheduler", "scheduler_config.json")
    storage.write_bytes(scheduler_path, json.dumps(configs["scheduler"], indent=2).encode("utf-8"))
    return written + [scheduler_path]
