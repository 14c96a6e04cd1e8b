#!/bin/bash
# The compose stack's MLflow tracking server with its basic-auth app. MLflow reads the users'
# database only from a config file, so the file is written here from the environment (by shell
# builtins: no password in any process's arguments) into a directory only this user can read.
set -euo pipefail
: "${MLFLOW_DB_PASSWORD:?}" "${MLFLOW_AUTH_ADMIN_PASSWORD:?}" "${MLFLOW_FLASK_SERVER_SECRET_KEY:?}"
config=$(mktemp -d)/basic_auth.ini
umask 077
# Default READ: people who log in browse everything and change only what they create; the
# pipeline's user manages the experiments and models it creates. Checked credentials are
# remembered (bounded, keyed by an HMAC under a per-process secret) for
# MLFLOW_AUTH_CACHE_SECONDS, since every request would otherwise pay a 32 MiB scrypt hash; a
# password change clears the user's entries in the worker that serves it, and the others
# after at most that many seconds.
cache_seconds=${MLFLOW_AUTH_CACHE_SECONDS:-300}
if ! [[ $cache_seconds =~ ^[0-9]{1,4}$ ]] || ((10#$cache_seconds > 3600)); then
  echo "mlflow: MLFLOW_AUTH_CACHE_SECONDS must be 0 to 3600, not '$cache_seconds'" >&2
  exit 2
fi
printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = postgresql://mlflow:%s@postgres/mlflow_auth\nadmin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\nauth_cache_ttl_seconds = %s\nauth_cache_max_size = 256\n' \
  "$MLFLOW_DB_PASSWORD" "$cache_seconds" >"$config"
unset MLFLOW_DB_PASSWORD
export MLFLOW_AUTH_CONFIG_PATH=$config
exec mlflow server --app-name basic-auth --artifacts-destination /opt/mlflow/artifacts \
  --host 0.0.0.0 --port 5000 --workers "${MLFLOW_WORKERS:-2}" --allowed-hosts "$MLFLOW_ALLOWED_HOSTS"
