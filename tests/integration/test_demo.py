"""The main job (`make demo`'s script) on a small real subset: success, and a pushed digest the
local registry really serves."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers.paths import REPO
from tests.helpers.pipeline import remove_serving_containers
from tests.helpers.ports import free_port
from tests.helpers.script_env import docker_engine_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_runs_the_whole_pipeline(small_real_dataset, docker_engine, tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    tmp_path.chmod(0o755)
    env = {**os.environ, "RICE_DATA_DIR": str(small_real_dataset), "RICE_EPOCHS": "15",
           # The subset is small; the bar a demo on it can pass (the default is 0.97).
           "RICE_MIN_TEST_ACCURACY": "0.8", "RICE_MIN_CLASS_RECALL": "0.5",
           "MLFLOW_PORT": str(free_port()), "MLFLOW_HOME": str(tmp_path / "mlflow"),
           "AIRFLOW_PORT": str(free_port()), "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "RICE_STAGING_DIR": str(staging),
           # Its own engine state and registry port: `stop` below then ends only what the demo
           # started, never an engine or registry some other process owns.
           "RICE_DOCKER_STATE": str(tmp_path / "docker"), "RICE_REGISTRY_PORT": str(free_port()),
           "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
           # The demo serves what it ships (RICE_ROLLOUT is on in demo.sh): its own names and
           # ports on the session's engine.
           "RICE_ROLLOUT_NAME": "rice-demo-test", "RICE_ROLLOUT_PORT": str(free_port()),
           "RICE_ROLLOUT_SLOT_PORTS": f"{free_port()},{free_port()}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    try:
        demo = subprocess.run([REPO / "scripts" / "demo.sh"], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=1500)
        summary = _check_demo(demo, env)
        _check_mlflow_refuses_strangers(env)
        _check_web_uis(env, summary)
    finally:  # what `make down` does
        for script in ("airflow-stack", "mlflow-server", "docker-engine"):
            subprocess.run([REPO / "scripts" / script, "stop"], env=env, timeout=120)
        remove_serving_containers("rice-demo-test")  # the engine is the session's: it stays up


def _check_mlflow_refuses_strangers(env: dict) -> None:
    """Anonymous and wrong-password writes are refused; the pipeline's user writes."""
    from tests.helpers.script_env import parse_env_lines

    url = f"http://127.0.0.1:{env['MLFLOW_PORT']}"
    create = f"{url}/api/2.0/mlflow/experiments/create"
    assert httpx.post(create, json={"name": "intruder"}).status_code == 401
    assert httpx.post(create, json={"name": "intruder"},
                      auth=("rice-pipeline", "wrong")).status_code == 401
    assert httpx.get(f"{url}/api/2.0/mlflow/experiments/search",
                     params={"max_results": 1}).status_code == 401
    pipeline = parse_env_lines(subprocess.run(
        [REPO / "scripts" / "mlflow-server", "env"], env=env, capture_output=True, text=True,
        check=True).stdout)
    auth = (pipeline["MLFLOW_TRACKING_USERNAME"], pipeline["MLFLOW_TRACKING_PASSWORD"])
    assert httpx.get(f"{url}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                     auth=auth).status_code == 200
    # The demo's processes other than the scheduler never saw the pipeline's password.
    airflow_home = Path(env["AIRFLOW_HOME"])
    for name in ("api-server", "dag-processor", "triggerer"):
        pid = (airflow_home / "pids" / f"{name}.pid").read_text().split()[0]
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert auth[1].encode() not in environ, name


def _check_web_uis(env: dict, summary: dict) -> None:
    """Log in to the Airflow UI, open the run and see its task states; open the MLflow run
    and see its metrics. Screenshots land in test-artifacts/."""
    from tests.helpers.browser import airflow_login, browser_page, screenshot

    airflow = f"http://127.0.0.1:{env['AIRFLOW_PORT']}"
    password = (Path(env["AIRFLOW_HOME"]) / "admin_password").read_text().strip()
    with browser_page() as page:
        airflow_login(page, airflow, password)
        page.goto(f"{airflow}/dags/rice_classifier_cicd/runs/{summary['dag_run_id']}")
        # The UI counts the run's task instances, as the REST API listed them.
        page.get_by_text(f"{len(summary['task_states'])} Task Instances").wait_for(
            timeout=60_000)
        text = page.inner_text("body")
        for task_id in ("validate_data", "train", "quality_gate", "push_image", "promote"):
            assert task_id in text
        assert text.count("Success") >= 10
        assert screenshot(page, "airflow-dag-run.png").stat().st_size > 10_000

    from tests.helpers.browser import mlflow_refuses_anonymous_browsing

    assert mlflow_refuses_anonymous_browsing(summary["mlflow_url"])
    admin = (Path(env["MLFLOW_HOME"]) / "admin_password").read_text().strip()
    with browser_page(http_credentials=("admin", admin)) as page:  # logs in to MLflow
        page.goto(summary["mlflow_run_url"])
        page.get_by_text("test_accuracy").first.wait_for(timeout=60_000)
        text = page.inner_text("body")
        assert "test_macro_f1" in text and "tflite_max_abs_diff" in text
        # The Datasets panel: the images the run trained on, by name and fingerprint.
        page.get_by_text("rice-images (").first.wait_for(timeout=30_000)
        assert screenshot(page, "mlflow-run.png").stat().st_size > 10_000


def _check_demo(demo: subprocess.CompletedProcess, env: dict) -> dict:
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "== rice-mlops demo: SUCCESS, shipped ==" in demo.stdout
    assert re.search(r"validate_data +success  \(\d+\.\d s\)", demo.stdout)  # the live view
    # Not a terminal here: each epoch `train` finished while it was watched is a plain line.
    assert re.search(r"\n +train  epoch \d+/\d+  loss \d+\.\d{4}  val accuracy \d+\.\d\d %",
                     demo.stdout), demo.stdout[-3000:]
    assert "\x1b[" not in demo.stdout

    summary = json.loads((REPO / ".demo" / "summary.json").read_text())
    for key in ("dag_run_id", "state", "test_accuracy", "mlflow_run_id", "image",
                "pull_request", "airflow_url", "mlflow_url"):
        assert key in summary
    assert summary["state"] == "success", demo.stdout[-3000:]
    assert summary["shipped"] is True, demo.stdout[-3000:]
    assert summary["image"], demo.stdout[-3000:]
    assert summary["test_accuracy"] > 0.8
    assert summary["data"] == {"dir": str(Path(env["RICE_DATA_DIR"]).resolve()),
                               "synthetic": False}
    repository, digest = summary["image"].split("@")
    registry, name = repository.split("/", 1)
    creds = docker_engine_env(env)
    manifest = httpx.get(
        f"http://{registry}/v2/{name}/manifests/{digest}",
        auth=(creds["RICE_REGISTRY_USER"], creds["RICE_REGISTRY_PASSWORD"]),
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert manifest.status_code == 200, manifest.text
    assert manifest.headers["Docker-Content-Digest"] == digest
    # It ends serving that image: the summary's curl line works against the endpoint.
    assert summary["serving"]["served"] and summary["serving"]["reference"] == summary["image"]
    endpoint = f"http://127.0.0.1:{env['RICE_ROLLOUT_PORT']}"
    assert f"--data-binary @grain.jpg {endpoint}/predict" in demo.stdout
    grain = next((Path(env["RICE_DATA_DIR"]) / "test").rglob("*.jpg"))
    answer = httpx.post(f"{endpoint}/predict", content=grain.read_bytes(),
                        headers={"Content-Type": "image/jpeg"})
    assert answer.status_code == 200 and "class" in answer.json(), answer.text
    return summary
