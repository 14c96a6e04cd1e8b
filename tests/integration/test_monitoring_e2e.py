"""The monitoring (issue 23) on the stack's served model: predictions sent through the real
serving proxy to the version the e2e-shipped run put in service, its own prediction log, and
`rice_monitoring` triggered through the REST API. A stream like the version's test split
raises nothing; the same grains in brighter light are drift, with the evidence on the
`rice_drift` asset event, an MLflow run with its plot, the run note and an e-mail; a window
with too few predictions says so and keeps its start."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rice_mlops.core.vocabulary import DRIFT_ASSET, MONITORING_DAG_ID, MONITORING_WATERMARK
from tests.helpers.pipeline import NOTIFY
from tests.helpers.prediction_stream import send_stream

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STREAM = 80  # predictions per window (RICE_MONITORING_MIN_PREDICTIONS is 60 in this stack)


def served(stack):
    """(layout, the version that serves, its test images) from the state and MLflow."""
    from mlflow import MlflowClient

    from rice_mlops.compute.data import discover
    from rice_mlops.core.settings import PipelineSettings
    from rice_mlops.release.rollout import state as st
    from rice_mlops.stages.serving import layout

    serving = layout(PipelineSettings.from_env(stack.env))
    stable = st.load(serving.state_file).stable
    client = MlflowClient()
    run = client.get_run(client.get_model_version("rice-classifier", stable.model_version).run_id)
    [trained_on] = run.inputs.dataset_inputs  # the run's own record of its images
    paths, _ = discover(Path(json.loads(trained_on.dataset.source)["uri"])).examples("test")
    return serving, stable.model_version, paths


def judged(stack, run_id: str) -> dict:
    assert stack.trigger({}, run_id, dag_id=MONITORING_DAG_ID).status_code == 200
    run = stack.wait_for_run(run_id, timeout=300, dag_id=MONITORING_DAG_ID)
    assert run["state"] == "success", stack.task_states(run_id, MONITORING_DAG_ID)
    return stack.xcom(run_id, "check_drift", dag_id=MONITORING_DAG_ID)


@pytest.fixture(scope="module")
def monitored(airflow_pg, pushed):
    airflow_pg.unpause(MONITORING_DAG_ID)
    serving, version, paths = served(airflow_pg)
    # The window starts now: the predictions earlier tests made are not this test's. The
    # watermark is the release zone's file (an operator on the host may set it too).
    (serving.root / MONITORING_WATERMARK).write_text(json.dumps({"until": time.time()}))
    return serving, version, paths


def test_a_stream_like_the_test_split_raises_nothing(airflow_pg, monitored):
    serving, version, paths = monitored
    send_stream(f"http://127.0.0.1:{serving.proxy_port}", paths, STREAM)
    time.sleep(1)  # the server's log thread writes just after each answer
    record = judged(airflow_pg, "monitor-same")
    assert record["verdict"] == "no drift", record
    assert record["model_version"] == version and record["predictions"] == STREAM
    assert airflow_pg.task_states("monitor-same", MONITORING_DAG_ID)["raise_drift"] == "skipped"
    assert airflow_pg.note("monitor-same", MONITORING_DAG_ID) == \
        f"v{version}: {record['summary']}"
    assert not airflow_pg.asset_events("monitor-same", DRIFT_ASSET, dag_id=MONITORING_DAG_ID)


def test_brighter_light_is_drift_with_its_evidence_everywhere(airflow_pg, monitored, mailbox):
    import mlflow
    from mlflow import MlflowClient

    serving, version, paths = monitored
    send_stream(f"http://127.0.0.1:{serving.proxy_port}", paths, STREAM, brightness=1.5)
    time.sleep(1)
    record = judged(airflow_pg, "monitor-bright")
    assert record["verdict"] == "drift" and record["predictions"] == STREAM, record
    drifted = {c["name"] for c in record["checks"] if c["adjusted_p"] < record["alpha"]}
    # Brighter grains: their pixels' means or spreads move (with 80 predictions, which of
    # them passes the bar varies with the served model's test split); their size does not.
    assert {n for n in drifted if n.startswith(("input mean_", "input std_"))}, record["checks"]
    assert not drifted & {"input height", "input width"}
    [event] = airflow_pg.asset_events("monitor-bright", DRIFT_ASSET, dag_id=MONITORING_DAG_ID)
    assert event["extra"]["summary"] == record["summary"]
    assert event["extra"]["model_version"] == version
    assert record["summary"].startswith("drift in ")
    # Half of the /predict images are kept for labelling (RICE_LABELLING_SAMPLE_RATE=0.5 in
    # this stack), each beside the answer it got; the evidence counts them for the note.
    queued = sorted(serving.labelling_dir.glob("*.jpg"))
    assert record["labelling_waiting"] == len(queued) > 0
    assert event["extra"]["labelling_waiting"] == record["labelling_waiting"]
    assert record["labelling_queue"] == str(serving.labelling_dir)
    sample = json.loads(queued[-1].with_suffix(".json").read_text())
    assert sample["model_version"] == version and sample["predicted"] in sample["probabilities"]
    assert airflow_pg.note("monitor-bright", MONITORING_DAG_ID).endswith(record["summary"])
    deadline = time.monotonic() + 30
    while not [m for m in mailbox.to(NOTIFY) if "monitor-bright" in m["Subject"]]:
        assert time.monotonic() < deadline, "no drift e-mail"
        time.sleep(0.5)
    client = MlflowClient()
    run = client.get_run(record["monitoring_run_id"])
    assert run.data.tags["rice.drift_verdict"] == "drift"
    assert run.data.metrics["predictions"] == STREAM
    moved = next(c for c in record["checks"]
                 if c["name"].startswith("input ") and c["adjusted_p"] < record["alpha"])
    metric = "adjusted_p_" + moved["name"].replace(" ", "_")
    assert run.data.metrics[metric] == pytest.approx(moved["adjusted_p"])
    listed = {a.path for a in client.list_artifacts(run.info.run_id, "monitoring")}
    assert {"monitoring/drift.png", "monitoring/report.json"} <= listed
    assert run.inputs.dataset_inputs[0].dataset.name == "rice-serving-window"
    plot = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                    artifact_path="monitoring/drift.png"))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_a_window_without_enough_predictions_says_so_and_keeps_its_start(airflow_pg,
                                                                         monitored):
    watermark = monitored[0].root / MONITORING_WATERMARK
    before = watermark.read_text()
    record = judged(airflow_pg, "monitor-quiet")
    assert record["verdict"] == "not enough data"
    assert record["summary"] == "not enough data: 0 < 60 predictions"
    assert watermark.read_text() == before


def test_a_second_drift_within_the_cooldown_raises_no_second_event(airflow_pg, monitored):
    serving, _, paths = monitored
    send_stream(f"http://127.0.0.1:{serving.proxy_port}", paths, STREAM, brightness=1.5)
    time.sleep(1)
    record = judged(airflow_pg, "monitor-bright-again")
    assert record["verdict"] == "drift"
    states = airflow_pg.task_states("monitor-bright-again", MONITORING_DAG_ID)
    assert states["raise_drift"] == "skipped", states
    assert not airflow_pg.asset_events("monitor-bright-again", DRIFT_ASSET,
                                       dag_id=MONITORING_DAG_ID)
    assert "RICE_MONITORING_COOLDOWN_HOURS" in airflow_pg.task_log("monitor-bright-again",
                                                                   "raise_drift",
                                                                   dag_id=MONITORING_DAG_ID)
