"""``kerasemote convert`` and ``kerasemote init-model``: make model directories."""

from __future__ import annotations

import argparse

from kerasemote.cli._common import add_dtype_argument
from kerasemote.config import CONFIGS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a checkpoint into a model directory",
        description=(
            "Convert keras-cv .h5 files (a folder holding kcv_encoder.h5, kcv_diffusion_model.h5, "
            "kcv_decoder.h5, vae_encoder.h5), a diffusers folder (unet/, vae/, text_encoder/) or an "
            "original single-file checkpoint (.ckpt / .safetensors) into a kerasemote model directory."
        ),
    )
    p.add_argument("src", help="checkpoint file or folder (local, Drive or gs://)")
    p.add_argument("--out", required=True, help="model directory to write")
    add_dtype_argument(p)
    p.set_defaults(func=run_convert)

    p = subparsers.add_parser(
        "init-model",
        help="write a randomly initialized model directory",
        description="Write a randomly initialized model (for tests and for training from scratch).",
    )
    p.add_argument("--config", default="tiny", choices=sorted(CONFIGS),
                   help="model configuration (default tiny)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.add_argument("--out", required=True, help="model directory to write")
    p.set_defaults(func=run_init_model)


def run_convert(args: argparse.Namespace) -> int:
    from kerasemote.convert import convert_checkpoint

    model = convert_checkpoint(args.src)
    model.save(args.out, dtype=args.dtype, extra={"converted_from": args.src})
    print(f"wrote model directory {args.out} (config {model.config.name})")
    return 0


def run_init_model(args: argparse.Namespace) -> int:
    from kerasemote.model import StableDiffusion

    model = StableDiffusion.random(args.config, seed=args.seed)
    model.save(args.out, extra={"init_seed": args.seed})
    print(f"wrote random {args.config} model to {args.out}")
    return 0
