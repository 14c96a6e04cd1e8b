"""docker-compose.yaml started for real: PostgreSQL, Redis, airflow-init, the API server with the
webhook plugin, scheduler, DAG processor, triggerer, Celery workers, MLflow and the registry.

Docker Hub is out of reach here, so `scripts/compose-images` builds every image locally (the
real software from Debian packages and PyPI) and the .env points the stack at them. A signed
webhook delivery to the API server runs the whole pipeline on the Celery workers (`train` on the
training-queue profile's worker), and the image lands in the stack's own registry.
"""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.conftest import REPO
from tests.integration.compose_stack import ComposeStack, build_images, compose_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(docker_engine, small_real_dataset):
    with compose_stack(small_real_dataset, build_images(),
                       logs=REPO / "test-artifacts" / "compose-stack.log",
                       profiles=("training-queue",), RICE_TRAIN_QUEUE="training",
                       RICE_EPOCHS="15",
                       # the subset is small (the default bar is 0.97)
                       RICE_MIN_TEST_ACCURACY="0.8") as running:
        yield running


def test_every_service_is_up_and_healthy(stack):
    assert stack.wait_healthy(timeout=300) == {}, stack.compose("ps").stdout
    states = stack.service_states()
    assert states["airflow-init"] == "exited 0" and states["registry-init"] == "exited 0"
    assert {"airflow-worker", "airflow-worker-training", "mlflow", "registry"} <= set(states)


def test_a_push_webhook_runs_the_pipeline_on_celery_workers(stack):
    from rice_mlops.demo import DAG_ID, Api, follow, summarize, wait_for_dag
    from rice_mlops.webhook.send import push_payload, send

    api = Api(stack.airflow, stack.env["AIRFLOW_ADMIN_PASSWORD"])
    wait_for_dag(api, timeout=300)
    api.patch(f"/dags/{DAG_ID}", {"is_paused": False})  # new DAGs start paused in this stack

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip() or "a" * 40
    url = f"{stack.airflow}/webhooks/github"
    wrong = send(url, "not-the-secret", push_payload("refs/heads/main", commit,
                                                     "local/rice-mlops"))
    assert wrong.status_code == 401
    answer = send(url, stack.env["GITHUB_WEBHOOK_SECRET"],
                  push_payload("refs/heads/main", commit, "local/rice-mlops"))
    assert answer.status_code in (200, 201), answer.text
    run_id = answer.json()["dag_run_id"]

    run = follow(api, run_id, timeout=1500)
    summary = summarize(api, run, stack.airflow, stack.mlflow)
    states = summary["task_states"]
    assert run["state"] == "success", states
    assert states["open_pull_request"] == "skipped"  # no GitHub token in this .env
    log = httpx.get(f"{stack.airflow}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/"
                    "taskInstances/open_pull_request/logs/1", headers=api.headers, timeout=30)
    assert "has no token in its password" in log.text, log.text[-2000:]
    assert all(state == "success" for task, state in states.items()
               if task != "open_pull_request"), states
    assert run["conf"]["source_commit"] == commit

    # Celery put `train` on the training-queue worker and every other task on the default one.
    hosts = {ti["task_id"]: ti["hostname"] for ti in
             api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]}
    for service, tasks in (("airflow-worker-training", ["train"]),
                           ("airflow-worker", ["validate_data", "build_image", "promote"])):
        container = stack.compose("ps", "-q", service).stdout.split()[0]
        for task in tasks:
            assert hosts[task] and container.startswith(hosts[task]), (service, task, hosts)

    # MLflow behind the stack: the run, its metrics and its proxied artifacts.
    mlflow_run = httpx.get(f"{stack.mlflow}/api/2.0/mlflow/runs/get",
                           params={"run_id": summary["mlflow_run_id"]}, timeout=30).json()
    metrics = {m["key"]: m["value"] for m in mlflow_run["run"]["data"]["metrics"]}
    assert metrics["test_accuracy"] >= 0.8
    listed = httpx.get(f"{stack.mlflow}/api/2.0/mlflow/artifacts/list",
                       params={"run_id": summary["mlflow_run_id"]}, timeout=30).json()
    assert {"tflite", "evaluation", "result.json"} <= {f["path"] for f in listed["files"]}

    # The image is in the stack's registry under the commit tag, with the recorded digest.
    repository, digest = summary["image"].split("@")
    assert repository == f"{stack.registry}/rice-classifier"
    manifest = httpx.get(
        f"http://{stack.registry}/v2/rice-classifier/manifests/{commit}",
        auth=(stack.env["REGISTRY_USER"], stack.env["REGISTRY_PASSWORD"]),
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}, timeout=30)
    assert manifest.status_code == 200, manifest.text
    assert manifest.headers["Docker-Content-Digest"] == digest

    _check_airflow_ui(stack, run_id)


def _check_airflow_ui(stack: ComposeStack, run_id: str) -> None:
    from tests.integration.browser import airflow_login, browser_page, screenshot

    with browser_page() as page:
        airflow_login(page, stack.airflow, stack.env["AIRFLOW_ADMIN_PASSWORD"])
        page.goto(f"{stack.airflow}/dags/rice_classifier_cicd/runs/{run_id}")
        page.get_by_text("13 Task Instances").wait_for(timeout=60_000)
        text = page.inner_text("body")
        assert "train" in text and "push_image" in text
        assert screenshot(page, "compose-airflow-dag-run.png").stat().st_size > 10_000
