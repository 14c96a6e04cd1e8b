"""Release-zone state belongs to the release zone (issue 35): the monitoring watermark is a file
of the serving directory (a Variable any token sets is never read), and only the release zone's
`raise_drift` events count: another task's `rice_drift` event resets no cooldown, puts none of
its text in a note, and a run it starts is refused before it trains."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from rice_mlops.core.handoffs import Admission
from rice_mlops.publication.outcome import decide_outcome, latest_drift
from rice_mlops.stages import monitoring
from rice_mlops.stages.admission import untrusted_drift_trigger
from rice_mlops.stages.assets import DRIFT_SOURCE, RICE_DRIFT, raised_by_monitoring


@dataclass
class _Event:
    source_dag_id: str | None
    source_task_id: str | None
    extra: dict
    timestamp: str = ""


def _monitoring(summary="drift in input mean_g", when=None) -> _Event:
    return _Event(*DRIFT_SOURCE, {"summary": summary, "model_version": "3"},
                  when or datetime.now(UTC).isoformat())


def _forged(summary="FORGED: ship everything", when=None) -> _Event:
    return _Event("rice_classifier_cicd", "validate_data", {"summary": summary,
                                                             "model_version": "3"},
                  when or datetime.now(UTC).isoformat())


def test_only_the_monitorings_own_events_count():
    honest, forged = _monitoring(), _forged()
    assert raised_by_monitoring([forged, honest, _Event(None, None, {})]) == [honest]
    # The note: the forged summary, newer or not, is never the one read.
    assert latest_drift(raised_by_monitoring([honest, forged])).summary == \
        "v3: drift in input mean_g"
    assert latest_drift(raised_by_monitoring([forged])) is None


def test_a_forged_event_resets_no_cooldown(tmp_path):
    from airflow.sdk.exceptions import AirflowSkipException

    from rice_mlops.core.settings import PipelineSettings

    settings = PipelineSettings.from_env({"RICE_RELEASE_DIR": str(tmp_path),
                                          "RICE_MONITORING_COOLDOWN_HOURS": "24"})
    record = {"model_version": "3", "summary": "drift", "verdict": "drift", "checks": []}
    monitoring.save_verdict(settings, "r", record)
    raised = monitoring.raise_drift(settings, "r", None, [_forged()])
    assert raised["summary"] == "drift"
    with pytest.raises(AirflowSkipException, match="within RICE_MONITORING_COOLDOWN_HOURS"):
        monitoring.raise_drift(settings, "r", None, [_monitoring()])


def test_raise_drift_acts_on_check_drifts_own_file_not_on_xcom(tmp_path):
    """The verdict travels in the release zone's directory: a compute token that rewrites
    check_drift's XCom as "drift" (or as "no drift") changes nothing raise_drift does."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from rice_mlops.core.settings import PipelineSettings

    settings = PipelineSettings.from_env({"RICE_RELEASE_DIR": str(tmp_path)})
    with pytest.raises(AirflowFailException, match="left no verdict"):
        monitoring.raise_drift(settings, "r", None, [])
    monitoring.save_verdict(settings, "r", {"verdict": "no drift", "summary": "no drift, 80"})
    with pytest.raises(AirflowSkipException, match="no drift to raise"):
        monitoring.raise_drift(settings, "r", None, [])
    path = monitoring.verdict_path(settings, "../../r")
    assert path.parent == tmp_path / "serving" / "verdicts"  # a run id names no other file


def _context(run_type, events):
    return {"dag_run": SimpleNamespace(run_type=run_type),
            "triggering_asset_events": {RICE_DRIFT: events}}


def test_a_run_started_by_someone_elses_drift_event_is_not_admitted():
    reason = untrusted_drift_trigger(_context("asset_triggered", [_forged()]))
    assert reason.startswith("started by rice_drift event(s) from "
                             "rice_classifier_cicd.validate_data, not rice_monitoring.raise_drift")
    assert "FORGED" not in reason
    assert untrusted_drift_trigger(_context("asset_triggered", [])) is not None
    # The monitoring's event (among others), a push, the cron: admitted.
    assert untrusted_drift_trigger(_context("asset_triggered", [_forged(), _monitoring()])) \
        is None
    assert untrusted_drift_trigger(_context("manual", [])) is None
    assert untrusted_drift_trigger(_context("scheduled", [_forged()])) is None
    outcome = decide_outcome(admission=Admission(proceed=False, refused=reason),
                             freshness=None, gate=None, promoted=None, failed_tasks=[])
    assert outcome.note == f"NOT ADMITTED: {reason}" and outcome.state == "error"


def test_the_watermark_is_a_bounded_file_of_the_release_zone(tmp_path):
    path = tmp_path / "monitoring-watermark.json"
    assert monitoring.read_watermark(path) is None
    monitoring.write_watermark(path, 1234.5)
    assert json.loads(path.read_text()) == {"until": 1234.5}
    assert monitoring.window_start(monitoring.read_watermark(path), 2000.0, 1) == 1234.5
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    path.write_bytes(b"{" + b" " * 10_000 + b"}")  # not a watermark: the oldest allowed start
    now = time.time()
    assert monitoring.window_start(monitoring.read_watermark(path), now, 2) == now - 2 * 3600


def test_a_drift_reference_is_read_only_from_the_release_zone_bounded_and_for_its_version(
        tmp_path):
    from rice_mlops.monitoring import references
    from rice_mlops.monitoring.drift import DriftReferenceError, Reference, observe

    def written(version: str, rows: int = 3) -> str:
        return Reference(version, ("A", "B"), observe(
            ["A"] * rows, [[0.9, 0.1]] * rows,
            [{"height": 250, "width": 250, "mean": [100.0] * 3, "std": [20.0] * 3}] * rows
        )).to_json()

    source = tmp_path / "drift-reference.json"
    source.write_text(written("7"))
    kept = references.keep(source, tmp_path / "release", "7")
    assert kept == tmp_path / "release" / "references" / "v7.json"
    assert references.load(tmp_path / "release", "7").observations.count == 3
    with pytest.raises(DriftReferenceError, match="no drift reference of v8"):
        references.load(tmp_path / "release", "8")
    (tmp_path / "release" / "references" / "v8.json").write_text(written("7"))  # renamed
    with pytest.raises(DriftReferenceError, match="the reference of v7, not of v8"):
        references.load(tmp_path / "release", "8")
    (tmp_path / "release" / "references" / "v9.json").write_bytes(
        b" " * (references.MAX_BYTES + 1))
    with pytest.raises(DriftReferenceError, match="over"):
        references.load(tmp_path / "release", "9")
    for bad in ("../7", "7/../../x", "", "v7"):
        with pytest.raises(DriftReferenceError, match="not a version number"):
            references.reference_path(tmp_path, bad)
