"""What `make demo` shows while the run goes on: each task's state change (with its duration
once it ends), the training's epoch, loss and validation accuracy read from MLflow while
`train` runs, and the last lines of a failed task's log.

On a terminal the training line is rewritten in place (a progress bar); anywhere else (a CI
log, a pipe) each new epoch is one plain line, so nothing depends on the terminal. What
reaches the screen from a log or from MLflow is stripped of control characters first: a task
log is written by the task, not by the person reading it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import TextIO

DAG_RUN_TAG = "rice.airflow_dag_run_id"  # set on the MLflow run by `train` (training_run)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_BAR = 20


def printable(text: str, limit: int = 400) -> str:
    """One line of untrusted text as it may reach a terminal: no escape sequences."""
    return _CONTROL.sub("?", text)[:limit]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


@dataclass(frozen=True)
class TrainingProgress:
    """Where the training is: its latest finished epoch (1-based) of how many, and the loss
    and validation accuracy Keras reported for it."""

    epoch: int
    epochs: int | None
    loss: float | None
    val_accuracy: float | None

    def line(self, elapsed: float, bar: bool) -> str:
        total = f"/{self.epochs}" if self.epochs else ""
        parts = [f"epoch {self.epoch}{total}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.val_accuracy is not None:
            parts.append(f"val accuracy {100 * self.val_accuracy:.2f} %")
        parts.append(duration(elapsed))
        text = "  ".join(parts)
        if bar and self.epochs:
            done = min(_BAR, round(_BAR * self.epoch / self.epochs))
            text = f"[{'#' * done}{'.' * (_BAR - done)}] {text}"
        return text


def progress_of(mlflow_run: dict) -> TrainingProgress | None:
    """The progress in an MLflow REST run (`runs/search`), or None before the first epoch.
    Autolog logs `loss` and `val_accuracy` at each epoch's end, step = epoch index from 0,
    and fit()'s `epochs` as a parameter."""
    data = mlflow_run.get("data") or {}
    metrics = {m.get("key"): m for m in data.get("metrics") or [] if isinstance(m, dict)}
    params = {p.get("key"): p.get("value") for p in data.get("params") or []
              if isinstance(p, dict)}
    loss = metrics.get("loss")
    if loss is None or not isinstance(loss.get("step", 0), int):
        return None
    try:
        epochs = int(params.get("epochs")) if params.get("epochs") else None
    except ValueError:
        epochs = None
    val = metrics.get("val_accuracy")
    return TrainingProgress(epoch=int(loss.get("step", 0)) + 1, epochs=epochs,
                            loss=_number(loss.get("value")),
                            val_accuracy=_number(val.get("value")) if val else None)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def log_tail(records: list, lines: int = 15) -> list[str]:
    """The last lines of a task log as Airflow's REST API returns it (structured records or
    plain strings), each on one printable line: event, then the error's message if any."""
    out = []
    for record in records:
        if isinstance(record, dict):
            text = str(record.get("event", ""))
            if record.get("error_detail"):
                details = record["error_detail"]
                last = details[-1] if isinstance(details, list) and details else {}
                if isinstance(last, dict) and last.get("exc_value"):
                    text += f": {last.get('exc_type', '')}: {last['exc_value']}"
        else:
            text = str(record)
        for line in text.splitlines() or [""]:
            if line.strip():
                out.append(printable(line))
    return out[-lines:]


def skip_reason(records: list) -> str | None:
    """Why a task skipped itself, from its log: the reason of Airflow's "Skipping task."
    record (the AirflowSkipException's message), printable."""
    for record in reversed(records):
        if isinstance(record, dict) and record.get("event") == "Skipping task." \
                and record.get("reason"):
            return printable(str(record["reason"]))
    return None


class LiveView:
    """The demo's screen: task lines, and one training line rewritten in place on a terminal
    (a new plain line per epoch elsewhere)."""

    def __init__(self, stream: TextIO | None = None, terminal: bool | None = None):
        self.stream = stream or sys.stdout
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self._open_line = False  # a training line is on screen, without its newline
        self._last_epoch: int | None = None

    def _end_line(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False

    def task(self, clock: str, task_id: str, state: str, seconds: float | None = None) -> None:
        self._end_line()
        took = f"  ({duration(seconds)})" if seconds is not None else ""
        self.stream.write(f"  {clock}  {task_id:<24} {state}{took}\n")
        self.stream.flush()

    def training(self, progress: TrainingProgress, elapsed: float) -> None:
        if self.terminal:
            self.stream.write("\r\x1b[K             train  " + progress.line(elapsed, bar=True))
            self._open_line = True
        elif progress.epoch != self._last_epoch:
            self.stream.write(f"             train  {progress.line(elapsed, bar=False)}\n")
        self._last_epoch = progress.epoch
        self.stream.flush()

    def failure(self, task_id: str, tail: list[str], url: str) -> None:
        self._end_line()
        self.stream.write(f"  --- {task_id} failed; the end of its log ---\n")
        for line in tail:
            self.stream.write(f"  | {line}\n")
        self.stream.write(f"  --- the whole log: {url}\n")
        self.stream.flush()
