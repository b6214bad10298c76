"""``kerasemote demo``: the whole mission on the embedded tiny model, offline, in minutes."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from dataclasses import asdict

    from kerasemote.demo import EMOTION_PROMPTS, DemoConfig  # light: TensorFlow loads only when the demo runs

    d = asdict(DemoConfig())
    d["sources"] = ",".join(d["sources"])
    p = subparsers.add_parser(
        "demo",
        help="the whole mission on the tiny model: data, textual inversion, samples, mixing, success rates",
        description=(
            "Prepare the packaged emoji sets at 64 px, learn <broccoli> from its images and <happy> <sad> <angry> "
            "<in-love> from the labelled faces (textual inversion), LoRA adapters for the concept on top of its "
            "token, draw the emotion prompts, tokens and the concept (with and without its LoRA), mix the concept "
            "with an emotion, train a judge (a ResNet-50 gate: face / the concept / other emoji, and ResNet-50s on the "
            "four emotions' faces, averaged) and score "
            "--num-images generations per prompt. Writes OUT/index.html with every figure, the success-rate table "
            "and the timings; about 8 minutes on 2 CPU cores with the defaults (machines vary)."
        ),
    )
    p.add_argument("--out", default="demo", help="output folder (default demo)")
    p.add_argument("--model", default=d["model"], help=f"preset name or model directory (default {d['model']})")
    p.add_argument("--sources", default=d["sources"],
                   help=f"packaged emoji sets, comma-separated; missing ones are skipped (default {d['sources']})")
    p.add_argument("--data", help="a prepared directory (kerasemote data prepare --size 64) instead of --sources")
    p.add_argument("--concept", default=d["concept"],
                   help=f"emoji name (or character) learned from its packaged images (default {d['concept']})")
    p.add_argument("--emotion-init", default=None, metavar="WORD",
                   help="initializer word of every emotion token (default: each its own word: happy, sad, "
                        "angry, love)")
    p.add_argument("--init-token", default=d["init_token"],
                   help=f"initializer word of the concept token, one CLIP token (default {d['init_token']})")
    p.add_argument("--steps", type=int, default=d["steps"],
                   help=f"textual-inversion steps of the emotion tokens (default {d['steps']})")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help=f"their batch size, and the concept LoRA's (default {d['batch_size']})")
    p.add_argument("--learning-rate", type=float,
                   help="their learning rate (default the strategy's, 5e-3)")
    p.add_argument("--concept-steps", type=int, default=d["concept_steps"],
                   help=f"textual-inversion steps of the concept token (default {d['concept_steps']})")
    p.add_argument("--concept-batch-size", type=int, default=d["concept_batch_size"],
                   help=f"its batch size (default {d['concept_batch_size']})")
    p.add_argument("--concept-learning-rate", type=float, default=d["concept_learning_rate"],
                   help=f"its learning rate (default {d['concept_learning_rate']:g})")
    p.add_argument("--concept-lora-steps", type=int, default=d["concept_lora_steps"],
                   help="steps of LoRA adapters (UNet attention and convs) learned from the concept's images on "
                        f"top of its token, drawn as one more row; 0: none (default {d['concept_lora_steps']})")
    p.add_argument("--concept-lora-rank", type=int, default=d["concept_lora_rank"],
                   help=f"their rank (default {d['concept_lora_rank']})")
    p.add_argument("--concept-lora-learning-rate", type=float, default=d["concept_lora_learning_rate"],
                   help=f"their learning rate (default {d['concept_lora_learning_rate']:g})")
    p.add_argument("--samples", type=int, default=d["samples"],
                   help=f"seeds per prompt in the sample grid (default {d['samples']})")
    p.add_argument("--sample-steps", type=int, default=d["sample_steps"],
                   help=f"sampler steps of every image (default {d['sample_steps']})")
    p.add_argument("--guidance", type=float, default=d["guidance"], help=f"guidance scale (default {d['guidance']:g})")
    p.add_argument("--mix-with", default=d["mix_with"], choices=list(EMOTION_PROMPTS),
                   help=f"emotion the concept is interpolated towards (default {d['mix_with']})")
    p.add_argument("--classifier",
                   help="a judge folder to use instead of training one: OUT/classifier of an earlier demo, or one "
                        "written by kerasemote classify train")
    p.add_argument("--classifier-epochs", type=int, default=d["classifier_epochs"],
                   help=f"epochs of each of the judge's ResNet-50s (default {d['classifier_epochs']})")
    p.add_argument("--judge-members", type=int, default=d["judge_members"],
                   help="ResNet-50s trained on the four emotions' faces, one seed each, whose averaged "
                        f"probabilities say which emotion a face shows (default {d['judge_members']})")
    p.add_argument("--judge-faces", type=int, default=d["judge_faces"],
                   help="emotion faces in the gate's 'face' class, drawn evenly over the emotions (default: all)")
    p.add_argument("--judge-other", type=int, default=d["judge_other"],
                   help="images of other emoji (no face, not the concept) in the gate's 'other' class, so that "
                        f"a generation that is neither has a class of its own; 0: none (default {d['judge_other']})")
    p.add_argument("--num-images", type=int, default=d["num_images"],
                   help=f"generations scored per prompt (default {d['num_images']})")
    p.add_argument("--seed", type=int, default=d["seed"], help=f"seed (default {d['seed']})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kerasemote.demo import DemoConfig, run_demo

    config = DemoConfig(
        model=args.model, sources=tuple(s.strip() for s in args.sources.split(",") if s.strip()), data=args.data,
        concept=args.concept, init_token=args.init_token, emotion_init=args.emotion_init, steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate, concept_steps=args.concept_steps,
        concept_batch_size=args.concept_batch_size, concept_learning_rate=args.concept_learning_rate,
        concept_lora_steps=args.concept_lora_steps,
        concept_lora_rank=args.concept_lora_rank, concept_lora_learning_rate=args.concept_lora_learning_rate,
        samples=args.samples, sample_steps=args.sample_steps,
        guidance=args.guidance, mix_with=args.mix_with, classifier=args.classifier,
        classifier_epochs=args.classifier_epochs, judge_members=args.judge_members, judge_faces=args.judge_faces,
        judge_other=args.judge_other, num_images=args.num_images,
        seed=args.seed,
        progress=not args.no_progress,
    )
    run_demo(args.out, config)
    return 0
