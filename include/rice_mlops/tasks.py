"""One function per DAG task: the glue between Airflow's context and the library.

Each takes the deployment's settings, the run's params (checked again by the run policy) and
the upstream tasks' return values, and returns what the next tasks need. XCom values are data:
ids are checked, paths are derived from settings and checked ids, and nothing read from XCom
or conf is executed. Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rice_mlops.run_policy import PolicyError, RunRequest, checked_run_id, run_request
from rice_mlops.settings import PipelineSettings
from rice_mlops.vocabulary import DAG_ID, MODEL_NAME, PROMOTED_BY_TAG

log = logging.getLogger(__name__)


def _request(params: Mapping, settings: PipelineSettings) -> RunRequest:
    try:
        return run_request(params, settings)
    except PolicyError as exc:  # a retry cannot make the conf acceptable
        raise AirflowFailException(f"run refused by the deployment's policy: {exc}") from None


def _dataset_dir(request: RunRequest, settings: PipelineSettings) -> Path:
    from rice_mlops.data.synth import ensure_synthetic

    return request.data_dir or ensure_synthetic(settings.synthetic_root)


def validate_data(settings: PipelineSettings, params: Mapping) -> dict:
    from rice_mlops.data import DataValidationError, validate
    from rice_mlops.data.fingerprint import fingerprint

    data_dir = _dataset_dir(_request(params, settings), settings)
    try:
        dataset = validate(data_dir)
    except DataValidationError as exc:  # every problem at once; retrying changes nothing
        raise AirflowFailException(str(exc)) from None
    counts = dataset.counts()
    log.info("dataset %s valid: %s", data_dir, counts)
    return {"data_dir": str(data_dir), "fingerprint": fingerprint(dataset),
            "classes": dataset.classes, "counts": counts}


def _yield_cpu(nice: int) -> None:
    """Lower this task process to nice level `nice` (threads it starts later inherit it), so
    a training on shared cores does not starve the webhook or the scheduler."""
    current = os.nice(0)
    if current < nice:
        os.nice(nice - current)
        log.info("training at nice %d (RICE_TRAIN_NICE)", nice)


def train(settings: PipelineSettings, params: Mapping, data: Mapping, dag_run_id: str) -> dict:
    _yield_cpu(settings.train_nice)  # first: TensorFlow's thread pools inherit the level
    from rice_mlops.config import TrainConfig
    from rice_mlops.data import discover
    from rice_mlops.training import train_once

    request = _request(params, settings)
    # The directory comes from the policy again, not from XCom: validate_data checked it.
    data_dir = _dataset_dir(request, settings)
    if str(data_dir) != data["data_dir"]:
        raise AirflowFailException(f"validate_data checked {data['data_dir']!r}, but this run "
                                   f"resolves to {str(data_dir)!r}: clear validate_data too")
    config = TrainConfig(data_dir=data_dir, epochs=request.epochs,
                         image_size=request.image_size, batch_size=request.batch_size,
                         experiment=settings.experiment, source=request.source())
    result = train_once(config, dag_run_id, validated=(discover(data_dir), data["fingerprint"]))
    keep = ("run_id", "model_uri", "model_id", "experiment_id", "tracking_uri",
            "image_size", "classes", "metrics", "dataset_fingerprint", "epochs_run",
            "code_digest", "artifact_sha256")
    return {key: result[key] for key in keep}


def fetch_artifacts(settings: PipelineSettings, trained: Mapping) -> dict:
    from rice_mlops.artifacts import fetch, read_manifest

    staged = fetch(checked_run_id(trained["run_id"]), trained["model_uri"],
                   settings.staging_root)
    files = read_manifest(staged)  # fetch() verified them
    log.info("staged %d files in %s", len(files), staged)
    return {"staging_dir": str(staged), "files": len(files),
            "tflite_sha256": files["model.tflite"]}


def _staged_dir(settings: PipelineSettings, trained: Mapping) -> Path:
    from rice_mlops.artifacts import ARTIFACT_DIR, verify_manifest

    staged = settings.staging_root / checked_run_id(trained["run_id"]) / ARTIFACT_DIR
    verify_manifest(staged)
    return staged


def quality_gate(settings: PipelineSettings, params: Mapping, trained: Mapping, data: Mapping,
                 champion_events: Iterable) -> dict:
    from rice_mlops import registry
    from rice_mlops.champion import (
        ChampionMismatch,
        champion_predictions,
        latest_record,
        tflite_predictions,
    )
    from rice_mlops.data import discover
    from rice_mlops.gate import decide

    request = _request(params, settings)
    run_id = checked_run_id(trained["run_id"])
    staged = _staged_dir(settings, trained)
    _check_trained_bytes(staged / "model.tflite", trained)
    version = registry.register(run_id, trained["model_uri"])
    record = latest_record(champion_events, DAG_ID)
    alias = registry.alias_version()
    notes = []
    if alias is not None and (record is None or alias != record.version):
        notes.append(f"MLflow's @champion points at v{alias}, which this pipeline did not "
                     f"promote{f' (it promoted v{record.version})' if record else ''}: ignored")
        log.warning(notes[-1])
    # Both models answer the same test images through the same interpreter: the challenger
    # from its staged (manifest-checked) TFLite file, the one that ships.
    dataset = discover(Path(data["data_dir"]))
    paths, labels = dataset.examples("test")
    predictions = tflite_predictions(staged / "model.tflite", paths)
    champion, how, mismatch = None, "no champion recorded by this pipeline yet", None
    if record is not None and record.version != version:
        try:
            champion, how = champion_predictions(record, data["fingerprint"], dataset.classes,
                                                 paths)
        except ChampionMismatch as exc:
            mismatch = str(exc)
    # The bar is held against the accuracy of these predictions (decide measures it), not
    # against the number training reported in XCom.
    result = decide(trained["metrics"]["test_accuracy"],
                    min_test_accuracy=request.min_test_accuracy,
                    max_regression=request.max_regression,
                    champion_version=record.version if champion is not None else None,
                    classes=dataset.classes, labels=labels, predictions=predictions,
                    champion_predictions=champion, min_class_recall=settings.min_class_recall,
                    alpha=settings.gate_alpha, confidence=settings.gate_confidence)
    passed, reason = result.passed and mismatch is None, result.reason
    if mismatch:
        reason = f"{mismatch}; {reason}"
    document = {**result.as_dict(), "passed": passed, "reason": reason, "version": version,
                "champion_comparison": "; ".join([how, *notes]),
                "champion_record": record.as_dict() if record else None}
    registry.record_gate(run_id, version, passed, reason, details=document)
    document["model_card_sha256"] = _model_card(settings, request, trained, data, staged,
                                                document)
    log.log(logging.INFO if passed else logging.WARNING, "gate %s for v%s: %s (%s)\n%s",
            "PASSED" if passed else "FAILED, NOT SHIPPED", version, reason, how,
            document["table"])
    return document


def _recorded_digests(trained: Mapping) -> dict[str, str]:
    from rice_mlops.release import ReleaseInputError, recorded_digests

    try:
        return recorded_digests(trained)
    except ReleaseInputError as exc:
        raise AirflowFailException(str(exc)) from None


def _check_trained_bytes(tflite: Path, trained: Mapping) -> None:
    """The staged TFLite file is the one training recorded (not only what its manifest says)."""
    from rice_mlops.champion import sha256_of

    recorded = _recorded_digests(trained)["tflite/model.tflite"]
    if (actual := sha256_of(tflite)) != recorded:
        raise AirflowFailException(f"{tflite} has sha256 {actual}, not the {recorded} recorded "
                                   "at training: not gated")


def _evidence_dir(settings: PipelineSettings, trained: Mapping) -> Path:
    return settings.staging_root / checked_run_id(trained["run_id"]) / "evidence"


def _model_card(settings: PipelineSettings, request: RunRequest, trained: Mapping,
                data: Mapping, staged: Path, gate: Mapping) -> str:
    """Render this version's MODEL_CARD.md beside its staged artifacts and log it to MLflow."""
    import hashlib
    import json

    from rice_mlops import model_card, registry

    text = model_card.render(
        model_name=MODEL_NAME, version=gate["version"], run_id=trained["run_id"],
        source_commit=request.source_commit, fingerprint=data["fingerprint"],
        counts=data["counts"], metrics=json.loads((staged / "metrics.json").read_text()),
        gate=gate, confidence=settings.gate_confidence)
    target = _evidence_dir(settings, trained) / model_card.FILE_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    registry.log_model_card(trained["run_id"], gate["version"], text, digest)
    return digest


def _signing_key(settings: PipelineSettings):
    from rice_mlops.signing import SigningKeyError, signing_key

    try:
        return signing_key(settings.signing_key_file)
    except SigningKeyError as exc:  # no retry creates a key
        raise AirflowFailException(str(exc)) from None


def prepare_image_context(settings: PipelineSettings, params: Mapping, trained: Mapping,
                          data: Mapping, gate: Mapping) -> dict:
    """The release zone's build context: the Dockerfile and server from this worker's own
    package, the model as two files checked against the digests the train task recorded,
    measured with LiteRT on the test split (below the bar: nothing is built). No Python model
    is loaded here (no MLflow pyfunc, no pickle): `rice_mlops.release`."""
    from rice_mlops import registry
    from rice_mlops.artifacts import ARTIFACT_DIR
    from rice_mlops.connections import registry_host
    from rice_mlops.image import DEFAULT_BASE_IMAGE, image_metadata, plan_for, prepare_context
    from rice_mlops.model_card import FILE_NAME
    from rice_mlops.release import BelowBar, ReleaseInputError, read_classes, smoke_set
    from rice_mlops.sbom import debian_components, read_base_image

    if not Path(settings.docker_socket).exists():
        raise AirflowSkipException(
            f"no Docker engine at {settings.docker_socket}: image stages skipped, so nothing "
            "is shipped (set DOCKER_HOST or RICE_DOCKER_SOCKET, or start an engine)")
    request = _request(params, settings)
    run_id = checked_run_id(trained["run_id"])
    digests = _recorded_digests(trained)
    plan = plan_for(settings.release_root, settings.image_name, run_id, request.source_commit,
                    registry_host(settings.registry_conn_id))
    metadata = image_metadata(model_name=MODEL_NAME, model_version=gate["version"],
                              run_id=run_id, source_commit=request.source_commit,
                              dataset_fingerprint=trained["dataset_fingerprint"],
                              image_size=trained["image_size"])
    base = settings.base_image or DEFAULT_BASE_IMAGE
    dpkg_status, base_id = read_base_image(settings.docker_socket, base)
    # Only model.tflite and labels.json are taken from the staged directory, and only once
    # their copies match the digests recorded at training.
    source = settings.staging_root / run_id / ARTIFACT_DIR
    try:
        classes = read_classes(source / "labels.json")
        prepare_context(source, plan.context, metadata=metadata, digests=digests,
                        smoke_from=smoke_set(_dataset_dir(request, settings), classes),
                        min_test_accuracy=request.min_test_accuracy,
                        min_class_recall=settings.min_class_recall,
                        wheel_cache=settings.release_root / "wheels",
                        wheelhouse=Path(settings.wheelhouse) if settings.wheelhouse else None,
                        signing_key=_signing_key(settings),
                        model_card=(_evidence_dir(settings, trained) / FILE_NAME).read_text(),
                        base_image=(base, base_id),
                        base_packages=debian_components(dpkg_status))
    except (ReleaseInputError, BelowBar) as exc:  # no retry changes the bytes or the figures
        raise AirflowFailException(str(exc)) from None
    registry.log_sbom(run_id, gate["version"], plan.context / "evidence" / "sbom.cdx.json")
    log.info("build context ready in %s for %s", plan.context, plan.names.immutable)
    return plan.as_dict()


def record_image(trained: Mapping, gate: Mapping, plan: Mapping, pushed: str | None) -> dict:
    from rice_mlops import registry
    from rice_mlops.image import parse_pushed_digest

    image = {"image": plan["image"], "latest": plan["latest"],
             **parse_pushed_digest(pushed, plan["repository"])}
    registry.tag_image(checked_run_id(trained["run_id"]), gate["version"], image)
    log.info("pushed %s and %s as %s", image["image"], image["latest"], image["digest_ref"])
    return image


def open_pull_request(settings: PipelineSettings, params: Mapping, trained: Mapping,
                      gate: Mapping, image: Mapping | None, dag_run_id: str) -> dict:
    import json

    from rice_mlops import publish, registry

    if reason := publish.unusable_connection_reason(settings.github_conn_id):
        raise AirflowSkipException(reason)
    if not settings.github_repository:
        raise AirflowSkipException("no repository: set RICE_GITHUB_REPOSITORY (the pull "
                                   "request goes only to the configured repository)")
    request = _request(params, settings)
    staged = _staged_dir(settings, trained)
    champion = (registry.version_metrics(gate["champion_version"])
                if gate.get("champion_version") else None)
    client = publish.client_from_connection(settings.github_conn_id)
    repository = settings.github_repository
    texts = publish.pull_request_texts(
        version=gate["version"], run_id=trained["run_id"], dag_run_id=dag_run_id,
        metrics=json.loads((staged / "metrics.json").read_text()),
        test_accuracy=gate["test_accuracy"], champion=champion,
        run_url=(f"{trained['tracking_uri']}/#/experiments/{trained['experiment_id']}"
                 f"/runs/{trained['run_id']}"),
        fingerprint=trained["dataset_fingerprint"], source_commit=request.source_commit,
        pusher=request.pusher, compare_url=request.compare_url,
        image=(image or {}).get("digest_ref"),
        figure_url=(f"{publish.web_url(client.api_url)}/{repository}/blob/"
                    f"{settings.pr_branch}/{settings.pr_path}/confusion_matrix.png?raw=true"),
        gate_reason=gate["reason"], gate_table=gate.get("table", ""))
    target = publish.Target(repository=repository, base=settings.pr_base,
                            branch=settings.pr_branch, path=settings.pr_path,
                            author_name=settings.pr_author, author_email=settings.pr_email)
    try:
        files = publish.artifact_files(staged, settings.pr_path)
        card = _evidence_dir(settings, trained) / "MODEL_CARD.md"
        files[f"{settings.pr_path}/{card.name}"] = card.read_bytes()  # what the image holds
        return publish.publish(client, target, files,
                               message=texts["message"], title=texts["title"],
                               body=texts["body"])
    except publish.GitHubAuthError as exc:
        raise AirflowFailException(str(exc)) from None


def _registry(settings: PipelineSettings):
    """A registry client with the connection's credentials (kept in memory, never logged)."""
    from airflow.sdk import BaseHook

    from rice_mlops.connections import registry_host
    from rice_mlops.oci import Registry

    host = registry_host(settings.registry_conn_id)
    if host is None:
        raise AirflowSkipException(f"no Airflow connection {settings.registry_conn_id!r}")
    from rice_mlops.connections import registry_api

    conn = BaseHook.get_connection(settings.registry_conn_id)
    api = registry_api(settings.registry_conn_id) or host
    return host, Registry(api, conn.login or "", conn.password or "")


def attest_image(settings: PipelineSettings, params: Mapping, trained: Mapping,
                 image: Mapping | None, dag_run_id: str) -> dict:
    """Sign the pushed digest and attach provenance, SBOM and signature to it.

    Only a digest whose image config is this run's own smoke-tested build (the local build
    tag's image id) is signed: a digest patched into XCom, or an image that replaced ours
    under the commit tag, is refused.
    """
    import json

    import docker
    from rice_mlops import registry as mlflow_registry
    from rice_mlops.attestation import attach_evidence, lock_digests, provenance
    from rice_mlops.image import REPO_ROOT, plan_for
    from rice_mlops.oci import RegistryError

    if not (image or {}).get("digest"):
        raise AirflowSkipException("no image was pushed: nothing to attest")
    request = _request(params, settings)
    run_id = checked_run_id(trained["run_id"])
    host, client = _registry(settings)
    plan = plan_for(settings.release_root, settings.image_name, run_id, request.source_commit,
                    host)
    from rice_mlops.artifacts import verify_manifest

    verify_manifest(plan.context)
    with client:
        try:
            raw, _, digest = client.manifest(settings.image_name, plan.names.tag)
        except RegistryError as exc:
            raise AirflowFailException(f"cannot read {plan.names.immutable}: {exc}") from None
        engine = docker.APIClient(base_url=f"unix://{settings.docker_socket}", timeout=60)
        try:
            local_id = engine.inspect_image(plan.local)["Id"]
        finally:
            engine.close()
        if digest != image["digest"] or json.loads(raw)["config"]["digest"] != local_id:
            raise AirflowFailException(
                f"{plan.names.immutable} resolves to {digest} (config "
                f"{json.loads(raw)['config']['digest']}), not to this run's build {local_id} "
                f"pushed as {image['digest']}: not signing it")
        metadata = json.loads((plan.context / "model" / "metadata.json").read_text())
        sbom = (plan.context / "evidence" / "sbom.cdx.json").read_bytes()
        base = {p["name"]: p["value"] for p in json.loads(sbom)["metadata"]["properties"]}
        statement = provenance(
            repository=plan.names.repository, image_digest=digest,
            source_commit=request.source_commit, source_repository=request.source_repository,
            dataset_fingerprint=metadata["dataset_fingerprint"], mlflow_run_id=run_id,
            tracking_uri=trained["tracking_uri"],
            tflite_sha256=verify_manifest(plan.context)["model/model.tflite"],
            lock_files=lock_digests(REPO_ROOT), base_image=base["rice-mlops:base-image"],
            base_image_id=base.get("rice-mlops:base-image-id"), dag_id=DAG_ID,
            dag_run_id=dag_run_id, model_version=str(metadata["model_version"]),
            # Measured by the release zone on these bytes, and again inside the image by the
            # smoke test, which refuses to let an image through that does not reproduce it.
            release_measurement=metadata.get("release_measurement"))
        result = attach_evidence(
            client, settings.image_name, digest, provenance_statement=statement, sbom=sbom,
            model_signature=(plan.context / "model" / "model.sig.json").read_bytes(),
            private_key=_signing_key(settings))
    tags = {kind: result[kind]["tag"] for kind in ("signature", "provenance", "sbom")}
    mlflow_registry.log_attestation(run_id, metadata["model_version"],
                                    result["provenance_envelope"], tags)
    log.info("attached to %s@%s: %s", plan.names.repository, digest, tags)
    return {**image, "attachments": tags}


def verify_pushed(settings: PipelineSettings, request: RunRequest, run_id: str,
                  image: Mapping, version: str | None = None,
                  champion_version: str | None = None) -> dict:
    """The checks of `rice-mlops image verify`, plus: the digest is this run's (provenance:
    MLflow run, source commit, model `version`), not older than the champion this pipeline
    recorded unless RICE_ROLLBACK_TO_VERSION names it, and the commit tag still names it.
    Raises AirflowFailException when any fails."""
    from rice_mlops.attestation import VerificationError, verify_image
    from rice_mlops.image import image_names
    from rice_mlops.oci import RegistryError, split_reference
    from rice_mlops.signing import load_public_key, public_pem

    host, client = _registry(settings)
    where, name, digest = split_reference(image["digest_ref"])
    if (where, name) != (host, settings.image_name) or image.get("digest") != digest:
        raise AirflowFailException(f"{image['digest_ref']!r} is not an image of "
                                   f"{host}/{settings.image_name}")
    public = load_public_key(public_pem(_signing_key(settings)))
    tag = image_names(host, settings.image_name, request.source_commit, run_id).tag
    minimum = int(champion_version) if str(champion_version or "").isdigit() else None
    rollback = settings.rollback_to_version
    with client:
        try:
            report = verify_image(client, name, digest, public,
                                  expected_commit=request.source_commit, min_version=minimum,
                                  rollback_to=int(rollback) if rollback else None)
            current = client.manifest(name, tag)[2]
        except (VerificationError, RegistryError) as exc:
            raise AirflowFailException(f"{image['digest_ref']} does not verify: {exc}") from None
    if report["mlflow_run_id"] != run_id:
        raise AirflowFailException(f"{image['digest_ref']} was built from MLflow run "
                                   f"{report['mlflow_run_id']}, not {run_id}")
    if version is not None and str(report.get("model_version")) != str(version):
        raise AirflowFailException(f"{image['digest_ref']} is signed as model "
                                   f"v{report.get('model_version')}, not this run's v{version}")
    if current != digest:
        raise AirflowFailException(f"{image['image']} now names {current}, not the verified "
                                   f"{digest}: someone moved the tag; champion stays")
    return report


def may_promote_without_image(settings: PipelineSettings, registry_configured: bool) -> bool:
    """Whether `champion` may move to a version no pushed image serves."""
    if settings.promote_without_image == "auto":
        return not registry_configured
    return settings.promote_without_image == "true"


def promote(settings: PipelineSettings, trained: Mapping, data: Mapping, staged: Mapping,
            gate: Mapping, image: Mapping | None, dag_run_id: str,
            params: Mapping | None = None, champion_events: Iterable = ()) -> dict:
    from rice_mlops import registry
    from rice_mlops.artifacts import read_manifest
    from rice_mlops.champion import latest_record
    from rice_mlops.connections import registry_host

    if not (image or {}).get("digest"):
        configured = registry_host(settings.registry_conn_id) is not None
        if not may_promote_without_image(settings, configured):
            raise AirflowSkipException(
                "no image was pushed, so champion stays where it is (RICE_PROMOTE_WITHOUT_"
                f"IMAGE={settings.promote_without_image}, registry connection "
                f"{'configured' if configured else 'absent'})")
        log.warning("promoting v%s without an image (RICE_PROMOTE_WITHOUT_IMAGE=%s)",
                    gate["version"], settings.promote_without_image)
    else:
        # The minimum is the champion this pipeline recorded (Airflow's asset events), not
        # MLflow's alias nor the gate's XCom: both can be rewritten from outside the release.
        record = latest_record(champion_events, DAG_ID)
        report = verify_pushed(settings, _request(params, settings),
                               checked_run_id(trained["run_id"]), image,
                               version=str(gate["version"]),
                               champion_version=record.version if record else None)
        log.info("verified %s: signature, provenance (run %s, commit %s, %s) and SBOM",
                 image["digest_ref"], report["mlflow_run_id"], report["source_commit"],
                 report.get("release_order"))
    tflite_sha256 = read_manifest(_staged_dir(settings, trained))["model.tflite"]
    if tflite_sha256 != staged["tflite_sha256"]:
        raise AirflowFailException("the staged TFLite file changed since fetch_artifacts")
    registry.promote(gate["version"], tags={PROMOTED_BY_TAG: dag_run_id})
    # The trusted record of the champion: the next gate compares against this, not MLflow.
    return {"mlflow_run_id": trained["run_id"], "model_version": gate["version"],
            "test_accuracy": gate["test_accuracy"],  # measured by the gate, not reported
            "dataset_fingerprint": data["fingerprint"], "classes": list(trained["classes"]),
            "tflite_sha256": tflite_sha256, "code_digest": trained.get("code_digest"),
            "image": (image or {}).get("digest_ref"),
            "image_digest": (image or {}).get("digest")}


def prune_old_builds(settings: PipelineSettings, trained: Mapping) -> dict:
    from dataclasses import asdict

    from rice_mlops.housekeeping import prune

    current = checked_run_id(trained["run_id"])
    report = prune(settings.staging_root, keep=settings.keep_builds, current=current,
                   image_name=settings.image_name, docker_socket=Path(settings.docker_socket))
    if settings.release_root.is_dir():  # the build contexts, in the release zone's directory
        import shutil

        from rice_mlops.housekeeping import stale_run_dirs

        for run_dir in stale_run_dirs(settings.release_root, settings.keep_builds, current):
            shutil.rmtree(run_dir, ignore_errors=True)
    log.info("kept %d runs; removed %d directories and %d local tags: %s", len(report.kept),
             len(report.removed_dirs), len(report.removed_tags),
             report.removed_dirs + report.removed_tags)
    return asdict(report)


def _run_url(settings: PipelineSettings, dag_run_id: str) -> str:
    from urllib.parse import quote

    return f"{settings.airflow_url}/dags/{DAG_ID}/runs/{quote(dag_run_id, safe='')}"


def _commit_status(settings: PipelineSettings, request: RunRequest, dag_run_id: str,
                   state: str, description: str) -> None:
    """Post the run's state on its commit; nightly runs have none. Best effort: a status
    that cannot be posted is logged with the reason and never fails the run."""
    from rice_mlops import publish
    from rice_mlops.commit_status import post_status

    if not request.source_commit or len(request.source_commit) != 40:
        return
    if reason := publish.unusable_connection_reason(settings.github_conn_id):
        log.info("commit status not posted: %s", reason)
        return
    repository = request.source_repository or settings.github_repository
    try:
        # Bounded well inside the task's timeout: a slow GitHub must not hold the run.
        client = publish.client_from_connection(settings.github_conn_id, timeout=10,
                                                attempts=2)
        post_status(client, repository,
                    request.source_commit, state, description, _run_url(settings, dag_run_id))
        log.info("commit %s of %s: %s (%s)", request.source_commit[:12], repository, state,
                 description)
    except Exception as exc:  # noqa: BLE001 - the answer must not decide the run
        log.warning("commit status %s not posted on %s: %s", state, repository, exc)


def admit(settings: PipelineSettings, params: Mapping, ti) -> dict:
    """Pending on the commit; a queued push superseded by a newer one to its branch stops.

    Clearing any task of a run re-runs this setup task too: a run that has already gone past
    it (a task after it holds a state) is a re-run, never superseded after the fact.
    """
    from rice_mlops.airflow_api import AirflowApi, newer_push

    dag_run_id = ti.run_id
    states = ti.get_task_states(dag_id=DAG_ID, run_ids=[dag_run_id]).get(dag_run_id, {})
    rerun = any(state for task, state in states.items() if task not in ("admit", "report"))

    try:
        request = _request(params, settings)
    except AirflowFailException as exc:  # validate_data fails the run with the reason
        log.warning("%s", exc)
        return {"proceed": True}
    _commit_status(settings, request, dag_run_id, "pending", "training and gating")
    if not request.source_commit or rerun:
        return {"proceed": True}
    api = AirflowApi.from_connection(settings.airflow_api_conn_id)
    if api is None:
        log.info("no Airflow connection %r: superseded pushes are not detected",
                 settings.airflow_api_conn_id)
        return {"proceed": True}
    newer = newer_push(api.run(DAG_ID, dag_run_id), api.recent_runs(DAG_ID))
    if newer:
        log.warning("superseded by %s, a newer push to %s: not trained", newer,
                    request.source_ref)
        return {"proceed": False, "superseded_by": newer}
    return {"proceed": True}


def check_changed(settings: PipelineSettings, params: Mapping, data: Mapping,
                  champion_events: Iterable) -> dict:
    """Whether training could change anything: not when the dataset fingerprint and the
    training code digest equal the recorded champion's (unless `force`)."""
    from rice_mlops.champion import latest_record
    from rice_mlops.code_digest import training_code_digest
    from rice_mlops.config import TrainConfig

    request = _request(params, settings)
    config = TrainConfig(data_dir=Path(data["data_dir"]), epochs=request.epochs,
                         image_size=request.image_size, batch_size=request.batch_size)
    digest = training_code_digest(config.model_params())
    record = latest_record(champion_events, DAG_ID)
    same = (record is not None and record.dataset_fingerprint == data["fingerprint"]
            and record.code_digest == digest)
    if same and not request.force:
        reason = f"same dataset and training code as champion v{record.version}"
        log.info("not training: %s (conf force=true retrains)", reason)
        return {"train": False, "code_digest": digest, "reason": reason}
    return {"train": True, "code_digest": digest,
            "reason": "forced" if same else "dataset or training code changed"}


def report(settings: PipelineSettings, params: Mapping, ti, admission: Mapping | None,
           freshness: Mapping | None, gate: Mapping | None, promoted: Mapping | None,
           approval: Mapping | None = None) -> dict:
    """The run's outcome as a run note, a commit status and, when worth it, an e-mail."""
    from rice_mlops.airflow_api import AirflowApi
    from rice_mlops.outcome import decide_outcome

    dag_run_id = ti.run_id
    states = ti.get_task_states(dag_id=DAG_ID, run_ids=[dag_run_id]).get(dag_run_id, {})
    failed = [task for task, state in states.items() if state == "failed"]
    outcome = decide_outcome(admission=admission, freshness=freshness, gate=gate,
                             promoted=promoted, failed_tasks=failed, approval=approval)
    log.info("outcome: %s", outcome.note)
    try:
        api = AirflowApi.from_connection(settings.airflow_api_conn_id)
        if api is None:
            log.info("no Airflow connection %r: run note not written",
                     settings.airflow_api_conn_id)
        else:
            api.set_note(DAG_ID, dag_run_id, outcome.note)
    except Exception as exc:  # noqa: BLE001 - reporting must not hide the outcome
        log.warning("run note not written: %s", exc)
    try:
        request = _request(params, settings)
    except AirflowFailException:
        request = None
    if request is not None:
        _commit_status(settings, request, dag_run_id, outcome.state, outcome.description)
    if outcome.notify and settings.notify_emails:
        _notify(settings, dag_run_id, outcome)
    return outcome.as_dict()


def _notify(settings: PipelineSettings, dag_run_id: str, outcome) -> None:
    """One e-mail through Airflow's SMTP notifier; its texts are set here, so nothing of the
    run (a reason, a path) is ever rendered as a template."""
    import html

    from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    from airflow.sdk import get_current_context

    url = _run_url(settings, dag_run_id)
    body = (f"<p>{html.escape(outcome.note)}</p><p>Airflow run: <a href=\"{html.escape(url)}\">"
            f"{html.escape(dag_run_id)}</a></p>")
    notifier = SmtpNotifier(to=list(settings.notify_emails), from_email=settings.notify_from,
                            subject=f"[rice-mlops] {outcome.kind}: {dag_run_id}"[:200],
                            html_content=body, smtp_conn_id=settings.smtp_conn_id)
    try:
        notifier.notify(get_current_context())
        log.info("notified %s", ", ".join(settings.notify_emails))
    except Exception as exc:  # noqa: BLE001 - a mail server down must not hide the outcome
        log.warning("notification not sent: %s", exc)


def redeliver_failed_pushes(settings: PipelineSettings) -> list[int]:
    from rice_mlops import publish
    from rice_mlops.redelivery import find_hook, redeliver_failed

    if reason := publish.unusable_connection_reason(settings.github_conn_id):
        raise AirflowSkipException(reason)
    if not settings.github_repository:
        raise AirflowSkipException("no repository: set RICE_GITHUB_REPOSITORY")
    client = publish.client_from_connection(settings.github_conn_id)
    hook = find_hook(client, settings.github_repository, settings.github_hook_id)
    if hook is None:
        raise AirflowSkipException(f"no webhook of {settings.github_repository} points at "
                                   "/webhooks/github (or set RICE_GITHUB_HOOK_ID)")
    return redeliver_failed(client, settings.github_repository, hook)
