"""MLflow Model Registry: one version per training run, the `champion` alias, gate tags."""

from __future__ import annotations

import logging

from rice_mlops.core.vocabulary import (
    BUDGET_TAG,
    CHAMPION_ALIAS,
    DEPLOYED_ALIAS,
    DEPLOYED_TAG,
    DRIFT_REFERENCE_ARTIFACT,
    DRIFT_REFERENCE_TAG,
    GATE_ARTIFACT,
    GATE_DIFFERENCE_TAG,
    GATE_P_VALUE_TAG,
    GATE_REASON_TAG,
    GATE_SIGNIFICANT_TAG,
    GATE_TAG,
    GATE_VERDICT_TAG,
    IMAGE_NAME_TAG,
    IMAGE_TAG,
    MODEL_CARD_ARTIFACT,
    MODEL_CARD_TAG,
    MODEL_NAME,
    PROVENANCE_ARTIFACT,
    RUN_ID_TAG,
    SBOM_ARTIFACT,
    SBOM_DIGEST_TAG,
    SIGNATURE_TAG,
)

log = logging.getLogger(__name__)


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def register(run_id: str, model_uri: str, name: str = MODEL_NAME) -> str:
    """The registry version of this run's model, created once however often it is called."""
    import mlflow

    existing = _client().search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if existing:
        version = min(existing, key=lambda v: int(v.version)).version
        log.info("run %s is already registered as %s v%s", run_id, name, version)
        return version
    version = mlflow.register_model(model_uri, name, tags={RUN_ID_TAG: run_id}).version
    log.info("registered run %s as %s v%s", run_id, name, version)
    return version


def alias_version(name: str = MODEL_NAME, alias: str = CHAMPION_ALIAS) -> str | None:
    """The version MLflow's alias points at (untrusted: only compared with the record)."""
    from mlflow.exceptions import MlflowException

    try:
        return _client().get_model_version_by_alias(name, alias).version
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def gate_tags(passed: bool, reason: str, details: dict | None) -> dict[str, str]:
    """The gate's decision and numbers as tag values (MLflow tags are strings)."""
    tags = {GATE_TAG: "passed" if passed else "failed", GATE_REASON_TAG: reason[:5000]}
    if details:
        significant = details.get("significant")
        tags[GATE_VERDICT_TAG] = str(details.get("verdict"))
        tags[GATE_SIGNIFICANT_TAG] = "none" if significant is None else str(significant).lower()
        if comparison := details.get("comparison"):
            low, high = comparison["interval"]
            tags[GATE_P_VALUE_TAG] = f"{comparison['p_value']:.6g}"
            tags[GATE_DIFFERENCE_TAG] = (f"{comparison['difference']:+.6f} "
                                         f"[{low:+.6f}, {high:+.6f}]")
    return tags


def record_gate(run_id: str, version: str, passed: bool, reason: str,
                name: str = MODEL_NAME, details: dict | None = None) -> None:
    client = _client()
    for key, value in gate_tags(passed, reason, details).items():
        client.set_tag(run_id, key, value)
        client.set_model_version_tag(name, version, key, value)
    if details:
        client.log_dict(run_id, details, GATE_ARTIFACT)


def tag_version(version: str, tags: dict[str, str], name: str = MODEL_NAME) -> None:
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def promote(version: str, tags: dict[str, str] | None = None, name: str = MODEL_NAME) -> None:
    client = _client()
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    log.info("%s v%s is now @%s", name, version, CHAMPION_ALIAS)


def log_drift_reference(run_id: str, version: str, text: str) -> None:
    """The version's drift reference (rice_mlops.monitoring): an artifact of its run, with
    its sha256 on the version, so a reader can tell it is the one recorded at the gate."""
    import hashlib

    _client().log_text(run_id, text, DRIFT_REFERENCE_ARTIFACT)
    _tag_both(run_id, version, DRIFT_REFERENCE_TAG, hashlib.sha256(text.encode()).hexdigest())


def drift_reference(version: str, name: str = MODEL_NAME) -> str:
    """The version's drift reference, once its sha256 matches the one recorded on the version
    (MLflow's content is checked, never trusted)."""
    import hashlib

    import mlflow

    found = _client().get_model_version(name, version)
    recorded = found.tags.get(DRIFT_REFERENCE_TAG)
    if not recorded:
        raise LookupError(f"{name} v{version} has no drift reference (versions gated before "
                          "the monitoring existed): promote a newer version")
    text = mlflow.artifacts.load_text(f"runs:/{found.run_id}/{DRIFT_REFERENCE_ARTIFACT}")
    if hashlib.sha256(text.encode()).hexdigest() != recorded:
        raise LookupError(f"{name} v{version}'s drift reference changed since the gate "
                          "recorded it: not compared with")
    return text


def mark_deployed(version: str, record: str, name: str = MODEL_NAME) -> None:
    """`deployed` on the version now at 100 %, with what serves and since when (a display for
    the MLflow UI; the serving state and the asset events are the record)."""
    client = _client()
    client.set_model_version_tag(name, version, DEPLOYED_TAG, record)
    client.set_registered_model_alias(name, DEPLOYED_ALIAS, version)
    log.info("%s v%s is now @%s", name, version, DEPLOYED_ALIAS)


def resolve(model_uri: str) -> dict:
    """Run id, registered name/version (when known) and tags behind a `models:/` URI."""
    import mlflow

    client = _client()
    body = model_uri.removeprefix("models:/")
    name = version = None
    if body.startswith("m-"):
        run_id = mlflow.get_logged_model(body.split("/")[0]).source_run_id
    elif "@" in body:
        name, alias = body.split("@", 1)
        found = client.get_model_version_by_alias(name, alias)
        run_id, version = found.run_id, found.version
    elif "/" in body:
        name, version = body.split("/", 1)
        run_id = client.get_model_version(name, version).run_id
    else:
        raise ValueError(f"cannot resolve {model_uri!r}: use models:/m-<id>, "
                         "models:/<name>/<version> or models:/<name>@<alias>")
    run = client.get_run(run_id)
    return {"run_id": run_id, "model_name": name, "model_version": version,
            "tags": run.data.tags, "params": run.data.params}


def tag_image(run_id: str, version: str, image: dict, name: str = MODEL_NAME) -> None:
    """Record the pushed image (reference with digest) on the run and the model version."""
    client = _client()
    for key, value in ((IMAGE_TAG, image["digest_ref"]), (IMAGE_NAME_TAG, image["image"])):
        client.set_tag(run_id, key, value)
        client.set_model_version_tag(name, version, key, value)


def version_metrics(version: str, name: str = MODEL_NAME) -> dict:
    """Test metrics of a registered version's run, for comparisons in the pull request."""
    client = _client()
    run = client.get_run(client.get_model_version(name, version).run_id)
    metrics = run.data.metrics
    return {"version": version, "test_accuracy": metrics.get("test_accuracy"),
            "test_macro_f1": metrics.get("test_macro_f1"),
            "per_class_recall": {key.removeprefix("test_recall_"): value
                                 for key, value in metrics.items()
                                 if key.startswith("test_recall_")}}


def _tag_both(run_id: str, version: str, key: str, value: str, name: str = MODEL_NAME) -> None:
    client = _client()
    client.set_tag(run_id, key, value)
    client.set_model_version_tag(name, version, key, value)


def log_model_card(run_id: str, version: str, text: str, sha256: str) -> None:
    """MODEL_CARD.md as a run artifact; its sha256 on the run and the version."""
    _client().log_text(run_id, text, MODEL_CARD_ARTIFACT)
    _tag_both(run_id, version, MODEL_CARD_TAG, f"{MODEL_CARD_ARTIFACT} sha256:{sha256}")


def log_sbom(run_id: str, version: str, path) -> None:
    """The image's SBOM as a run artifact; its sha256 on the run and the version."""
    import hashlib
    from pathlib import Path

    data = Path(path).read_bytes()
    _client().log_artifact(run_id, str(path), SBOM_ARTIFACT.rsplit("/", 1)[0])
    _tag_both(run_id, version, SBOM_DIGEST_TAG, hashlib.sha256(data).hexdigest())


def log_attestation(run_id: str, version: str, envelope: str, tags: dict[str, str]) -> None:
    """The signed provenance as a run artifact; the registry tags of the attachments."""
    import json

    _client().log_text(run_id, envelope, PROVENANCE_ARTIFACT)
    _tag_both(run_id, version, SIGNATURE_TAG, json.dumps(tags, sort_keys=True))


def record_budget(run_id: str, result: dict) -> None:
    """The smoke test's budget decision and numbers on the run (tag and budget/budget.json)."""
    client = _client()
    verdict = "passed" if result["passed"] else "failed"
    client.set_tag(run_id, BUDGET_TAG, f"{verdict}: {result['reason']}"[:5000])
    client.log_dict(run_id, result, "budget/budget.json")
