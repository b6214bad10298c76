"""`kerasemote classify train | evaluate | score`: thin argparse front of kerasemote.classification."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from kerasemote.cli._common import (
    add_adapter_arguments,
    add_model_arguments,
    add_sampler_arguments,
    add_size_arguments,
    apply_adapters,
    check_sampling_args,
    load_model_from_args,
    lora_arguments,
    sampling_options,
)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``classify`` command group; each leaf sets ``func(args) -> int``."""
    parser = subparsers.add_parser("classify", help="ResNet-50 emotion classifier: train, evaluate, score")
    commands = parser.add_subparsers(dest="classify_command", required=True)
    _add_train(commands)
    _add_evaluate(commands)
    _add_score(commands)
    register_evaluate_concepts(subparsers)
    return parser


def _add_train(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="train on a folder with one subfolder of images per class")
    p.add_argument("--data", required=True,
                   help="labelled folder (one subfolder per class) or a prepared dataset (`data prepare`)")
    p.add_argument("--split", default="train", help="prepared datasets: the split to train on (default train)")
    p.add_argument("--out", required=True, help="output folder for model.keras, labels.json, history.png")
    p.add_argument("--val-data",
                   help="separate labelled validation folder (default: hold out --val-fraction)")
    p.add_argument("--weights", default="imagenet",
                   help="'imagenet' (download, or the ~/.keras cache), a local no-top .h5 path, "
                        "or 'none' for random init")
    p.add_argument("--image-size", type=int, default=128, help="input side in pixels (default 128)")
    p.add_argument("--freeze-backbone", action="store_true",
                   help="train only the head (pretrained weights only)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=None,
                   help="default: 1e-4 fine-tuning pretrained weights, 1e-3 otherwise")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--no-class-weights", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--members", type=int, default=1,
                   help="train this many classifiers (seeds SEED, SEED+1, ...) and save them as one ensemble "
                        "whose probabilities are their mean: steadier when data is scarce (default 1)")
    p.set_defaults(func=run_train)


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("evaluate", help="accuracy, per-class precision/recall, confusion matrix")
    p.add_argument("--model", required=True, help="folder written by `classify train`")
    p.add_argument("--data", required=True,
                   help="labelled folder (one subfolder per class) or a prepared dataset (`data prepare`)")
    p.add_argument("--split", default="test", help="prepared datasets: the split to evaluate (default test)")
    p.add_argument("--out", help="output folder (default: MODEL/evaluation)")
    p.set_defaults(func=run_evaluate)


def _add_score(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("score", help="share of generated images classified as the intended concept")
    p.add_argument("--model", required=True, help="folder written by `classify train`")
    p.add_argument("--images", required=True,
                   help="folder of images (or of subfolders with --labels-from-folders)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--expected", help="the concept every image should show")
    which.add_argument("--labels-from-folders", action="store_true",
                       help="each subfolder name of --images is its images' intended concept")
    p.add_argument("--out", default="classifier_scores", help="folder for predictions.csv and scores.json")
    p.set_defaults(func=run_score)


def run_train(args: argparse.Namespace) -> int:
    from kerasemote.classification import ClassifierTrainConfig, load_labelled_folder, train_classifier, train_ensemble

    config = ClassifierTrainConfig(
        image_size=args.image_size, weights=args.weights, freeze_backbone=args.freeze_backbone,
        dropout=args.dropout, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, val_fraction=args.val_fraction, patience=args.patience,
        augment=not args.no_augment, class_weighting=not args.no_class_weights, seed=args.seed,
    )
    data = load_labelled_folder(args.data, config.image_size, split=args.split)
    if args.members != 1:
        ensemble = train_ensemble(data, args.out, config, args.members, val_data=args.val_data)
        print(f"classes: {ensemble.class_names}; {args.members} members (seeds {args.seed}.."
              f"{args.seed + args.members - 1}) in {args.out}/member_*, averaged by {args.out}/labels.json")
        return 0
    result = train_classifier(data, args.out, config, val_data=args.val_data)
    last = {k: round(v[-1], 4) for k, v in result.history.items()}
    print(f"classes: {result.classifier.class_names}; last epoch: {last}")
    print(f"saved model.keras, labels.json, history.png in {result.out_dir}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from kerasemote.classification import evaluate_and_write, load_classifier, load_labelled_folder

    out = Path(args.out) if args.out else Path(args.model) / "evaluation"
    classifier = load_classifier(args.model)
    data = load_labelled_folder(args.data, classifier.image_size, classifier.class_names, split=args.split)
    report = evaluate_and_write(classifier, data, out)
    print(report.format_table())
    print(f"wrote evaluation.json, confusion_matrix.png, misclassified.png in {out}")
    return 0


def run_score(args: argparse.Namespace) -> int:
    from kerasemote.classification import load_classifier, score_images, score_labelled_folder, write_score

    classifier = load_classifier(args.model)
    if args.labels_from_folders:
        report = score_labelled_folder(classifier, args.images)
    else:
        report = score_images(classifier, args.images, args.expected)
    paths = write_score(report, args.out)
    print(report.format_table())
    print(f"wrote {paths['csv']} and {paths['json']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``classify`` on its own: ``python -m kerasemote.cli.classify train --data ...``."""
    parser = argparse.ArgumentParser(prog="kerasemote")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["classify", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


def register_evaluate_concepts(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate-concepts",
        help="generate images per concept, classify them, print success rates",
        description=(
            "For each concept, generate --n images from --prompt (its {} filled with the concept), classify "
            "them and print, per concept, the share classified as intended and the mean confidence."
        ),
    )
    add_model_arguments(p)
    p.add_argument("--classifier", required=True, help="folder written by `classify train`")
    p.add_argument("--prompt", default="a {} emoji", help='template with {} for the concept (default "a {} emoji")')
    p.add_argument("--concepts", nargs="+", required=True, help="words or learned tokens, e.g. happy sad or <happy>")
    p.add_argument("--labels", nargs="+", help="the intended class of each concept (default: matched by name)")
    p.add_argument("--n", type=int, default=16, help="images per concept (default 16)")
    add_adapter_arguments(p, embeddings_help="textual-inversion files or run folders to load",
                          lora_help="LoRA files to apply")
    add_sampler_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    add_size_arguments(p)
    p.add_argument("--out", default="out/concepts", help="images, predictions.csv and scores.json go here")
    p.set_defaults(func=run_evaluate_concepts)


def run_evaluate_concepts(args: argparse.Namespace) -> int:
    from kerasemote.classification import evaluate_concepts, load_classifier

    if args.n < 1:
        raise ValueError(f"--n: expected at least 1 image per concept, found {args.n}.")
    check_sampling_args(args)
    lora_arguments(args.lora)
    model = load_model_from_args(args)
    check_sampling_args(args, model)
    apply_adapters(model, args.embeddings, args.lora)
    report = evaluate_concepts(
        model, load_classifier(args.classifier), args.prompt, args.concepts, num_images=args.n,
        labels=args.labels, seed=args.seed, out_dir=args.out, **sampling_options(args),
    )
    print(report.format_table())
    print(f"wrote images, predictions.csv and scores.json in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
