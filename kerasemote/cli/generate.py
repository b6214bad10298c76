"""``kerasemote generate``: text to image (image to image, inpainting) with any model."""

from __future__ import annotations

import argparse

from kerasemote.cli._common import (
    add_adapter_arguments,
    add_model_arguments,
    add_sampler_arguments,
    add_size_arguments,
    apply_adapters,
    check_sampling_args,
    lora_arguments,
    load_model_from_args,
    sampling_options,
    save_images_and_grid,
)


def register(subparsers) -> None:
    from kerasemote.schedulers import TIMESTEP_SPACINGS

    p = subparsers.add_parser(
        "generate",
        help="generate images from a prompt",
        description="Generate images from a text prompt; writes one PNG per image plus grid.png.",
    )
    p.add_argument("prompt", help='the prompt, e.g. "a happy broccoli emoji"')
    p.add_argument("--negative-prompt", default="", help="what to steer away from")
    add_model_arguments(p)
    p.add_argument("--num-images", type=int, default=1, help="images to generate (default 1)")
    add_sampler_arguments(p)
    p.add_argument("--seed", type=int, default=None, help="seed: same seed, same image")
    add_size_arguments(p)
    p.add_argument("--init-noise", help="start from these latents: .npy of the model's latent shape (N, H/f, W/f, C), "
                                        "f its VAE factor and C its latent channels (SD 1.x: f 8, C 4; "
                                        "kerasemote-tiny: f 4, C 4)")
    p.add_argument("--init-image", help="image to image: start from this picture")
    p.add_argument("--mask", help="inpainting: repaint the white part of --init-image, keep the black part (a "
                                  "grayscale or RGB image of the same size; gray counts as white from 50%% up)")
    p.add_argument("--strength", type=float, default=None,
                   help="image to image / inpainting: how much to change (0..1; default 0.8, with --mask 1)")
    p.add_argument(
        "--timestep-spacing",
        choices=TIMESTEP_SPACINGS,
        default=None,
        help="how the steps are spread over the schedule (default leading; trailing for flow models)",
    )
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (default 0)")
    p.add_argument("--jit-compile", action="store_true", help="compile the UNet and the VAE decoder with XLA")
    add_adapter_arguments(
        p,
        embeddings_help="textual-inversion files (.npz/.npy/embeddings.json) or run folders whose tokens the "
                        "prompt may use",
        lora_help="LoRA .npz merged at SCALE (default 1); repeat for several",
    )
    p.add_argument("--out", default="out/generate", help="output folder (local, Drive or gs://)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from kerasemote import images as image_io
    from kerasemote.weights import load_npy

    more = dict(num_images=args.num_images, eta=args.eta)
    if args.strength is not None:
        more["strength"] = args.strength
    if args.mask and not args.init_image:
        raise ValueError(f"--mask {args.mask}: expected --init-image too (the picture it repaints), found none.")
    check_sampling_args(args, **more)
    lora_arguments(args.lora)
    init_image = mask = None  # read before the model loads, so a bad file fails at once
    if args.init_image:
        size = None if args.height is None else (args.height, args.width or args.height)
        init_image = image_io.load_image(args.init_image, size=size)[None]
    if args.mask:
        from kerasemote.inpaint import read_mask

        mask = read_mask(args.mask, args.init_image, size)
    model = load_model_from_args(args)
    check_sampling_args(args, model, **more)
    apply_adapters(model, args.embeddings, args.lora)
    init_latents = None
    if args.init_noise:
        init_latents = load_npy(args.init_noise, expected_shape=(None, None, None, model.config.latent_channels))
        if not np.isfinite(init_latents).all():
            raise ValueError(f"--init-noise {args.init_noise}: expected finite values, found NaN or infinity.")
    result = model.generate(
        args.prompt,
        negative_prompt=args.negative_prompt or None,
        num_images=None if init_latents is not None else args.num_images,
        seed=args.seed,
        init_latents=init_latents,
        init_image=init_image,
        mask=mask,
        strength=args.strength,
        timestep_spacing=args.timestep_spacing,
        eta=args.eta,
        jit_compile=args.jit_compile,
        **sampling_options(args),
    )
    paths, grid = save_images_and_grid(result, args.out)
    print(f"wrote {len(paths)} images and {grid}")
    return 0
