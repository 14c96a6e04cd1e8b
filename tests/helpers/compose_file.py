"""docker-compose.yaml and .env.example as the unit tests read them, and the groups of
services their checks name."""

from __future__ import annotations

import yaml

from tests.helpers.paths import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
TEXT = (REPO / "docker-compose.yaml").read_text()
ENV_EXAMPLE = dict(line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
SECRETS = {"POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "REDIS_PASSWORD",
           "RELEASE_REDIS_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
           "AIRFLOW_ADMIN_PASSWORD",
           "AIRFLOW_WEBHOOK_PASSWORD", "GITHUB_WEBHOOK_SECRET", "REGISTRY_PASSWORD",
           "MLFLOW_ADMIN_PASSWORD", "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_FLASK_SECRET_KEY",
           "AIRFLOW_PIPELINE_PASSWORD", "AIRFLOW_RELEASE_PASSWORD", "PROMETHEUS_PASSWORD"}
WORKERS = {"airflow-worker", "airflow-worker-docker", "airflow-worker-training"}
COMPUTE_WORKERS = WORKERS - {"airflow-worker-docker"}
CONTROL_PLANE = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-triggerer"}
SERVICES = COMPOSE["services"]
