"""The webhook plugin on the real API server, triggering the real scheduler's DAG."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.airflow_stack import AirflowStack
from tests.helpers.hook_deliveries import (
    REPO_NAME,
    SECRET,
    SHA,
    alive,
    burst,
    deliver,
    hook_env,
    push,
    run_count,
)
from tests.helpers.paths import REPO
from tests.helpers.ports import free_port
from tests.helpers.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NEW_SECRET = "the new secret, long enough to be accepted"


@pytest.fixture(scope="module")
def proxy():
    return TcpProxy(free_port(), 0)


@pytest.fixture(scope="module")
def hook_pg(mlflow_server, tiny_real_dataset, tmp_path_factory, staging_root, proxy):
    """API server with the plugin, reaching its own REST API through a cuttable proxy."""
    port = free_port()
    proxy.target_port = port
    proxy.start()
    pg_port = int(os.environ.get("RICE_TEST_PG_PORT") or free_port())
    env = {**os.environ, "PGPORT": str(pg_port), "PG_DB": "airflow_hook"}
    subprocess.run([REPO / "scripts" / "postgres", "start"], env=env, check=True, timeout=600)
    database_url = subprocess.run([REPO / "scripts" / "postgres", "url"], env=env, check=True,
                                  capture_output=True, text=True).stdout.strip()
    stack = AirflowStack(
        home=tmp_path_factory.mktemp("airflow-hook"), port=port,
        env=hook_env(mlflow_server, staging_root, tiny_real_dataset,
                     GITHUB_WEBHOOK_SECRET=SECRET,
                     AIRFLOW_WEBHOOK_API_URL=f"http://127.0.0.1:{proxy.listen_port}",
                     AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=database_url))
    try:
        with stack.running():
            yield stack
    finally:
        subprocess.run([REPO / "scripts" / "postgres", "destroy"], env=env, timeout=120)


@pytest.fixture(scope="module")
def pushed(hook_pg) -> dict:
    """The module's one executed run: a signed push to main, delivered once and run to its
    end (the hung-task test clears a task of it rather than training another)."""
    before = run_count(hook_pg)
    delivery = str(uuid.uuid4())
    response = deliver(hook_pg, push(), delivery=delivery)
    assert response.status_code == 200, response.text
    run_id = response.json()["dag_run_id"]
    after = run_count(hook_pg)
    finished = hook_pg.wait_for_run(run_id, timeout=600)
    return {"run_id": run_id, "delivery": delivery, "runs_before": before,
            "runs_after": after, "state": finished["state"]}


def test_signed_push_to_main_triggers_one_executed_run(hook_pg, pushed):
    run_id = pushed["run_id"]
    assert run_id == f"github__{REPO_NAME.replace('/', '.')}__{SHA}"
    run = hook_pg.run(run_id)
    assert run["run_type"] == "manual"
    assert run["conf"] == {"source_commit": SHA, "source_ref": "refs/heads/main",
                           "source_repository": REPO_NAME, "pusher": "octocat",
                           "compare_url": push()["compare"]}
    assert pushed["runs_after"] == pushed["runs_before"] + 1
    assert pushed["state"] == "success", hook_pg.describe(run_id)
    # No GitHub connection in this stack: skipped with the reason, never a silent success.
    assert hook_pg.task_states(run_id)["open_pull_request"] == "skipped"
    assert "no Airflow connection 'github_default'" in hook_pg.task_log(run_id,
                                                                         "open_pull_request")

    again = deliver(hook_pg, push(), delivery=pushed["delivery"])  # a redelivery
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["dag_run_id"] == run_id
    assert run_count(hook_pg) == pushed["runs_after"]
    # GitHub signs only the body: the same body replayed with fresh delivery ids is the same
    # push, not a new one.
    for _ in range(3):
        replay = deliver(hook_pg, push(), delivery=str(uuid.uuid4()))
        assert replay.status_code == 200 and replay.json()["duplicate"] is True, replay.text
        assert replay.json()["dag_run_id"] == run_id
    assert run_count(hook_pg) == pushed["runs_after"]
    # As GitHub sends the same push when the webhook's content type is the form: the same run.
    form = urlencode({"payload": json.dumps(push())}).encode()
    as_form = deliver(hook_pg, body=form,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert as_form.status_code == 200 and as_form.json()["dag_run_id"] == run_id, as_form.text
    assert run_count(hook_pg) == pushed["runs_after"]


def _refused(stack, kind: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(f"{stack.url}/webhooks/metrics", timeout=15)
    assert response.status_code == 200, response.text
    return sum(sample.value for family in text_string_to_metric_families(response.text)
               for sample in family.samples if sample.name == "rice_webhook_deliveries_total"
               and sample.labels["outcome"] == "refused" and sample.labels["kind"] == kind)


def test_refused_deliveries_are_counted_on_the_api_server(hook_pg):
    before = {kind: _refused(hook_pg, kind) for kind in ("signature", "repository")}
    assert deliver(hook_pg, secret="not the secret").status_code == 401
    assert deliver(hook_pg, push(repository="evil/fork")).status_code == 202
    assert deliver(hook_pg, push(repository="evil/fork")).status_code == 202
    assert _refused(hook_pg, "signature") == before["signature"] + 1
    assert _refused(hook_pg, "repository") == before["repository"] + 2


@pytest.mark.parametrize(
    ("kwargs", "status", "fragment"),
    [
        ({"signature": "sha256=" + "0" * 64}, 401, "does not match"),
        ({"headers": {"X-Hub-Signature-256": None}}, 401, "missing X-Hub-Signature-256"),
        ({"signature": "sha1=abc"}, 400, "malformed"),
        ({"secret": "not the secret"}, 401, "does not match"),
        ({"payload": push(ref="refs/heads/dev")}, 202, "refs/heads/dev is ignored"),
        ({"payload": push(ref="refs/tags/v1.2.0")}, 202, "tag push"),
        ({"payload": {**push(), "deleted": True}}, 202, "deleting"),
        ({"event": "issues"}, 202, "'issues' is ignored"),
        ({"payload": push(repository="evil/fork")}, 202, "not in the allow-list"),
        ({"event": "ping", "payload": {"zen": "hi"}}, 200, "pong"),
        ({"body": b"not json"}, 400, "not valid JSON"),
        ({"headers": {"X-GitHub-Delivery": None}}, 400, "X-GitHub-Delivery"),
        ({"headers": {"Content-Type": "text/plain"}}, 415, "application/json"),
        ({"headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 400,
         "form body"),  # a JSON body sent as a form
    ],
)
def test_everything_else_triggers_nothing(hook_pg, kwargs, status, fragment):
    before = run_count(hook_pg)
    response = deliver(hook_pg, **kwargs)
    assert response.status_code == status, response.text
    assert fragment in response.json()["reason"]
    assert run_count(hook_pg) == before


def test_oversized_body_is_refused_without_a_run(hook_pg):
    before = run_count(hook_pg)
    response = httpx.post(f"{hook_pg.url}/webhooks/github", timeout=30,
                          content=b"x" * (25 * 1024 * 1024 + 1),
                          headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=0"})
    assert response.status_code == 413
    assert run_count(hook_pg) == before


def test_api_down_answers_503_and_the_redelivery_triggers_once(hook_pg, proxy):
    before = run_count(hook_pg)
    delivery = str(uuid.uuid4())
    sha = "a" * 40
    proxy.stop()
    try:
        response = deliver(hook_pg, push(sha), delivery=delivery)
        assert response.status_code == 503, response.text
        assert "redeliver" in response.json()["reason"]
    finally:
        proxy.start()
    assert run_count(hook_pg) == before
    response = deliver(hook_pg, push(sha), delivery=delivery)
    assert response.status_code == 200, response.text
    assert response.json().get("duplicate") is None
    assert run_count(hook_pg) == before + 1


def test_a_hung_task_is_ended_by_its_timeout_and_the_next_run_starts(hook_pg, pushed):
    """GitHub accepts the connection and never answers: the pull request task is cut off by
    its execution_timeout (1 minute here) instead of holding the only active run slot. The
    module's executed run is put back to work by clearing its pull request task, as an
    operator would from the UI: a second training would prove nothing more."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)  # handshakes complete in the backlog; nothing is ever read or answered
    port = hole.getsockname()[1]
    created = hook_pg.api("POST", "/connections", json={
        "connection_id": "github_default", "conn_type": "github",
        "host": f"http://127.0.0.1:{port}", "password": "ghp_hangs"})
    assert created.status_code == 201, created.text
    hung, queued = pushed["run_id"], "hang-queued"
    try:
        before = hook_pg.task_instance(hung, "open_pull_request")["try_number"]
        cleared = hook_pg.api("POST", "/dags/rice_classifier_cicd/clearTaskInstances", json={
            "dry_run": False, "task_ids": ["open_pull_request"], "dag_run_id": hung,
            "include_downstream": False, "include_upstream": False, "only_failed": False,
            "reset_dag_runs": True})
        assert cleared.status_code == 200, cleared.text
        deadline = time.monotonic() + 300
        while not ((pull := hook_pg.task_instance(hung, "open_pull_request"))["try_number"]
                   > before and pull["state"] in ("running", "up_for_retry", "failed")):
            assert time.monotonic() < deadline, hook_pg.describe(hung)
            time.sleep(1)
        # Through the REST API with `force`: the same data and code as the champion would
        # otherwise end as unchanged. It must wait: the cleared run holds the only slot.
        conf = {"force": True, "source_commit": "d" * 40, "source_ref": "refs/heads/main",
                "source_repository": REPO_NAME}
        assert hook_pg.trigger(conf, queued).status_code == 200
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            pull = hook_pg.task_instance(hung, "open_pull_request")
            if pull["try_number"] > before and pull["state"] in ("up_for_retry", "failed"):
                break
            assert hook_pg.run(queued)["state"] == "queued", hook_pg.describe(queued)
            time.sleep(2)
        assert pull["state"] in ("up_for_retry", "failed"), hook_pg.describe(hung)
        log = hook_pg.task_log(hung, "open_pull_request", try_number=pull["try_number"])
        assert "Timeout" in log, log[-2000:]
    finally:
        hook_pg.api("DELETE", "/connections/github_default")
        hole.close()
    # The retry finds no connection and skips; the queued run gets the slot.
    assert hook_pg.wait_for_run(hung, timeout=600)["state"] == "success"
    deadline = time.monotonic() + 300
    while hook_pg.run(queued)["state"] == "queued":
        assert time.monotonic() < deadline, hook_pg.describe(queued)
        time.sleep(2)
    # It started: that is all this test needs. Stopped here, as an operator would mark it
    # failed in the UI, it does not train and build behind the module's next tests (their runs
    # would queue behind it for minutes). Airflow fails what runs and skips what has not; the
    # run itself ends once its teardown (`report`) has, so wait for that.
    ended = hook_pg.api("PATCH", f"/dags/rice_classifier_cicd/dagRuns/{queued}",
                        json={"state": "failed"})
    assert ended.status_code == 200, ended.text
    assert hook_pg.wait_for_run(queued, timeout=300)["state"] in ("failed", "success")


def test_a_push_that_met_a_503_is_redelivered_by_the_recovery_dag(hook_pg, proxy,
                                                                  github_double):
    """GitHub never retries by itself: the recovery DAG asks it to, once Airflow is back."""
    from tests.helpers.pipeline import GITHUB_TOKEN

    hook = github_double.add_hook(f"{hook_pg.url}/webhooks/github", SECRET)
    sha = "e" * 40
    proxy.stop()  # the webhook cannot reach the REST API: it answers 503
    try:
        first = github_double.deliver(hook, "push", push(sha))
    finally:
        proxy.start()
    assert first["status_code"] == 503
    run_id = f"github__{REPO_NAME.replace('/', '.')}__{sha}"
    assert hook_pg.api("GET", f"/dags/rice_classifier_cicd/dagRuns/{run_id}").status_code == 404
    created = hook_pg.api("POST", "/connections", json={
        "connection_id": "github_default", "conn_type": "github",
        "host": github_double.url, "password": GITHUB_TOKEN})
    assert created.status_code == 201, created.text
    try:
        hook_pg.wait_for_dag("rice_webhook_redelivery")
        hook_pg.unpause("rice_webhook_redelivery")
        for attempt in ("redelivery-1", "redelivery-2"):  # the second finds nothing to do
            response = hook_pg.trigger({}, attempt, dag_id="rice_webhook_redelivery")
            assert response.status_code == 200, response.text
            assert hook_pg.wait_for_run(attempt, dag_id="rice_webhook_redelivery",
                                        timeout=300)["state"] == "success"
            deadline = time.monotonic() + 60
            while not any(d["redelivery"] for d in github_double.deliveries
                          if d["guid"] == first["guid"]):
                assert time.monotonic() < deadline
                time.sleep(0.5)
    finally:
        hook_pg.api("DELETE", "/connections/github_default")
    attempts = [d for d in github_double.deliveries if d["guid"] == first["guid"]]
    assert [(d["redelivery"], d["status_code"]) for d in attempts] == [(False, 503),
                                                                       (True, 200)]
    assert hook_pg.wait_for_run(run_id, timeout=600)["state"] == "success"
    runs = hook_pg.api("GET", "/dags/rice_classifier_cicd/dagRuns",
                       params={"limit": 100}).json()["dag_runs"]
    assert [r["dag_run_id"] for r in runs].count(run_id) == 1


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(body=st.binary(max_size=2048),
       event=st.sampled_from(["push", "ping", "issues", "", "push\u00e9"]),
       signature=st.one_of(st.none(), st.text(max_size=80),
                           st.from_regex(r"sha256=[0-9a-f]{64}", fullmatch=True)),
       delivery=st.one_of(st.none(), st.text(max_size=40)))
def test_random_deliveries_never_5xx_never_a_run(hook_pg, body, event, signature, delivery):
    headers = {"Content-Type": "application/json"}
    for key, value in (("X-GitHub-Event", event), ("X-Hub-Signature-256", signature),
                       ("X-GitHub-Delivery", delivery)):
        if value is not None:  # any bytes a client can put on a header line
            # h11 refuses control characters and surrounding white space on the wire.
            headers[key] = "".join(c for c in value if c > " " and c != "\x7f").encode()
    before = _RUNS.setdefault("before", run_count(hook_pg))
    response = httpx.post(f"{hook_pg.url}/webhooks/github", content=body, headers=headers,
                          timeout=15)
    assert response.status_code < 500, response.text
    assert response.status_code != 200 or event == "ping"
    assert run_count(hook_pg) == before


_RUNS: dict[str, int] = {}


@pytest.fixture(scope="module")
def hook_sqlite(mlflow_server, tiny_real_dataset, tmp_path_factory, staging_root):
    """The embedded default: SQLite metadata, the webhook serializing its triggers."""
    stack = AirflowStack(home=tmp_path_factory.mktemp("airflow-hook-sqlite"), port=free_port(),
                         env=hook_env(mlflow_server, staging_root, tiny_real_dataset,
                                      GITHUB_WEBHOOK_SECRET=SECRET))
    with stack.running():
        yield stack


@pytest.mark.parametrize("stack_fixture", ["hook_pg", "hook_sqlite"])
def test_burst_of_ten(request, stack_fixture):
    stack = request.getfixturevalue(stack_fixture)
    before = run_count(stack)
    # Paused, the ten runs are created and wait: the trigger path is what is under test, and
    # ten trainings would otherwise load the machine behind every later test of the module.
    stack.pause()
    responses: list[httpx.Response] = []
    try:
        responses = burst(stack)
        assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
        assert run_count(stack) == before + 10
        assert alive(stack)
    finally:
        for response in responses:
            if response.status_code == 200:
                stack.api("DELETE", "/dags/rice_classifier_cicd/dagRuns/"
                                    f"{response.json()['dag_run_id']}")
        stack.unpause()


def test_no_secret_configured_refuses_every_delivery(hook_sqlite):
    hook_sqlite.stop()
    hook_sqlite.env.pop("GITHUB_WEBHOOK_SECRET")
    hook_sqlite.start()
    before = run_count(hook_sqlite)
    for secret in (SECRET, "", "anything"):
        response = deliver(hook_sqlite, push(), secret=secret or "x")
        assert response.status_code == 403
        assert "secret not configured" in response.json()["reason"]
    assert run_count(hook_sqlite) == before
    log = (hook_sqlite.home / "logs" / "api-server.log").read_text()
    assert "GITHUB_WEBHOOK_SECRET is not set" in log


def test_secret_from_an_airflow_variable_with_the_previous_one_during_rotation(hook_sqlite):
    hook_sqlite.stop()
    hook_sqlite.env.pop("GITHUB_WEBHOOK_SECRET", None)
    # The Variable comes through Airflow's own secrets backends (here: the environment one).
    hook_sqlite.env.update(GITHUB_WEBHOOK_SECRET_VARIABLE="rice_webhook_secret",
                           AIRFLOW_VAR_RICE_WEBHOOK_SECRET=NEW_SECRET,
                           GITHUB_WEBHOOK_SECRET_PREVIOUS=SECRET)
    hook_sqlite.start()
    ping = {"zen": "Keep it logically awesome.", "hook_id": 1}
    unknown = "a third secret, long enough but unknown"
    for secret, status in ((NEW_SECRET, 200), (SECRET, 200), (unknown, 401)):
        response = deliver(hook_sqlite, ping, event="ping", secret=secret)
        assert response.status_code == status, (secret, response.text)
