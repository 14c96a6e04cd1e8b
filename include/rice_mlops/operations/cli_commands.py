"""What each `rice-mlops` command does (rice_mlops.operations.cli parses the command line and calls
one of these); each composes library functions and returns the exit status."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path


def cmd_synth(args: argparse.Namespace) -> int:
    from rice_mlops.compute.data.synth import generate

    counts = generate(args.out, args.per_class, args.seed)
    total = sum(n for by_class in counts.values() for n in by_class.values())
    print(f"wrote {total} synthetic images to {args.out}: {json.dumps(counts)}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from rice_mlops.compute.data import validate
    from rice_mlops.core.fingerprint import fingerprint

    dataset = validate(args.data_dir, min_per_class=args.min_per_class)
    print(json.dumps({"layout": dataset.layout, "classes": dataset.classes,
                      "counts": dataset.counts(), "fingerprint": fingerprint(dataset)}, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from rice_mlops.compute.training_config import TrainConfig
    from rice_mlops.compute.training_run import train

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

    from rice_mlops.core.staged_artifacts import MODEL_BYTES, manifest_digests, recorded_digests
    from rice_mlops.core.vocabulary import RUN_MANIFEST_ARTIFACT

    manifest = mlflow.artifacts.load_text(f"runs:/{run_id}/{RUN_MANIFEST_ARTIFACT}")
    digests = recorded_digests({"artifact_sha256": manifest_digests(manifest)})
    target.mkdir(parents=True, exist_ok=True)
    for artifact, name in MODEL_BYTES.items():
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact,
                                                         dst_path=str(target / ".download")))
        local.replace(target / name)
    return digests


def cmd_image_build(args: argparse.Namespace) -> int:
    import shutil
    import subprocess

    from rice_mlops.core import model_registry as registry
    from rice_mlops.core.settings import PipelineSettings
    from rice_mlops.core.vocabulary import FINGERPRINT_TAG, MODEL_NAME, SOURCE_TAGS
    from rice_mlops.release.image import (
        ImageNames,
        build_args,
        build_command,
        image_metadata,
        prepare_context,
    )
    from rice_mlops.release.intake import read_classes, smoke_set
    from rice_mlops.release.signing import load_private_key

    settings = PipelineSettings.from_env()  # here, not in the parser: --help works regardless
    for option, field in (("base_image", "base_image"), ("build_image", "build_image"),
                          ("min_test_accuracy", "min_test_accuracy"),
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
    command = build_command(context, names,
                            build_args(metadata, args.base_image, args.build_image))
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


def cmd_image_wheels(args: argparse.Namespace) -> int:
    from rice_mlops.release.wheels import download_wheels

    wheels = download_wheels(args.dest, machine=args.machine)
    print(f"{len(wheels)} serving wheels for {args.machine or 'this machine'} in {args.dest}; "
          "point RICE_SERVING_WHEELHOUSE at this directory on hosts without index access")
    return 0


def _current_release(registry, name: str, key) -> tuple[int | None, str]:
    """The signed model version of what the repository's `latest` tag names (None when
    there is no `latest`): the minimum an image must reach unless a rollback is named."""
    from rice_mlops.release.attestation import VerificationError, signed_release
    from rice_mlops.release.oci import RegistryError

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


def cmd_image_verify(args: argparse.Namespace) -> int:
    from rice_mlops.release.attestation import VerificationError, verify_image
    from rice_mlops.release.oci import Registry, split_reference
    from rice_mlops.release.signing import load_public_key

    host, name, digest = split_reference(args.image)
    key = load_public_key(args.key.read_bytes())
    from rice_mlops.operations.tool_settings import ToolSettings

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


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from rice_mlops.release.signing import PRIVATE_KEY_FILE, generate_keypair

    if (args.dir / PRIVATE_KEY_FILE).exists():
        print(f"{args.dir / PRIVATE_KEY_FILE} exists: kept (a key that signed released images "
              "is never replaced here)")
        return 0 if args.if_missing else 1
    private, public = generate_keypair(args.dir)
    print(f"private key {private} (0600: point RICE_SIGNING_KEY_FILE at it on the release "
          f"worker alone); public key {public} (for `image verify`)")
    return 0


def cmd_webhook_send(args: argparse.Namespace) -> int:
    from rice_mlops.core import readers
    from rice_mlops.ingress.send import push_payload, send

    secret = args.secret or readers.secret(os.environ, "GITHUB_WEBHOOK_SECRET")
    if not secret:
        raise ValueError("no secret: pass --secret or set GITHUB_WEBHOOK_SECRET")
    payload = (push_payload(args.ref, args.sha, args.repository) if args.event == "push"
               else {"zen": "Keep it logically awesome.", "hook_id": 1})
    response = send(args.url, secret, payload, event=args.event, delivery=args.delivery)
    print(f"{response.status_code} {response.text}")
    return 0 if response.status_code < 400 else 1


def cmd_serving_restore(args: argparse.Namespace) -> int:
    import docker.errors

    from rice_mlops.core.settings import PipelineSettings
    from rice_mlops.release.rollout import state as st
    from rice_mlops.release.rollout.driver import Plan, Rollout, RolloutRefused
    from rice_mlops.release.rollout.engine import DeployError, Engine
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
