"""Checkpoint conversion: keras-cv .h5, diffusers folders, original single files -> our model.

``convert_checkpoint(src)`` detects the format and returns a ``StableDiffusion``.
"""

from __future__ import annotations

import os

from kerasemote import storage

FORMATS = ("model_dir", "kerascv", "diffusers", "single_file")
_SINGLE_FILE_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth", ".bin")


def detect_format(src: str) -> str:
    """Which kind of checkpoint ``src`` is: one of ``FORMATS``.

    Raises:
        FileNotFoundError: nothing at ``src``.
        ValueError: a folder or file of no known layout (the message says what was looked for).
    """
    if storage.exists(storage.join(src, "config.json")):
        return "model_dir"
    if storage.exists(storage.join(src, "unet")) or storage.exists(storage.join(src, "model_index.json")):
        return "diffusers"
    if storage.isdir(src):
        names = set(storage.listdir(src))
        if names & {"kcv_encoder.h5", "kcv_diffusion_model.h5", "kcv_decoder.h5", "vae_encoder.h5"}:
            return "kerascv"
        raise ValueError(
            f"{src}: no model found. Expected a kerasemote model directory (config.json), a diffusers "
            "folder (model_index.json, unet/, vae/, text_encoder/) or keras-cv's .h5 files "
            "(kcv_encoder.h5, kcv_diffusion_model.h5, kcv_decoder.h5, vae_encoder.h5)."
        )
    if not storage.exists(src):
        raise FileNotFoundError(f"No such file or folder: {src}.")
    if src.lower().endswith(_SINGLE_FILE_SUFFIXES):
        return "single_file"
    raise ValueError(
        f"{src}: unknown checkpoint type; expected one of {', '.join(_SINGLE_FILE_SUFFIXES)} "
        "or a folder."
    )


def convert_checkpoint(src: str):
    """Read any supported checkpoint into a ``StableDiffusion`` (see ``detect_format``).

    Local ``.safetensors`` weights and model directories are read one tensor at a time while the
    model is filled, so the peak memory stays near the model's own size.
    """
    from kerasemote.model import StableDiffusion

    fmt = detect_format(src)
    if fmt == "model_dir":
        return StableDiffusion.load(src)
    if fmt == "kerascv":
        from kerasemote.convert.kerascv import load_kerascv_weights
        from kerasemote.convert.kerascv_layout import KERASCV_CONFIG

        config, arrays = KERASCV_CONFIG, load_kerascv_weights(src)
    elif fmt == "diffusers":
        from kerasemote.convert.diffusers import convert_diffusers_folder

        config, arrays = convert_diffusers_folder(src, lazy=True)
    else:
        from kerasemote.convert.original import convert_single_file

        config, arrays = convert_single_file(src, lazy=True)
    from kerasemote.model import PARTS

    missing = [part for part in PARTS if part not in arrays]
    if missing:
        raise ValueError(f"{src}: the checkpoint lacks {', '.join(missing)}; a model needs all of {PARTS}.")
    from kerasemote.models.skip_init import skip_random_init

    with skip_random_init():  # every variable is assigned next (a missing key is an error)
        model = StableDiffusion(config)
    model.load_part_arrays(arrays, src)  # lazy arrays: one tensor in memory at a time beside the model
    model.source = os.fspath(src)
    return model
