"""The Airflow assets the DAGs share: the champion model and what serves. Their events are the
pipeline's own record (the next gate reads the champion's, an operator the serving history,
the training DAG the drift the monitoring saw)."""

from __future__ import annotations

from airflow.sdk import Asset

from rice_mlops.vocabulary import DRIFT_ASSET, MODEL_ASSET, MODEL_NAME, SERVING_ASSET

RICE_MODEL = Asset(name=MODEL_ASSET, uri=f"mlflow://registered-models/{MODEL_NAME}")
RICE_SERVING = Asset(name=SERVING_ASSET, uri=f"mlflow://registered-models/{MODEL_NAME}/serving")
RICE_DRIFT = Asset(name=DRIFT_ASSET, uri=f"mlflow://registered-models/{MODEL_NAME}/drift")
