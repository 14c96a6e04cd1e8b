"""Issue 35 on the compose stack: the release zone takes commands only from the control plane.

Each attack uses only what the attacking container really holds: a compute worker (the default
worker, and the remote machine's worker) holds the compute broker's password and its own
environment, nothing of the release zone's. The tests ride the shared stack's pushed run
(tests/helpers/loaded_run.py): the remote worker listens on the release queue's name too, as a
remote host that set RICE_WORKER_QUEUE=training,docker would.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.helpers.compose_project import REMOTE_SERVICE, ComposeStack
from tests.helpers.insider import metadata_sql, task_token
from tests.helpers.paths import REPO
from tests.helpers.timestamps import utc_now

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RELEASE = "airflow-worker-docker"
RELEASE_TASKS = ("prune_old_builds", "prepare_image_context", "build_image", "smoke_test",
                 "push_image", "attest_image", "roll_out", "promote")
MARKER = "/tmp/rice-forged-by-an-insider"


@pytest.fixture(scope="module")
def stack(shared_compose_stack) -> ComposeStack:
    return shared_compose_stack


def _exec(stack: ComposeStack, service: str, *command: str, env: dict | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess:
    names = [arg for key in (env or {}) for arg in ("-e", key)]
    return subprocess.run([*stack.project_of(service).command, "exec", "-T", *names, service,
                           *command], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})


def _container(stack: ComposeStack, service: str) -> dict:
    [cid] = stack.project_of(service).compose("ps", "-q", service).stdout.split()
    return json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True,
                                     text=True, check=True).stdout)[0]


def _release_broker_address(stack: ComposeStack) -> str:
    networks = _container(stack, "redis-release")["NetworkSettings"]["Networks"]
    assert len(networks) == 1 and next(iter(networks)).endswith("_release-bus"), networks
    return next(iter(networks.values()))["IPAddress"]


# Run inside a compute worker, with what it holds: its own broker URL (the compute password).
# Every way to the release broker: by name, and at its address with that password.
_REACH_PROBE = r"""
import json, os, socket, urllib.parse
out = {}
try:
    socket.getaddrinfo("redis-release", 6379)
    out["resolves"] = True
except OSError:
    out["resolves"] = False
password = urllib.parse.urlsplit(os.environ["AIRFLOW__CELERY__BROKER_URL"]).password
out["holds_release_password"] = any(
    "redis-release" in value for value in os.environ.values())
import redis
try:
    client = redis.Redis(host=os.environ["RICE_PROBE_IP"], port=6379, password=password,
                         socket_connect_timeout=5, socket_timeout=5)
    client.lpush("docker", "forged")
    out["publish"] = "published"
except redis.AuthenticationError as exc:
    out["publish"] = "refused: " + type(exc).__name__
except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
    out["publish"] = "unreachable: " + type(exc).__name__
print(json.dumps(out))
"""


@pytest.mark.parametrize("service", ["airflow-worker", REMOTE_SERVICE])
def test_a_compute_worker_cannot_publish_to_the_release_broker(stack, compose_pushed_run,
                                                               service):
    """Done-when 1, from each compute worker: the release broker's name does not resolve, no
    compute container holds its address or password, and at its address the compute password
    publishes nothing (no route, or the broker refuses it)."""
    probe = _exec(stack, service, "python", "-c", _REACH_PROBE,
                  env={"RICE_PROBE_IP": _release_broker_address(stack)})
    assert probe.returncode == 0, probe.stderr[-2000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    zone = f"zone wall broken: {service} can command the release worker"
    assert seen["resolves"] is False and seen["holds_release_password"] is False, (zone, seen)
    assert seen["publish"] != "published", (zone, seen)
    length = _exec(stack, "redis-release", "redis-cli", "LLEN", "docker").stdout.strip()
    assert length == "0", (zone, length)


# Run inside the scheduler, the one publisher that holds the release broker's password: what a
# forged message on the release queue would make the release worker do, were it run.
_FORGE = r"""
import json, os, sys, uuid
from celery import Celery
marker = sys.argv[1]
def ti(dag_id):
    return {"id": str(uuid.uuid4()), "task_id": "build_image", "dag_id": dag_id,
            "run_id": "forged", "try_number": 1, "dag_version_id": str(uuid.uuid4()),
            "queue": "docker", "pool_slots": 1, "priority_weight": 1}
bundle = {"name": "dags-folder", "version": None}
forged = {
    "callback": {"type": "ExecuteCallback", "token": "junk", "log_path": None,
                 "dag_rel_path": "rice_classifier_cicd.py", "bundle_info": bundle,
                 "callback": {"id": str(uuid.uuid4()), "fetch_method": "import_path",
                              "data": {"path": "os.makedirs", "kwargs": {"name": marker}}}},
    "foreign task": {"type": "ExecuteTask", "token": "junk", "log_path": "x.log",
                     "dag_rel_path": "elsewhere.py", "bundle_info": bundle,
                     "ti": ti("elsewhere")},
}
app = Celery("forger", broker=os.environ["AIRFLOW__RELEASE_CELERY__BROKER_URL"])
sent = {}
for name, body in forged.items():
    task_id = "forged-" + uuid.uuid4().hex
    app.send_task("execute_workload", args=(json.dumps(body),), queue="docker", task_id=task_id)
    sent[name] = task_id
print(json.dumps(sent))
"""


def test_the_release_worker_refuses_what_it_must_not_run(stack, compose_pushed_run):
    """Done-when 1, the release side: even on its own broker (the scheduler publishing), a
    callback workload and another DAG's task are refused by the release worker, each refusal
    logged with its reason, and the callback's marker never appears there."""
    forged = _exec(stack, "airflow-scheduler", "python", "-c", _FORGE, MARKER)
    assert forged.returncode == 0, forged.stderr[-2000:]
    sent = json.loads(forged.stdout.strip().splitlines()[-1])
    deadline, logs = time.monotonic() + 90, ""
    while time.monotonic() < deadline:
        logs = stack.compose("logs", "--no-color", RELEASE).stdout
        if all(f"release worker refused Celery task {task_id}" in logs
               for task_id in sent.values()):
            break
        time.sleep(2)
    for name, task_id in sent.items():
        lines = [line for line in logs.splitlines()
                 if f"release worker refused Celery task {task_id}" in line]
        assert lines, (name, logs[-3000:])
    assert any("ExecuteCallback workload" in line for line in logs.splitlines())
    assert any("DAG 'elsewhere' has no release tasks" in line for line in logs.splitlines())
    found = _exec(stack, RELEASE, "sh", "-c", f"test -e {MARKER} && echo present || echo absent")
    assert found.stdout.strip() == "absent", "a forged callback ran on the release worker"


def test_a_remote_worker_on_the_release_queue_gets_no_release_task(stack, compose_pushed_run):
    """Done-when 2: the remote worker listens on the release queue's name too (RICE_WORKER_QUEUE
    training,docker), yet every release task of the pushed run ran on the release worker, and
    the run shipped."""
    from tests.helpers.retrying_airflow import Airflow

    queues = stack.remote.env["RICE_WORKER_QUEUE"].split(",")
    assert "docker" in queues, queues  # or this test would show nothing
    api = Airflow(stack.airflow, stack.env["AIRFLOW_ADMIN_PASSWORD"])
    tasks = api.tasks(compose_pushed_run.run_id)
    release_host = _container(stack, RELEASE)["Config"]["Hostname"]
    for task in RELEASE_TASKS:
        assert tasks[task]["hostname"] == release_host, (task, tasks[task]["hostname"])
    assert compose_pushed_run.state == "success", compose_pushed_run.ledger


def test_a_shutdown_broadcast_from_a_compute_worker_leaves_the_release_worker_running(stack):
    """Done-when 3: Celery's remote control from the default worker, with its own broker, aimed
    at the release worker's node name: the release worker is not stopped or restarted, and it
    still answers a ping on its own broker."""
    before = _container(stack, RELEASE)
    node = f"celery@{before['Config']['Hostname']}"
    broadcast = _exec(stack, "airflow-worker", "sh", "-c",
                      f'CELERY_BROKER_URL="$AIRFLOW__CELERY__BROKER_URL" celery control '
                      f'--timeout 5 -d {node} shutdown; true')
    assert "Traceback" not in broadcast.stderr, broadcast.stderr[-2000:]
    time.sleep(10)  # a worker told to shut down stops within a few seconds
    after = _container(stack, RELEASE)
    assert after["State"]["Running"] and after["State"]["StartedAt"] == \
        before["State"]["StartedAt"] and after["RestartCount"] == before["RestartCount"], \
        "zone wall broken: a compute worker's broadcast stopped the release worker"
    ping = _exec(stack, RELEASE, "sh", "-c", f'CELERY_BROKER_URL="$AIRFLOW__CELERY__BROKER_URL" '
                 f'celery inspect ping --timeout 5 -d {node}')
    assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr


def test_what_serves_shares_its_directories_with_a_group_and_is_bounded(stack,
                                                                        compose_pushed_run):
    """The host side (issue 35): the prediction-log and labelling directories the release
    worker shares with the serving containers are group-shared (RICE_SERVING_GID, 2770), never
    world-writable; the serving containers' CPU and processes are bounded besides memory."""
    import stat
    from pathlib import Path

    serving = Path(stack.env["RICE_RELEASE_DIR"]) / "serving"
    state = json.loads((serving / "state.json").read_text())
    shared = [path for path in (serving / "predictions").iterdir() if path.is_dir()]
    shared += [serving / "labelling"] if (serving / "labelling").is_dir() else []
    assert shared, list(serving.iterdir())
    gid = int(stack.env.get("RICE_SERVING_GID", "50100"))
    for directory in shared:
        mode = directory.stat().st_mode
        assert not mode & stat.S_IWOTH and not mode & stat.S_IROTH, (directory, oct(mode))
        assert directory.stat().st_gid == gid and mode & stat.S_ISGID, (directory, oct(mode))
    slot = f"{stack.env['RICE_ROLLOUT_NAME']}-{state['stable']['slot']}"
    host = json.loads(subprocess.run(["docker", "inspect", slot], capture_output=True,
                                     text=True, check=True).stdout)[0]["HostConfig"]
    assert host["Memory"] > 0 and 0 < host["NanoCpus"] <= 1e9 and 0 < host["PidsLimit"] <= 128
    assert str(gid) in (host.get("GroupAdd") or []), host.get("GroupAdd")


def _airflow(stack: ComposeStack):
    from tests.helpers.retrying_airflow import Airflow

    return Airflow(stack.airflow, stack.env["AIRFLOW_ADMIN_PASSWORD"])


def _execution(stack: ComposeStack, method: str, path: str, ti_id: str, **kwargs):
    import httpx

    return httpx.request(method, f"{stack.airflow}/execution{path}", timeout=30,
                         headers={"Authorization": f"Bearer {task_token(stack, ti_id)}"},
                         **kwargs)


FORGED_SUMMARY = "FORGED by a compute task: retrain on my data now"


def test_a_drift_event_a_compute_task_emits_starts_no_training(stack, compose_pushed_run):
    """Done-when 8: a compute task (the pushed run's `validate_data`, running again: a running
    task's token is what its worker holds) lists `rice_drift` among its outlets when it reports
    success, with a summary of its own. Airflow records the event, with that task as its source,
    and starts the training DAG on it; `admit` refuses the run before anything trains, and the
    note names the source, never the forged text."""
    from rice_mlops.core.vocabulary import DAG_ID
    from rice_mlops.stages.assets import RICE_DRIFT

    api = _airflow(stack)
    before = {r["dag_run_id"] for r in api.get(f"/dags/{DAG_ID}/dagRuns", limit=100)["dag_runs"]}
    ti = api.task(compose_pushed_run.run_id, "validate_data")
    metadata_sql(stack, f"update task_instance set state = 'running' where id = '{ti['id']}'")
    asset = {"name": RICE_DRIFT.name, "uri": RICE_DRIFT.uri}
    answer = _execution(stack, "PATCH", f"/task-instances/{ti['id']}/state", ti["id"], json={
        "state": "success", "end_date": utc_now(), "task_outlets": [{**asset, "type": "Asset"}],
        "outlet_events": [{"dest_asset_key": asset, "extra": {"summary": FORGED_SUMMARY}}]})
    assert answer.status_code in (200, 204), answer.text
    [event] = [e for e in api.get("/assets/events", source_dag_id=DAG_ID,
                                  source_task_id="validate_data")["asset_events"]
               if e["name"] == RICE_DRIFT.name]  # Airflow believed the compute task
    assert event["extra"]["summary"] == FORGED_SUMMARY
    deadline, started = time.monotonic() + 180, []
    while not started and time.monotonic() < deadline:
        started = [r for r in api.get(f"/dags/{DAG_ID}/dagRuns", limit=100)["dag_runs"]
                   if r["run_type"] == "asset_triggered" and r["dag_run_id"] not in before]
        time.sleep(2)
    assert started, "the forged event started no run: this test would show nothing"
    run = api.wait_run(started[0]["dag_run_id"], timeout=300)
    tasks = {task: t["state"] for task, t in api.tasks(run["dag_run_id"]).items()}
    assert tasks["admitted"] == "success" and tasks["validate_data"] == "skipped", tasks
    assert tasks["train"] == "skipped" and tasks["prepare_image_context"] == "skipped", tasks
    # Started by a forgery: a failure, not a decision (issue 38): red, and the report says so.
    assert run["state"] == "failed" and tasks["report"] == "failed", tasks
    assert run["note"].startswith(
        f"NOT ADMITTED: started by rice_drift event(s) from {DAG_ID}.validate_data, not "
        "rice_monitoring.raise_drift"), run["note"]
    assert FORGED_SUMMARY not in run["note"]


def test_a_rewritten_hand_off_between_release_tasks_is_refused(stack, compose_pushed_run):
    """Done-when 7: after the pushed run shipped, `record_image`'s own token (a compute task)
    rewrites the image hand-off that `attest_image` (release) reads, naming another digest;
    `attest_image` is run again on it (its state moved back in the metadata database). It
    refuses, without a retry, and signs nothing: the registry's tags and what serves are as
    they were. The hand-off and the states are then put back for the tests after this one."""
    import hashlib
    from pathlib import Path

    api = _airflow(stack)
    run_id = compose_pushed_run.run_id
    serving = Path(stack.env["RICE_RELEASE_DIR"]) / "serving" / "state.json"
    served, tags = serving.read_text(), _image_tags(stack)
    honest = api.xcom(run_id, "record_image")
    forged_digest = "sha256:" + hashlib.sha256(b"an image the release zone never built").hexdigest()
    where = (f"dag_id = 'rice_classifier_cicd' and run_id = '{run_id}' and key = 'return_value'"
             " and map_index = -1")
    raw = metadata_sql(stack, f"select value from xcom where {where} and "
                              "task_id = 'record_image'")
    assert honest["digest"] in raw, raw[:500]
    writer = api.task(run_id, "record_image")
    path = f"/xcoms/rice_classifier_cicd/{run_id}/record_image/return_value"
    answer = _execution(stack, "POST", path, writer["id"],
                        json=json.loads(raw.replace(honest["digest"], forged_digest)))
    assert answer.status_code in (200, 201), answer.text
    assert api.xcom(run_id, "record_image")["digest"] == forged_digest
    attest = api.task(run_id, "attest_image")
    try:
        # One transaction: the scheduler must not find the run running with nothing to do.
        metadata_sql(stack, f"update task_instance set state = null where id = '{attest['id']}'"
                            f"; update dag_run set state = 'running' where dag_id = "
                            f"'rice_classifier_cicd' and run_id = '{run_id}'")
        ended = api.wait_task(run_id, "attest_image", {"success", "failed"}, timeout=300)
        assert ended is not None, api.tasks(run_id)["attest_image"]
        log = api.log(run_id, "attest_image", ended["try_number"])
        assert ended["state"] == "failed", log[-3000:]  # failed, not up_for_retry: no retry
        assert f"pushed as {forged_digest}: not signing it" in log, log[-3000:]
        assert _image_tags(stack) == tags, "the release zone signed or pushed on a forgery"
        assert serving.read_text() == served
    finally:
        _execution(stack, "POST", path, writer["id"], json=json.loads(raw))
        api.request("PATCH", f"/dags/rice_classifier_cicd/dagRuns/{run_id}/taskInstances/"
                             "attest_image", json={"new_state": "success"})
        api.request("PATCH", f"/dags/rice_classifier_cicd/dagRuns/{run_id}",
                    json={"state": "success"})
    assert api.xcom(run_id, "record_image")["digest"] == honest["digest"]
    assert api.task(run_id, "attest_image")["state"] == "success"  # as the chaos suite found it
    assert api.run(run_id)["state"] == "success"


def _image_tags(stack: ComposeStack) -> list[str]:
    import httpx

    from rice_mlops.core.vocabulary import MODEL_NAME

    response = httpx.get(f"http://{stack.registry}/v2/{MODEL_NAME}/tags/list", timeout=30,
                         auth=(stack.env["REGISTRY_USER"], stack.env["REGISTRY_PASSWORD"]))
    response.raise_for_status()
    return sorted(response.json()["tags"])


def test_the_pipeline_account_may_write_a_note_and_nothing_else_of_a_run(stack,
                                                                        compose_pushed_run):
    """The pipeline's account (grant `annotate`, held by the default worker) writes run notes.
    Airflow authorizes a note, a state and a clearing with one permission; the API server's
    GrantedWritesOnly refuses every write of that account but a PATCH with update_mask=note,
    so the pushed run cannot be failed, cleared or rerun with its token. The admin gets past
    the same requests (dry-run clears), so the 403 is the grant's."""
    import httpx

    from rice_mlops.operations.demo import DAG_ID

    def token(user: str, password: str) -> dict[str, str]:
        answer = httpx.post(f"{stack.airflow}/auth/token", timeout=30,
                            json={"username": user, "password": password})
        assert answer.status_code == 201, answer.status_code
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    pipeline = token("pipeline", stack.env["AIRFLOW_PIPELINE_PASSWORD"])
    admin = token("admin", stack.env["AIRFLOW_ADMIN_PASSWORD"])
    runs = f"{stack.airflow}/api/v2/dags/{DAG_ID}"
    run = f"{runs}/dagRuns/{compose_pushed_run.run_id}"
    before = httpx.get(run, headers=admin, timeout=30).json()
    forged = {
        "state by mask": ("PATCH", run, {"update_mask": "state"}, {"state": "failed"}),
        "state beside the note": ("PATCH", run, {}, {"note": "x", "state": "failed"}),
        "state, mask smuggled": ("PATCH", run, {"update_mask": ["note", "state"]},
                                 {"note": "x", "state": "failed"}),
        "clear": ("POST", f"{run}/clear", {}, {"dry_run": True}),
        "bulk state": ("PATCH", f"{runs}/dagRuns", {}, {"actions": [{
            "action": "update", "entities": [{"dag_run_id": compose_pushed_run.run_id,
                                              "state": "failed"}]}]}),
        "bulk clear": ("POST", f"{runs}/clearDagRuns", {}, {
            "dry_run": True, "dag_runs": [{"dag_run_id": compose_pushed_run.run_id}]}),
    }
    for name, (method, url, params, body) in forged.items():
        refused = httpx.request(method, url, params=params, json=body, headers=pipeline,
                                timeout=30)
        assert refused.status_code == 403, (name, refused.status_code, refused.text[:300])
        assert "grant 'annotate'" in refused.text, refused.text[:300]
    for name in ("clear", "bulk clear"):
        method, url, params, body = forged[name]
        past = httpx.request(method, url, params=params, json=body, headers=admin, timeout=30)
        assert past.status_code == 200, (name, past.status_code, past.text[:300])
    after = httpx.get(run, headers=admin, timeout=30).json()
    assert after["state"] == before["state"] and after["note"] == before["note"], after
    # What it is for still works: the note, and nothing but the note.
    try:
        noted = httpx.patch(run, params={"update_mask": "note"}, headers=pipeline, timeout=30,
                            json={"note": "annotated by the pipeline's account"})
        assert noted.status_code == 200, noted.text[:300]
        assert noted.json()["note"] == "annotated by the pipeline's account"
        assert noted.json()["state"] == before["state"]
    finally:
        httpx.patch(run, params={"update_mask": "note"}, headers=admin, timeout=30,
                    json={"note": before["note"]})
