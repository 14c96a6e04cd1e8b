"""A training run's seal, and the check before a retry reuses it.

A run is complete when it holds its result, then the manifest of its files (their sha256, as
the server stores them), then the completion tag, written in that order by `seal`. A retry of
the same DAG run reuses a complete run only when its result is well-formed and its files still
match the manifest (`reusable_result`, `manifest_matches`): MLflow is untrusted input.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from rice_mlops.core.fingerprint import file_sha256
from rice_mlops.core.run_policy import RUN_ID
from rice_mlops.core.vocabulary import (
    COMPLETE_TAG,
    RESULT_ARTIFACT,
    RUN_MANIFEST_ARTIFACT,
    TFLITE_ARTIFACT,
)

# The files a reused run must still hold, unchanged: listed with their sha256 in
# RUN_MANIFEST_ARTIFACT, written after them and before the completion tag.
MANIFESTED_ARTIFACTS = (TFLITE_ARTIFACT, "model_meta/labels.json", "evaluation/metrics.json",
                        RESULT_ARTIFACT)
_MODEL_URI = re.compile(r"models:/m-[0-9a-f]{32}")


def seal(mlflow, result: dict) -> dict:
    """Log the result, then the manifest of the run's files, then the completion tag (a run
    with it is complete and may be reused by a retry): the result with the digests the
    release zone checks the model bytes against (not in result.json: the manifest covers it)."""
    mlflow.log_dict(result, RESULT_ARTIFACT)
    manifest = artifact_manifest(result["run_id"])
    mlflow.log_text(manifest, RUN_MANIFEST_ARTIFACT)
    mlflow.set_tag(COMPLETE_TAG, "true")
    return {**result, "artifact_sha256": digests(manifest)}


def artifact_manifest(run_id: str) -> str:
    """`sha256sum` lines over the run's manifested artifacts, as the server stores them."""
    import mlflow

    lines = []
    with tempfile.TemporaryDirectory(prefix="rice-manifest-") as scratch:
        for artifact in MANIFESTED_ARTIFACTS:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact,
                                                        dst_path=scratch)
            lines.append(f"{file_sha256(Path(local))}  {artifact}\n")
    return "".join(lines)


def digests(manifest: str) -> dict[str, str]:
    from rice_mlops.core.staged_artifacts import manifest_digests

    return manifest_digests(manifest)


def reusable_result(run, result: dict) -> str | None:
    """Why a complete-looking run must not be reused (None: it may). The run and its result
    come from MLflow, which anyone who reaches it can write: check ids and shapes."""
    run_id = run.info.run_id
    if not RUN_ID.fullmatch(run_id or ""):
        return f"run id {run_id!r} is not 32 hex characters"
    if result.get("run_id") != run_id:
        return f"its result names run {result.get('run_id')!r}, not itself"
    if not _MODEL_URI.fullmatch(str(result.get("model_uri"))):
        return f"its model URI {result.get('model_uri')!r} is not models:/m-<32 hex>"
    metrics = result.get("metrics") or {}
    for key in ("test_accuracy", "val_accuracy", "test_macro_f1"):
        value = metrics.get(key)
        if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            return f"metric {key} is {value!r}, not a number in [0, 1]"
    return None


def manifest_matches(run_id: str) -> tuple[str | None, str]:
    """(None, the manifest) when the run's artifacts match the manifest it logged; else
    (what differs, "")."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        recorded = mlflow.artifacts.load_text(f"runs:/{run_id}/{RUN_MANIFEST_ARTIFACT}")
        actual = artifact_manifest(run_id)
    except (MlflowException, OSError) as exc:
        return f"its artifacts cannot be read ({exc})", ""
    if recorded != actual:
        return "its artifacts no longer match their manifest", ""
    return None, recorded
