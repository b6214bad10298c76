"""LoRA layer names across layouts: our layer paths, diffusers' module names, kohya's names.

``unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q`` (ours) is
``unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`` (diffusers) and
``lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q`` (kohya); kohya
files may also use the original LDM module numbering (``ldm_kohya_names``).
"""

from __future__ import annotations

import re
from functools import lru_cache

from kerasemote.config import SD_V1, ModelConfig
from kerasemote.convert import naming

# Our part -> (its diffusers module prefix, its kohya name prefix).
COMPONENTS = {"unet": ("unet", "lora_unet_"), "text_encoder": ("text_encoder", "lora_te_")}


def module_name(path: str) -> str:
    """Our layer path -> diffusers' module name with its component prefix.

    ``"unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q"`` ->
    ``"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"``.
    """
    part = path.split("/", 1)[0]
    if part not in COMPONENTS:
        raise ValueError(f"LoRA layer {path!r}: expected a unet/ or text_encoder/ layer.")
    return f"{part}.{naming.torch_key(path + '/kernel')[: -len('.weight')]}"


def _glued(previous: str, word: str) -> bool:
    """Whether ``word`` continues the Keras layer name ``previous`` rather than starting a new one."""
    return word.isdigit() or (previous, word) == ("encoder", "layers") or (
        word == "proj" and re.fullmatch(r"net\.\d+", previous) is not None
    )


def layer_path(module: str) -> str:
    """diffusers' module name -> our layer path (inverse of ``module_name``).

    Our layers are named after the reference modules with ``/`` between Keras layers; an
    index stays glued to its container (``down_blocks.0``, ``to_out.0``), as do the two
    nested names ``net.0.proj`` and ``encoder.layers.N``.
    """
    segments: list[str] = []
    for word in module.split("."):
        if segments and _glued(segments[-1], word):
            segments[-1] += "." + word
        else:
            segments.append(word)
    return "/".join(segments)


@lru_cache(maxsize=1)
def _underscored_words() -> tuple[tuple[str, ...], ...]:
    """Every module word containing ``_`` (``down_blocks``, ``to_q``...), as token tuples, longest first."""
    words = set()
    for part in COMPONENTS:
        for path in naming.variable_shapes(SD_V1, part):
            words.update(w for segment in path.split("/") for w in segment.split(".") if "_" in w)
    return tuple(sorted((tuple(w.split("_")) for w in words), key=len, reverse=True))


def kohya_name(module: str) -> str:
    """``"unet.down_blocks.0.attn1.to_q"`` -> ``"lora_unet_down_blocks_0_attn1_to_q"``."""
    part, rest = module.split(".", 1)
    return COMPONENTS[part][1] + rest.replace(".", "_")


def module_from_kohya(name: str) -> str | None:
    """kohya's ``lora_unet_..`` / ``lora_te_..`` name -> diffusers' module name; None if not one."""
    for part, (_, prefix) in COMPONENTS.items():
        if name.startswith(prefix):
            tokens, out, i = name[len(prefix) :].split("_"), [], 0
            while i < len(tokens):
                word = next((w for w in _underscored_words() if tuple(tokens[i : i + len(w)]) == w), None)
                out.append("_".join(word) if word else tokens[i])
                i += len(word) if word else 1
            return f"{part}." + ".".join(out)
    return None


def ldm_kohya_names(config: ModelConfig) -> dict[str, str]:
    """kohya LDM-style UNet name -> our layer path, e.g. ``lora_unet_input_blocks_1_1_..._to_q``."""
    from kerasemote.convert.original import UNET_PREFIX, single_file_layout

    names = {}
    for key, entry in single_file_layout(config, ["unet"]).items():
        if entry.path.endswith("/kernel"):
            module = key[len(UNET_PREFIX) : -len(".weight")]
            names["lora_unet_" + module.replace(".", "_")] = entry.path[: -len("/kernel")]
    return names
