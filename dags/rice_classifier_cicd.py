"""
### Rice classifier CI/CD

Retrains the rice-variety classifier (Arborio, Basmati, Ipsala, Jasmine, Karacadag), tracks the
run in MLflow, and ships it only when it is good enough.

**When it runs:** every night at 02:00 UTC (`RICE_SCHEDULE` overrides the cron), and on every
push to `main` through the GitHub webhook, which triggers it through the REST API with the
commit in the run's conf. Runs never overlap: a second one queues.

**What it does:** `validate_data` checks every image (the synthetic default when no dataset is
configured) → `train` logs params, per-epoch metrics, test metrics, plots, the model and its
TFLite export to MLflow → `fetch_artifacts` stages them with a sha256 manifest →
`quality_gate` registers a model version and compares it with the bar and the `champion` →
publication (pull request with the artifacts) → `promote` moves the `champion` alias.

**Reading a run:** a run whose publication tasks are *skipped* did **not ship**: the
`quality_gate` log, and the MLflow tags `rice.gate` / `rice.gate_reason`, say why. A *failed*
task is a crash and was retried twice first.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import Asset, Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException

log = logging.getLogger(__name__)

# "none" leaves only API-triggered runs (used by the end-to-end tests).
_SCHEDULE = os.environ.get("RICE_SCHEDULE", "0 2 * * *")
_SCHEDULE = None if _SCHEDULE.strip().lower() in ("", "none") else _SCHEDULE
_STAGING_ROOT = os.environ.get("RICE_STAGING_DIR", "/tmp/rice-mlops/staging")
_DATA_DIR = os.environ.get("RICE_DATA_DIR", "")
_EXPERIMENT = os.environ.get("RICE_MLFLOW_EXPERIMENT", "rice-classifier")
_GITHUB_CONN_ID = os.environ.get("RICE_GITHUB_CONN_ID", "github_default")

RICE_MODEL = Asset(name="rice_classifier_model", uri="mlflow://registered-models/rice-classifier")

_SHA_OR_EMPTY = "^([0-9a-f]{7,40})?$"
_REPO_OR_EMPTY = "^([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)?$"


@dag(
    dag_id="rice_classifier_cicd",
    schedule=_SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["mlops", "rice", "training", "mlflow"],
    default_args={
        "owner": "ml-platform",
        "retries": 2,
        "retry_delay": timedelta(seconds=int(os.environ.get("RICE_RETRY_DELAY_SECONDS", "60"))),
    },
    params={
        "epochs": Param(25, type="integer", minimum=1, maximum=200,
                        description="Training epochs."),
        "image_size": Param(64, type="integer", minimum=32, maximum=256,
                            description="Side in pixels the model resizes its input to."),
        "batch_size": Param(64, type="integer", minimum=8, maximum=512),
        "data_dir": Param(_DATA_DIR, type="string",
                          description="Dataset directory (split or Kaggle layout); empty for "
                                      "the synthetic default."),
        "min_test_accuracy": Param(0.97, type="number", minimum=0, maximum=1,
                                   description="The gate's absolute bar on test accuracy."),
        "max_regression": Param(0.005, type="number", minimum=0, maximum=1,
                                description="How much worse than the champion is tolerated."),
        "source_commit": Param("", type="string", pattern=_SHA_OR_EMPTY,
                               description="Commit sha from the webhook (hex, 7-40 chars)."),
        "source_ref": Param("", type="string", maxLength=255),
        "source_repository": Param("", type="string", pattern=_REPO_OR_EMPTY,
                                   description="owner/name of the repository pushed to."),
        "pusher": Param("", type="string", maxLength=255),
        "compare_url": Param("", type="string", maxLength=2048),
    },
)
def rice_classifier_cicd():
    @task
    def validate_data(params: dict | None = None) -> dict:
        """Check every image of the dataset and compute its fingerprint."""
        from rice_mlops.data import validate
        from rice_mlops.data.fingerprint import fingerprint
        from rice_mlops.data.synth import ensure_synthetic

        data_dir = params["data_dir"] or str(ensure_synthetic(Path(_STAGING_ROOT) / "datasets"))
        dataset = validate(data_dir)
        counts = dataset.counts()
        log.info("dataset %s valid: %s", data_dir, counts)
        return {"data_dir": data_dir, "fingerprint": fingerprint(dataset),
                "classes": dataset.classes, "counts": counts}

    @task(execution_timeout=timedelta(hours=3))
    def train(data: dict, params: dict | None = None, dag_run=None) -> dict:
        """Train and log one MLflow run for this DAG run (a retry reuses a complete run)."""
        from rice_mlops.config import TrainConfig
        from rice_mlops.training import train_once

        source = {"commit": params["source_commit"], "ref": params["source_ref"],
                  "repository": params["source_repository"]}
        config = TrainConfig(
            data_dir=Path(data["data_dir"]), epochs=params["epochs"],
            image_size=params["image_size"], batch_size=params["batch_size"],
            experiment=_EXPERIMENT, source={k: v for k, v in source.items() if v},
        )
        result = train_once(config, dag_run.run_id)
        keep = ("run_id", "model_uri", "model_id", "experiment_id", "tracking_uri",
                "image_size", "classes", "metrics", "dataset_fingerprint", "epochs_run")
        return {key: result[key] for key in keep}

    @task
    def fetch_artifacts(trained: dict) -> dict:
        """Stage the run's model, TFLite file, labels, metrics and plot with a checksum manifest."""
        from rice_mlops.artifacts import MANIFEST, fetch, verify_manifest

        staged = fetch(trained["run_id"], trained["model_uri"], _STAGING_ROOT)
        files = verify_manifest(staged)
        log.info("staged %d files in %s", len(files), staged)
        return {"staging_dir": str(staged), "manifest": MANIFEST, "files": len(files)}

    @task.short_circuit
    def quality_gate(trained: dict, data: dict, staged: dict, params: dict | None = None,
                     ti=None) -> bool:
        """Register a model version; publish only if it beats the bar and the champion."""
        from rice_mlops import registry
        from rice_mlops.artifacts import verify_manifest
        from rice_mlops.gate import decide

        verify_manifest(Path(staged["staging_dir"]))
        version = registry.register(trained["run_id"], trained["model_uri"])
        champ = registry.champion()
        champion_accuracy, how = None, "no champion yet"
        if champ is not None and champ.version != version:
            champion_accuracy, how = registry.champion_accuracy(
                champ, trained["dataset_fingerprint"], Path(data["data_dir"]))
        result = decide(
            trained["metrics"]["test_accuracy"],
            min_test_accuracy=params["min_test_accuracy"],
            max_regression=params["max_regression"],
            champion_version=champ.version if champion_accuracy is not None else None,
            champion_accuracy=champion_accuracy,
        )
        registry.record_gate(trained["run_id"], version, result.passed, result.reason)
        ti.xcom_push(key="gate", value={**result.as_dict(), "version": version,
                                        "champion_comparison": how})
        if result.passed:
            log.info("gate PASSED for v%s: %s (%s)", version, result.reason, how)
        else:
            log.warning("gate FAILED for v%s, NOT SHIPPED: %s (%s)", version, result.reason, how)
        return result.passed

    @task
    def open_pull_request(trained: dict, staged: dict) -> dict:
        """Commit the artifacts to the model branch and open or update its pull request."""
        from rice_mlops.publish import github_connection_configured

        if not github_connection_configured(_GITHUB_CONN_ID):
            raise AirflowSkipException(
                f"no Airflow connection {_GITHUB_CONN_ID!r}: pull request not opened "
                "(add a GitHub connection with a token in its password to enable it)")
        raise NotImplementedError("pull-request publication lands with issue 4")

    @task(outlets=[RICE_MODEL], trigger_rule="none_failed")
    def promote(trained: dict, ti=None, outlet_events=None) -> dict:
        """Move the `champion` alias to this run's version, after every publication succeeded."""
        from rice_mlops import registry

        gate = ti.xcom_pull(task_ids="quality_gate", key="gate")
        registry.promote(gate["version"], tags={"rice.promoted_by": ti.run_id})
        metadata = {"mlflow_run_id": trained["run_id"], "model_version": gate["version"],
                    "test_accuracy": trained["metrics"]["test_accuracy"]}
        outlet_events[RICE_MODEL].extra = metadata
        return metadata

    data = validate_data()
    trained = train(data)
    staged = fetch_artifacts(trained)
    gate = quality_gate(trained, data, staged)
    pull_request = open_pull_request(trained, staged)
    gate >> pull_request >> promote(trained)


rice_classifier_cicd()
