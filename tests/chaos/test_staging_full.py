"""The staging volume (a small tmpfs in the shared stack) fills up as `fetch_artifacts` starts:
the attempt fails naming the directory and the space it needs, leaves no partial stage, and
once the space is freed the next attempt stages the run and the run ships."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass

import pytest

from tests.helpers.compose_stack import ComposeStack
from tests.helpers.faults import (
    Airflow,
    ChaosReport,
    Ledger,
    ledger,
    parse_time,
    unhealthy,
    utc_now,
    xcom,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LEFT_FREE = 512 * 1024  # less than any run's stage


@dataclass
class FullDisk:
    stack: ComposeStack
    run_id: str
    state: str
    record: dict
    tries: list[dict]
    first_log: str
    ledger: Ledger
    unhealthy: dict[str, str]


def _is_tmpfs(path) -> bool:
    with open("/proc/mounts") as mounts:
        return any(line.split()[1] == str(path) and line.split()[2] == "tmpfs"
                   for line in mounts)


@pytest.fixture(scope="module")
def full_disk(shared_compose_stack) -> FullDisk:
    stack = shared_compose_stack
    if not _is_tmpfs(stack.staging):
        pytest.skip("the staging directory is a tmpfs only when the suite runs as root (CI)")
    api = Airflow(stack.airflow, stack.env["AIRFLOW_ADMIN_PASSWORD"])
    api.unpause()
    commit = hashlib.sha1(f"chaos disk {uuid.uuid4()}".encode()).hexdigest()
    run_id = f"chaos-disk__{commit[:12]}"
    api.trigger(run_id, {"force": True, "source_commit": commit, "source_ref": "refs/heads/main",
                         "source_repository": "local/rice-mlops"})
    record: dict = {}
    ballast = stack.staging / ".chaos-ballast"
    try:
        trained = api.wait_task(run_id, "train", {"success"}, timeout=1500)
        assert trained is not None, api.tasks(run_id)
        stat = os.statvfs(stack.staging)
        fill = stat.f_bavail * stat.f_frsize - LEFT_FREE
        with open(ballast, "wb") as handle:
            os.posix_fallocate(handle.fileno(), 0, fill)
        fetch = api.task(run_id, "fetch_artifacts")
        record.update(injected_at=utc_now(), t=time.time(), t_mono=time.monotonic(),
                      when=f"train succeeded, fetch_artifacts {fetch['state']}",
                      task_state=fetch["state"], ballast_bytes=fill,
                      free_after_fill=os.statvfs(stack.staging).f_bavail * stat.f_frsize)
        first = api.wait_task(run_id, "fetch_artifacts", {"up_for_retry", "failed", "success"},
                              timeout=600)
        record["first_attempt"] = (first or {}).get("state")
        record["failed_after_s"] = round(time.monotonic() - record["t_mono"], 1)
        mlflow_run = (xcom(api, run_id, "train") or {}).get("run_id", "")
        record["mlflow_run_id"] = mlflow_run
        record["left_in_staging"] = sorted(
            str(p.relative_to(stack.staging)) for p in (stack.staging / mlflow_run).rglob("*")
        ) if mlflow_run and (stack.staging / mlflow_run).exists() else []
        record["run_dir_exists"] = bool(mlflow_run) and (stack.staging / mlflow_run).exists()
    finally:
        ballast.unlink(missing_ok=True)
        record["freed_t"] = time.time()
    run = api.wait_run(run_id, timeout=1500)
    tries = api.tries(run_id, "fetch_artifacts")
    return FullDisk(stack, run_id, run["state"], record, tries,
                    api.log(run_id, "fetch_artifacts", 1), ledger(stack, api, run_id, commit),
                    unhealthy(stack))


def test_full_staging_volume_fails_cleanly_then_recovers(full_disk, chaos_report: ChaosReport):
    found, record = full_disk, full_disk.record
    end = parse_time(found.tries[-1].get("end_date")) if found.tries else None
    chaos_report.add({
        "fault": "staging volume (tmpfs) full during fetch_artifacts; space freed afterwards",
        "dag_run_id": found.run_id,
        "injected_at": record.get("injected_at"),
        "injected_when": record.get("when"),
        "outcome": {"run": found.state,
                    "fetch_artifacts": [t["state"] for t in found.tries],
                    "first_attempt_failed_after_s": record.get("failed_after_s"),
                    "left_in_staging": record.get("left_in_staging")},
        "recovery_s": {"fetch_artifacts_succeeded_after_space_freed":
                       round(end - record["freed_t"], 1) if end and "freed_t" in record
                       else None},
        "duplicates_found": found.ledger.problems,
        "ledger": found.ledger.counts,
        "services_unhealthy_after": found.unhealthy,
    })
    assert record.get("first_attempt") == "up_for_retry", record
    # A clear failure: the directory, what is free and what the run needs.
    directory = f"staging directory {found.stack.staging / record['mlflow_run_id']} is full"
    assert directory in found.first_log, found.first_log[-3000:]
    assert "staging this run needs about" in found.first_log
    # Nothing of the failed attempt was left behind (not even the run's directory).
    assert record.get("run_dir_exists") is False, record
    states = [t["state"] for t in found.tries]
    assert states[0] == "failed" and states[-1] == "success", states
    assert found.state == "success"
    assert found.ledger.problems == [], found.ledger.counts
    assert found.unhealthy == {}
