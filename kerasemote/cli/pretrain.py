"""``kerasemote pretrain``: argument parsing only; the recipe is ``kerasemote.pretrain``."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def register(subparsers) -> None:
    from kerasemote.cli.train import add_run_folder_arguments
    from kerasemote.pretrain.settings import PretrainSettings

    d = PretrainSettings()
    p = subparsers.add_parser(
        "pretrain", help="train a small text-to-image model from scratch (VAE, then text encoder + UNet)",
        description="Trains the VAE (L1 + L2 + KL), then the text encoder and UNet together on cached "
                    "latents, faces oversampled. Every stage resumes from OUT.")
    p.add_argument("--data", required=True, help="prepared directory (kerasemote data prepare ... --size 64)")
    p.add_argument("--config", default="kerasemote-tiny", help="model config name (default kerasemote-tiny)")
    p.add_argument("--out", required=True, help="run folder (checkpoints of every stage)")
    p.add_argument("--vae-steps", type=int, default=d.vae_steps,
                   help=f"steps of the VAE trained from random weights (default {d.vae_steps})")
    p.add_argument("--vae-batch-size", type=int, default=d.vae_batch_size)
    p.add_argument("--vae-learning-rate", type=float, default=d.vae_learning_rate)
    p.add_argument("--kl-weight", type=float, default=d.kl_weight)
    p.add_argument("--color-weight", type=float, default=d.color_weight,
                   help="VAE stages: weight of a colour term (opponent colours per latent cell) next to "
                        "L1 + L2, for flat colours the outlines would drown (default 0: off)")
    p.add_argument("--decoder-steps", type=int, default=d.decoder_steps,
                   help="fine-tune the VAE decoder alone for N steps (encoder frozen, latents unchanged) "
                        "(default 0)")
    p.add_argument("--replace-vae-steps", type=int, default=d.replace_vae_steps, dest="replace_vae_steps",
                   help="with --init-from: replace the warm start's VAE by a new one of --config's sizes, "
                        "trained N steps with its latents anchored to the old ones (--latent-anchor-weight); "
                        "the text encoder and UNet then continue on the new latents")
    p.add_argument("--new-vae-steps", type=int, dest="replace_vae_steps", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)  # the earlier spelling, kept for existing command lines
    p.add_argument("--latent-anchor-weight", type=float, default=d.latent_anchor_weight,
                   dest="latent_anchor_weight",
                   help=f"with --replace-vae-steps: weight of the squared distance of the new VAE's latents to "
                        f"the warm start's (default {d.latent_anchor_weight})")
    p.add_argument("--latent-anchor", type=float, dest="latent_anchor_weight", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)  # the earlier spelling
    p.add_argument("--steps", type=int, default=d.steps,
                   help=f"text encoder + UNet steps in all, a warm start's included (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default=d.lr_schedule,
                   help="text encoder + UNet after the warm-up: constant (extendable) or cosine to zero at --steps "
                        "(a warm start decays from its first step)")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help=f"text encoder + UNet: linear learning-rate warm-up steps; a warm start warms up again "
                        f"from its own first step (default {d.warmup_steps})")
    p.add_argument("--ema", type=float, default=d.ema_decay, help="EMA decay of the saved weights (0: off)")
    p.add_argument("--emotion-repeat", type=int, default=d.emotion_repeat,
                   help="copies of each face of the most common emotion (rarer emotions get more)")
    p.add_argument("--no-balance-emotions", action="store_true",
                   help="the same --emotion-repeat for every emotion instead of balancing them")
    p.add_argument("--face-repeat", type=int, default=d.face_repeat, help="copies of other face emoji")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--validate-every", type=int, default=d.validate_every, help="validation grids (0: never)")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="also keep a float16 model directory here (e.g. weights/kerasemote-tiny)")
    p.add_argument("--export-every", type=int, default=d.export_every)
    p.add_argument("--init-from", default=None, metavar="MODEL_DIR",
                   help="warm start from a model directory of this recipe: its VAE is kept (or replaced: "
                        "--replace-vae-steps) and its text encoder and UNet continue training")
    add_run_folder_arguments(p, action="store_true", help="continue every stage from the newest checkpoints in --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kerasemote.pretrain import PretrainSettings, pretrain
    from kerasemote.pretrain.settings import TEXT_TO_IMAGE_DIR, VAE_STAGE_DRAWS
    from kerasemote.training.runlock import claim, clear_previous_run

    settings = PretrainSettings(
        config=args.config, vae_steps=args.vae_steps, vae_batch_size=args.vae_batch_size,
        vae_learning_rate=args.vae_learning_rate, kl_weight=args.kl_weight,
        decoder_steps=args.decoder_steps, replace_vae_steps=args.replace_vae_steps,
        latent_anchor_weight=args.latent_anchor_weight,
        color_weight=args.color_weight,
        steps=args.steps,
        batch_size=args.batch_size, learning_rate=args.learning_rate, lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps,
        ema_decay=args.ema or None, emotion_repeat=args.emotion_repeat,
        balance_emotions=not args.no_balance_emotions, face_repeat=args.face_repeat,
        seed=args.seed, checkpoint_every=args.checkpoint_every, validate_every=args.validate_every,
        export_every=args.export_every,
    )
    stages = (*VAE_STAGE_DRAWS, TEXT_TO_IMAGE_DIR)  # the recipe's folders inside --out
    with claim(args.out, args.resume, args.overwrite, args.force_unlock, entries=stages) as clear:
        if clear:
            clear_previous_run(args.out, entries=stages)
        result = pretrain(args.data, args.out, settings, resume=args.resume, init_from=args.init_from,
                          export_dir=args.export, progress=not args.no_progress)
    psnr = result.vae.get("test_psnr_db")
    loss = (f"mean loss of the last 50 steps {np.mean(result.losses[-50:]):.4f}" if result.losses
            else "no text encoder + UNet step to run (the warm start is there already)")
    print(f"pretrained {result.model_dir}: step {result.step}, {loss}, VAE test PSNR "
          f"{'n/a' if psnr is None else f'{psnr:.2f} dB'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kerasemote")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["pretrain", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
