"""One run that trains under load and then finds its staging volume full.

Load held: signed deliveries at a steady 20 per second for 60 s to the stack's webhook (its
proxy, then the API server) while the run trains on the same two cores: no 5xx, every accepted
delivery names the run of its commit. The 1,200 deliveries are 20 commits, each pushed once
and then redelivered once a second (the receiver's dedup answers with the existing run,
through the same REST call), so the load is real while only 20 runs wait queued behind the
training run; they are removed afterwards. Answer times go to the report.

Staging full: the staging volume (a 512 MiB tmpfs in the shared stack) is filled the moment
`train` succeeds, so `fetch_artifacts` finds no room: the attempt fails naming the directory,
the space free and the space it needs, and leaves no partial stage; once the space is freed the
next attempt stages the run, and the run ships exactly one of everything.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from tests.helpers.faults import (
    DAG_ID,
    Airflow,
    ChaosReport,
    Ledger,
    ledger,
    parse_time,
    unhealthy,
    utc_now,
    xcom,
)
from tests.helpers.compose_stack import ComposeStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE = 20  # deliveries per second
SECONDS = 60
COMMITS = 20
REPOSITORY = "local/rice-mlops"
LEFT_FREE = 512 * 1024  # less than any run's stage


@dataclass
class LoadedRun:
    stack: ComposeStack
    run_id: str
    state: str
    load: dict
    answers: list[tuple[str, str, float, str]]  # commit, status, seconds, dag_run_id
    load_runs: dict[str, list[str]]  # commit -> DAG run ids
    disk: dict
    fetch_tries: list[dict]
    first_fetch_log: str
    ledger: Ledger
    unhealthy: dict[str, str]


def _is_tmpfs(path) -> bool:
    with open("/proc/mounts") as mounts:
        return any(line.split()[1] == str(path) and line.split()[2] == "tmpfs"
                   for line in mounts)


def _deliver(stack: ComposeStack, commit: str) -> tuple[str, str, float, str]:
    from rice_mlops.webhook.send import push_payload, send

    start = time.perf_counter()
    try:
        answer = send(stack.webhook, stack.env["GITHUB_WEBHOOK_SECRET"],
                      push_payload("refs/heads/main", commit, REPOSITORY), timeout=10)
        run_id = answer.json().get("dag_run_id", "") if answer.status_code < 300 else ""
        return commit, str(answer.status_code), time.perf_counter() - start, run_id
    except (httpx.HTTPError, ValueError) as exc:
        return commit, f"no answer: {type(exc).__name__}", time.perf_counter() - start, ""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _fill_when_trained(stack: ComposeStack, api: Airflow, run_id: str, record: dict) -> None:
    """At `train` success, fill the staging volume; once fetch_artifacts' first attempt has
    ended, look at what it left and free the space again."""
    ballast = stack.staging / ".chaos-ballast"
    try:
        trained = api.wait_task(run_id, "train", {"success"}, timeout=1500)
        if trained is None:
            raise RuntimeError("the run ended before train succeeded")
        stat = os.statvfs(stack.staging)
        fill = stat.f_bavail * stat.f_frsize - LEFT_FREE
        with open(ballast, "wb") as handle:
            os.posix_fallocate(handle.fileno(), 0, fill)
        fetch = api.task(run_id, "fetch_artifacts")
        record.update(injected_at=utc_now(), t=time.time(), t_mono=time.monotonic(),
                      when=f"train succeeded, fetch_artifacts {fetch['state']}",
                      task_state=fetch["state"], ballast_bytes=fill)
        first = api.wait_task(run_id, "fetch_artifacts", {"up_for_retry", "failed", "success"},
                              timeout=600)
        record["first_attempt"] = (first or {}).get("state")
        record["failed_after_s"] = round(time.monotonic() - record["t_mono"], 1)
        mlflow_run = (xcom(api, run_id, "train") or {}).get("run_id", "")
        record["mlflow_run_id"] = mlflow_run
        left = stack.staging / mlflow_run
        record["run_dir_exists"] = bool(mlflow_run) and left.exists()
        record["left_in_staging"] = sorted(str(p.relative_to(stack.staging))
                                           for p in left.rglob("*")) if left.exists() else []
    except Exception as exc:  # noqa: BLE001 - the test reports it
        record.setdefault("errors", []).append(f"{type(exc).__name__}: {exc}")
    finally:
        ballast.unlink(missing_ok=True)
        record["freed_t"] = time.time()


@pytest.fixture(scope="module")
def loaded_run(shared_compose_stack) -> LoadedRun:
    stack = shared_compose_stack
    api = Airflow(stack.airflow, stack.env["AIRFLOW_ADMIN_PASSWORD"])
    api.unpause()
    commit = hashlib.sha1(f"chaos load {uuid.uuid4()}".encode()).hexdigest()
    run_id = f"chaos-load__{commit[:12]}"
    api.trigger(run_id, {"force": True, "source_commit": commit,
                         "source_ref": "refs/heads/main", "source_repository": REPOSITORY})
    disk: dict = {"tmpfs": _is_tmpfs(stack.staging)}
    filler = threading.Thread(target=_fill_when_trained, args=(stack, api, run_id, disk))
    if disk["tmpfs"]:
        filler.start()

    assert api.wait_task(run_id, "train", {"running"}, timeout=900) is not None
    tag = uuid.uuid4().hex
    commits = [hashlib.sha1(f"load {tag} {i}".encode()).hexdigest() for i in range(COMMITS)]
    load = {"injected_at": utc_now(), "train_state": api.task(run_id, "train")["state"]}
    start = time.monotonic()

    def paced(i: int):
        time.sleep(max(0.0, start + i / RATE - time.monotonic()))
        return _deliver(stack, commits[i % COMMITS])

    with ThreadPoolExecutor(max_workers=64) as pool:
        answers = list(pool.map(paced, range(RATE * SECONDS)))
    load["sent_over_s"] = round(time.monotonic() - start, 1)
    load["train_state_after"] = api.task(run_id, "train")["state"]
    listed = api.get(f"/dags/{DAG_ID}/dagRuns", limit=1000)["dag_runs"]
    load_runs = {c: [r["dag_run_id"] for r in listed
                     if (r.get("conf") or {}).get("source_commit") == c] for c in commits}
    for ids in load_runs.values():  # queued behind this run (max_active_runs=1)
        for queued in ids:
            api.request("DELETE", f"/dags/{DAG_ID}/dagRuns/{queued}", ok=(204, 404))

    if disk["tmpfs"]:
        filler.join(timeout=1800)
    run = api.wait_run(run_id, timeout=1500)
    return LoadedRun(stack, run_id, run["state"], load, answers, load_runs, disk,
                     api.tries(run_id, "fetch_artifacts"), api.log(run_id, "fetch_artifacts", 1),
                     ledger(stack, api, run_id, commit), unhealthy(stack))


def test_load_held_while_a_run_trains(loaded_run, chaos_report: ChaosReport):
    found = loaded_run
    seconds = [s for _, status, s, _ in found.answers if status.startswith("2")]
    statuses = [status for _, status, _, _ in found.answers]
    figures = {"deliveries": len(found.answers), "rate_per_s": RATE, "seconds": SECONDS,
               "answers": {s: statuses.count(s) for s in sorted(set(statuses))},
               "p50_ms": round(1000 * statistics.median(seconds), 1) if seconds else None,
               "p99_ms": round(1000 * _percentile(seconds, 0.99), 1) if seconds else None,
               "max_ms": round(1000 * max(seconds), 1) if seconds else None}
    wrong_run = [(c[:12], run_id) for c, status, _, run_id in found.answers
                 if status.startswith("2") and run_id not in found.load_runs.get(c, [])]
    chaos_report.extra["load"] = figures
    chaos_report.add({
        "fault": f"load held: {RATE} signed deliveries/s for {SECONDS} s ({COMMITS} commits, "
                 "redelivered) to the webhook while a run trains",
        "dag_run_id": found.run_id,
        "injected_at": found.load["injected_at"],
        "injected_when": f"train {found.load['train_state']}",
        "outcome": {"run": found.state, **figures, "sent_over_s": found.load["sent_over_s"],
                    "train_state_after_load": found.load["train_state_after"]},
        "duplicates_found": {c[:12]: ids for c, ids in found.load_runs.items() if len(ids) > 1},
        "accepted_without_their_run": wrong_run,
        "ledger": found.ledger.counts,
        "services_unhealthy_after": found.unhealthy,
    })
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
    })
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
