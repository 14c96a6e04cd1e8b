"""`rice-mlops`: the command-line entry point; each subcommand composes library functions."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
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


def _release_model_bytes(run_id: str, target: Path) -> dict[str, str]:
    """Download only model.tflite and labels.json of a run into `target`; returns the digests
    the run's training logged for them (its manifest). No MLmodel is downloaded or loaded."""
    import mlflow

    from rice_mlops.release import MODEL_BYTES, manifest_digests, recorded_digests
    from rice_mlops.vocabulary import RUN_MANIFEST_ARTIFACT

    manifest = mlflow.artifacts.load_text(f"runs:/{run_id}/{RUN_MANIFEST_ARTIFACT}")
    digests = recorded_digests({"artifact_sha256": manifest_digests(manifest)})
    target.mkdir(parents=True, exist_ok=True)
    for artifact, name in MODEL_BYTES.items():
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact,
                                                         dst_path=str(target / ".download")))
        local.replace(target / name)
    return digests


def _cmd_image_build(args: argparse.Namespace) -> int:
    import shutil
    import subprocess

    from rice_mlops import registry
    from rice_mlops.image import (
        ImageNames,
        build_args,
        build_command,
        image_metadata,
        prepare_context,
    )
    from rice_mlops.release import read_classes, smoke_set
    from rice_mlops.settings import PipelineSettings
    from rice_mlops.signing import load_private_key
    from rice_mlops.vocabulary import FINGERPRINT_TAG, MODEL_NAME, SOURCE_TAGS

    settings = PipelineSettings.from_env()  # here, not in the parser: --help works regardless
    for option, field in (("base_image", "base_image"), ("min_test_accuracy", "min_test_accuracy"),
                          ("min_class_recall", "min_class_recall"), ("wheelhouse", "wheelhouse"),
                          ("signing_key", "signing_key_file")):
        if getattr(args, option) is None:
            value = getattr(settings, field)
            setattr(args, option, None if value in ("", None) else value)
    found = registry.resolve(args.model_uri)
    work = Path(args.work_dir)
    download = work / "model-bytes"
    shutil.rmtree(download, ignore_errors=True)
    digests = _release_model_bytes(found["run_id"], download)
    data_dir = Path(args.data_dir or found["params"].get("data_dir", ""))
    metadata = image_metadata(
        model_name=found["model_name"] or MODEL_NAME, model_version=found["model_version"],
        run_id=found["run_id"], source_commit=found["tags"].get(SOURCE_TAGS["commit"]),
        dataset_fingerprint=found["tags"].get(FINGERPRINT_TAG),
        image_size=int(found["params"].get("image_size", 0)) or None)
    key_file = args.signing_key
    if not key_file:
        raise ValueError("no signing key: pass --signing-key or set RICE_SIGNING_KEY_FILE (the "
                         "server refuses an unsigned model; `rice-mlops keys generate` makes one)")
    context = prepare_context(download, work / "context", metadata=metadata, digests=digests,
                              smoke_from=smoke_set(data_dir,
                                                   read_classes(download / "labels.json")),
                              min_test_accuracy=args.min_test_accuracy,
                              min_class_recall=args.min_class_recall,
                              wheel_cache=work, wheelhouse=args.wheelhouse,
                              signing_key=load_private_key(Path(key_file).read_bytes()))
    repository, _, tag = args.tag.rpartition(":")
    if not repository or "/" in tag:
        raise ValueError(f"--tag must be name:tag or registry/name:tag, got {args.tag!r}")
    names = ImageNames(repository=repository, tag=tag)
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    command = build_command(context, names, build_args(metadata, args.base_image))
    subprocess.run(["docker", *command], check=True, env=env)
    if not args.skip_smoke:
        subprocess.run(["docker", "run", "--rm", "--network", "none",
                        "-v", f"{context / 'smoke'}:/smoke:ro", "--entrypoint", "python3",
                        names.immutable, "-m", "rice_mlops.serving.smoke",
                        "--smoke-dir", "/smoke",
                        "--min-test-accuracy", repr(args.min_test_accuracy),
                        "--min-class-recall", repr(args.min_class_recall)], check=True)
    print(f"built {names.immutable} and {names.latest} from run {found['run_id']}")
    return 0


def _cmd_image_wheels(args: argparse.Namespace) -> int:
    from rice_mlops.wheels import download_wheels

    wheels = download_wheels(args.dest, machine=args.machine)
    print(f"{len(wheels)} serving wheels for {args.machine or 'this machine'} in {args.dest}; "
          "point RICE_SERVING_WHEELHOUSE at this directory on hosts without index access")
    return 0


def _current_release(registry, name: str, key) -> tuple[int | None, str]:
    """The signed model version of what the repository's `latest` tag names (None when
    there is no `latest`): the minimum an image must reach unless a rollback is named."""
    from rice_mlops.attestation import VerificationError, signed_release
    from rice_mlops.oci import RegistryError

    try:
        digest = registry.manifest(name, "latest")[2]
    except RegistryError:
        return None, "no `latest` tag: not checked for being older"
    try:
        version = signed_release(registry, name, digest, key)["model_version"]
    except VerificationError as exc:
        raise VerificationError(f"`latest` names {digest}, which does not verify ({exc}): "
                                "what the current release is cannot be told; pass "
                                "--min-version N") from None
    if not re.fullmatch(r"[0-9]{1,18}", str(version or "")):
        raise VerificationError(f"`latest` ({digest}) carries no model version number; pass "
                                "--min-version N")
    return int(version), f"`latest` is v{version} ({digest})"


def _cmd_image_verify(args: argparse.Namespace) -> int:
    from rice_mlops.attestation import VerificationError, verify_image
    from rice_mlops.oci import Registry, split_reference
    from rice_mlops.signing import load_public_key

    host, name, digest = split_reference(args.image)
    key = load_public_key(args.key.read_bytes())
    from rice_mlops.tool_settings import ToolSettings

    tools = ToolSettings.from_env()  # credentials from the environment only, never argv
    with Registry(host, tools.registry_username, tools.registry_password) as registry:
        try:
            minimum, how = args.min_version, f"--min-version {args.min_version}"
            if minimum is None:
                minimum, how = _current_release(registry, name, key)
            report = verify_image(registry, name, digest, key,
                                  expected_commit=args.expected_commit, min_version=minimum,
                                  rollback_to=args.rollback_to)
        except VerificationError as exc:
            print(f"NOT VERIFIED {args.image}: {exc}", file=sys.stderr)
            return 1
    print(json.dumps({**report, "release_order": f"{report['release_order']} ({how})"},
                     indent=2, sort_keys=True))
    print(f"VERIFIED {args.image}: signed by key {args.key}, model v{report['model_version']} "
          f"from MLflow run {report['mlflow_run_id']} at commit "
          f"{report['source_commit'] or '(none)'}", file=sys.stderr)
    return 0


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    from rice_mlops.signing import PRIVATE_KEY_FILE, generate_keypair

    if (args.dir / PRIVATE_KEY_FILE).exists():
        print(f"{args.dir / PRIVATE_KEY_FILE} exists: kept (a key that signed released images "
              "is never replaced here)")
        return 0 if args.if_missing else 1
    private, public = generate_keypair(args.dir)
    print(f"private key {private} (0600: point RICE_SIGNING_KEY_FILE at it on the release "
          f"worker alone); public key {public} (for `image verify`)")
    return 0


def _cmd_webhook_send(args: argparse.Namespace) -> int:
    from rice_mlops import readers
    from rice_mlops.webhook.send import push_payload, send

    secret = args.secret or readers.secret(os.environ, "GITHUB_WEBHOOK_SECRET")
    if not secret:
        raise ValueError("no secret: pass --secret or set GITHUB_WEBHOOK_SECRET")
    payload = (push_payload(args.ref, args.sha, args.repository) if args.event == "push"
               else {"zen": "Keep it logically awesome.", "hook_id": 1})
    response = send(args.url, secret, payload, event=args.event, delivery=args.delivery)
    print(f"{response.status_code} {response.text}")
    return 0 if response.status_code < 400 else 1


def _cmd_serving_restore(args: argparse.Namespace) -> int:
    import docker.errors

    from rice_mlops.rollout import state as st
    from rice_mlops.rollout.engine import DeployError, Engine
    from rice_mlops.rollout.rollout import Plan, Rollout, RolloutRefused
    from rice_mlops.settings import PipelineSettings
    from rice_mlops.stages.serving import layout, verify_recorded

    settings = PipelineSettings.from_env()
    serving = layout(settings)
    try:  # nothing recorded: nothing to start, and no engine needed (a worker's first start)
        recorded = st.load(serving.state_file)
    except st.StateError as exc:
        print(f"error: nothing restored: {exc}", file=sys.stderr)
        return 1
    if recorded.stable is None and recorded.candidate is None:
        print(f"nothing to restore: {serving.state_file} records no deployment")
        return 0
    try:
        engine = Engine(settings.docker_socket, serving)
    except docker.errors.DockerException as exc:
        print(f"error: nothing restored: the Docker engine at {settings.docker_socket} does "
              f"not answer ({exc}); start it, then run this again", file=sys.stderr)
        return 1
    try:
        # Only stable is started again (a half-done candidate is rolled back): it must verify
        # as roll_out verified it before it served, whoever wrote the state file since.
        if recorded.stable is not None:
            verify_recorded(settings, recorded.stable)
        state = Rollout(engine, Plan(), ()).restore()
    except ValueError as exc:
        print(f"error: nothing restored: {exc}", file=sys.stderr)
        return 1
    except (DeployError, RolloutRefused, st.StateError, docker.errors.DockerException) as exc:
        print(f"error: nothing restored: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.close()
    if state.stable is None:
        print(f"nothing to restore: {serving.state_file} records no deployment")
        return 0
    print(f"serving v{state.stable.model_version} ({state.stable.reference}) from slot "
          f"{state.stable.slot} at http://127.0.0.1:{serving.proxy_port}")
    return 0


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

    from rice_mlops.settings import PipelineSettings

    return {f.name: f.default for f in fields(PipelineSettings)}[field]


def build_parser() -> argparse.ArgumentParser:
    """The parser; it reads no environment, so `--help` works whatever RICE_* holds (the
    settings are read when a command runs, and a bad one is named then)."""
    from functools import partial

    from rice_mlops.config import ARCHITECTURES, TrainConfig

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
    synth.set_defaults(func=_cmd_synth)

    check = sub.add_parser("validate", help="check a dataset and print its fingerprint")
    check.add_argument("--data-dir", type=Path, required=True,
                       help="the dataset: split layout (train/val/test/<class>) or one folder "
                            "per class")
    check.add_argument("--min-per-class", type=int, default=TrainConfig.min_per_class,
                       help="refuse a class with fewer images")
    check.set_defaults(func=_cmd_validate)

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
    fit.set_defaults(func=_cmd_train)

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
    build.set_defaults(func=_cmd_image_build)
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
    verify.set_defaults(func=_cmd_image_verify)
    wheels = image.add_parser("wheels", help="download the serving image's wheels into a "
                              "directory, for workers that cannot reach the package index")
    wheels.add_argument("--dest", type=Path, required=True, help="directory to download into")
    wheels.add_argument("--machine", help="image architecture, e.g. x86_64 or aarch64 "
                        "(default: this machine's)")
    wheels.set_defaults(func=_cmd_image_wheels)

    serving = sub.add_parser("serving", help="what the rollout serves").add_subparsers(
        dest="serving_command", required=True)
    serving.add_parser = partial(serving.add_parser, formatter_class=_Help)
    restore = serving.add_parser("restore", help="start the proxy and the stable container "
                                 "that RICE_RELEASE_DIR/serving/state.json records, if they "
                                 "are gone (the release zone's settings and Docker socket)")
    restore.set_defaults(func=_cmd_serving_restore)

    keys = sub.add_parser("keys", help="the pipeline's signing key").add_subparsers(
        dest="keys_command", required=True)
    keys.add_parser = partial(keys.add_parser, formatter_class=_Help)
    generate = keys.add_parser("generate", help="a new Ed25519 pair: DIR/signing.key (0600, "
                               "never overwritten) and DIR/signing.pub")
    generate.add_argument("--dir", type=Path, required=True, help="directory of the pair")
    generate.add_argument("--if-missing", action="store_true",
                          help="exit 0 when DIR already holds a key (for scripts)")
    generate.set_defaults(func=_cmd_keys_generate)

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
    deliver.set_defaults(func=_cmd_webhook_send)
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
