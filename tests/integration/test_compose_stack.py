"""docker-compose.yaml started for real: PostgreSQL, Redis, airflow-init, the API server with the
webhook plugin, scheduler, DAG processor, triggerer, a Celery worker, MLflow and the registry.

Docker Hub is out of reach here, so `scripts/compose-images` builds every image locally (the
real software from Debian packages and PyPI) and the .env points the stack at them. A signed
webhook delivery to the API server runs the whole pipeline on the Celery workers (`train` on the
training-queue profile's worker), and the image lands in the stack's own registry.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTIFACTS = REPO / "test-artifacts"


@dataclass
class Stack:
    command: list[str]
    env: dict[str, str]

    @property
    def airflow(self) -> str:
        return f"http://127.0.0.1:{self.env['AIRFLOW_PORT']}"

    @property
    def mlflow(self) -> str:
        return f"http://127.0.0.1:{self.env['MLFLOW_PORT']}"

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.env['REGISTRY_PORT']}"

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([*self.command, *args], capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)


def _wait(url: str, timeout: float, ok=lambda r: r.status_code == 200) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ok(httpx.get(url, timeout=5)):
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise AssertionError(f"{url} did not answer within {timeout:.0f}s")


@pytest.fixture(scope="module")
def compose_stack(docker_engine, small_real_dataset):
    from cryptography.fernet import Fernet

    from rice_mlops.image import download_wheels

    built = subprocess.run([REPO / "scripts" / "compose-images", "build"], capture_output=True,
                           text=True, timeout=1800)
    assert built.returncode == 0, built.stderr[-3000:]
    images = dict(line.split("=", 1) for line in built.stdout.split())

    # Bind sources must be readable by the containers' users: outside pytest's 0700 dirs.
    root = Path(tempfile.mkdtemp(prefix="rice-compose-"))
    root.chmod(0o755)
    staging = root / "staging"
    staging.mkdir()
    staging.chmod(0o777)  # the workers (uid 50000) write here
    # The stack's network has no route out: the workers read the serving wheels from here.
    download_wheels(staging / "wheelhouse")
    engine = dict(line.removeprefix("export ").split("=", 1) for line in subprocess.run(
        [REPO / "scripts" / "docker-engine", "env"], capture_output=True, text=True,
        check=True).stdout.splitlines())
    env = {
        **images,
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "AIRFLOW_FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(48),
        "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(16),
        "AIRFLOW_WEBHOOK_PASSWORD": secrets.token_urlsafe(16),
        "GITHUB_WEBHOOK_SECRET": secrets.token_urlsafe(32),
        "GITHUB_WEBHOOK_REPOSITORIES": "local/rice-mlops",
        "GITHUB_TOKEN": "",
        "RICE_GITHUB_REPOSITORY": "",
        "REGISTRY_USER": "rice",
        "REGISTRY_PASSWORD": secrets.token_urlsafe(16),
        "RICE_STAGING_DIR": str(staging),
        "RICE_DATA_DIR": str(small_real_dataset),
        "RICE_SCHEDULE": "none",
        "RICE_EPOCHS": "15",
        "RICE_MIN_TEST_ACCURACY": "0.8",  # the subset is small (the default bar is 0.97)
        "RICE_TRAIN_QUEUE": "training",
        "RICE_BASE_IMAGE": engine["RICE_BASE_IMAGE"],
        "RICE_DOCKER_CLI_IMAGE": engine["RICE_DOCKER_CLI_IMAGE"],
        "RICE_SERVING_WHEELHOUSE": str(staging / "wheelhouse"),
        "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
        "AIRFLOW_PORT": str(free_port()),
        "MLFLOW_PORT": str(free_port()),
        "REGISTRY_PORT": str(free_port()),
    }
    env_file = root / ".env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    stack = Stack(["docker-compose", "-p", f"rice-ci-{uuid.uuid4().hex[:8]}", "--env-file",
                   str(env_file), "-f", str(REPO / "docker-compose.yaml"),
                   "--profile", "training-queue"], env)
    try:
        up = stack.compose("up", "-d", "--no-build", timeout=900)
        assert up.returncode == 0, up.stderr[-3000:]
        _wait(f"{stack.airflow}/api/v2/monitor/health", 300)
        yield stack
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        logs = stack.compose("logs", "--no-color", timeout=120)
        (ARTIFACTS / "compose-stack.log").write_text(logs.stdout + logs.stderr)
        stack.compose("down", "--volumes", "--remove-orphans", timeout=300)
        pushed = subprocess.run(["docker", "images", "-q", f"{stack.registry}/rice-classifier"],
                                capture_output=True, text=True).stdout.split()
        if pushed:
            subprocess.run(["docker", "rmi", "-f", *set(pushed)], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_every_service_is_up_and_healthy(compose_stack):
    ps = compose_stack.compose("ps")
    assert ps.returncode == 0, ps.stderr
    deadline = time.monotonic() + 300
    while True:
        states = _service_states(compose_stack)
        waiting = {name: state for name, state in states.items()
                   if name not in ("airflow-init", "registry-init") and state != "healthy"}
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert waiting == {}, compose_stack.compose("ps").stdout
    assert states["airflow-init"] == "exited 0" and states["registry-init"] == "exited 0"


def _service_states(stack: Stack) -> dict[str, str]:
    ids = stack.compose("ps", "-q", "-a").stdout.split()
    inspected = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True,
                                          text=True, check=True).stdout)
    states = {}
    for container in inspected:
        service = container["Config"]["Labels"]["com.docker.compose.service"]
        state = container["State"]
        if state["Status"] == "exited":
            states[service] = f"exited {state['ExitCode']}"
        else:
            states[service] = state.get("Health", {}).get("Status", state["Status"])
    return states


def test_a_push_webhook_runs_the_pipeline_on_celery_workers(compose_stack):
    from rice_mlops.demo import DAG_ID, Api, follow, summarize, wait_for_dag
    from rice_mlops.webhook.send import push_payload, send

    api = Api(compose_stack.airflow, compose_stack.env["AIRFLOW_ADMIN_PASSWORD"])
    wait_for_dag(api, timeout=300)
    api.patch(f"/dags/{DAG_ID}", {"is_paused": False})  # new DAGs start paused in this stack

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip() or "a" * 40
    url = f"{compose_stack.airflow}/webhooks/github"
    wrong = send(url, "not-the-secret", push_payload("refs/heads/main", commit,
                                                     "local/rice-mlops"))
    assert wrong.status_code == 401
    answer = send(url, compose_stack.env["GITHUB_WEBHOOK_SECRET"],
                  push_payload("refs/heads/main", commit, "local/rice-mlops"))
    assert answer.status_code in (200, 201), answer.text
    run_id = answer.json()["dag_run_id"]

    run = follow(api, run_id, timeout=1500)
    summary = summarize(api, run, compose_stack.airflow, compose_stack.mlflow)
    states = summary["task_states"]
    assert run["state"] == "success", states
    assert states["open_pull_request"] == "skipped"  # no GitHub token in this .env
    log = httpx.get(f"{compose_stack.airflow}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/"
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
        container = compose_stack.compose("ps", "-q", service).stdout.split()[0]
        for task in tasks:
            assert hosts[task] and container.startswith(hosts[task]), (service, task, hosts)

    # MLflow behind the stack: the run, its metrics and its proxied artifacts.
    mlflow_run = httpx.get(f"{compose_stack.mlflow}/api/2.0/mlflow/runs/get",
                           params={"run_id": summary["mlflow_run_id"]}, timeout=30).json()
    metrics = {m["key"]: m["value"] for m in mlflow_run["run"]["data"]["metrics"]}
    assert metrics["test_accuracy"] >= 0.8
    listed = httpx.get(f"{compose_stack.mlflow}/api/2.0/mlflow/artifacts/list",
                       params={"run_id": summary["mlflow_run_id"]}, timeout=30).json()
    assert {"tflite", "evaluation", "result.json"} <= {f["path"] for f in listed["files"]}

    # The image is in the stack's registry under the commit tag, with the recorded digest.
    repository, digest = summary["image"].split("@")
    assert repository == f"{compose_stack.registry}/rice-classifier"
    manifest = httpx.get(
        f"http://{compose_stack.registry}/v2/rice-classifier/manifests/{commit}",
        auth=(compose_stack.env["REGISTRY_USER"], compose_stack.env["REGISTRY_PASSWORD"]),
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}, timeout=30)
    assert manifest.status_code == 200, manifest.text
    assert manifest.headers["Docker-Content-Digest"] == digest

    _check_airflow_ui(compose_stack, run_id)


def _check_airflow_ui(stack: Stack, run_id: str) -> None:
    from tests.integration.browser import airflow_login, browser_page, screenshot

    with browser_page() as page:
        airflow_login(page, stack.airflow, stack.env["AIRFLOW_ADMIN_PASSWORD"])
        page.goto(f"{stack.airflow}/dags/rice_classifier_cicd/runs/{run_id}")
        page.get_by_text("13 Task Instances").wait_for(timeout=60_000)
        text = page.inner_text("body")
        assert "train" in text and "push_image" in text
        assert screenshot(page, "compose-airflow-dag-run.png").stat().st_size > 10_000
