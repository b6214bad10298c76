"""LoRA on Keras' built-in ``enable_lora``, and LoRA ``.npz`` files: save, read, apply, combine.

Training calls ``layer.enable_lora(rank, lora_alpha)`` on the targeted layers: Keras adds
``lora_kernel_a`` (in, r) (Conv2D: (kh, kw, in, r)) and ``lora_kernel_b`` (r, out), B starts
at zero, and the layer's kernel becomes ``W + (alpha / r) * A @ B``. Dense and Conv2D both
support this in Keras 3, so 3x3 convs need no extra code.

File format (``lora.npz``, written by ``save_lora``)::

    "unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/lora_kernel_a"  (in, r)
    "unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/lora_kernel_b"  (r, out)
    ...   one pair per adapted layer, keyed by Keras variable path (never by layer index)
    "__manifest__": {"format": "kerasemote-lora", "version": 1, "rank": 4, "alpha": 4.0,
                     "targets": ["attention"], "steps": 1000, "layers": 32,
                     "base_model": {"config": "sd-v1", "source": ..., "text_width": 768, ...}}

The delta of one layer is ``scale * (alpha / rank) * A @ B`` added to its ``kernel``
(Keras layout: (in, out), convs (kh, kw, in, out)). At inference ``apply_lora`` adds that delta
to the base kernels, so several files stack, and ``model.save`` afterwards writes a merged model.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from kerasemote import weights
from kerasemote.embeddings import base_model_info, check_values

logger = logging.getLogger(__name__)

FORMAT = "kerasemote-lora"
VERSION = 1
A_SUFFIX, B_SUFFIX = "/lora_kernel_a", "/lora_kernel_b"

# Target group -> regex on the layer path.
TARGETS: dict[str, str] = {
    "attention": r"^unet/.*/attn[12]/(to_q|to_k|to_v|to_out\.0)$",
    "feedforward": r"^unet/.*/ff/(net\.0\.proj|net\.2)$",
    "projections": r"^unet/.*/attentions\.\d+/(proj_in|proj_out)$",
    "convs": r"^unet/.*/(resnets\.\d+/conv[12]|downsamplers\.0/conv|upsamplers\.0/conv)$",
    "text": r"^text_encoder/.*/(self_attn/(q_proj|k_proj|v_proj|out_proj)|mlp/(fc1|fc2))$",
}
DEFAULT_TARGETS = ("attention",)
# The most a LoRA's multiplier may be in magnitude: ``alpha / rank`` from its file, and the strength
# it is applied with. Trainers use 0.01-2; a thousandfold delta swamps the kernel it is added to.
MAX_SCALE = 1e3


@dataclass
class LoRAWeights:
    """The contents of a LoRA file.

    Args:
        arrays: variable path -> float32 array (A and B of each layer).
        rank: the rank r.
        alpha: the scale numerator (delta = alpha / r * A @ B).
        targets: target groups trained.
        manifest: the whole manifest.
        source: the file it came from (named in errors).
    """

    arrays: dict[str, np.ndarray]
    rank: int
    alpha: float
    targets: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    @property
    def layers(self) -> list[str]:
        """Paths of the adapted layers, sorted."""
        return sorted(k[: -len(A_SUFFIX)] for k in self.arrays if k.endswith(A_SUFFIX))

    def delta(self, layer: str, scale: float = 1.0) -> np.ndarray:
        """``scale * alpha / rank * A @ B`` of one layer, shaped like its kernel."""
        a, b = self.arrays[layer + A_SUFFIX], self.arrays[layer + B_SUFFIX]
        return (scale * self.alpha / self.rank) * np.tensordot(a, b, axes=1)


# ---------------------------------------------------------------------- layers


def check_targets(targets: Sequence[str]) -> list[str]:
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown or not targets:
        raise ValueError(f"LoRA targets must be among {sorted(TARGETS)}, got {list(targets)}.")
    return list(dict.fromkeys(targets))


def model_layers(model) -> dict[str, Any]:
    """Every layer with a kernel in the text encoder and the UNet, by path (``unet/.../to_q``)."""
    found = {}
    for part in (model.text_encoder, model.unet):
        # Keras has no public recursive layer walk; _flatten_layers is what Keras itself uses.
        for layer in part._flatten_layers(include_self=False):
            kernel = getattr(layer, "_kernel", None)
            if kernel is not None:
                found[kernel.path[: -len("/kernel")]] = layer
    return found


def lora_layers(model, targets: Sequence[str] = DEFAULT_TARGETS) -> dict[str, Any]:
    """Layers matched by the target groups, by path, sorted.

    Raises:
        ValueError: an unknown group, or a group that matches nothing in this model.
    """
    targets = check_targets(targets)
    layers = model_layers(model)
    chosen = {}
    for group in targets:
        matched = {p: layer for p, layer in layers.items() if re.match(TARGETS[group], p)}
        if not matched:
            raise ValueError(f"LoRA target {group!r} matches no layer of model {model.config.name!r}.")
        chosen.update(matched)
    return dict(sorted(chosen.items()))


def enable_lora(model, rank: int, alpha: float | None = None, targets: Sequence[str] = DEFAULT_TARGETS,
                seed: int = 0) -> dict[str, Any]:
    """Turn on Keras LoRA in the targeted layers; only A and B train from then on.

    Args:
        model: the ``StableDiffusion``.
        rank: LoRA rank r.
        alpha: scale numerator (default ``rank``, i.e. scale 1).
        targets: groups of ``TARGETS``.
        seed: seed of the A initializers (layer i gets seed + i, in path order).

    Returns:
        The adapted layers by path.
    """
    import keras

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}.")
    layers = lora_layers(model, targets)
    for i, (path, layer) in enumerate(layers.items()):
        if layer.lora_enabled:
            raise ValueError(f"LoRA is already enabled on {path}; start from a fresh model.")
        layer.enable_lora(rank, lora_alpha=float(alpha or rank), a_initializer=keras.initializers.HeUniform(seed + i))
    return layers


def lora_variables(model) -> list:
    """The A and B variables of every LoRA-enabled layer, in path order."""
    layers = [layer for _, layer in sorted(model_layers(model).items()) if getattr(layer, "lora_enabled", False)]
    return [v for layer in layers for v in (layer.lora_kernel_a, layer.lora_kernel_b)]


# ---------------------------------------------------------------------- files


def lora_from_model(model, targets: Sequence[str], steps: int = 0, extra: Mapping[str, Any] | None = None) -> LoRAWeights:
    """The live LoRA of a training model as ``LoRAWeights``."""
    import keras

    layers = [layer for _, layer in sorted(model_layers(model).items()) if getattr(layer, "lora_enabled", False)]
    if not layers:
        raise ValueError("The model has no LoRA-enabled layer; train with the LoRA strategy first.")
    ranks = {layer.lora_rank for layer in layers}
    alphas = {float(layer.lora_alpha) for layer in layers}
    if len(ranks) != 1 or len(alphas) != 1:
        raise ValueError(f"LoRA layers disagree on rank {ranks} or alpha {alphas}; one file holds one of each.")
    arrays = {v.path: keras.ops.convert_to_numpy(v).astype("float32") for v in lora_variables(model)}
    manifest = {"format": FORMAT, "version": VERSION, "rank": ranks.pop(), "alpha": alphas.pop(),
                "targets": list(targets), "steps": int(steps), "layers": len(layers),
                "base_model": base_model_info(model), **dict(extra or {})}
    return LoRAWeights(arrays, manifest["rank"], manifest["alpha"], list(targets), manifest)


def save_lora(path: str, lora: LoRAWeights) -> str:
    """Write a LoRA ``.npz`` atomically (arrays by variable path, manifest inside)."""
    manifest = {**lora.manifest, "format": FORMAT, "version": VERSION, "rank": int(lora.rank),
                "alpha": float(lora.alpha), "targets": list(lora.targets), "layers": len(lora.layers)}
    weights.save_arrays(path, lora.arrays, manifest)
    return path


def read_lora(path: str) -> LoRAWeights:
    """Read and check a LoRA ``.npz``: manifest, key pairs, dtypes and ranks (no pickle).

    Raises:
        WeightFileError: naming the file, the key, the expected and the found value.
    """
    arrays, manifest = weights.load_arrays(path)
    rank, alpha, targets = _check_manifest(path, manifest)
    problems = []
    for key, array in arrays.items():
        if not key.endswith((A_SUFFIX, B_SUFFIX)):
            problems.append(f"{path}: key {key!r} expected to end in {A_SUFFIX!r} or {B_SUFFIX!r}.")
        elif array.dtype.kind != "f":
            problems.append(f"{path}: key {key!r} expected a float dtype, found {array.dtype}.")
        elif key.endswith(A_SUFFIX) and array.shape[-1] != rank:
            problems.append(f"{path}: key {key!r} expected last axis {rank} (rank), found shape {array.shape}.")
        elif key.endswith(B_SUFFIX) and (array.ndim != 2 or array.shape[0] != rank):
            problems.append(f"{path}: key {key!r} expected shape ({rank}, out), found {array.shape}.")
        partner = key[: -len(A_SUFFIX)] + (B_SUFFIX if key.endswith(A_SUFFIX) else A_SUFFIX)
        if key.endswith((A_SUFFIX, B_SUFFIX)) and partner not in arrays:
            problems.append(f"{path}: key {partner!r} expected (the pair of {key!r}), not found.")
    if problems:
        raise weights.WeightFileError("\n".join(problems[:10]))
    lora = LoRAWeights({k: v.astype("float32") for k, v in arrays.items()}, rank, alpha, targets, manifest, path)
    return check_lora_values(lora)


def check_lora_values(lora: LoRAWeights) -> LoRAWeights:
    """``lora`` when every value is finite and sane (``embeddings.MAX_ABS_VALUE``, ``MAX_SCALE``).

    Raises:
        WeightFileError: one line naming the file, the key and the bad value.
    """
    if not _sane_scale(lora.alpha / lora.rank):
        raise weights.WeightFileError(
            f"{lora.source}: key 'alpha' expected a finite number with |alpha / rank| <= {MAX_SCALE:g}, "
            f"found {lora.alpha!r}."
        )
    for key, array in lora.arrays.items():
        check_values(lora.source, key, array)
    return lora


def _check_manifest(path: str, manifest: dict[str, Any]) -> tuple[int, float, list[str]]:
    """``(rank, alpha, targets)`` of a LoRA manifest; one line naming the key for anything else."""
    if manifest.get("format") != FORMAT:
        raise weights.WeightFileError(f"{path}: key 'format' expected {FORMAT!r}, found {manifest.get('format')!r}.")
    version = manifest.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version > VERSION:
        raise weights.WeightFileError(f"{path}: key 'version' expected an integer <= {VERSION}, found {version!r}.")
    rank, alpha, targets = manifest.get("rank"), manifest.get("alpha"), manifest.get("targets", [])
    # bool is an int to Python, but ``rank: true`` is no rank
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise weights.WeightFileError(f"{path}: key 'rank' expected a positive integer, found {rank!r}.")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise weights.WeightFileError(f"{path}: key 'alpha' expected a number, found {alpha!r}.")
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise weights.WeightFileError(f"{path}: key 'targets' expected a list of target names, found {targets!r}.")
    return rank, float(alpha), list(targets)


def _sane_scale(value: float) -> bool:
    return math.isfinite(value) and abs(value) <= MAX_SCALE


def check_scale(scale: float, source: str) -> float:
    """``scale`` as a float when it is finite and within ``MAX_SCALE``; else one line naming ``source``."""
    number = isinstance(scale, (int, float, np.integer, np.floating)) and not isinstance(scale, bool)
    if not number or not _sane_scale(float(scale)):
        raise ValueError(f"{source}: LoRA scale expected a finite number within +-{MAX_SCALE:g}, found {scale!r}.")
    return float(scale)


def _as_lora(path_or_lora: str | LoRAWeights) -> LoRAWeights:
    return path_or_lora if isinstance(path_or_lora, LoRAWeights) else read_lora(path_or_lora)


def apply_lora(model, path_or_lora: str | LoRAWeights, scale: float = 1.0) -> LoRAWeights:
    """Add a LoRA's delta, times ``scale``, to the model's base kernels (merging it).

    Several LoRAs stack (call once per file); ``model.save(DIR)`` afterwards writes a merged
    model. Every layer and shape is checked before anything changes.

    Args:
        model: the ``StableDiffusion``.
        path_or_lora: a LoRA ``.npz`` or ``LoRAWeights``.
        scale: strength (``--lora FILE:0.7``); 0 leaves the model as it is, -1 removes a
            LoRA applied with 1 (up to float rounding).

    Returns:
        The LoRA applied.
    """
    import keras

    # A file is checked as it is read; a LoRA built elsewhere (an imported file) is checked here.
    lora = check_lora_values(path_or_lora) if isinstance(path_or_lora, LoRAWeights) else read_lora(path_or_lora)
    scale = check_scale(scale, lora.source)
    layers = model_layers(model)
    problems = []
    for name in lora.layers:
        if name not in layers:
            problems.append(f"{lora.source}: key {name + A_SUFFIX!r} names no layer of model {model.config.name!r}.")
            continue
        want = tuple(layers[name]._kernel.shape)
        a_shape, b_shape = lora.arrays[name + A_SUFFIX].shape, lora.arrays[name + B_SUFFIX].shape
        if a_shape[:-1] != want[:-1] or b_shape[1] != want[-1]:
            problems.append(
                f"{lora.source}: key {name!r} expected A {want[:-1] + (lora.rank,)} and B ({lora.rank}, {want[-1]}) "
                f"for kernel {want}, found A {a_shape} and B {b_shape}."
            )
    if problems:
        raise weights.WeightFileError("\n".join(problems[:10]))
    base = lora.manifest.get("base_model", {})
    if base.get("config") and base["config"] != model.config.name:
        logger.warning("%s was trained on %r; applying it to %r.", lora.source, base["config"], model.config.name)
    for name in lora.layers:
        kernel = layers[name]._kernel
        kernel.assign(keras.ops.convert_to_numpy(kernel) + lora.delta(name, scale).astype(kernel.dtype))
    return lora


def combine_loras(loras: Sequence[tuple[str | LoRAWeights, float]]) -> LoRAWeights:
    """One LoRA equal to the weighted sum of several (exactly: ranks are concatenated).

    ``sum_i w_i (alpha_i / r_i) A_i B_i = [A_1 ... A_n] @ [w_1 (alpha_1 / r_1) B_1; ...]``, so the
    result has rank ``sum r_i`` and ``alpha = rank`` (scale 1). A layer missing from one file
    gets zeros there.

    Args:
        loras: ``(file or LoRAWeights, weight)`` pairs.
    """
    items = [(lora, check_scale(w, lora.source)) for lora, w in ((_as_lora(l), w) for l, w in loras)]
    if not items:
        raise ValueError("combine_loras needs at least one LoRA.")
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for lora, _ in items:
        for name in lora.layers:
            a, b = lora.arrays[name + A_SUFFIX].shape, lora.arrays[name + B_SUFFIX].shape
            key = (a[:-1], b[1:])
            if shapes.setdefault(name, key) != key:
                raise weights.WeightFileError(
                    f"{lora.source}: key {name!r} expected kernel shape {shapes[name]}, found {key}."
                )
    arrays = {}
    for name, (a_lead, b_out) in sorted(shapes.items()):
        a_parts, b_parts = [], []
        for lora, weight in items:
            if name + A_SUFFIX in lora.arrays:
                a_parts.append(lora.arrays[name + A_SUFFIX])
                b_parts.append(lora.arrays[name + B_SUFFIX] * (weight * lora.alpha / lora.rank))
            else:
                a_parts.append(np.zeros(a_lead + (lora.rank,), "float32"))
                b_parts.append(np.zeros((lora.rank,) + b_out, "float32"))
        arrays[name + A_SUFFIX] = np.concatenate(a_parts, axis=-1).astype("float32")
        arrays[name + B_SUFFIX] = np.concatenate(b_parts, axis=0).astype("float32")
    rank = sum(lora.rank for lora, _ in items)
    targets = list(dict.fromkeys(t for lora, _ in items for t in lora.targets))
    manifest = {"format": FORMAT, "version": VERSION, "rank": rank, "alpha": float(rank), "targets": targets,
                "combined": [{"source": lora.source, "weight": w} for lora, w in items],
                "base_model": items[0][0].manifest.get("base_model", {})}
    return LoRAWeights(arrays, rank, float(rank), targets, manifest)


def parse_lora_argument(text: str) -> tuple[str, float]:
    """``"style.npz:0.7"`` -> ``("style.npz", 0.7)``; no scale means 1 (``gs://`` colons are kept)."""
    head, sep, tail = text.rpartition(":")
    if sep and head and re.fullmatch(r"[-+]?\d*\.?\d+(e[-+]?\d+)?", tail):
        return head, float(tail)
    return text, 1.0
