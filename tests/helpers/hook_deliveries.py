"""Deliveries to the webhook plugin on an embedded Airflow stack (tests/integration/
test_webhook_e2e.py): the stack's environment, deliveries signed as a test asks and bursts
of them, the push payload, the DAG's run count, and whether every process still runs."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from rice_mlops.ingress.send import push_payload
from rice_mlops.ingress.signature import sign
from tests.helpers.pipeline import airflow_env

# At least MIN_SECRET_LENGTH (32) characters: the plugin refuses to start with less.
SECRET = "It's a Secret to Everybody, 32+ chars"
REPO_NAME = "acme/rice"
SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"


def hook_env(mlflow_url, staging, data_dir, **extra) -> dict:
    # Webhook conf carries no training params: defaults from the environment make a quick run
    # that passes the gate, so the run goes through every stage that applies.
    return airflow_env(mlflow_url, staging, RICE_EPOCHS="1", RICE_DATA_DIR=str(data_dir),
                       RICE_MIN_TEST_ACCURACY="0", RICE_TASK_TIMEOUT_MINUTES="1",
                       RICE_DOCKER_SOCKET="/nonexistent/docker.sock",
                       GITHUB_WEBHOOK_REPOSITORIES=REPO_NAME, **extra)


def deliver(stack, payload=None, *, event="push", delivery=None, secret=SECRET,
            signature=None, body=None, headers=None) -> httpx.Response:
    body = body if body is not None else json.dumps(payload or push(SHA)).encode()
    sent = {"Content-Type": "application/json", "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": signature or sign(secret, body)}
    sent.update(headers or {})
    sent = {k: v for k, v in sent.items() if v is not None}
    return httpx.post(f"{stack.url}/webhooks/github", content=body, headers=sent, timeout=15)


def push(sha=SHA, ref="refs/heads/main", repository=REPO_NAME) -> dict:
    return push_payload(ref, sha, repository, pusher="octocat")


def run_count(stack) -> int:
    response = stack.api("GET", "/dags/rice_classifier_cicd/dagRuns", params={"limit": 1})
    assert response.status_code == 200, response.text
    return response.json()["total_entries"]


def burst(stack, n=10) -> list[httpx.Response]:
    shas = [f"{i:040x}" for i in range(1, n + 1)]
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda sha: deliver(stack, push(sha)), shas))


def alive(stack) -> bool:
    status = stack.status()
    return all(f"{name}: running" in status
               for name in ("api-server", "scheduler", "dag-processor", "triggerer"))
