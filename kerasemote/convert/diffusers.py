"""diffusers folders <-> our parts: find, read and write the weight files, every key and shape checked.

A diffusers Stable Diffusion folder holds one sub-folder per component::

    unet/config.json          unet/diffusion_pytorch_model[.fp16].safetensors|.bin
    vae/config.json           vae/diffusion_pytorch_model[.fp16].safetensors|.bin
    text_encoder/config.json  text_encoder/model[.fp16].safetensors | pytorch_model[.fp16].bin
    scheduler/scheduler_config.json (optional)

Our variable paths mirror those modules (``kerasemote.convert.naming``), so a
conversion is a key-for-key copy with a layout change (``kerasemote.convert.layout``).
The expected keys are computed from the ``ModelConfig`` that the folder's configs give
(``kerasemote.convert.diffusers_config``), so nothing is built and any number of levels
works. ``.bin`` files are read without torch (see ``kerasemote.convert.torchfile``).

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
from typing import Any, Iterable, Mapping

import numpy as np

from kerasemote import storage
from kerasemote.config import SD_V1, ModelConfig
from kerasemote.convert import naming, torchfile
from kerasemote.convert.diffusers_config import config_from_diffusers, diffusers_configs, read_json
from kerasemote.convert.layout import COMPONENTS, arrays_from_state, diffusers_layout, part_arrays, state_from_arrays

_WEIGHT_STEMS = {
    "unet": ("diffusion_pytorch_model",),
    "vae": ("diffusion_pytorch_model",),
    "text_encoder": ("model", "pytorch_model"),
}


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


def read_component_state(path: str, lazy: bool = False) -> dict[str, np.ndarray]:
    """One weight file, or all the shards listed by ``<path>.index.json`` (``lazy``: see ``torchfile.load_state_dict``)."""
    index = path + ".index.json"
    if storage.exists(path) or not storage.exists(index):
        return torchfile.load_state_dict(path, lazy=lazy)
    folder = path.rsplit("/", 1)[0]
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        found = type(weight_map).__name__ if weight_map else "nothing"
        raise ValueError(f"{index}: field 'weight_map' expected an object of tensor -> shard file, found {found}.")
    # Shard names come from the file: each must stay inside the component's folder.
    shards = {storage.inside(folder, name, index, f"weight_map.{key}") for key, name in weight_map.items()}
    state = {}
    for shard in sorted(shards):
        state.update(torchfile.load_state_dict(shard, lazy=lazy))
    return state


def convert_diffusers_folder(
    folder: storage.PathLike,
    parts: Iterable[str] = naming.PARTS,
    variant: str | None = None,
    base: ModelConfig = SD_V1,
    lazy: bool = False,
) -> tuple[ModelConfig, dict[str, dict[str, np.ndarray]]]:
    """Read a diffusers Stable Diffusion folder into our config and arrays.

    Args:
        folder: holds ``unet/``, ``vae/``, ``text_encoder/`` (local, Drive or ``gs://``).
        parts: which of ``unet``, ``vae_encoder``, ``vae_decoder``, ``text_encoder`` to read.
        variant: ``"fp16"`` to prefer ``*.fp16.*`` weight files.
        base: config values the folder does not give (see ``config_from_diffusers``).
        lazy: arrays are ``LazyArray``s, read and converted one by one when assigned
            (local ``.safetensors`` weights are then never held whole in memory).

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
        state = _normalize_keys(read_component_state(path, lazy), component)
        converted = arrays_from_state(state, diffusers_layout(config, component), path, release=True, lazy=lazy)
        arrays.update({p: converted[p] for p in component_parts if p in parts})
    return config, arrays


# ---------------------------------------------------------------------- writing folders


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
