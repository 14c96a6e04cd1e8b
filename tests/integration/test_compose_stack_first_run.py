"""The compose stack's first pipeline run (`compose_pushed_run`, tests/conftest.py): a signed
webhook delivery through the stack's webhook-proxy runs the whole pipeline on the Celery
workers, `train` on the worker "on another machine", and the image lands in the stack's own
registry and serves; serving comes back when the release worker starts again, and a build
context the compute zone planted is neither built nor run. The stack's files run in name
order: this one after test_compose_stack.py, on the stack it found healthy, and before
test_compose_stack_monitoring.py, whose drift starts another run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers.compose_project import REMOTE_SERVICE, ComposeStack, compose_exec

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(shared_compose_stack) -> ComposeStack:
    """The session's one stack (tests/conftest.py), after test_compose_stack.py and before the
    chaos suite breaks and restores it."""
    return shared_compose_stack


def test_a_push_webhook_runs_the_pipeline_on_celery_workers(stack, compose_pushed_run):
    """The push of HEAD through the webhook proxy (the run the chaos suite also loads and
    starves of staging space: tests/helpers/loaded_run.py) ships on the Celery workers."""
    from rice_mlops.operations.demo import DAG_ID, Api, follow, summarize

    api = Api(stack.airflow, stack.env["AIRFLOW_ADMIN_PASSWORD"])
    commit, run_id = compose_pushed_run.commit, compose_pushed_run.run_id
    assert compose_pushed_run.push_status in (200, 201)
    # This run also carried the load and the full staging volume: a failure here shows them.
    faults = {"disk": compose_pushed_run.disk, "load": compose_pushed_run.load,
              "read_errors": compose_pushed_run.errors}
    run = follow(api, run_id, timeout=1500)
    prometheus = f"http://127.0.0.1:{stack.env['PROMETHEUS_PORT']}"
    summary = summarize(api, run, stack.airflow, stack.mlflow, prometheus)
    states = summary["task_states"]
    assert run["state"] == "success", (states, faults)
    # The summary points at the stack's Prometheus: the graph of this run's rollout.
    assert (summary["rollout_graph"] or "").startswith(f"{prometheus}/graph?g0.expr="), summary
    assert states["open_pull_request"] == "skipped"  # no GitHub token in this .env
    log = api.request("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/"
                             "open_pull_request/logs/1")
    assert "has no token in its password" in log.text, log.text[-2000:]
    assert all(state == "success" for task, state in states.items()
               if task != "open_pull_request"), states
    assert run["conf"]["source_commit"] == commit
    # The DAG's own account wrote the outcome on the run, through the stack's REST API; the
    # release worker put the image in service (shadow, then the canary steps).
    note = summary["note"] or ""
    assert note.startswith("shipped v") and "at 100 %" in note, note

    # Celery put `train` on the remote worker (the other "machine") and every other task on
    # the default one ...
    hosts = {ti["task_id"]: ti["hostname"] for ti in
             api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]}
    # ... and the Docker tasks on the only worker with the engine socket.
    for service, tasks in ((REMOTE_SERVICE, ["train"]),
                           ("airflow-worker", ["validate_data", "admit", "report"]),
                           ("airflow-worker-docker", ["build_image", "push_image", "promote"])):
        container = stack.project_of(service).compose("ps", "-q", service).stdout.split()[0]
        for task in tasks:
            assert hosts[task] and container.startswith(hosts[task]), (service, task, hosts)

    # MLflow behind the stack: the run, its metrics and its proxied artifacts.
    mlflow_run = httpx.get(f"{stack.mlflow}/api/2.0/mlflow/runs/get",
                           params={"run_id": summary["mlflow_run_id"]},
                           auth=stack.mlflow_pipeline, timeout=30).json()
    metrics = {m["key"]: m["value"] for m in mlflow_run["run"]["data"]["metrics"]}
    assert metrics["test_accuracy"] >= 0.8
    # The run says where it trained: the remote worker, as the task instance says.
    tags = {t["key"]: t["value"] for t in mlflow_run["run"]["data"]["tags"]}
    assert tags["rice.train_host"] == hosts["train"], (tags.get("rice.train_host"), hosts)
    listed = httpx.get(f"{stack.mlflow}/api/2.0/mlflow/artifacts/list",
                       params={"run_id": summary["mlflow_run_id"]},
                       auth=stack.mlflow_pipeline, timeout=30).json()
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

    _check_serving(stack, summary)
    _check_airflow_ui(stack, run_id, len(hosts))
    _check_mlflow_ui(stack, summary)


def _check_serving(stack: ComposeStack, summary: dict) -> None:
    """The shipped image answers at the stack's serving endpoint on the host's loopback; the
    servers behind the proxy sit on the serving network at their fixed addresses, with no
    port of their own on the host."""
    import json

    url = f"http://127.0.0.1:{stack.env['RICE_SERVING_PORT']}"
    image = next(Path(stack.env["RICE_DATA_DIR"]).rglob("*.jpg"))
    answer = httpx.post(f"{url}/predict", content=image.read_bytes(),
                        headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["class"] and answer.headers["x-request-id"]
    state = json.loads((Path(stack.env["RICE_RELEASE_DIR"]) / "serving" / "state.json"
                        ).read_text())
    assert state["stable"]["reference"].split("@")[1] == summary["image"].split("@")[1], state
    assert state["candidate"] is None, state
    served = httpx.get(f"{url}/version", timeout=10).json()
    assert served["model_version"] == state["stable"]["model_version"]
    name = stack.env["RICE_ROLLOUT_NAME"]
    proxy_address = stack.env["RICE_SERVING_ADDRESSES"].split(",")[0]
    serving, door = stack.env["RICE_SERVING_NETWORK"], stack.env["RICE_SERVING_DOOR_NETWORK"]
    # The serving network is internal (no server has a way out, issue 35); the proxy alone
    # also joins the door network its port is published from.
    for network, internal in ((serving, True), (door, False)):
        assert json.loads(subprocess.run(["docker", "network", "inspect", network],
                                         capture_output=True, text=True, check=True
                                         ).stdout)[0]["Internal"] is internal, network
    for container, address in ((f"{name}-proxy", proxy_address),
                               (f"{name}-{state['stable']['slot']}", None)):
        inspected = json.loads(subprocess.run(["docker", "inspect", container],
                                              capture_output=True, text=True,
                                              check=True).stdout)[0]
        networks = inspected["NetworkSettings"]["Networks"]
        assert set(networks) == ({serving, door} if address else {serving}), networks
        if address:
            assert networks[stack.env["RICE_SERVING_NETWORK"]]["IPAddress"] == address
            assert {binding["HostIp"] for bindings in
                    inspected["NetworkSettings"]["Ports"].values() if bindings
                    for binding in bindings} == {"127.0.0.1"}
        else:
            assert not any(inspected["NetworkSettings"]["Ports"].values()), container


def test_serving_comes_back_when_the_release_worker_starts_again(stack, compose_pushed_run):
    """What `docker compose down` and `up` do to serving: its containers are gone (they are
    removed first, or the network could not go) and the release worker starts again. Before
    its first task it brings back the proxy and the stable container of the last good digest
    (`rice-mlops serving restore` in its command). A restart of the worker stands in for the
    whole stack's here: the chaos suite uses the same stack next."""
    import json
    import time

    from tests.helpers.pipeline import remove_serving_containers

    state = json.loads((Path(stack.env["RICE_RELEASE_DIR"]) / "serving" / "state.json"
                        ).read_text())
    assert state["stable"], f"the pushed run served nothing: {state}"
    url = f"http://127.0.0.1:{stack.env['RICE_SERVING_PORT']}"
    remove_serving_containers(stack.env["RICE_ROLLOUT_NAME"])
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/ping", timeout=5)
    restarted = stack.compose("restart", "airflow-worker-docker", timeout=300)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    deadline = time.monotonic() + 240
    while True:
        try:
            if httpx.get(f"{url}/ping", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, stack.compose(
            "logs", "--tail", "60", "airflow-worker-docker").stdout[-4000:]
        time.sleep(2)
    image = next(Path(stack.env["RICE_DATA_DIR"]).rglob("*.jpg"))
    answer = httpx.post(f"{url}/predict", content=image.read_bytes(),
                        headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert httpx.get(f"{url}/version", timeout=10).json()["model_version"] == \
        state["stable"]["model_version"]
    name = f"{stack.env['RICE_ROLLOUT_NAME']}-{state['stable']['slot']}"
    labels = json.loads(subprocess.run(["docker", "inspect", "--format",
                                        "{{json .Config.Labels}}", name], capture_output=True,
                                       text=True, check=True).stdout)
    assert labels["io.rice-mlops.serving.reference"] == state["stable"]["reference"]
    assert stack.wait_healthy(timeout=300) == {}  # the chaos suite starts from a healthy stack


def _check_airflow_ui(stack: ComposeStack, run_id: str, tasks: int) -> None:
    from tests.helpers.browser import airflow_login, browser_page, screenshot

    with browser_page() as page:
        airflow_login(page, stack.airflow, stack.env["AIRFLOW_ADMIN_PASSWORD"])
        page.goto(f"{stack.airflow}/dags/rice_classifier_cicd/runs/{run_id}")
        # The UI counts the run's task instances, as the REST API listed them.
        page.get_by_text(f"{tasks} Task Instances").wait_for(timeout=60_000)
        text = page.inner_text("body")
        assert "train" in text and "push_image" in text
        assert screenshot(page, "compose-airflow-dag-run.png").stat().st_size > 10_000


def _check_mlflow_ui(stack: ComposeStack, summary: dict) -> None:
    from tests.helpers.browser import (
        browser_page,
        mlflow_refuses_anonymous_browsing,
        screenshot,
    )

    assert mlflow_refuses_anonymous_browsing(stack.mlflow)
    with browser_page(http_credentials=("admin", stack.env["MLFLOW_ADMIN_PASSWORD"])) as page:
        page.goto(summary["mlflow_run_url"])
        page.get_by_text("test_accuracy").first.wait_for(timeout=60_000)
        page.get_by_text("rice-images (").first.wait_for(timeout=30_000)  # its Datasets panel
        assert screenshot(page, "compose-mlflow-run.png").stat().st_size > 10_000


# Run inside the shipped image: is anything of the planted context in it?
_IMAGE_PROBE = r"""
import os, sys
marker = sys.argv[1]
found = [os.path.join(root, name) for root, dirs, files in os.walk("/", topdown=True)
         for name in files + dirs if marker in name]
for root, _, files in os.walk("/opt/rice/app"):
    for name in files:
        with open(os.path.join(root, name), "rb") as handle:
            if marker.encode() in handle.read():
                found.append(os.path.join(root, name))
print("\n".join(found) or "clean")
"""


def test_a_build_context_planted_by_the_compute_zone_is_neither_built_nor_run(
        stack, compose_pushed_run):
    """Insider, compute zone (issue 20, item 1): code in the default worker's container
    writes a Dockerfile, a server and a push.sh (with a matching MANIFEST.sha256) where the
    release zone once took its build context, and tries the release zone's own directory,
    before prepare_image_context starts. The run ships an image with none of it, and no marker
    that the planted code would leave is on the release side."""
    from tests.helpers.loaded_run import MARKER
    from tests.helpers.retrying_airflow import Airflow

    plant = compose_pushed_run.plant
    zone = "trust zone broken: the compute zone reaches the release zone's build"
    assert not plant.get("errors") and plant["planted"], plant
    # Planted in time, or this test would show nothing.
    assert plant["before"] in (None, "none", "scheduled", "queued"), plant
    assert not plant["release_visible"] and plant["release_write"] != "written", (zone, plant)
    assert compose_pushed_run.state == "success", compose_pushed_run.ledger

    release = stack.env["RICE_RELEASE_DIR"]
    assert [str(p) for p in Path(release).rglob(f"*{MARKER}*")] == [], zone
    on_worker = compose_exec(stack, "airflow-worker-docker", "sh", "-c",
                             f'ls /tmp/{MARKER} "$RICE_RELEASE_DIR/{MARKER}" 2>/dev/null; true')
    assert on_worker.stdout.strip() == "", (zone, on_worker.stdout)

    api = Airflow(stack.airflow, stack.env["AIRFLOW_ADMIN_PASSWORD"])
    shipped = api.xcom(compose_pushed_run.run_id, "record_image")["digest_ref"]
    probe = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint",
                            "python3", shipped, "-c", _IMAGE_PROBE, MARKER],
                           capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.strip() == "clean", (zone, probe.stdout)
