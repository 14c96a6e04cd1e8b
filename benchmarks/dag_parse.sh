#!/usr/bin/env bash
# DAG file parse time as Airflow's own `airflow dags report` measures it, three times.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
AIRFLOW_HOME=$(mktemp -d)
export AIRFLOW_HOME
trap 'rm -rf "$AIRFLOW_HOME"' EXIT
export AIRFLOW__CORE__DAGS_FOLDER=$repo/dags AIRFLOW__CORE__LOAD_EXAMPLES=False
"$repo/.venv/bin/airflow" db migrate >/dev/null 2>&1
for _ in 1 2 3; do "$repo/.venv/bin/airflow" dags report 2>/dev/null | grep '\.py'; done
