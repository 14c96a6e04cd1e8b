"""The compose stack's first pipeline run, started by a signed push through its webhook proxy,
with two faults laid on it (issue 16, faults 7 and 8) so that one training serves
tests/integration/test_compose_stack_first_run.py and tests/chaos/test_run_under_load.py:

- load held: while `train` runs, signed deliveries at a steady 20 per second for 60 s to the
  webhook proxy. They are 20 other commits, one pushed for the first time every 3 s (20 REST
  triggers, 20 runs queued behind the pushed one, removed afterwards), the ones already pushed
  redelivered in turn in between. (All 20 first pushes in the first second, as before, is a
  burst no repository's pushes make; it is measured on its own in benchmarks/webhook_load.py
  --bursts, each trigger creating a run and its task instances.) The
  receiver answers a redelivery of a push it triggered within GITHUB_WEBHOOK_RECENT_SECONDS
  from memory (include/rice_mlops/ingress/recent.py), so after the first second the load is on
  nginx, the API server's HTTP stack, the signature check and the receiver, not on the metadata
  database: that is the load GitHub's redeliveries and replayed bodies put on it.
- staging full: the staging volume (a tmpfs, when the suite runs as root) is filled while
  `train` runs (on the remote worker, which has no staging), so `fetch_artifacts` always starts
  on a full volume and finds no room; the space is freed once that attempt has ended, and its
  retry must stage the run.
- an insider in the compute zone (issue 20): once the run is staged, and before the release
  zone builds, code running in the default worker's container writes a build context into
  the run's staging directory (a Dockerfile, a server and a push.sh that would leave a marker
  on the release side, and a matching MANIFEST.sha256), and tries to write into the release
  zone's directory.

Nothing here asserts: the tests read what was recorded, including what went wrong recording it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from tests.helpers.airflow_stack import DAG_ID
from tests.helpers.compose_project import ComposeStack
from tests.helpers.compose_push import deliver
from tests.helpers.paths import REPO
from tests.helpers.recovery_waits import unhealthy
from tests.helpers.retrying_airflow import Airflow
from tests.helpers.run_ledger import Ledger, ledger
from tests.helpers.timestamps import utc_now

RATE = 20  # deliveries per second
SECONDS = 60
COMMITS = 20
NEW_EVERY = SECONDS / COMMITS  # seconds between two first pushes
LEFT_FREE = 512 * 1024  # less than any run's stage


@dataclass
class LoadedRun:
    stack: ComposeStack
    commit: str
    push_status: int
    run_id: str
    state: str
    load: dict
    answers: list[tuple[str, str, float, str]]  # commit, status, seconds, dag_run_id
    load_runs: dict[str, list[str]]  # commit -> DAG run ids
    disk: dict
    fetch_tries: list[dict]
    first_fetch_log: str
    ledger: Ledger
    plant: dict
    unhealthy: dict[str, str]
    errors: list[str]  # what could not be read afterwards


def is_tmpfs(path) -> bool:
    with open("/proc/mounts") as mounts:
        return any(line.split()[1] == str(path) and line.split()[2] == "tmpfs"
                   for line in mounts)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _fill(staging, ballast, tries: int = 20) -> tuple[int, int]:
    """Allocate all but LEFT_FREE of the volume to `ballast`: (bytes allocated, tries).

    Something may write there between the look and the allocation (fetch_artifacts, when
    `train` ended before this started); tmpfs undoes a refused fallocate, so look again and ask
    for what is left."""
    for attempt in range(1, tries + 1):
        stat = os.statvfs(staging)
        fill = stat.f_bavail * stat.f_frsize - LEFT_FREE
        if fill <= 0:  # the stage already took the rest: full as it is
            return 0, attempt
        try:
            with open(ballast, "wb") as handle:
                os.posix_fallocate(handle.fileno(), 0, fill)
            return fill, attempt
        except OSError as exc:
            if exc.errno != errno.ENOSPC or attempt == tries:
                raise
    raise AssertionError("unreachable")


def _fill_when_trained(stack: ComposeStack, api: Airflow, run_id: str, record: dict,
                       stop: threading.Event) -> None:
    """While `train` runs, fill the staging volume; once fetch_artifacts' first attempt has
    ended, look at what it left and free the space again. Filling at `train` success instead
    raced fetch_artifacts' first writes, which start on another worker within a second."""
    ballast = stack.staging / ".chaos-ballast"
    try:
        if api.wait_task(run_id, "train", {"running", "success"}, timeout=1500,
                         stop=stop) is None:
            raise RuntimeError("the run ended (or the driver stopped) before train ran")
        fill, tries = _fill(stack.staging, ballast)
        fetch = api.task(run_id, "fetch_artifacts")
        record.update(injected_at=utc_now(), t=time.time(), t_mono=time.monotonic(),
                      when=f"train {api.task(run_id, 'train')['state']}, "
                           f"fetch_artifacts {fetch['state']}",
                      task_state=fetch["state"], ballast_bytes=fill, fill_tries=tries)
        first = api.wait_task(run_id, "fetch_artifacts", {"up_for_retry", "failed", "success"},
                              timeout=600, stop=stop)
        record["first_attempt"] = (first or {}).get("state")
        record["failed_after_s"] = round(time.monotonic() - record["t_mono"], 1)
        mlflow_run = (api.xcom(run_id, "train") or {}).get("run_id", "")
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


MARKER = "rice-planted-by-the-compute-zone"

# Run inside the default worker's container (the compute zone's worker that mounts staging;
# `train` runs on a remote worker that has none), as whoever holds that worker: a build
# context as the release zone once took it from staging, every file of it leaving MARKER
# where it runs.
_PLANT = r"""
import hashlib, json, os, sys
from pathlib import Path
marker, run, release = sys.argv[1], sys.argv[2], os.environ["RICE_PLANT_RELEASE"]
context = Path(os.environ["RICE_STAGING_DIR"]) / run / "image"
files = {
    "Dockerfile": f"FROM scratch\nRUN touch /{marker}\nCOPY app/ /opt/rice/app/\n",
    "push.sh": f"#!/bin/sh\ntouch /tmp/{marker} \"$RICE_RELEASE_DIR/{marker}\"\n",
    "app/rice_mlops/serving/__main__.py": f"open('/tmp/{marker}', 'w')  # {marker}\n",
}
out = {"context": str(context), "planted": [], "errors": []}
for name, text in files.items():
    try:
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text(text)
        out["planted"].append(name)
    except OSError as exc:
        out["errors"].append(f"{name}: {exc.strerror}")
try:
    (context / "push.sh").chmod(0o755)
    (context / "MANIFEST.sha256").write_text("".join(
        f"{hashlib.sha256((context / n).read_bytes()).hexdigest()}  {n}\n" for n in files))
except OSError as exc:
    out["errors"].append(f"manifest: {exc.strerror}")
out["release_visible"] = os.path.exists(release)
try:
    Path(release, run, "image").mkdir(parents=True, exist_ok=True)
    Path(release, run, "image", marker).write_text(marker)
    out["release_write"] = "written"
except OSError as exc:
    out["release_write"] = exc.strerror
print(json.dumps(out))
"""


def _plant_when_staged(stack: ComposeStack, api: Airflow, run_id: str, record: dict,
                       stop: threading.Event) -> None:
    """Once fetch_artifacts has staged the run, plant a build context from the default
    worker (see _PLANT) and note where the release zone's own step stood at that moment."""
    try:
        if api.wait_task(run_id, "fetch_artifacts", {"success"}, timeout=1500,
                         stop=stop) is None:
            raise RuntimeError("the run ended (or the driver stopped) before it was staged")
        mlflow_run = (api.xcom(run_id, "train") or {}).get("run_id", "")
        record["before"] = api.task(run_id, "prepare_image_context")["state"]
        planted = subprocess.run(
            [*stack.command, "exec", "-T", "-e", "RICE_PLANT_RELEASE", "airflow-worker",
             "python", "-c", _PLANT, MARKER, mlflow_run],
            capture_output=True, text=True, timeout=120, cwd=REPO,
            env={**os.environ, "RICE_PLANT_RELEASE": stack.env["RICE_RELEASE_DIR"]})
        if planted.returncode != 0:
            raise RuntimeError(f"the plant did not run: {planted.stderr[-1000:]}")
        record.update(json.loads(planted.stdout.strip().splitlines()[-1]))
        record["after"] = api.task(run_id, "prepare_image_context")["state"]
    except Exception as exc:  # noqa: BLE001 - the test reports it
        record.setdefault("errors", []).append(f"{type(exc).__name__}: {exc}")


def delivered_commit(i: int) -> int:
    """Which of the COMMITS the i-th delivery of the load sends: a new one every NEW_EVERY
    seconds, and in between the ones already pushed, in turn."""
    pushed = min(COMMITS, int(i / RATE / NEW_EVERY) + 1)
    return i % pushed


def _hold_load(stack: ComposeStack, api: Airflow, run_id: str
               ) -> tuple[dict, list, dict[str, list[str]]]:
    tag = uuid.uuid4().hex
    commits = [hashlib.sha1(f"load {tag} {i}".encode()).hexdigest() for i in range(COMMITS)]
    load = {"injected_at": utc_now(), "train_state": api.task(run_id, "train")["state"]}
    start = time.monotonic()

    def paced(i: int):
        time.sleep(max(0.0, start + i / RATE - time.monotonic()))
        return deliver(stack, commits[delivered_commit(i)], client=client)

    # One client, a new connection per delivery (as GitHub's arrive): the time measured is the
    # service's, not this process rebuilding an httpx client's TLS context per delivery on
    # the same two loaded cores (that alone read as p50 0.3-1.2 s; benchmarks/README.md).
    with (httpx.Client(headers={"Connection": "close"},
                       limits=httpx.Limits(max_connections=64)) as client,
          ThreadPoolExecutor(max_workers=64) as pool):
        answers = list(pool.map(paced, range(RATE * SECONDS)))
    load["sent_over_s"] = round(time.monotonic() - start, 1)
    load["train_state_after"] = api.task(run_id, "train")["state"]
    listed = api.get(f"/dags/{DAG_ID}/dagRuns", limit=1000)["dag_runs"]
    load_runs = {c: [r["dag_run_id"] for r in listed
                     if (r.get("conf") or {}).get("source_commit") == c] for c in commits}
    for ids in load_runs.values():  # queued behind the pushed run (max_active_runs=1)
        for queued in ids:
            api.request("DELETE", f"/dags/{DAG_ID}/dagRuns/{queued}", ok=(204, 404))
    return load, answers, load_runs


def _read(errors: list[str], what: str, read, default):
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - the tests show it beside what was recorded
        errors.append(f"{what}: {type(exc).__name__}: {exc}")
        return default


def push_under_load(stack: ComposeStack, commit: str) -> LoadedRun:
    """Push `commit` through the webhook proxy, hold the load and fill the staging volume while
    it trains, and wait for the run to end."""
    api = Airflow(stack.airflow, stack.env["AIRFLOW_ADMIN_PASSWORD"])
    api.unpause()  # new DAGs start paused in this stack
    _, status, _, run_id = deliver(stack, commit)
    if not run_id:
        raise AssertionError(f"the push of {commit} through {stack.webhook} got {status}")
    disk: dict = {"tmpfs": is_tmpfs(stack.staging)}
    stop = threading.Event()
    filler = threading.Thread(target=_fill_when_trained, args=(stack, api, run_id, disk, stop),
                              daemon=True)
    if disk["tmpfs"]:
        filler.start()
    plant: dict = {}
    planter = threading.Thread(target=_plant_when_staged, args=(stack, api, run_id, plant, stop),
                               daemon=True)
    planter.start()
    try:
        if api.wait_task(run_id, "train", {"running"}, timeout=900) is None:
            raise AssertionError(f"{run_id} ended before train ran: {api.tasks(run_id)}")
        load, answers, load_runs = _hold_load(stack, api, run_id)
        run = api.wait_run(run_id, timeout=1500)
    finally:  # never leave the filler to fill a volume behind the next tests
        stop.set()
        for watcher in (filler, planter):
            if watcher.is_alive():
                watcher.join(timeout=120)
    errors: list[str] = []
    return LoadedRun(
        stack, commit, int(status), run_id, run["state"], load, answers, load_runs, disk,
        _read(errors, "fetch_artifacts tries", lambda: api.tries(run_id, "fetch_artifacts"), []),
        _read(errors, "fetch_artifacts log", lambda: api.log(run_id, "fetch_artifacts", 1), ""),
        _read(errors, "ledger", lambda: ledger(stack, api, run_id, commit),
              Ledger(problems=["the ledger could not be read"])),
        plant,
        _read(errors, "health", lambda: unhealthy(stack), {"?": "not read"}),
        errors)
