"""`rice-mlops`: the command-line entry point; each subcommand composes library functions."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rice_mlops.data import DataValidationError


def _cmd_synth(args: argparse.Namespace) -> int:
    from rice_mlops.data.synth import generate

    counts = generate(args.out, args.per_class, args.seed)
    total = sum(n for by_class in counts.values() for n in by_class.values())
    print(f"wrote {total} synthetic images to {args.out}: {json.dumps(counts)}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from rice_mlops.data import validate
    from rice_mlops.data.fingerprint import fingerprint

    dataset = validate(args.data_dir, min_per_class=args.min_per_class)
    print(json.dumps({"layout": dataset.layout, "classes": dataset.classes,
                      "counts": dataset.counts(), "fingerprint": fingerprint(dataset)}, indent=2))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from rice_mlops.config import TrainConfig
    from rice_mlops.training import train

    source = {"commit": args.source_commit, "ref": args.source_ref,
              "repository": args.source_repository}
    config = TrainConfig(
        data_dir=args.data_dir, epochs=args.epochs, image_size=args.image_size,
        batch_size=args.batch_size, seed=args.seed, architecture=args.architecture,
        learning_rate=args.learning_rate, min_per_class=args.min_per_class,
        experiment=args.experiment, source={k: v for k, v in source.items() if v},
    )
    result = train(config, output_json=args.output_json)
    print(json.dumps({k: result[k] for k in ("run_id", "model_uri", "metrics", "epochs_run",
                                             "train_seconds")}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from rice_mlops.config import TrainConfig
    from rice_mlops.model import ARCHITECTURES

    parser = argparse.ArgumentParser(prog="rice-mlops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write a synthetic rice dataset (split layout)")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--per-class", type=int, default=100,
                       help="training images per class; val and test get 20 %% of it")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=_cmd_synth)

    check = sub.add_parser("validate", help="check a dataset and print its fingerprint")
    check.add_argument("--data-dir", type=Path, required=True)
    check.add_argument("--min-per-class", type=int, default=TrainConfig.min_per_class)
    check.set_defaults(func=_cmd_validate)

    defaults = TrainConfig(data_dir=Path("."))
    fit = sub.add_parser("train", help="train, evaluate and log a model to MLFLOW_TRACKING_URI")
    fit.add_argument("--data-dir", type=Path, required=True)
    fit.add_argument("--output-json", type=Path, required=True)
    fit.add_argument("--epochs", type=int, default=defaults.epochs)
    fit.add_argument("--image-size", type=int, default=defaults.image_size)
    fit.add_argument("--batch-size", type=int, default=defaults.batch_size)
    fit.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    fit.add_argument("--seed", type=int, default=defaults.seed)
    fit.add_argument("--architecture", choices=ARCHITECTURES, default=defaults.architecture)
    fit.add_argument("--min-per-class", type=int, default=defaults.min_per_class)
    fit.add_argument("--experiment", default=defaults.experiment)
    fit.add_argument("--source-commit")
    fit.add_argument("--source-ref")
    fit.add_argument("--source-repository")
    fit.set_defaults(func=_cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DataValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
