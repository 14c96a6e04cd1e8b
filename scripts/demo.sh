#!/usr/bin/env bash
# The main job on embedded defaults: a local MLflow server, the Docker engine and a local
# registry where the machine allows it, the synthetic dataset unless RICE_DATA_DIR points at
# real images, Airflow on SQLite with the webhook plugin; then a signed webhook delivery for
# the current commit, a live view of the run, and .demo/summary.json. `make down` stops it all.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
source scripts/lib/state.sh
mkdir -p .demo
# The engine, registry and base image need no Python environment, and the environment needs no
# engine: both set-ups run at once (about 3 and 2.5 minutes on a fresh 2-core machine).
engine_log=.demo/docker-engine.log
scripts/docker-engine start >"$engine_log" 2>&1 &
engine_pid=$!
scripts/setup.sh
export MLFLOW_PORT=${MLFLOW_PORT:-5050}
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
export AIRFLOW_PORT=${AIRFLOW_PORT:-8080}
scripts/mlflow-server start
# The pipeline's MLflow user, for the task processes alone (scripts/airflow-stack withholds it
# from the others); people log in as admin (.run/mlflow/admin_password).
mlflow_env=$(scripts/mlflow-server env)
load_env_lines MLFLOW_TRACKING_URI MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD <<<"$mlflow_env"

synthetic=()
if [[ -z ${RICE_DATA_DIR:-} ]]; then
  export RICE_DATA_DIR=$repo/.demo/synthetic
  if [[ ! -d $RICE_DATA_DIR/train ]]; then
    .venv/bin/rice-mlops synth --out "$RICE_DATA_DIR" --per-class "${RICE_SYNTH_PER_CLASS:-150}" --seed 0
  fi
  # 750 drawn grains separate in 12 epochs (test accuracy 1.0, about 26 s of training here);
  # the real set's default of 25 would double the wait for nothing.
  export RICE_EPOCHS=${RICE_EPOCHS:-12}
  synthetic=(--synthetic)
  echo "demo: synthetic dataset at $RICE_DATA_DIR (set RICE_DATA_DIR to train on real images)"
fi
RICE_DATA_DIR=$(cd "$RICE_DATA_DIR" && pwd)
export RICE_DATA_DIR

export RICE_STAGING_DIR=${RICE_STAGING_DIR:-$repo/.demo/staging}
mkdir -p "$RICE_STAGING_DIR" && chmod 755 "$RICE_STAGING_DIR"
engine_up=true
wait "$engine_pid" || engine_up=false
cat "$engine_log"
if $engine_up; then
  # Parsed, never evaluated: the values come from files in the engine's state directory.
  engine_env=$(scripts/docker-engine env)
  load_env_lines RICE_BASE_IMAGE RICE_BUILD_IMAGE RICE_DOCKER_CLI_IMAGE RICE_ROLLOUT_PROXY_IMAGE RICE_REGISTRY \
    RICE_REGISTRY_USER RICE_REGISTRY_PASSWORD <<<"$engine_env"
  # The demo ends serving what it shipped, behind the proxy on RICE_ROLLOUT_PORT (8501).
  export RICE_ROLLOUT=${RICE_ROLLOUT:-true} RICE_ROLLOUT_PROXY_IMAGE
  # The push task reads the registry from this connection; its password never leaves it.
  AIRFLOW_CONN_RICE_REGISTRY=$(.venv/bin/python -c "import json,os; print(json.dumps({
      'conn_type': 'generic', 'host': os.environ['RICE_REGISTRY'].split(':')[0],
      'port': int(os.environ['RICE_REGISTRY'].split(':')[1]),
      'login': os.environ['RICE_REGISTRY_USER'], 'password': os.environ['RICE_REGISTRY_PASSWORD']}))")
  export AIRFLOW_CONN_RICE_REGISTRY RICE_BASE_IMAGE RICE_BUILD_IMAGE RICE_DOCKER_CLI_IMAGE
else
  echo "demo: no usable Docker engine here: the image stages will be skipped with that reason"
  export RICE_DOCKER_SOCKET=/nonexistent/docker.sock
fi

# The pipeline's signing key (model files, provenance, attachments): made once under .run/keys
# (private key 0600); bring your own by setting RICE_SIGNING_KEY_FILE.
if [[ -z ${RICE_SIGNING_KEY_FILE:-} ]]; then
  secure_dir "$repo/.run/keys"
  .venv/bin/rice-mlops keys generate --dir "$repo/.run/keys" --if-missing
  export RICE_SIGNING_KEY_FILE=$repo/.run/keys/signing.key
fi

[[ -s .demo/webhook_secret ]] || (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_hex(20))' >.demo/webhook_secret)
GITHUB_WEBHOOK_SECRET=$(cat .demo/webhook_secret)
export GITHUB_WEBHOOK_SECRET
# The push the demo sends names this repository (rice_mlops.operations.demo --repository's default); only
# listed repositories' pushes trigger.
export GITHUB_WEBHOOK_REPOSITORIES=${GITHUB_WEBHOOK_REPOSITORIES:-local/rice-mlops}
export RICE_SCHEDULE=${RICE_SCHEDULE:-none}  # unpausing a cron DAG would start a nightly run too
export AIRFLOW_HOME=${AIRFLOW_HOME:-$repo/.run/airflow}
scripts/airflow-stack start
if $engine_up && [[ ${RICE_ROLLOUT:-false} == true ]]; then
  # What served before `make down` serves again now, before this run's rollout (nothing on a
  # first demo); a failure is reported and left to the run's rollout, which restores first.
  .venv/bin/rice-mlops serving restore ||
    echo "demo: the last deployment did not come back (above); this run's rollout retries it"
fi

sha=$(git rev-parse HEAD 2>/dev/null || echo 0000000000000000000000000000000000000000)
exec .venv/bin/python -m rice_mlops.operations.demo --airflow-url "http://127.0.0.1:$AIRFLOW_PORT" \
  --admin-password-file "$AIRFLOW_HOME/admin_password" --mlflow-url "$MLFLOW_TRACKING_URI" \
  --mlflow-admin-password-file "${MLFLOW_HOME:-$repo/.run/mlflow}/admin_password" \
  --pipeline-password-file "$AIRFLOW_HOME/pipeline_password" \
  --sha "$sha" --summary .demo/summary.json --data-dir "$RICE_DATA_DIR" ${synthetic[@]+"${synthetic[@]}"}
