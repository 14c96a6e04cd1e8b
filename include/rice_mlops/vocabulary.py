"""The names the pipeline shares with MLflow and the registry: one home, so they never drift."""

from __future__ import annotations

MODEL_NAME = "rice-classifier"
CHAMPION_ALIAS = "champion"

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
GATE_TAG = "rice.gate"
GATE_REASON_TAG = "rice.gate_reason"
IMAGE_TAG = "rice.image"
IMAGE_NAME_TAG = "rice.image_tag"
RUN_ID_TAG = "rice.run_id"
PROMOTED_BY_TAG = "rice.promoted_by"

# Artifacts of a training run.
RESULT_ARTIFACT = "result.json"
RUN_MANIFEST_ARTIFACT = "manifest/artifacts.sha256"
TFLITE_ARTIFACT = "tflite/model.tflite"
