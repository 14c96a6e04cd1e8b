"""The monitoring loop (issue 23) on the compose stack, after its pushed run shipped and served
(test_compose_stack_first_run.py, which runs first): the served version's test grains in
brighter light, sent through the stack's serving endpoint on the host's loopback, are judged
drift by `rice_monitoring` on the release worker. Its `rice_drift` event starts a training run
(the stack has no cron, so drift alone schedules the DAG), and that run has no new labelled
data: it does not train, and its note names the drift and where the labelling queue is. The
images the queue kept are ones the stream sent, beside the answer they got. That labelled images
then retrain is the chaos suite's faulted run (tests/chaos/test_pipeline_faults.py), so this
module adds no training."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from rice_mlops.core.vocabulary import DAG_ID, DRIFT_ASSET, MONITORING_DAG_ID, MONITORING_WATERMARK
from tests.helpers.compose_project import ComposeStack
from tests.helpers.insider import task_token
from tests.helpers.prediction_stream import send_stream
from tests.helpers.retrying_airflow import Airflow

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STREAM = 80  # predictions in the window (RICE_MONITORING_MIN_PREDICTIONS is 60 in this stack)


@dataclass
class DriftLoop:
    stack: ComposeStack
    version: str  # the model version that serves
    sent: dict[str, Path]  # sha256 of each body the stream sent -> its source image
    record: dict  # check_drift's XCom
    event: dict  # the rice_drift event
    started: dict  # the training run the event started, finished
    tasks: dict[str, str]  # that run's task states
    variable_set_by_token: int  # the execution API's answer to a compute token's Variable PUT


def _started_by_drift(api: Airflow, before: set[str], timeout: float = 180) -> dict:
    """The training DAG's first asset-triggered run that is not in `before`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api.get(f"/dags/{DAG_ID}/dagRuns", limit=100)["dag_runs"]
        new = [r for r in runs if r["run_type"] == "asset_triggered"
               and r["dag_run_id"] not in before]
        if new:
            return new[0]
        time.sleep(2)
    raise TimeoutError(f"no asset-triggered run of {DAG_ID} within {timeout:.0f}s")


@pytest.fixture(scope="module")
def drift_loop(shared_compose_stack, compose_pushed_run) -> DriftLoop:
    stack = shared_compose_stack
    api = Airflow(stack.airflow, stack.env["AIRFLOW_ADMIN_PASSWORD"])
    state = json.loads((Path(stack.env["RICE_RELEASE_DIR"]) / "serving" / "state.json"
                        ).read_text())
    assert state["stable"], f"the pushed run served nothing: {state}"
    api.unpause(MONITORING_DAG_ID)
    # The window starts now: the earlier tests' few predictions are not this stream's. The
    # watermark is the release zone's file; an operator on the host may set it.
    serving = Path(stack.env["RICE_RELEASE_DIR"]) / "serving"
    (serving / MONITORING_WATERMARK).write_text(json.dumps({"until": time.time()}))
    # Issue 35, done-when 4: an insider with a compute task's token sets the Variable the
    # watermark once was, ten years ahead; the window below is judged all the same.
    set_by_token = _set_variable_with_a_compute_token(
        stack, api, "rice_monitoring_watermark",
        json.dumps({"until": time.time() + 10 * 365 * 86400}))
    before = {r["dag_run_id"] for r in api.get(f"/dags/{DAG_ID}/dagRuns", limit=100)["dag_runs"]}
    test_split = sorted((Path(stack.env["RICE_DATA_DIR"]) / "test").rglob("*.jpg"))
    # Done-when 5: with the compute zone's MLflow login, the serving version's MLflow reference
    # is replaced (sha256 tag and all) by five rows in the stream's own light: read, it would
    # hide the drift below.
    _forge_mlflow_reference(stack, state["stable"]["model_version"], test_split)
    sent = send_stream(f"http://127.0.0.1:{stack.env['RICE_SERVING_PORT']}", test_split,
                       STREAM, brightness=1.5)
    time.sleep(1)  # the server's log thread writes just after each answer
    api.trigger("compose-monitor-bright", {}, dag_id=MONITORING_DAG_ID)
    judged = api.wait_run("compose-monitor-bright", timeout=300, dag_id=MONITORING_DAG_ID)
    assert judged["state"] == "success", {
        task: ti["state"] for task, ti in
        api.tasks("compose-monitor-bright", MONITORING_DAG_ID).items()}
    record = api.xcom("compose-monitor-bright", "check_drift", dag_id=MONITORING_DAG_ID)
    events = api.get("/assets/events", source_dag_id=MONITORING_DAG_ID,
                     source_run_id="compose-monitor-bright")["asset_events"]
    started = _started_by_drift(api, before)
    finished = api.wait_run(started["dag_run_id"], timeout=600)
    tasks = {task: ti["state"] for task, ti in api.tasks(started["dag_run_id"]).items()}
    consumed = api.get(f"/dags/{DAG_ID}/dagRuns/{started['dag_run_id']}/upstreamAssetEvents")
    [event] = [e for e in events if e["name"] == DRIFT_ASSET]
    assert [e["id"] for e in consumed["asset_events"]] == [event["id"]], consumed
    return DriftLoop(stack, state["stable"]["model_version"], sent, record, event, finished,
                     tasks, set_by_token)


def _forge_mlflow_reference(stack: ComposeStack, version: str, images: list[Path]) -> None:
    """What the compute zone can write: the version's reference artifact and its sha256 tags,
    through MLflow with the pipeline's user (the one every compute worker holds)."""
    import io
    import os
    from unittest import mock

    import numpy as np
    from mlflow import MlflowClient
    from PIL import Image, ImageEnhance

    from rice_mlops.core.vocabulary import DRIFT_REFERENCE_TAG, MODEL_NAME
    from rice_mlops.monitoring.drift import Reference, observe
    from rice_mlops.serving.prediction_log import input_statistics

    rows, names = [], []
    for path in images[:: max(1, len(images) // 5)][:5]:
        with Image.open(path) as image:
            bright = ImageEnhance.Brightness(image.convert("RGB")).enhance(1.5)
        encoded = io.BytesIO()
        bright.save(encoded, "JPEG", quality=95)
        pixels = np.asarray(Image.open(encoded).convert("RGB"), dtype=np.float32)[None]
        rows.extend(input_statistics(pixels))
        names.append(path.parent.name)
    text = Reference(version, tuple(sorted(set(names))), observe(
        names, [[0.99] * 1] * len(names), rows)).to_json()
    user, password = stack.mlflow_pipeline
    with mock.patch.dict(os.environ, {"MLFLOW_TRACKING_USERNAME": user,
                                      "MLFLOW_TRACKING_PASSWORD": password}):
        client = MlflowClient(stack.mlflow)
        run_id = client.get_model_version(MODEL_NAME, version).run_id
        client.log_text(run_id, text, "monitoring/reference.json")
        digest = hashlib.sha256(text.encode()).hexdigest()
        client.set_model_version_tag(MODEL_NAME, version, DRIFT_REFERENCE_TAG, digest)
        client.set_tag(run_id, DRIFT_REFERENCE_TAG, digest)


def _set_variable_with_a_compute_token(stack: ComposeStack, api: Airflow, key: str,
                                       value: str) -> int:
    """PUT a Variable through the execution API with a token for a compute task of the pushed
    run (`validate_data`), signed as the scheduler signs the tokens it hands compute workers:
    what whoever holds such a worker holds. The answer's status."""
    import httpx

    [run] = [r for r in api.get(f"/dags/{DAG_ID}/dagRuns", limit=100)["dag_runs"]
             if r["run_type"] == "manual"][:1]
    token = task_token(stack, api.task(run["dag_run_id"], "validate_data")["id"])
    return httpx.put(f"{stack.airflow}/execution/variables/{key}", timeout=30,
                     headers={"Authorization": f"Bearer {token}"},
                     json={"val": value, "description": None}).status_code


def test_a_brighter_stream_is_drift_on_the_release_worker(drift_loop):
    """Judged although a compute task's token had set the old watermark Variable ten years
    ahead, and drift although the compute zone had replaced the version's MLflow reference by
    five rows in the stream's light (issue 35): the window starts at the release zone's own
    watermark, and is compared with the release zone's own reference."""
    record = drift_loop.record
    assert drift_loop.variable_set_by_token in (200, 201, 204), drift_loop.variable_set_by_token
    assert record["verdict"] == "drift" and record["predictions"] == STREAM, record
    assert record["model_version"] == drift_loop.version
    assert drift_loop.event["extra"]["summary"] == record["summary"]
    assert drift_loop.event["extra"]["labelling_waiting"] == record["labelling_waiting"] > 0


def test_the_run_drift_started_has_no_new_data_and_names_the_labelling_queue(drift_loop):
    run, record = drift_loop.started, drift_loop.record
    assert run["state"] == "success", drift_loop.tasks
    assert run["conf"] in ({}, None), run["conf"]  # nothing widened: the deployment's request
    assert drift_loop.tasks["check_changed"] == "success"
    assert drift_loop.tasks["train"] == "skipped", drift_loop.tasks
    waiting = record["labelling_waiting"]
    assert run["note"] == (
        f"v{drift_loop.version}: {record['summary']}; no new labelled data: {waiting:,} "
        f"image{'' if waiting == 1 else 's'} waiting in the labelling queue "
        f"({record['labelling_queue']}); not retrained (add labelled images under the data "
        "root: the next run, push, nightly or drift, retrains on them)"), run["note"]


def test_the_labelling_queue_holds_what_the_stream_sent(drift_loop):
    """Half the stream (RICE_LABELLING_SAMPLE_RATE=0.5 here), byte for byte, each beside the
    answer it got; the release worker's count is the queue's. The rest of the queue is what
    reached the servers before: the rollout's replay of the smoke set and the earlier tests'
    predictions, all of them the stack's own images as they are."""
    queue = Path(drift_loop.record["labelling_queue"])
    assert queue == Path(drift_loop.stack.env["RICE_RELEASE_DIR"]) / "serving" / "labelling"
    images = sorted(queue.glob("*.jpg"))
    assert len(images) == drift_loop.record["labelling_waiting"]
    digests = {image: hashlib.sha256(image.read_bytes()).hexdigest() for image in images}
    from_stream = [image for image, digest in digests.items() if digest in drift_loop.sent]
    assert STREAM * 0.25 < len(from_stream) <= STREAM, (len(from_stream), len(images))
    own = {hashlib.sha256(path.read_bytes()).hexdigest()
           for path in Path(drift_loop.stack.env["RICE_DATA_DIR"]).rglob("*.jpg")}
    assert {image.name for image, digest in digests.items()
            if digest not in drift_loop.sent and digest not in own} == set()
    for image in from_stream:
        answer = json.loads(image.with_suffix(".json").read_text())
        assert answer["model_version"] == drift_loop.version
        assert answer["predicted"] in answer["probabilities"]
