"""Monitoring: the served model's prediction logs against its drift reference.

`check_drift` runs in the release zone, the only one that mounts the serving directory (the
logs are there). It reads the window since the watermark (a file beside the logs, which only
this zone can write: an Airflow Variable could be set by any task's token; a window without
enough predictions leaves it where it was, so the next run's window is longer, up to
RICE_MONITORING_MAX_WINDOW_HOURS), compares it with the reference the release zone recorded
when it built the version that serves (`rice_mlops.monitoring.references`), logs the verdict
as an MLflow run of `rice-monitoring` (statistics, p-values, a plot of reference against live)
and writes it as the run note. `raise_drift`, in
the release zone too, then emits the `rice_drift` asset event with the evidence and e-mails,
on a drift verdict only; only its events count (`rice_mlops.stages.assets.DRIFT_SOURCE`).
"""

from __future__ import annotations

import json
import logging
import math
import time

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rice_mlops.core.settings import PipelineSettings
from rice_mlops.core.vocabulary import (
    MONITORING_DAG_ID,
    MONITORING_EXPERIMENT,
    MONITORING_WATERMARK,
)
from rice_mlops.core.zone_files import TooLarge, read_bounded, write_atomic

log = logging.getLogger(__name__)
EVENT_KEYS = ("model_version", "verdict", "summary", "predictions", "since", "until",
              "checks", "monitoring_run_id", "labelling_waiting", "labelling_queue")


def window_start(stored: str | None, now: float, max_hours: int) -> float:
    """Where the window starts: the watermark, never older than `max_hours`, never later than
    `now`; a watermark that is not one (edited by hand, say) is the oldest allowed start."""
    oldest = now - max_hours * 3600
    try:
        start = float(json.loads(stored)["until"]) if stored else oldest
    except (ValueError, KeyError, TypeError):
        log.warning("%s holds no watermark (%r): the window starts %d h back",
                    MONITORING_WATERMARK, (stored or "")[:80], max_hours)
        start = oldest
    if not math.isfinite(start):
        start = oldest
    return min(max(start, oldest), now)


_WATERMARK_MAX_BYTES = 4096  # {"until": <seconds>} and nothing more


def read_watermark(path) -> str | None:
    """The watermark file's text (None when there is none yet); a file too large to be one is
    read as no watermark."""
    try:
        raw = read_bounded(path, _WATERMARK_MAX_BYTES)
    except TooLarge:
        return ""
    return None if raw is None else raw.decode("utf-8", "replace")


def write_watermark(path, until: float) -> None:
    """Where the next window starts, replaced atomically."""
    write_atomic(path, json.dumps({"until": until}))


def check_drift(settings: PipelineSettings, dag_run_id: str) -> dict:
    """The verdict on the window of the version that serves (a dict for XCom and the event)."""
    from rice_mlops.monitoring import references
    from rice_mlops.monitoring.drift import DriftReferenceError, compare, read_window
    from rice_mlops.monitoring.log_reader import LogFileError, rotated_logs, window_lines
    from rice_mlops.release.rollout import state as st
    from rice_mlops.serving.labelling import waiting
    from rice_mlops.stages.report import write_note
    from rice_mlops.stages.serving import layout

    serving = layout(settings)
    try:
        stable = st.load(serving.state_file).stable
    except st.StateError as exc:
        raise AirflowFailException(str(exc)) from None
    if stable is None:
        raise AirflowSkipException(f"nothing serves here ({serving.state_file}): no "
                                   "prediction log to watch")
    try:
        reference = references.load(settings.release_root, stable.model_version)
    except DriftReferenceError as exc:
        raise AirflowFailException(str(exc)) from None
    now = time.time()
    watermark = serving.root / MONITORING_WATERMARK
    since = window_start(read_watermark(watermark), now, settings.monitoring_max_window_hours)
    slots = [rotated_logs(serving.log_dir(slot)) for slot in st.SLOTS]
    left_out: list = []
    budget = settings.monitoring_max_window_mb << 20
    try:
        window = read_window(window_lines(slots, budget, left_out),
                             model_version=stable.model_version, since=since, until=now)
    except LogFileError as exc:
        raise AirflowFailException(str(exc)) from None
    if left_out:  # the newest predictions were judged; the oldest of a huge window were not
        log.warning("the window's logs hold more than RICE_MONITORING_MAX_WINDOW_MB=%d MiB: "
                    "not read to their end: %s", settings.monitoring_max_window_mb,
                    ", ".join(path.name for path in left_out[:10]))
    report = compare(reference, window, min_predictions=settings.monitoring_min_predictions,
                     alpha=settings.monitoring_alpha)
    record = {"model_version": stable.model_version, "since": round(since, 3),
              "until": round(now, 3), **report.as_dict()}
    if settings.labelling_sample_rate > 0:  # what a drift note can point people to
        record["labelling_waiting"] = waiting(serving.labelling_dir)[0]
        record["labelling_queue"] = str(serving.labelling_dir)
    record["monitoring_run_id"] = _log_run(record, reference, window, report,
                                           serving.root / "predictions")
    if report.verdict != "not enough data":  # a short window grows into the next one
        write_watermark(watermark, now)
    save_verdict(settings, dag_run_id, record)
    log.info("v%s: %s", stable.model_version, report.summary())
    write_note(settings, MONITORING_DAG_ID, dag_run_id,
               f"v{stable.model_version}: {report.summary()}")
    return record


def in_cooldown(last_raised: str | None, now: float, hours: float) -> bool:
    """Was a drift event raised less than `hours` before `now` (ISO time of the last one)?"""
    from datetime import datetime

    if not last_raised or hours <= 0:
        return False
    try:
        when = datetime.fromisoformat(str(last_raised)).timestamp()
    except ValueError:
        return False
    return 0 <= now - when < hours * 3600


def verdict_path(settings: PipelineSettings, dag_run_id: str):
    """Where check_drift leaves this run's verdict for raise_drift: the release zone's own
    directory, not XCom (which any task's token may overwrite)."""
    import hashlib

    from rice_mlops.stages.serving import layout

    name = hashlib.sha256(dag_run_id.encode()).hexdigest()[:32]
    return layout(settings).root / "verdicts" / f"{name}.json"


_VERDICT_MAX_BYTES = 1 << 20


def save_verdict(settings: PipelineSettings, dag_run_id: str, record: dict) -> None:
    write_atomic(verdict_path(settings, dag_run_id), json.dumps(record))


def load_verdict(settings: PipelineSettings, dag_run_id: str) -> dict:
    path = verdict_path(settings, dag_run_id)
    try:
        raw = read_bounded(path, _VERDICT_MAX_BYTES)
    except TooLarge as exc:
        raise AirflowFailException(f"{exc}: not a verdict") from None
    if raw is None:
        raise AirflowFailException(f"check_drift left no verdict for {dag_run_id} in "
                                   f"{path.parent}: clear check_drift")
    return json.loads(raw)


def raise_drift(settings: PipelineSettings, dag_run_id: str, drift_event=None,
                earlier_events=()) -> dict:
    """On a drift verdict, the `rice_drift` event, its extra the evidence (bounded), and an
    e-mail; skipped while the last one is younger than RICE_MONITORING_COOLDOWN_HOURS (one
    storm, one training). The verdict is check_drift's, read from the release zone's own
    directory: a verdict in XCom is anybody's."""
    from rice_mlops.stages.assets import raised_by_monitoring
    from rice_mlops.stages.report import notify

    record = load_verdict(settings, dag_run_id)
    if record.get("verdict") != "drift":
        raise AirflowSkipException(f"no drift to raise: {record.get('summary')}")
    # Only this task's own earlier events: one that any other token listed resets nothing.
    earlier = raised_by_monitoring(earlier_events)
    last = str(getattr(earlier[-1], "timestamp", "")) if earlier else None
    if in_cooldown(last, time.time(), settings.monitoring_cooldown_hours):
        raise AirflowSkipException(f"drift was raised at {last}, within RICE_MONITORING_"
                                   f"COOLDOWN_HOURS={settings.monitoring_cooldown_hours:g}: "
                                   "not raised again")
    evidence = {key: record[key] for key in EVENT_KEYS if key in record}
    evidence["checks"] = list(evidence.get("checks", []))[:20]
    if drift_event is not None:
        drift_event.extra = evidence
    if settings.notify_emails:
        notify(settings, "drift", f"v{record['model_version']}: {record['summary']}",
               dag_run_id, MONITORING_DAG_ID)
    return evidence


def _log_run(record: dict, reference, window, report, log_root) -> str:
    """One MLflow run of the monitoring experiment: the window as a dataset, the statistics
    and p-values, the report and a plot of reference against live."""
    import hashlib
    import re
    import tempfile
    from pathlib import Path

    import mlflow

    from rice_mlops.compute.dataset_record import metadata_dataset

    mlflow.set_experiment(MONITORING_EXPERIMENT)
    with mlflow.start_run(run_name=f"v{record['model_version']} window") as run:
        mlflow.set_tags({"rice.model_version": record["model_version"],
                         "rice.drift_verdict": record["verdict"]})
        mlflow.log_params({"model_version": record["model_version"], "since": record["since"],
                           "until": record["until"], "alpha": record["alpha"],
                           "min_predictions": record["minimum"]})
        mlflow.log_metric("predictions", record["predictions"])
        for check in record["checks"]:
            key = re.sub(r"[^a-z0-9_]+", "_", check["name"].lower())
            mlflow.log_metrics({f"p_{key}": check["p_value"],
                                f"adjusted_p_{key}": check["adjusted_p"]})
        digest = hashlib.sha256(json.dumps([record["model_version"], record["since"],
                                            record["until"], record["predictions"]]).encode())
        mlflow.log_input(metadata_dataset("rice-serving-window", str(log_root),
                                          digest.hexdigest(),
                                          {"predictions": record["predictions"],
                                           **{f"left_out: {k}": v
                                              for k, v in record["skipped"].items()}}),
                         context="monitoring")
        mlflow.log_dict(record, "monitoring/report.json")
        if window.observations.count:
            with tempfile.TemporaryDirectory() as scratch:
                plot = _plot(reference, window, report, Path(scratch) / "drift.png")
                mlflow.log_artifact(str(plot), "monitoring")
    return run.info.run_id


def _plot(reference, window, report, path):
    """Reference against live: confidence, brightness (mean of the channels' means), the
    spread, and the class mix, with each check's adjusted p-value in its title."""
    import numpy as np

    from rice_mlops.compute.metrics import _pyplot

    plt = _pyplot()
    adjusted = {check.name: check.adjusted_p for check in report.checks}
    ref, live = reference.observations, window.observations
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    panels = (("confidence", ref.values["confidence"], live.values["confidence"]),
              ("input mean_g", ref.values["mean_g"], live.values["mean_g"]),
              ("input std_g", ref.values["std_g"], live.values["std_g"]))
    for ax, (name, before, after) in zip(axes, panels, strict=False):
        bins = np.histogram_bin_edges(np.concatenate([before, after]), bins=30)
        ax.hist(before, bins=bins, alpha=0.55, density=True, label="reference (test split)")
        ax.hist(after, bins=bins, alpha=0.55, density=True, label="live window")
        ax.set_title(f"{name}  p={adjusted.get(name, float('nan')):.2g}", fontsize=9)
    names = list(reference.class_names)
    x = np.arange(len(names))
    shares = [[list(obs.classes).count(n) / max(1, obs.count) for n in names]
              for obs in (ref, live)]
    axes[3].bar(x - 0.2, shares[0], 0.4, label="reference (test split)")
    axes[3].bar(x + 0.2, shares[1], 0.4, label="live window")
    axes[3].set_xticks(x, names, rotation=30, fontsize=8)
    axes[3].set_title(f"class mix  p={adjusted.get('class mix', float('nan')):.2g}", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle(report.summary(), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
