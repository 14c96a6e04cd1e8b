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

from tests.helpers.compose_stack import REMOTE_SERVICE, ComposeStack
from tests.helpers.paths import REPO

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
    from tests.helpers.faults import Airflow

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
