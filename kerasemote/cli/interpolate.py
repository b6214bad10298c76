"""``kerasemote interpolate``: mix two learned concepts (or prompts) and look at the sweep."""

from __future__ import annotations

import argparse

from kerasemote.cli._common import (
    add_model_arguments,
    add_sampler_arguments,
    add_size_arguments,
    check_sampling_args,
    load_model_from_args,
    sampling_options,
    save_images_and_grid,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "interpolate",
        help="mix two concepts: token-embedding or encoded-prompt space",
        description=(
            "Mix two learned concepts (--embeddings A B, with --prompt holding a {} for the concept) or two "
            "prompts (--prompts P1 P2), at one fraction (--alpha) or over a sweep (--num). Four --prompts make "
            "a 2-D grid. alpha is the share of the second concept: 0.3 means 30%% B, 70%% A. Writes one PNG per "
            "image, a labelled grid.png, sweep.gif (with more than one image) and, with --alpha in token space, "
            "the mixed token as an embeddings folder (mixed/)."
        ),
    )
    add_model_arguments(p)
    p.add_argument("--embeddings", nargs=2, metavar=("A", "B"), help="two textual-inversion files / run folders")
    p.add_argument("--prompt", default="a {} emoji", help='template with {} for the concept (default "a {} emoji")')
    p.add_argument("--prompts", nargs="+", metavar="P", help="two prompts to mix, or four corners of a grid")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--alpha", type=float, help="one fraction of the second concept, in [0, 1]")
    amount.add_argument("--num", type=int, default=5, help="fractions in the sweep from 0 to 1 (default 5)")
    p.add_argument("--method", choices=["lerp", "slerp"], default="slerp", help="how to mix (default slerp)")
    p.add_argument("--space", choices=["token", "context"], default="token",
                   help="mix token embeddings or encoded prompts (default token; --prompts implies context)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shared initial noise (default 0)")
    add_sampler_arguments(p)
    add_size_arguments(p)
    p.add_argument("--out", default="out/interpolate", help="output folder (local, Drive or gs://)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kerasemote import interpolate, storage
    from kerasemote.embeddings import load_embeddings, save_embeddings

    if bool(args.embeddings) == bool(args.prompts):
        raise ValueError("Give either --embeddings A B (two learned concepts) or --prompts P1 P2 [P3 P4].")
    if args.alpha is not None and not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}.")
    if args.alpha is None and args.num < 2:
        raise ValueError(f"--num: expected at least 2 fractions, found {args.num}.")
    check_sampling_args(args)
    model = load_model_from_args(args)
    check_sampling_args(args, model)
    alphas = [args.alpha] if args.alpha is not None else interpolate.fractions(args.num)
    gen = sampling_options(args)

    if args.prompts:
        if len(args.prompts) == 4:
            images = interpolate.context_grid(model, args.prompts, args.num, method=args.method, seed=args.seed,
                                              **gen)
            _, grid = save_images_and_grid(images, args.out, prefix="cell", cols=args.num)
            print(f"wrote a {args.num}x{args.num} grid to {grid}")
            return 0
        if len(args.prompts) != 2:
            raise ValueError(f"--prompts takes two prompts (a sweep) or four (a grid), got {len(args.prompts)}.")
        images = interpolate.context_sweep(model, *args.prompts, alphas, method=args.method, seed=args.seed, **gen)
    else:
        token_a = _first_token(load_embeddings(model, args.embeddings[0]), args.embeddings[0])
        token_b = _first_token(load_embeddings(model, args.embeddings[1]), args.embeddings[1])
        if args.space == "token":
            images = interpolate.token_sweep(model, token_a, token_b, args.prompt, alphas, method=args.method,
                                             seed=args.seed, **gen)
            if args.alpha is not None:
                mixed = interpolate.add_mixed_token(model, token_a, token_b, args.alpha, args.method)
                save_embeddings(model, storage.join(args.out, "mixed"), [mixed],
                                extra={"mixed_from": [token_a, token_b], "alpha": args.alpha, "method": args.method})
        else:
            images = interpolate.context_sweep(model, args.prompt.format(token_a), args.prompt.format(token_b),
                                               alphas, method=args.method, seed=args.seed, **gen)
    sweep = interpolate.save_sweep(images, alphas, args.out)
    print(f"wrote {len(sweep.paths)} images, {sweep.grid}" + (f" and {sweep.gif}" if sweep.gif else ""))
    return 0


def _first_token(tokens: list[str], path: str) -> str:
    if not tokens:
        raise ValueError(f"{path}: holds no embeddings.")
    if len(tokens) > 1:
        print(f"{path} holds {tokens}; mixing the first, {tokens[0]}")
    return tokens[0]
