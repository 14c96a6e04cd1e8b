#!/bin/bash
# The compose stack's MLflow tracking server with its basic-auth app. MLflow reads the users'
# database only from a config file, so the file is written here from the environment (by shell
# builtins: no password in any process's arguments) into a directory only this user can read.
set -euo pipefail
: "${MLFLOW_DB_PASSWORD:?}" "${MLFLOW_AUTH_ADMIN_PASSWORD:?}" "${MLFLOW_FLASK_SERVER_SECRET_KEY:?}"
config=$(mktemp -d)/basic_auth.ini
umask 077
# Default READ: people who log in browse everything and change only what they create; the
# pipeline's user manages the experiments and models it creates.
printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = postgresql://mlflow:%s@postgres/mlflow_auth\nadmin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n' \
  "$MLFLOW_DB_PASSWORD" >"$config"
unset MLFLOW_DB_PASSWORD
export MLFLOW_AUTH_CONFIG_PATH=$config
exec mlflow server --app-name basic-auth --artifacts-destination /opt/mlflow/artifacts \
  --host 0.0.0.0 --port 5000 --workers "${MLFLOW_WORKERS:-2}" --allowed-hosts "$MLFLOW_ALLOWED_HOSTS"
