"""The tracking server scripts/mlflow-server starts (make demo, every fixture) runs MLflow's
basic-auth app: strangers get 401, the pipeline's user writes, people log in to read."""

from __future__ import annotations

import uuid

import httpx
import pytest

pytestmark = pytest.mark.integration

CREATE = "/api/2.0/mlflow/experiments/create"


def test_anonymous_and_wrong_password_writes_are_refused(mlflow_control):
    url = mlflow_control.url
    name = {"name": f"intruder-{uuid.uuid4().hex[:8]}"}
    assert httpx.post(url + CREATE, json=name, timeout=30).status_code == 401
    for user in ("rice-pipeline", "admin"):
        assert httpx.post(url + CREATE, json=name, auth=(user, "guessed"),
                          timeout=30).status_code == 401
    assert httpx.get(f"{url}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                     timeout=30).status_code == 401
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200  # probes need no login


def test_the_pipeline_user_writes_but_manages_no_users(mlflow_control):
    credentials = mlflow_control.credentials
    auth = (credentials["MLFLOW_TRACKING_USERNAME"], credentials["MLFLOW_TRACKING_PASSWORD"])
    url = mlflow_control.url
    created = httpx.post(url + CREATE, json={"name": f"pipeline-{uuid.uuid4().hex[:8]}"},
                         auth=auth, timeout=30)
    assert created.status_code == 200, created.text
    promoted = httpx.patch(f"{url}/api/2.0/mlflow/users/update-admin",
                           json={"username": auth[0], "is_admin": True}, auth=auth, timeout=30)
    assert promoted.status_code == 403
    # The Default experiment is not the pipeline's: default permission READ.
    run = httpx.post(f"{url}/api/2.0/mlflow/runs/create", json={"experiment_id": "0"},
                     auth=auth, timeout=30)
    assert run.status_code == 403


def test_a_person_logs_in_and_reads_but_cannot_write_the_pipelines_runs(mlflow_control):
    admin = mlflow_control.admin
    url = mlflow_control.url
    person = ("reader", "a-long-enough-password-for-a-person")
    created = httpx.post(f"{url}/api/2.0/mlflow/users/create",
                         json={"username": person[0], "password": person[1]}, auth=admin,
                         timeout=30)
    assert created.status_code == 200, created.text
    credentials = mlflow_control.credentials
    pipeline = (credentials["MLFLOW_TRACKING_USERNAME"], credentials["MLFLOW_TRACKING_PASSWORD"])
    experiment = httpx.post(url + CREATE, json={"name": f"owned-{uuid.uuid4().hex[:8]}"},
                            auth=pipeline, timeout=30).json()["experiment_id"]
    seen = httpx.get(f"{url}/api/2.0/mlflow/experiments/get",
                     params={"experiment_id": experiment}, auth=person, timeout=30)
    assert seen.status_code == 200
    written = httpx.post(f"{url}/api/2.0/mlflow/runs/create",
                         json={"experiment_id": experiment}, auth=person, timeout=30)
    assert written.status_code == 403


def test_remembered_credentials_are_forgotten_when_the_password_changes(mlflow_control,
                                                                     monkeypatch):
    """The server remembers checked passwords (MLFLOW_AUTH_CACHE_SECONDS, bounded); a changed
    password must still lock the old one out at once, not after the cache's lifetime."""
    from mlflow.server.auth.config import read_auth_config

    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(mlflow_control.home / "basic_auth.ini"))
    config = read_auth_config()
    assert config.auth_cache_ttl_seconds == 300 and config.auth_cache_max_size == 256

    url, admin = mlflow_control.url, mlflow_control.admin
    user = f"rotating-{uuid.uuid4().hex[:8]}"
    old, new = ("first-password-" + uuid.uuid4().hex, "second-password-" + uuid.uuid4().hex)
    assert httpx.post(f"{url}/api/2.0/mlflow/users/create", auth=admin, timeout=30,
                      json={"username": user, "password": old}).status_code == 200
    search = f"{url}/api/2.0/mlflow/experiments/search"
    for _ in range(2):  # the second answer comes from the cache
        assert httpx.get(search, params={"max_results": 1}, auth=(user, old),
                         timeout=30).status_code == 200
    changed = httpx.patch(f"{url}/api/2.0/mlflow/users/update-password", auth=admin,
                          json={"username": user, "password": new}, timeout=30)
    assert changed.status_code == 200, changed.text
    assert httpx.get(search, params={"max_results": 1}, auth=(user, old),
                     timeout=30).status_code == 401
    assert httpx.get(search, params={"max_results": 1}, auth=(user, new),
                     timeout=30).status_code == 200
