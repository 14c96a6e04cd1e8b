"""The names the pipeline shares with Airflow, MLflow and the registry: one home, so they never
drift."""

from __future__ import annotations

DAG_ID = "rice_classifier_cicd"  # the webhook triggers it; its runs and assets carry it
ROLLBACK_DAG_ID = "rice_rollback"  # puts an earlier served digest back at 100 %
MONITORING_DAG_ID = "rice_monitoring"  # the served model's prediction logs against its reference
MONITORING_EXPERIMENT = "rice-monitoring"  # one MLflow run per judged window
# Where the next monitoring window starts: a file of the release zone's serving directory (not
# an Airflow Variable, which any task's token may set).
MONITORING_WATERMARK = "monitoring-watermark.json"
MODEL_NAME = "rice-classifier"
CHAMPION_ALIAS = "champion"
DEPLOYED_ALIAS = "deployed"  # the version the serving proxy sends all traffic to (display)
MODEL_ASSET = "rice_classifier_model"  # its events record each champion (the trusted record)
SERVING_ASSET = "rice_serving"  # its events record each digest put at 100 %
DRIFT_ASSET = "rice_drift"  # its events carry the evidence of each window judged as drift

# Run tags (also set on model versions where noted by registry.py).
SOURCE_TAGS = {
    "commit": "rice.source_commit",
    "ref": "rice.source_ref",
    "repository": "rice.source_repository",
    "airflow_dag_run_id": "rice.airflow_dag_run_id",
    "airflow_try_number": "rice.airflow_try_number",
}
FINGERPRINT_TAG = "rice.dataset_fingerprint"
CODE_DIGEST_TAG = "rice.code_digest"
COMPLETE_TAG = "rice.complete"
TRAIN_HOST_TAG = "rice.train_host"  # the machine `train` ran on (a remote worker, say)
GATE_TAG = "rice.gate"
GATE_REASON_TAG = "rice.gate_reason"
GATE_VERDICT_TAG = "rice.gate_verdict"  # better | worse | not significant | no champion
GATE_SIGNIFICANT_TAG = "rice.gate_significant"  # true | false | none
GATE_P_VALUE_TAG = "rice.gate_p_value"
GATE_DIFFERENCE_TAG = "rice.gate_difference"  # challenger - champion accuracy, and its CI
BUDGET_TAG = "rice.budget"  # passed | failed, with the smoke test's size and p50
MODEL_CARD_TAG = "rice.model_card"
SBOM_DIGEST_TAG = "rice.sbom_sha256"
SIGNATURE_TAG = "rice.attachments"  # the registry tags of signature, provenance and SBOM
IMAGE_TAG = "rice.image"
IMAGE_NAME_TAG = "rice.image_tag"
RUN_ID_TAG = "rice.run_id"
PROMOTED_BY_TAG = "rice.promoted_by"
DRIFT_REFERENCE_TAG = "rice.drift_reference_sha256"  # of the artifact below
DEPLOYED_TAG = "rice.deployed"  # on a model version: its digest, since when, by which run

# Artifacts of a training run.
RESULT_ARTIFACT = "result.json"
RUN_MANIFEST_ARTIFACT = "manifest/artifacts.sha256"
TFLITE_ARTIFACT = "tflite/model.tflite"
GATE_ARTIFACT = "gate/gate.json"
DRIFT_REFERENCE_ARTIFACT = "monitoring/reference.json"  # the test split as served (drift)
MODEL_CARD_FILE = "MODEL_CARD.md"  # in a run's evidence/ and in the pull request
MODEL_CARD_ARTIFACT = f"model_card/{MODEL_CARD_FILE}"
SBOM_ARTIFACT = "sbom/sbom.cdx.json"
PROVENANCE_ARTIFACT = "attestations/provenance.dsse.json"
