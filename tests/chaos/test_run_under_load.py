"""Faults 7 and 8 on the compose stack's first run (a signed push of HEAD through the webhook
proxy; tests/helpers/loaded_run.py lays both faults on it, and test_compose_stack_first_run.py
checks the same run ships on the Celery workers):

Load held: signed deliveries at a steady 20 per second for 60 s to the stack's webhook (its
proxy, then the API server) while the run trains on the same two cores: no 5xx, every accepted
delivery names the run of its commit. The 1,200 deliveries are 20 commits, one pushed for the
first time every 3 s and redelivered in turn in between, so only 20 runs wait queued; they are
removed. The first pushes' answer times (each a REST trigger) are reported apart as well.

Staging full: the staging volume (a 512 MiB tmpfs in the shared stack) is filled while `train`
runs, so `fetch_artifacts` finds no room: the attempt fails naming the directory,
the space free and the space it needs, and leaves no partial stage; once the space is freed the
next attempt stages the run, and the run ships exactly one of everything.
"""

from __future__ import annotations

import statistics

import pytest

from tests.helpers.chaos_report import ChaosReport
from tests.helpers.loaded_run import COMMITS, NEW_EVERY, RATE, SECONDS, LoadedRun, percentile
from tests.helpers.timestamps import parse_time

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def loaded_run(compose_pushed_run) -> LoadedRun:
    return compose_pushed_run


def _first_pushes_ms(answers) -> dict:
    """Answer times of each commit's first delivery: the ones that wait for a REST trigger."""
    first: dict[str, float] = {}
    for commit, _, seconds, _ in answers:
        first.setdefault(commit, seconds)
    ms = sorted(1000 * s for s in first.values())
    return {"count": len(ms), "p50": round(statistics.median(ms), 1) if ms else None,
            "max": round(ms[-1], 1) if ms else None}


def test_load_held_while_a_run_trains(loaded_run, chaos_report: ChaosReport):
    found = loaded_run
    seconds = [s for _, status, s, _ in found.answers if status.startswith("2")]
    statuses = [status for _, status, _, _ in found.answers]
    figures = {"deliveries": len(found.answers), "rate_per_s": RATE, "seconds": SECONDS,
               "answers": {s: statuses.count(s) for s in sorted(set(statuses))},
               "p50_ms": round(1000 * statistics.median(seconds), 1) if seconds else None,
               "p99_ms": round(1000 * percentile(seconds, 0.99), 1) if seconds else None,
               "max_ms": round(1000 * max(seconds), 1) if seconds else None,
               "first_pushes_ms": _first_pushes_ms(found.answers)}
    wrong_run = [(c[:12], run_id) for c, status, _, run_id in found.answers
                 if status.startswith("2") and run_id not in found.load_runs.get(c, [])]
    chaos_report.extra["load"] = figures
    chaos_report.add({
        "fault": f"load held: {RATE} signed deliveries/s for {SECONDS} s ({COMMITS} commits, "
                 f"a new one every {NEW_EVERY:g} s, redelivered) to the webhook while a run "
                 "trains",
        "dag_run_id": found.run_id,
        "injected_at": found.load["injected_at"],
        "injected_when": f"train {found.load['train_state']}",
        "outcome": {"run": found.state, **figures, "sent_over_s": found.load["sent_over_s"],
                    "train_state_after_load": found.load["train_state_after"]},
        "duplicates_found": {c[:12]: ids for c, ids in found.load_runs.items() if len(ids) > 1},
        "accepted_without_their_run": wrong_run,
        "ledger": found.ledger.counts,
        "services_unhealthy_after": found.unhealthy,
        "read_errors": found.errors,
    })
    assert found.errors == []
    assert [s for s in statuses if not s.startswith("2")] == [], figures
    assert all(len(ids) == 1 for ids in found.load_runs.values()), found.load_runs
    assert wrong_run == []
    assert found.load["train_state"] == "running"  # the load overlapped training
    assert found.state == "success"
    assert found.ledger.problems == [], found.ledger.counts
    assert found.unhealthy == {}


def test_full_staging_volume_fails_cleanly_then_recovers(loaded_run,
                                                         chaos_report: ChaosReport):
    found, record = loaded_run, loaded_run.disk
    if not record["tmpfs"]:
        pytest.skip("the staging directory is a tmpfs only when the suite runs as root (CI)")
    end = parse_time(found.fetch_tries[-1].get("end_date")) if found.fetch_tries else None
    chaos_report.add({
        "fault": "staging volume (tmpfs) full during fetch_artifacts; space freed afterwards",
        "dag_run_id": found.run_id,
        "injected_at": record.get("injected_at"),
        "injected_when": record.get("when"),
        "outcome": {"run": found.state,
                    "fetch_artifacts": [t["state"] for t in found.fetch_tries],
                    "first_attempt_failed_after_s": record.get("failed_after_s"),
                    "left_in_staging": record.get("left_in_staging")},
        "recovery_s": {"fetch_artifacts_succeeded_after_space_freed":
                       round(end - record["freed_t"], 1) if end and "freed_t" in record
                       else None},
        "duplicates_found": found.ledger.problems,
        "ledger": found.ledger.counts,
        "services_unhealthy_after": found.unhealthy,
        "errors": record.get("errors"),
        "read_errors": found.errors,
    })
    assert found.errors == []
    assert not record.get("errors"), record["errors"]
    assert record.get("first_attempt") == "up_for_retry", record
    # A clear failure: the directory, what is free and what the run needs.
    directory = f"staging directory {found.stack.staging / record['mlflow_run_id']} is full"
    assert directory in found.first_fetch_log, found.first_fetch_log[-3000:]
    assert "staging this run needs about" in found.first_fetch_log
    # Nothing of the failed attempt was left behind (not even the run's directory).
    assert record.get("run_dir_exists") is False, record
    states = [t["state"] for t in found.fetch_tries]
    assert states[0] == "failed" and states[-1] == "success", states
    assert found.state == "success"
    assert found.ledger.problems == [], found.ledger.counts
    assert found.unhealthy == {}
