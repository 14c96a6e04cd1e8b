"""Release: the serving image built from checked bytes, signed, attested, and `champion` moved.

Every task here runs on the Docker queue (RICE_DOCKER_QUEUE), the release zone, whose worker
alone holds the engine socket, the registry connection and the signing key; the exception is
`record_image`, which only writes the pushed digest to MLflow and runs on the default worker.
The build, smoke test and push themselves are DockerOperators (`rice_mlops.stages.docker_tasks`). No
Python model is loaded here (no MLflow pyfunc, no pickle): only `model.tflite` and
`labels.json`, checked against the digests recorded at training (`rice_mlops.release.intake`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rice_mlops.core.handoffs import (
    BuildContext,
    Dataset,
    Gate,
    Image,
    Promoted,
    Staged,
    Trained,
)
from rice_mlops.core.run_policy import RunRequest
from rice_mlops.core.settings import PipelineSettings
from rice_mlops.core.vocabulary import DAG_ID, MODEL_NAME, PROMOTED_BY_TAG
from rice_mlops.release import ledger as release_ledger
from rice_mlops.release.image import run_image_plan
from rice_mlops.stages.common import (
    checked_handoffs,
    checked_request,
    dataset_dir,
    staged_dir,
    training_digests,
)
from rice_mlops.stages.connections import airflow_rest, registry_api, registry_host

log = logging.getLogger(__name__)


def pipeline_signing_key(settings: PipelineSettings):
    """The pipeline's signing key; a missing or bad key fails the task without retry."""
    from rice_mlops.release.signing import SigningKeyError, signing_key

    try:
        return signing_key(settings.signing_key_file)
    except SigningKeyError as exc:  # no retry creates a key
        raise AirflowFailException(str(exc)) from None


def record_refusal(reason: str) -> None:
    """Why the release zone measured the bytes below the bar, for the report's note."""
    from airflow.sdk import get_current_context

    from rice_mlops.publication.outcome import REFUSAL_KEY

    try:
        ti = get_current_context()["ti"]
    except RuntimeError:  # called outside a task (tests, the CLI): nothing to record on
        return
    ti.xcom_push(key=REFUSAL_KEY, value=reason[:2000])


@checked_handoffs
def prepare_image_context(settings: PipelineSettings, params: Mapping, data: Dataset,
                          trained: Trained, gate: Gate, dag_run_id: str) -> BuildContext:
    """The release zone's build context: the Dockerfile and server from this worker's own
    package, the model as two files checked against the digests the train task recorded,
    measured with LiteRT on the test split (below the bar: nothing is built). No Python model
    is loaded here (no MLflow pyfunc, no pickle): `rice_mlops.release.intake`. First, the run's
    approval as Airflow recorded it, read with this zone's own account
    (`rice_mlops.release.approval_check`): an approval a task's token wrote builds nothing."""
    from rice_mlops.core import model_registry as registry
    from rice_mlops.monitoring import references
    from rice_mlops.monitoring.drift import DriftReferenceError
    from rice_mlops.release.approval_check import check_approval
    from rice_mlops.release.image import (
        DEFAULT_BASE_IMAGE,
        RUNTIME_PURGED,
        image_metadata,
        prepare_context,
    )
    from rice_mlops.release.intake import (
        DRIFT_REFERENCE,
        BelowBar,
        ReleaseInputError,
        read_classes,
        smoke_set,
    )
    from rice_mlops.release.sbom import debian_components, read_base_image

    if not Path(settings.docker_socket).exists():
        raise AirflowSkipException(
            f"no Docker engine at {settings.docker_socket}: image stages skipped, so nothing "
            "is shipped (set DOCKER_HOST or RICE_DOCKER_SOCKET, or start an engine)")
    request = checked_request(settings, params)
    refused = check_approval(airflow_rest(settings.release_api_conn_id), settings, request,
                             dag_run_id)
    if refused:  # no retry changes who answered
        record_refusal(refused)
        raise AirflowFailException(refused)
    run_id = trained.run_id
    digests = training_digests(trained)
    plan = run_image_plan(trained, settings, request.source_commit,
                              registry_host(settings.registry_conn_id))
    metadata = image_metadata(model_name=MODEL_NAME, model_version=gate.version,
                              run_id=run_id, source_commit=request.source_commit,
                              dataset_fingerprint=trained.dataset_fingerprint,
                              image_size=trained.image_size)
    base = settings.base_image or DEFAULT_BASE_IMAGE
    dpkg_status, base_id = read_base_image(settings.docker_socket, base)
    # Only model.tflite and labels.json are taken from the staged directory, and only once
    # their copies match the digests recorded at training.
    source = trained.staged_dir(settings)
    try:
        classes = read_classes(source / "labels.json")
        prepare_context(source, plan.context, metadata=metadata, digests=digests,
                        smoke_from=smoke_set(dataset_dir(settings, request), classes),
                        min_test_accuracy=request.min_test_accuracy,
                        min_class_recall=settings.min_class_recall,
                        wheel_cache=settings.release_root / "wheels",
                        wheelhouse=Path(settings.wheelhouse) if settings.wheelhouse else None,
                        signing_key=pipeline_signing_key(settings),
                        model_card=trained.model_card(settings).read_text(),
                        base_image=(base, base_id),
                        base_packages=debian_components(dpkg_status,
                                                        purged=RUNTIME_PURGED))
    except BelowBar as exc:  # a decision, and the run's note names it (stages.report)
        record_refusal(str(exc))
        raise AirflowFailException(str(exc)) from None
    except ReleaseInputError as exc:  # no retry changes the bytes or the figures
        raise AirflowFailException(str(exc)) from None
    try:  # what the monitoring compares this version's logs with: measured here, kept here
        references.keep(plan.context / "smoke" / DRIFT_REFERENCE, settings.release_root,
                        gate.version)
    except DriftReferenceError as exc:
        raise AirflowFailException(str(exc)) from None
    # What the later release tasks of this DAG run may act for (rice_mlops.release.ledger).
    release_ledger.record(settings.release_root, dag_run_id, mlflow_run_id=run_id,
                          model_version=str(gate.version))
    registry.log_sbom(run_id, gate.version, plan.context / "evidence" / "sbom.cdx.json")
    log.info("build context ready in %s for %s", plan.context, plan.names.immutable)
    return plan.handoff()


@checked_handoffs
def record_image(settings: PipelineSettings, trained: Trained, gate: Gate, plan: BuildContext,
                 pushed: str | None) -> Image:
    """The digest push.sh reported, recorded on the MLflow run and model version."""
    from rice_mlops.core import model_registry as registry
    from rice_mlops.release.image import parse_pushed_digest

    image = Image(image=plan.image, latest=plan.latest,
                  **parse_pushed_digest(pushed, plan.repository))
    registry.tag_image(trained.run_id, gate.version, image.as_dict())
    log.info("pushed %s and %s as %s", image.image, image.latest, image.digest_ref)
    return image


def checked_ledger(settings: PipelineSettings, dag_run_id: str | None, mlflow_run_id: str,
                   model_version: str | None = None) -> None:
    """`release_ledger.check`, a mismatch failing the task for good (no retry changes it)."""
    try:
        release_ledger.check(settings.release_root, dag_run_id, mlflow_run_id=mlflow_run_id,
                             model_version=model_version)
    except release_ledger.LedgerMismatch as exc:
        raise AirflowFailException(str(exc)) from None


def registry_client(settings: PipelineSettings):
    """A registry client with the connection's credentials (kept in memory, never logged)."""
    from airflow.sdk import BaseHook

    from rice_mlops.release.oci import Registry

    host = registry_host(settings.registry_conn_id)
    if host is None:
        raise AirflowSkipException(f"no Airflow connection {settings.registry_conn_id!r}")
    conn = BaseHook.get_connection(settings.registry_conn_id)
    api = registry_api(settings.registry_conn_id) or host
    return host, Registry(api, conn.login or "", conn.password or "")


@checked_handoffs
def attest_image(settings: PipelineSettings, params: Mapping, trained: Trained,
                 image: Image | None, dag_run_id: str) -> Image:
    """Sign the pushed digest and attach provenance, SBOM and signature to it.

    Only a digest whose image config is this run's own smoke-tested build (the local build
    tag's image id) is signed: a digest patched into XCom, or an image that replaced ours
    under the commit tag, is refused.
    """
    import json

    import docker
    from rice_mlops.core import model_registry as mlflow_registry
    from rice_mlops.core.staged_artifacts import verify_manifest
    from rice_mlops.release.attestation import attach_evidence, lock_digests, provenance
    from rice_mlops.release.image import REPO_ROOT
    from rice_mlops.release.oci import RegistryError

    if image is None or not image.digest:
        raise AirflowSkipException("no image was pushed: nothing to attest")
    request = checked_request(settings, params)
    run_id = trained.run_id
    checked_ledger(settings, dag_run_id, run_id)
    host, client = registry_client(settings)
    plan = run_image_plan(trained, settings, request.source_commit, host)
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
        if digest != image.digest or json.loads(raw)["config"]["digest"] != local_id:
            raise AirflowFailException(
                f"{plan.names.immutable} resolves to {digest} (config "
                f"{json.loads(raw)['config']['digest']}), not to this run's build {local_id} "
                f"pushed as {image.digest}: not signing it")
        metadata = json.loads((plan.context / "model" / "metadata.json").read_text())
        sbom = (plan.context / "evidence" / "sbom.cdx.json").read_bytes()
        base = {p["name"]: p["value"] for p in json.loads(sbom)["metadata"]["properties"]}
        statement = provenance(
            repository=plan.names.repository, image_digest=digest,
            source_commit=request.source_commit, source_repository=request.source_repository,
            dataset_fingerprint=metadata["dataset_fingerprint"], mlflow_run_id=run_id,
            tracking_uri=trained.tracking_uri,
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
            private_key=pipeline_signing_key(settings))
    tags = {kind: result[kind]["tag"] for kind in ("signature", "provenance", "sbom")}
    mlflow_registry.log_attestation(run_id, metadata["model_version"],
                                    result["provenance_envelope"], tags)
    log.info("attached to %s@%s: %s", plan.names.repository, digest, tags)
    return replace(image, attachments=tags)


def verify_pushed(settings: PipelineSettings, request: RunRequest, trained: Trained,
                  image: Image, version: str | None = None,
                  champion_version: str | None = None) -> dict:
    """The checks of `rice-mlops image verify`, plus: the digest is this run's (provenance:
    MLflow run, source commit, model `version`), not older than the champion this pipeline
    recorded unless RICE_ROLLBACK_TO_VERSION names it, and the commit tag still names it.
    Raises AirflowFailException when any fails."""
    from rice_mlops.release.attestation import VerificationError, verify_image
    from rice_mlops.release.oci import RegistryError, split_reference
    from rice_mlops.release.signing import load_public_key, public_pem

    run_id = trained.run_id
    host, client = registry_client(settings)
    where, name, digest = split_reference(image.digest_ref)
    if (where, name) != (host, settings.image_name) or image.digest != digest:
        raise AirflowFailException(f"{image.digest_ref!r} is not an image of "
                                   f"{host}/{settings.image_name}")
    public = load_public_key(public_pem(pipeline_signing_key(settings)))
    tag = run_image_plan(trained, settings, request.source_commit, host).names.tag
    minimum = int(champion_version) if str(champion_version or "").isdigit() else None
    rollback = settings.rollback_to_version
    with client:
        try:
            # The tag first: when it has moved, that is the news, whatever else fails after.
            current = client.manifest(name, tag)[2]
            if current != digest:
                raise AirflowFailException(
                    f"{image.image} now names {current}, not the pushed {digest}: someone "
                    "moved the tag; champion stays")
            report = verify_image(client, name, digest, public,
                                  expected_commit=request.source_commit, min_version=minimum,
                                  rollback_to=int(rollback) if rollback else None)
        except (VerificationError, RegistryError) as exc:
            raise AirflowFailException(f"{image.digest_ref} does not verify: {exc}") from None
    if report["mlflow_run_id"] != run_id:
        raise AirflowFailException(f"{image.digest_ref} was built from MLflow run "
                                   f"{report['mlflow_run_id']}, not {run_id}")
    if version is not None and str(report.get("model_version")) != str(version):
        raise AirflowFailException(f"{image.digest_ref} is signed as model "
                                   f"v{report.get('model_version')}, not this run's v{version}")
    return report


def may_promote_without_image(settings: PipelineSettings, registry_configured: bool) -> bool:
    """Whether `champion` may move to a version no pushed image serves."""
    if settings.promote_without_image == "auto":
        return not registry_configured
    return settings.promote_without_image == "true"


@checked_handoffs
def promote(settings: PipelineSettings, params: Mapping, data: Dataset, trained: Trained,
            staged: Staged, gate: Gate, image: Image | None, dag_run_id: str,
            champion_events: Iterable, champion_event=None) -> Promoted:
    """Verify the pushed image, then move `champion`; the record goes on `champion_event` (the
    model asset's outlet event: the next gate reads it back) and is returned."""
    from rice_mlops.compute.champion import latest_record
    from rice_mlops.core import model_registry as registry
    from rice_mlops.core.staged_artifacts import read_manifest

    if image is None or not image.digest:
        configured = registry_host(settings.registry_conn_id) is not None
        if not may_promote_without_image(settings, configured):
            raise AirflowSkipException(
                "no image was pushed, so champion stays where it is (RICE_PROMOTE_WITHOUT_"
                f"IMAGE={settings.promote_without_image}, registry connection "
                f"{'configured' if configured else 'absent'})")
        log.warning("promoting v%s without an image (RICE_PROMOTE_WITHOUT_IMAGE=%s)",
                    gate.version, settings.promote_without_image)
    else:
        # The minimum is the champion this pipeline recorded (Airflow's asset events), not
        # MLflow's alias nor the gate's XCom: both can be rewritten from outside the release.
        record = latest_record(champion_events, DAG_ID)
        report = verify_pushed(settings, checked_request(settings, params), trained, image,
                               version=str(gate.version),
                               champion_version=record.version if record else None)
        checked_ledger(settings, dag_run_id, trained.run_id, gate.version)
        log.info("verified %s: signature, provenance (run %s, commit %s, %s) and SBOM",
                 image.digest_ref, report["mlflow_run_id"], report["source_commit"],
                 report.get("release_order"))
    tflite_sha256 = read_manifest(staged_dir(settings, trained))["model.tflite"]
    if tflite_sha256 != staged.tflite_sha256:
        raise AirflowFailException("the staged TFLite file changed since fetch_artifacts")
    registry.promote(gate.version, tags={PROMOTED_BY_TAG: dag_run_id})
    # The trusted record of the champion: the next gate compares against this, not MLflow.
    record = Promoted(mlflow_run_id=trained.run_id, model_version=gate.version,
                      test_accuracy=gate.test_accuracy,  # measured by the gate, not reported
                      dataset_fingerprint=data.fingerprint, classes=tuple(trained.classes),
                      tflite_sha256=tflite_sha256, code_digest=trained.code_digest,
                      image=image.digest_ref if image else None,
                      image_digest=image.digest if image else None)
    if champion_event is not None:
        champion_event.extra = record.as_dict()  # an asset event's extra is plain JSON
    return record


@checked_handoffs
def prune_old_builds(settings: PipelineSettings, trained: Trained) -> dict:
    """Staging, build contexts and local tags of all but the newest RICE_KEEP_BUILDS runs."""
    from dataclasses import asdict

    from rice_mlops.release.housekeeping import prune

    current = trained.run_id
    report = prune(settings.staging_root, keep=settings.keep_builds, current=current,
                   image_name=settings.image_name, docker_socket=Path(settings.docker_socket))
    if settings.release_root.is_dir():  # the build contexts, in the release zone's directory
        import shutil

        from rice_mlops.release.housekeeping import stale_run_dirs

        for run_dir in stale_run_dirs(settings.release_root, settings.keep_builds, current):
            shutil.rmtree(run_dir, ignore_errors=True)
    log.info("kept %d runs; removed %d directories and %d local tags: %s", len(report.kept),
             len(report.removed_dirs), len(report.removed_tags),
             report.removed_dirs + report.removed_tags)
    return asdict(report)
