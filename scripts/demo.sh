#!/usr/bin/env bash
# The main job on embedded defaults: a local MLflow server, the synthetic dataset unless
# RICE_DATA_DIR points at real images, one training run, and a summary.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export MLFLOW_PORT=${MLFLOW_PORT:-5000}
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
mkdir -p .demo
scripts/mlflow-server start

data_dir=${RICE_DATA_DIR:-}
if [[ -z $data_dir ]]; then
  data_dir=$repo/.demo/synthetic
  if [[ ! -d $data_dir/train ]]; then
    .venv/bin/rice-mlops synth --out "$data_dir" --per-class "${RICE_SYNTH_PER_CLASS:-150}" --seed 0
  fi
  echo "demo: synthetic dataset at $data_dir (set RICE_DATA_DIR to train on real images)"
fi

.venv/bin/rice-mlops train --data-dir "$data_dir" --output-json .demo/train.json \
  ${RICE_EPOCHS:+--epochs "$RICE_EPOCHS"} \
  --source-commit "$(git rev-parse HEAD 2>/dev/null || echo unknown)"

.venv/bin/python - <<'PY'
import json
r = json.load(open(".demo/train.json"))
m = r["metrics"]
url = f'{r["tracking_uri"]}/#/experiments/{r["experiment_id"]}/runs/{r["run_id"]}'
print(f"""
== rice-mlops demo ==
test accuracy   {m['test_accuracy']:.4f}   (macro F1 {m['test_macro_f1']:.4f})
trained         {r['epochs_run']} epochs in {r['train_seconds']:.1f}s on {r['counts']}
MLflow run      {url}
model           {r['model_uri']}
summary         .demo/train.json     stop the server: make down
""")
PY
