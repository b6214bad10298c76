"""``kerasemote generate``: text to image (and image to image) with any model."""

from __future__ import annotations

import argparse

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


def load_model_from_args(args: argparse.Namespace):
    import keras

    from kerasemote import load_model

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    kwargs = {"weights": args.weights} if args.weights else {}
    return load_model(args.model, **kwargs)


def apply_adapters(model, embeddings: list[str], loras: list[str]) -> None:
    """Load ``--embeddings`` files and merge ``--lora FILE[:SCALE]`` adapters into ``model``."""
    if embeddings:
        from kerasemote.embeddings import load_embeddings

        tokens = load_embeddings(model, embeddings)
        print(f"tokens: {' '.join(tokens)}")
    for text in loras:
        from kerasemote.lora_files import apply_lora, parse_lora_argument

        path, scale = parse_lora_argument(text)
        apply_lora(model, path, scale)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate images from a prompt",
        description="Generate images from a text prompt; writes one PNG per image plus grid.png.",
    )
    p.add_argument("prompt", help='the prompt, e.g. "a happy broccoli emoji"')
    p.add_argument("--negative-prompt", default="", help="what to steer away from")
    add_model_arguments(p)
    p.add_argument("--num-images", type=int, default=1, help="images to generate (default 1)")
    p.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    p.add_argument("--sampler", choices=["ddim", "euler", "dpm++"], default="ddim", help="sampler (default ddim)")
    p.add_argument("--seed", type=int, default=None, help="seed: same seed, same image")
    p.add_argument("--height", type=int, default=None, help="height in pixels, a multiple of 8")
    p.add_argument("--width", type=int, default=None, help="width in pixels, a multiple of 8")
    p.add_argument("--init-noise", help="start from these latents: .npy of shape (N, H/8, W/8, 4)")
    p.add_argument("--init-image", help="image to image: start from this picture")
    p.add_argument("--strength", type=float, default=0.8, help="image to image: how much to change (0..1)")
    p.add_argument(
        "--timestep-spacing",
        choices=["leading", "linspace", "trailing"],
        default=None,
        help="how the steps are spread over the schedule (default leading; trailing for flow models)",
    )
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (default 0)")
    p.add_argument("--jit-compile", action="store_true", help="compile the UNet with XLA")
    p.add_argument("--embeddings", nargs="+", default=[], metavar="FILE",
                   help="textual-inversion files (.npz/.npy/embeddings.json) whose tokens the prompt may use")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help="LoRA .npz merged at SCALE (default 1); repeat for several")
    p.add_argument("--out", default="out/generate", help="output folder (local, Drive or gs://)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kerasemote import images as image_io
    from kerasemote.weights import load_npy

    model = load_model_from_args(args)
    apply_adapters(model, args.embeddings, args.lora)
    init_latents = None
    if args.init_noise:
        init_latents = load_npy(args.init_noise, expected_shape=(None, None, None, model.config.latent_channels))
    init_image = None
    if args.init_image:
        size = None if args.height is None else (args.height, args.width or args.height)
        init_image = image_io.load_image(args.init_image, size=size)[None]
    result = model.generate(
        args.prompt,
        negative_prompt=args.negative_prompt or None,
        num_images=None if init_latents is not None else args.num_images,
        steps=args.steps,
        guidance=args.guidance,
        sampler=args.sampler,
        seed=args.seed,
        height=args.height,
        width=args.width,
        init_latents=init_latents,
        init_image=init_image,
        strength=args.strength,
        timestep_spacing=args.timestep_spacing,
        eta=args.eta,
        jit_compile=args.jit_compile,
    )
    paths = image_io.save_images(result, args.out)
    grid = image_io.save_grid(result, f"{args.out.rstrip('/')}/grid.png")
    print(f"wrote {len(paths)} images and {grid}")
    return 0
