"""What `make demo` shows while its run goes on (issue 38): task lines with durations, the
training's epoch from MLflow (in place on a terminal, plain lines elsewhere), a failed task's
log tail with its link, and why a stage skipped itself."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys

from rice_mlops.operations import demo
from rice_mlops.operations.live_view import (
    LiveView,
    TrainingProgress,
    log_tail,
    progress_of,
    skip_reason,
)
from tests.helpers.paths import REPO


def _mlflow_run(step: int | None, epochs: str = "12") -> dict:
    """A run as MLflow's REST `runs/search` returns it, autolog's per-epoch metrics included."""
    metrics = [{"key": "n_train", "value": 5000, "timestamp": 1, "step": 0}]
    if step is not None:
        metrics += [{"key": "loss", "value": 0.12345, "timestamp": 2, "step": step},
                    {"key": "val_accuracy", "value": 0.9875, "timestamp": 2, "step": step}]
    return {"info": {"run_id": "a" * 32},
            "data": {"metrics": metrics, "params": [{"key": "epochs", "value": epochs}],
                     "tags": [{"key": "rice.airflow_dag_run_id", "value": "webhook__1"}]}}


def test_progress_is_read_from_autologs_per_epoch_metrics():
    progress = progress_of(_mlflow_run(step=4))
    assert progress == TrainingProgress(epoch=5, epochs=12, loss=0.12345, val_accuracy=0.9875)
    assert progress_of(_mlflow_run(step=None)) is None  # before the first epoch ends
    assert progress_of(_mlflow_run(step=0, epochs="many")).epochs is None
    assert progress_of({"data": {"metrics": "junk"}}) is None


def test_on_a_terminal_the_training_line_is_rewritten_in_place():
    out = io.StringIO()
    view = LiveView(out, terminal=True)
    for step in (0, 1, 5):
        view.training(progress_of(_mlflow_run(step)), elapsed=75.0)
    view.task("10:00:00", "train", "success", 80.25)
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 3 and text.count("\n") == 2, text  # closed, then the task
    assert "[##########..........] epoch 6/12  loss 0.1235  val accuracy 98.75 %  1 min 15 s" \
        in text
    assert text.endswith("\n  10:00:00  train                    success  (1 min 20 s)\n")


def test_elsewhere_each_epoch_is_one_plain_line():
    out = io.StringIO()
    view = LiveView(out, terminal=False)
    for step in (0, 0, 1):  # the same epoch polled twice is printed once
        view.training(progress_of(_mlflow_run(step)), elapsed=3.0)
    lines = out.getvalue().splitlines()
    assert lines == ["             train  epoch 1/12  loss 0.1235  val accuracy 98.75 %  3.0 s",
                     "             train  epoch 2/12  loss 0.1235  val accuracy 98.75 %  3.0 s"]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_the_view_finds_out_by_itself_whether_it_writes_to_a_terminal():
    code = ("from rice_mlops.operations.live_view import LiveView, TrainingProgress\n"
            "LiveView().training(TrainingProgress(3, 12, 0.5, 0.9), 1.0)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)])}
    piped = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, check=True, timeout=60).stdout
    assert piped == "             train  epoch 3/12  loss 0.5000  val accuracy 90.00 %  1.0 s\n"
    leader, follower = pty.openpty()
    subprocess.run([sys.executable, "-c", code], env=env, stdout=follower, check=True,
                   timeout=60)
    os.close(follower)
    on_terminal = os.read(leader, 4096).decode()
    os.close(leader)
    assert on_terminal.startswith("\r\x1b[K") and "[#####" in on_terminal, repr(on_terminal)


def test_a_log_tail_is_printable_whatever_the_task_wrote():
    records = [{"event": f"line {n}"} for n in range(30)] + [
        "plain \x1b]0;pwned\x07 text",
        {"event": "Task failed with exception", "error_detail": [
            {"exc_type": "AirflowFailException", "exc_value": "1 unreadable image: a.jpg"}]}]
    tail = log_tail(records, lines=3)
    assert tail == ["line 29", "plain ?]0;pwned? text",
                    "Task failed with exception: AirflowFailException: 1 unreadable image: a.jpg"]


def test_a_skip_reason_comes_from_airflows_skip_record():
    records = [{"event": "starting"},
               {"event": "Skipping task.", "reason": "no Airflow connection 'github_default': "
                "add a GitHub connection with a token in its password to enable it"}]
    assert skip_reason(records).startswith("no Airflow connection 'github_default'")
    assert skip_reason([{"event": "Skipping task."}, "text"]) is None


class _Api:
    """The Airflow REST answers of one run, poll by poll."""

    def __init__(self, polls: list[list[dict]], logs: dict[str, list]):
        self.polls, self.logs, self.index = polls, logs, -1

    def get(self, path: str, **params):
        if path.endswith("/taskInstances"):
            self.index = min(self.index + 1, len(self.polls) - 1)
            return {"task_instances": self.polls[self.index]}
        if "/logs/" in path:
            return {"content": self.logs[path.split("/taskInstances/")[1].split("/")[0]]}
        last = self.index == len(self.polls) - 1
        return {"state": "failed" if last else "running", "dag_run_id": "r"}


class _Watch:
    def __init__(self):
        self.steps = iter([None, 0, 1])

    def progress(self):
        step = next(self.steps, 1)
        return None if step is None else progress_of(_mlflow_run(step))


def _ti(task_id: str, state: str, duration: float | None = None) -> dict:
    return {"task_id": task_id, "state": state, "try_number": 1, "duration": duration,
            "start_date": "2026-12-07T10:00:00+00:00"}


def test_follow_shows_durations_epochs_and_a_failed_tasks_log(monkeypatch):
    monkeypatch.setattr(demo.time, "sleep", lambda seconds: None)
    polls = [[_ti("validate_data", "success", 1.5), _ti("train", "running")],
             [_ti("validate_data", "success", 1.5), _ti("train", "running")],
             [_ti("validate_data", "success", 1.5), _ti("train", "running")],
             [_ti("validate_data", "success", 1.5), _ti("train", "failed", 42.0)]]
    api = _Api(polls, {"train": [{"event": "epoch 2/12"}, {"event": "Task failed",
                                 "error_detail": [{"exc_type": "RuntimeError",
                                                   "exc_value": "out of memory"}]}]})
    out = io.StringIO()
    run = demo.follow(api, "r", 60, LiveView(out, terminal=False), _Watch(), "http://ui")
    text = out.getvalue()
    assert run["state"] == "failed"
    assert "validate_data            success  (1.5 s)" in text
    assert text.index("epoch 1/12") < text.index("epoch 2/12") < text.index("failed  (42")
    assert "train                    failed  (42.0 s)" in text
    assert "  | Task failed: RuntimeError: out of memory" in text
    assert "the whole log: http://ui/dags/rice_classifier_cicd/runs/r/tasks/train" in text


def test_the_training_watch_asks_mlflow_for_this_runs_tag_and_nothing_else():
    import json

    import httpx

    seen = []

    def mlflow(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/experiments/get-by-name"):
            return httpx.Response(200, json={"experiment": {"experiment_id": "7"}})
        return httpx.Response(200, json={"runs": [_mlflow_run(step=2)]})

    watch = demo.TrainingWatch("http://mlflow", "pw", "webhook__2026-12-07T10:00:00+00:00")
    watch.client = httpx.Client(base_url="http://mlflow", transport=httpx.MockTransport(mlflow))
    assert watch.progress().epoch == 3
    search = json.loads(seen[-1].content)
    assert search["experiment_ids"] == ["7"]
    assert search["filter"] == \
        "tags.`rice.airflow_dag_run_id` = 'webhook__2026-12-07T10:00:00+00:00'"
    # A run id that could end the filter's string is never sent; an MLflow error hides the view.
    hostile = demo.TrainingWatch("http://mlflow", None, "x' OR tags.a = 'b")
    hostile.client = watch.client
    before = len(seen)
    assert hostile.progress() is None and len(seen) == before
    broken = demo.TrainingWatch("http://mlflow", None, "r")
    broken.client = httpx.Client(base_url="http://mlflow", transport=httpx.MockTransport(
        lambda request: httpx.Response(500, text="boom")))
    assert broken.progress() is None
