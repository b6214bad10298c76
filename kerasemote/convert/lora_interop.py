"""LoRA files <-> diffusers / PEFT and kohya (A1111, ComfyUI) layouts.

One adapted layer in each layout (our Keras kernel is (in, out); torch's Linear weight is
(out, in) and its Conv2d weight (out, in, kh, kw)):

==========  ===============================================  ==============================
layout      keys of ``unet/.../attn1/to_q``                   delta (torch layout)
==========  ===============================================  ==============================
ours        ``.../to_q/lora_kernel_a`` A (in, r),             (alpha / r) (A @ B).T
            ``.../to_q/lora_kernel_b`` B (r, out)
diffusers   ``unet.down_blocks.0...attn1.to_q.lora_A.weight``   lora_B @ lora_A
            (r, in), ``...lora_B.weight`` (out, r)
kohya       ``lora_unet_down_blocks_0_..._attn1_to_q``          (alpha / r) up @ down
            ``.lora_down.weight`` (r, in), ``.lora_up.weight``
            (out, r), ``.alpha`` () float
==========  ===============================================  ==============================

Convolutions (our ``convs`` and ``projections`` targets): A (kh, kw, in, r) <-> down
(r, in, kh, kw) and B (r, out) <-> up (out, r, 1, 1). The text encoder uses the prefixes
``text_encoder.`` (diffusers) and ``lora_te_`` (kohya). kohya files may also name UNet
layers after the original LDM modules (``lora_unet_input_blocks_1_1_transformer_blocks_0_
attn1_to_q``); that numbering depends on the UNet's levels, so reading or writing it takes
a ``ModelConfig`` (default SD 1.x).

Exports put ``alpha / r`` into diffusers' ``lora_B`` (PEFT reads no alpha from a plain state
dict, so scale 1 is the one convention every diffusers version agrees on) and keep alpha as
kohya's ``.alpha``. Imports fold per-layer scales that differ (and pad different ranks with
zero columns) so the result is one rank and one alpha, as our files require; the deltas are
exactly the file's.

Example:
    >>> export_lora("runs/style/lora.npz", "style_lora.safetensors", "diffusers")  # doctest: +SKIP
    >>> pipe.load_lora_weights("style_lora.safetensors")  # in diffusers  # doctest: +SKIP
    >>> import_lora("civitai_lora.safetensors", "my_lora.npz")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from kerasemote import lora_files, storage, weights
from kerasemote.config import SD_V1, ModelConfig
from kerasemote.convert import torchfile
from kerasemote.convert.layout import listed_keys
from kerasemote.convert.lora_names import kohya_name, layer_path, ldm_kohya_names, module_from_kohya, module_name
from kerasemote.convert.safetensors_file import safetensors_metadata

logger = logging.getLogger(__name__)

LORA_FORMATS = ("diffusers", "kohya", "kohya-ldm")
METADATA_KEY = "lora_adapter_metadata"  # where diffusers >= 0.35 keeps PEFT's LoraConfig


@dataclass
class LayerLoRA:
    """One adapted layer in Keras layout: ``delta = scale * A @ B``.

    Args:
        a: (in, r), or (kh, kw, in, r) for a convolution.
        b: (r, out).
        scale: alpha / r (or whatever the source file says).
    """

    a: np.ndarray
    b: np.ndarray
    scale: float


# ---------------------------------------------------------------------- layouts


def to_torch_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keras (A, B) -> torch (down, up): Linear (r, in), (out, r); conv (r, in, kh, kw), (out, r, 1, 1)."""
    if a.ndim == 4:
        return np.transpose(a, (3, 2, 0, 1)), b.T[:, :, None, None]
    return a.T, b.T


def from_torch_pair(down: np.ndarray, up: np.ndarray, source: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """torch (down, up) -> Keras (A, B); inverse of ``to_torch_pair``.

    Raises:
        WeightFileError: shapes that are no LoRA pair (naming the file, key, expected, found).
    """
    if down.ndim == 4 and up.ndim == 4 and up.shape[2:] == (1, 1) and up.shape[1] == down.shape[0]:
        return np.transpose(down, (2, 3, 1, 0)), up[:, :, 0, 0].T
    if down.ndim == 2 and up.ndim == 2 and up.shape[1] == down.shape[0]:
        return down.T, up.T
    raise weights.WeightFileError(
        f"{source}: key {key!r} expected down (r, in[, kh, kw]) and up (out, r[, 1, 1]), "
        f"found down {down.shape} and up {up.shape}."
    )


def layers_of(lora: lora_files.LoRAWeights) -> dict[str, LayerLoRA]:
    """Our file's layers by path, each with scale alpha / r."""
    scale = lora.alpha / lora.rank
    return {p: LayerLoRA(lora.arrays[p + lora_files.A_SUFFIX], lora.arrays[p + lora_files.B_SUFFIX], scale)
            for p in lora.layers}


def to_diffusers_state(lora: lora_files.LoRAWeights, dtype: str = "float32") -> dict[str, np.ndarray]:
    """diffusers / PEFT state dict (``unet....lora_A.weight``), the scale folded into ``lora_B``."""
    state = {}
    for path, layer in layers_of(lora).items():
        down, up = to_torch_pair(layer.a, layer.b * layer.scale)
        module = module_name(path)
        state[f"{module}.lora_A.weight"] = down.astype(dtype)
        state[f"{module}.lora_B.weight"] = up.astype(dtype)
    return state


def to_kohya_state(lora: lora_files.LoRAWeights, dtype: str = "float32",
                   ldm_config: ModelConfig | None = None) -> dict[str, np.ndarray]:
    """kohya state dict (``lora_unet_...lora_down.weight``, ``.lora_up.weight``, ``.alpha``).

    Args:
        lora: our LoRA.
        dtype: of the saved tensors.
        ldm_config: name UNet layers after the original LDM modules of this config
            (``input_blocks_1_1_...``); None keeps diffusers' module names (kohya's SD 1.x default).
    """
    ldm = {path: name for name, path in ldm_kohya_names(ldm_config).items()} if ldm_config else {}
    state = {}
    for path, layer in layers_of(lora).items():
        if ldm_config and path.startswith("unet/") and path not in ldm:
            raise ValueError(f"LoRA layer {path!r} has no LDM name in config {ldm_config.name!r}.")
        down, up = to_torch_pair(layer.a, layer.b)
        name = ldm.get(path) or kohya_name(module_name(path))
        state[f"{name}.lora_down.weight"] = down.astype(dtype)
        state[f"{name}.lora_up.weight"] = up.astype(dtype)
        state[f"{name}.alpha"] = np.asarray(layer.scale * layer.a.shape[-1], dtype)
    return state


# ---------------------------------------------------------------------- reading foreign state dicts

_PEFT_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>A|B)(?:\.default)?\.weight$")
_OLD_DIFFUSERS_KEY = re.compile(r"^(?P<module>.+?)\.(?:lora|lora_linear_layer)\.(?P<which>down|up)\.weight$")
_ATTN_PROC_KEY = re.compile(
    r"^(?P<module>.+)\.processor\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<which>down|up)\.weight$"
)
_KOHYA_KEY = re.compile(r"^(?P<name>lora_[a-z0-9]+_[^.]+)\.(?P<which>lora_down\.weight|lora_up\.weight|alpha)$")
_KOHYA_PARTS = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}


def detect_layout(state: Mapping[str, Any], source: str) -> str:
    """``kohya`` or ``diffusers`` from the keys.

    Raises:
        WeightFileError: SDXL (``lora_te1_``/``lora_te2_``), LyCORIS (``hada_``, ``lokr_``),
            DoRA (``dora_scale``) keys, or no LoRA key at all.
    """
    keys = list(state)
    refused = (("lora_te1_", "SDXL text encoders"), ("lora_te2_", "SDXL text encoders"), ("hada_", "LyCORIS LoHa"),
               ("lokr_", "LyCORIS LoKr"), ("dora_scale", "DoRA"), ("text_encoder_2.", "SDXL text encoders"))
    for marker, what in refused:
        hit = next((k for k in keys if marker in k), None)
        if hit:
            raise weights.WeightFileError(f"{source}: key {hit!r} belongs to {what}; expected an SD 1.x LoRA.")
    if any(k.startswith(("lora_unet_", "lora_te_")) for k in keys):
        return "kohya"
    if any(_PEFT_KEY.match(k) or _OLD_DIFFUSERS_KEY.match(k) or _ATTN_PROC_KEY.match(k) for k in keys):
        return "diffusers"
    raise weights.WeightFileError(
        f"{source}: no LoRA keys found; expected diffusers ('unet....lora_A.weight') or kohya "
        f"('lora_unet_....lora_down.weight') keys, found {listed_keys(keys)}."
    )


def _peft_scale(metadata: Mapping[str, Any] | None, module: str, rank: int) -> float:
    """alpha / r of one module from diffusers' saved LoraConfig (scale 1 without one)."""
    part, name = module.split(".", 1)
    config = {k[len(part) + 1 :]: v for k, v in (metadata or {}).items() if k.startswith(part + ".")}
    if not config:
        return 1.0
    alpha = config.get("lora_alpha", rank)
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if name == pattern or name.endswith("." + pattern) or re.fullmatch(pattern, name):
            alpha = value
    return float(alpha) / (np.sqrt(rank) if config.get("use_rslora") else rank)


def _diffusers_pairs(state: Mapping[str, np.ndarray], source: str) -> dict[str, dict[str, Any]]:
    """module -> {"down": (key, array), "up": (key, array)} for every diffusers key style."""
    pairs: dict[str, dict[str, Any]] = {}
    unknown = []
    for key, array in state.items():
        match = _PEFT_KEY.match(key) or _ATTN_PROC_KEY.match(key) or _OLD_DIFFUSERS_KEY.match(key)
        if not match:
            unknown.append(key)
            continue
        module = match["module"]
        if match.re is _ATTN_PROC_KEY:
            module += "." + ("to_out.0" if match["proj"] == "to_out" else match["proj"])
        if not module.startswith(("unet.", "text_encoder.")):
            module = "unet." + module  # the oldest attention-processor files have no prefix
        which = {"A": "down", "B": "up"}.get(match["which"], match["which"])
        pairs.setdefault(module, {})[which] = (key, np.asarray(array))
    if unknown:
        raise weights.WeightFileError(f"{source}: keys {listed_keys(unknown)} are not LoRA down/up weights.")
    return pairs


def _kohya_pairs(state: Mapping[str, np.ndarray], source: str, ldm: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """our layer path -> {"down", "up", "alpha"} from kohya keys (diffusers or LDM module names)."""
    pairs: dict[str, dict[str, Any]] = {}
    unknown = []
    for key, array in state.items():
        match = _KOHYA_KEY.match(key)
        module = None if not match else (ldm.get(match["name"]) or module_from_kohya(match["name"]))
        if module is None:
            unknown.append(key)
            continue
        path = module if "/" in module else layer_path(module)
        pairs.setdefault(path, {})[_KOHYA_PARTS[match["which"]]] = (key, np.asarray(array))
    if unknown:
        raise weights.WeightFileError(
            f"{source}: keys {listed_keys(unknown)} expected 'lora_unet_<module>.lora_down.weight' / "
            "'.lora_up.weight' / '.alpha' (or lora_te_)."
        )
    return pairs


def _complete(pairs: Mapping[str, Mapping[str, Any]], source: str) -> None:
    for name, pair in pairs.items():
        for which in ("down", "up"):
            if which not in pair:
                other = next(iter(pair.values()))[0]
                raise weights.WeightFileError(f"{source}: the {which} weight of {other!r} expected, not found.")
        for key, array in (pair["down"], pair["up"]):
            if array.dtype.kind != "f":
                raise weights.WeightFileError(f"{source}: key {key!r} expected a float dtype, found {array.dtype}.")


def layers_from_state(state: Mapping[str, np.ndarray], source: str = "<state>",
                      metadata: Mapping[str, Any] | None = None,
                      config: ModelConfig = SD_V1) -> tuple[dict[str, LayerLoRA], str]:
    """Our layers (path -> ``LayerLoRA``) from a diffusers or kohya state dict, and the layout found.

    Args:
        state: key -> array in the file's (torch) layout.
        source: the file, named in errors.
        metadata: diffusers' LoraConfig per component (``{"unet.lora_alpha": 8, ...}``).
        config: the UNet config for kohya's LDM-style names (ignored otherwise).
    """
    layout = detect_layout(state, source)
    if layout == "kohya":
        ldm = ldm_kohya_names(config) if any("_input_blocks_" in k or "_output_blocks_" in k or "_middle_block_" in k
                                             for k in state) else {}
        pairs = _kohya_pairs(state, source, ldm)
    else:
        pairs = {layer_path(m): p for m, p in _diffusers_pairs(state, source).items()}
    _complete(pairs, source)
    layers = {}
    for path, pair in sorted(pairs.items()):
        (down_key, down), (_, up) = pair["down"], pair["up"]
        a, b = from_torch_pair(down.astype("float32"), up.astype("float32"), source, down_key)
        rank = a.shape[-1]
        if layout == "kohya":
            alpha = float(np.asarray(pair["alpha"][1]).reshape(())) if "alpha" in pair else float(rank)
            scale = alpha / rank
        else:
            scale = _peft_scale(metadata, module_name(path), rank)
        layers[path] = LayerLoRA(a, b, scale)
    return layers, ("kohya-ldm" if layout == "kohya" and ldm else layout)


def lora_from_layers(layers: Mapping[str, LayerLoRA], manifest: Mapping[str, Any] | None = None,
                     source: str = "<memory>") -> lora_files.LoRAWeights:
    """One rank and one alpha for all layers (our file format), deltas unchanged.

    With equal ranks and scales, A and B are kept and alpha = scale * rank. Otherwise every
    layer's scale goes into its B, ranks are padded with zero columns of A and rows of B to the
    largest, and alpha = rank (scale 1).
    """
    if not layers:
        raise ValueError(f"{source}: no LoRA layers.")
    ranks = {layer.a.shape[-1] for layer in layers.values()}
    scales = {layer.scale for layer in layers.values()}
    rank = max(ranks)
    arrays = {}
    uniform = len(ranks) == 1 and len(scales) == 1
    for path, layer in layers.items():
        a, b = layer.a, layer.b if uniform else layer.b * layer.scale
        pad = rank - a.shape[-1]
        if pad:
            a = np.concatenate([a, np.zeros(a.shape[:-1] + (pad,), a.dtype)], axis=-1)
            b = np.concatenate([b, np.zeros((pad, b.shape[1]), b.dtype)], axis=0)
        arrays[path + lora_files.A_SUFFIX] = a.astype("float32")
        arrays[path + lora_files.B_SUFFIX] = b.astype("float32")
    alpha = scales.pop() * rank if uniform else float(rank)
    targets = [g for g, pattern in lora_files.TARGETS.items() if any(re.match(pattern, p) for p in layers)]
    full = {"format": lora_files.FORMAT, "version": lora_files.VERSION, "rank": rank, "alpha": alpha,
            "targets": targets, "layers": len(layers), **dict(manifest or {})}
    return lora_files.LoRAWeights(arrays, rank, alpha, targets, full, source)


# ---------------------------------------------------------------------- files


def _read_metadata(path: str) -> dict[str, Any] | None:
    """diffusers' LoraConfig JSON from a safetensors header, or None."""
    raw = safetensors_metadata(path).get(METADATA_KEY)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise weights.WeightFileError(f"{path}: metadata {METADATA_KEY!r} is not valid JSON ({err}).") from None


def read_foreign_lora(path: str, config: ModelConfig = SD_V1) -> lora_files.LoRAWeights:
    """A diffusers / PEFT or kohya LoRA file as ``LoRAWeights`` (ready for ``apply_lora``).

    Args:
        path: ``.safetensors``; ``.bin`` / ``.pt`` / ``.ckpt`` are read with the restricted
            unpickler (no code runs). Local, Drive or gs://.
        config: the UNet config for kohya's LDM-style names (default SD 1.x).

    Raises:
        WeightFileError: unknown keys, unpaired down/up, SDXL / LyCORIS / DoRA files, shapes
            that are no LoRA; naming the file, the key, the expected and the found value.
    """
    source = storage._fspath(path)
    state = torchfile.load_state_dict(source)
    metadata = _read_metadata(source) if source.endswith(".safetensors") else None
    layers, layout = layers_from_state(state, source, metadata, config)
    return lora_from_layers(layers, {"imported_from": {"file": source, "format": layout}}, source)


def import_lora(source: str, out: str, config: ModelConfig = SD_V1) -> str:
    """Convert a diffusers or kohya LoRA file into our ``.npz`` (``read_foreign_lora`` + ``save_lora``)."""
    return lora_files.save_lora(out, read_foreign_lora(source, config))


def export_lora(source: str | lora_files.LoRAWeights, out: str, format: str = "diffusers",
                dtype: str = "float32", config: ModelConfig = SD_V1) -> str:
    """Write our LoRA as a diffusers / PEFT or kohya ``.safetensors``.

    Args:
        source: our LoRA ``.npz`` or ``LoRAWeights``.
        out: ``.safetensors`` path (written atomically; pickles are never written).
        format: ``diffusers`` (for ``pipe.load_lora_weights``), ``kohya`` (A1111, ComfyUI,
            diffusers) or ``kohya-ldm`` (kohya keys named after the original LDM UNet of ``config``).
        dtype: ``float32`` or ``float16``.
        config: the UNet config for ``kohya-ldm``.

    Returns:
        ``out``.
    """
    if format not in LORA_FORMATS:
        raise ValueError(f"format must be one of {list(LORA_FORMATS)}, got {format!r}.")
    if dtype not in weights.SAVE_DTYPES:
        raise ValueError(f"dtype must be {' or '.join(weights.SAVE_DTYPES)}, got {dtype!r}.")
    if not out.endswith(".safetensors"):
        raise ValueError(f"{out}: LoRA exports are .safetensors only (no pickles); rename the target.")
    lora = source if isinstance(source, lora_files.LoRAWeights) else lora_files.read_lora(source)
    if format == "diffusers":
        state = to_diffusers_state(lora, dtype)
    else:
        state = to_kohya_state(lora, dtype, config if format == "kohya-ldm" else None)
    torchfile.save_safetensors(out, state)
    return out
