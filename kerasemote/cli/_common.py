"""Options and steps that several commands share: the model to load, its adapters, sampling, outputs.

Choices come from the library's own tables (``kerasemote.schedulers.SAMPLERS``,
``kerasemote.weights.SAVE_DTYPES``...), so a new sampler or file format shows up in every
command at once.
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

import numpy as np

from kerasemote.presets import DEFAULT_MODEL


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model`` / ``--weights`` / ``--mixed-precision``, shared by every command that loads a model."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"preset name, model directory or checkpoint (default: {DEFAULT_MODEL})",
    )
    parser.add_argument("--weights", help="local copy of a downloadable preset's checkpoint (file or folder), "
                                          "e.g. --model sd-v1-5 --weights v1-5-pruned-emaonly.safetensors")
    parser.add_argument(
        "--mixed-precision", action="store_true", help="compute in float16 (GPU), weights stay float32"
    )


def load_model_from_args(args: argparse.Namespace) -> Any:
    """The model that ``add_model_arguments``'s options name (a ``StableDiffusion``)."""
    import keras

    from kerasemote.presets import load_model

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    return load_model(args.model, weights=args.weights or None)


def add_adapter_arguments(parser: argparse.ArgumentParser, embeddings_help: str, lora_help: str) -> None:
    """``--embeddings FILE...`` and repeatable ``--lora FILE[:SCALE]``, read by ``apply_adapters``."""
    parser.add_argument("--embeddings", nargs="+", default=[], metavar="FILE", help=embeddings_help)
    parser.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]", help=lora_help)


def apply_adapters(model: Any, embeddings: Sequence[str], loras: Sequence[str]) -> None:
    """Load ``--embeddings`` files and merge ``--lora FILE[:SCALE]`` adapters into ``model``."""
    if embeddings:
        from kerasemote.embeddings import load_embeddings

        tokens = load_embeddings(model, list(embeddings))
        print(f"tokens: {' '.join(tokens)}")
    for text in loras:
        from kerasemote.lora_files import apply_lora, parse_lora_argument

        path, scale = parse_lora_argument(text)
        apply_lora(model, path, scale)


def add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    """``--steps``, ``--guidance`` and ``--sampler`` (any name in ``kerasemote.schedulers.SAMPLERS``)."""
    from kerasemote.schedulers import SAMPLERS

    parser.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    parser.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="ddim", help="sampler (default ddim)")


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    """``--height`` / ``--width`` in pixels; None leaves the model's own image size."""
    parser.add_argument("--height", type=int, default=None, help="height in pixels, a multiple of 8")
    parser.add_argument("--width", type=int, default=None, help="width in pixels, a multiple of 8")


def sampling_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``generate`` keyword arguments that ``add_sampler_arguments`` and ``add_size_arguments`` set."""
    return dict(steps=args.steps, guidance=args.guidance, sampler=args.sampler, height=args.height,
                width=args.width)


def add_dtype_argument(
    parser: argparse.ArgumentParser, flag: str = "--dtype", help_text: str = "stored precision"
) -> None:
    """The precision a written file stores: one of ``kerasemote.weights.SAVE_DTYPES``, float32 by default."""
    from kerasemote.weights import SAVE_DTYPES

    parser.add_argument(flag, choices=SAVE_DTYPES, default="float32", help=help_text)


def save_images_and_grid(
    images: np.ndarray, out: str, prefix: str = "image", cols: int | None = None
) -> tuple[list[str], str]:
    """Write one PNG per image (``{prefix}_000.png``...) and ``grid.png`` into ``out``.

    Returns:
        The image paths and the grid's path.
    """
    from kerasemote import images as image_io
    from kerasemote import storage

    paths = image_io.save_images(images, out, prefix=prefix)
    grid_options = {} if cols is None else {"cols": cols}
    return paths, image_io.save_grid(images, storage.join(out, "grid.png"), **grid_options)
