"""`rice-mlops`: the command line. The parser reads no environment (so `--help` works whatever
RICE_* holds); each command is a function of rice_mlops.operations.cli_commands."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rice_mlops.compute.data import DataValidationError
from rice_mlops.operations import cli_commands as commands


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default (none shown where there is none)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _default(field: str):
    """A pipeline setting's built-in default (what an unset variable gives), read without
    the environment."""
    from dataclasses import fields

    from rice_mlops.core.settings import PipelineSettings

    return {f.name: f.default for f in fields(PipelineSettings)}[field]


def build_parser() -> argparse.ArgumentParser:
    """The parser; it reads no environment, so `--help` works whatever RICE_* holds (the
    settings are read when a command runs, and a bad one is named then)."""
    from functools import partial

    from rice_mlops.compute.training_config import ARCHITECTURES, TrainConfig

    parser = argparse.ArgumentParser(
        prog="rice-mlops", formatter_class=_Help,
        description="The rice classifier's tools outside Airflow: synthetic data, dataset "
                    "checks, training, the serving image (build, verify, wheels), serving "
                    "restore, signing keys and webhook deliveries. Each command's --help lists "
                    "its options and defaults; settings (RICE_*) are read when a command runs.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser = partial(sub.add_parser, formatter_class=_Help)

    synth = sub.add_parser("synth", help="write a synthetic rice dataset (split layout)")
    synth.add_argument("--out", type=Path, required=True, help="directory to write into")
    synth.add_argument("--per-class", type=int, default=100,
                       help="training images per class; val and test get 20 %% of it")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same "
                       "images)")
    synth.set_defaults(func=commands.cmd_synth)

    check = sub.add_parser("validate", help="check a dataset and print its fingerprint")
    check.add_argument("--data-dir", type=Path, required=True,
                       help="the dataset: split layout (train/val/test/<class>) or one folder "
                            "per class")
    check.add_argument("--min-per-class", type=int, default=TrainConfig.min_per_class,
                       help="refuse a class with fewer images")
    check.set_defaults(func=commands.cmd_validate)

    defaults = TrainConfig(data_dir=Path("."))
    fit = sub.add_parser("train", help="train, evaluate and log a model to MLFLOW_TRACKING_URI")
    fit.add_argument("--data-dir", type=Path, required=True, help="the dataset to train on")
    fit.add_argument("--output-json", type=Path, required=True,
                     help="where the result (run id, model URI, metrics) is written")
    fit.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs")
    fit.add_argument("--image-size", type=int, default=defaults.image_size,
                     help="input side in pixels")
    fit.add_argument("--batch-size", type=int, default=defaults.batch_size, help="batch size")
    fit.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                     help="initial learning rate")
    fit.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    fit.add_argument("--architecture", choices=ARCHITECTURES, default=defaults.architecture,
                     help="model family")
    fit.add_argument("--min-per-class", type=int, default=defaults.min_per_class,
                     help="refuse a class with fewer images")
    fit.add_argument("--experiment", default=defaults.experiment, help="MLflow experiment")
    fit.add_argument("--source-commit", help="git commit recorded on the run")
    fit.add_argument("--source-ref", help="git ref recorded on the run")
    fit.add_argument("--source-repository", help="owner/name recorded on the run")
    fit.set_defaults(func=commands.cmd_train)

    image = sub.add_parser("image", help="the serving image").add_subparsers(
        dest="image_command", required=True)
    image.add_parser = partial(image.add_parser, formatter_class=_Help)
    build = image.add_parser("build", help="build the serving image from a model in MLflow on "
                                          "the local Docker engine, as the DAG does")
    build.add_argument("--model-uri", required=True,
                       help="models:/m-<id>, models:/<name>/<version> or models:/<name>@<alias>")
    build.add_argument("--tag", required=True, help="image reference, e.g. rice-classifier:dev")
    build.add_argument("--data-dir", type=Path,
                       help="dataset for the smoke images (default: the run's data_dir)")
    build.add_argument("--base-image",
                       help="base image (default: RICE_BASE_IMAGE, else the Dockerfile's "
                            "python:3.11-slim)")
    build.add_argument("--build-image",
                       help="the build stage's image, with binutils' strip (default: "
                            "RICE_BUILD_IMAGE, else the base image, unstripped)")
    build.add_argument("--work-dir", type=Path, default=Path(".build/image"),
                       help="where the model bytes and the build context are laid out")
    build.add_argument("--min-test-accuracy", type=float,
                       help="refuse to build below this test accuracy, measured with LiteRT "
                            "on the TFLite bytes (default: RICE_MIN_TEST_ACCURACY, else "
                            f"{_default('min_test_accuracy')})")
    build.add_argument("--min-class-recall", type=float,
                       help="and below this recall of any class (default: "
                            f"RICE_MIN_CLASS_RECALL, else {_default('min_class_recall')})")
    build.add_argument("--skip-smoke", action="store_true",
                       help="do not run the smoke test against the built image")
    build.add_argument("--wheelhouse", type=Path,
                       help="directory of serving wheels to use instead of the package index "
                            "(default: RICE_SERVING_WHEELHOUSE)")
    build.add_argument("--signing-key", type=Path,
                       help="Ed25519 PEM private key that signs the model files (default: "
                            "RICE_SIGNING_KEY_FILE)")
    build.set_defaults(func=commands.cmd_image_build)
    verify = image.add_parser("verify", help="check the signature, provenance and SBOM attached "
                             "to an image digest and print them (registry credentials from "
                             "REGISTRY_USERNAME / REGISTRY_PASSWORD)")
    verify.add_argument("image", help="REGISTRY/NAME@sha256:<digest> (a digest, never a tag)")
    verify.add_argument("--key", type=Path, required=True, help="the pipeline's public key (PEM)")
    verify.add_argument("--expected-commit", metavar="SHA",
                        help="the full git sha the signed provenance must name")
    verify.add_argument("--min-version", type=int, metavar="N",
                        help="refuse a signed model version below N (default: the signed "
                             "version of the image `latest` names, if any)")
    verify.add_argument("--rollback-to", type=int, metavar="N",
                        help="accept an older release: only one whose signed model version "
                             "is exactly N")
    verify.set_defaults(func=commands.cmd_image_verify)
    wheels = image.add_parser("wheels", help="download the serving image's wheels into a "
                              "directory, for workers that cannot reach the package index")
    wheels.add_argument("--dest", type=Path, required=True, help="directory to download into")
    wheels.add_argument("--machine", help="image architecture, e.g. x86_64 or aarch64 "
                        "(default: this machine's)")
    wheels.set_defaults(func=commands.cmd_image_wheels)

    serving = sub.add_parser("serving", help="what the rollout serves").add_subparsers(
        dest="serving_command", required=True)
    serving.add_parser = partial(serving.add_parser, formatter_class=_Help)
    restore = serving.add_parser("restore", help="start the proxy and the stable container "
                                 "that RICE_RELEASE_DIR/serving/state.json records, if they "
                                 "are gone (the release zone's settings and Docker socket)")
    restore.set_defaults(func=commands.cmd_serving_restore)

    keys = sub.add_parser("keys", help="the pipeline's signing key").add_subparsers(
        dest="keys_command", required=True)
    keys.add_parser = partial(keys.add_parser, formatter_class=_Help)
    generate = keys.add_parser("generate", help="a new Ed25519 pair: DIR/signing.key (0600, "
                               "never overwritten) and DIR/signing.pub")
    generate.add_argument("--dir", type=Path, required=True, help="directory of the pair")
    generate.add_argument("--if-missing", action="store_true",
                          help="exit 0 when DIR already holds a key (for scripts)")
    generate.set_defaults(func=commands.cmd_keys_generate)

    hook = sub.add_parser("webhook", help="GitHub webhook tools").add_subparsers(
        dest="webhook_command", required=True)
    hook.add_parser = partial(hook.add_parser, formatter_class=_Help)
    deliver = hook.add_parser("send", help="send a correctly signed push (or ping) delivery")
    deliver.add_argument("--url", required=True,
                         help="e.g. http://127.0.0.1:8080/webhooks/github")
    deliver.add_argument("--secret", help="default (and better: `ps` shows arguments): "
                         "GITHUB_WEBHOOK_SECRET")
    deliver.add_argument("--ref", default="refs/heads/main", help="the pushed ref")
    deliver.add_argument("--sha", default="0" * 40, help="the pushed commit (40 hex)")
    deliver.add_argument("--repository", default="local/rice-mlops", help="owner/name")
    deliver.add_argument("--event", default="push", choices=("push", "ping"),
                         help="X-GitHub-Event")
    deliver.add_argument("--delivery", help="X-GitHub-Delivery (default: a new UUID)")
    deliver.set_defaults(func=commands.cmd_webhook_send)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)  # its defaults are the pipeline's settings
        return args.func(args)
    except DataValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
