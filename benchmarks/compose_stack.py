"""The production stack (docker-compose.yaml) end to end on this machine: how long its images
take to build, how long `up` takes until every service is healthy, how long a push webhook
takes to a shipped model on the Celery workers, and how much memory the stack holds.

    scripts/docker-engine start
    .venv/bin/python benchmarks/compose_stack.py [--data-dir ../shared/rice] [--epochs 25]

Appends a record to results/compose_stack.jsonl.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "kB": 1e3, "MB": 1e6, "GB": 1e9}


def _mib(usage: str) -> float:
    """'1.234GiB / 23.4GiB' -> MiB used."""
    value, unit = re.fullmatch(r"([\d.]+)([A-Za-z]+)", usage.split("/")[0].strip()).groups()
    return float(value) * _UNITS[unit] / 2**20


def main() -> int:
    from demo_run import run_times, task_seconds
    from results_log import record

    from rice_mlops.ingress.send import push_payload, send
    from rice_mlops.operations.demo import DAG_ID, Api, follow, summarize, wait_for_dag
    from tests.helpers.compose_lifecycle import build_images, compose_stack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "rice")
    parser.add_argument("--epochs", default="25")
    parser.add_argument("--scheduler-idle-sleep", default=_compose_default(
                            "AIRFLOW_SCHEDULER_IDLE_SLEEP_TIME"),
                        help="the scheduler's [scheduler] scheduler_idle_sleep_time, seconds "
                             "(default: docker-compose.yaml's)")
    parser.add_argument("--idle-cpu-seconds", type=float, default=60,
                        help="how long to measure each service's CPU on the idle stack")
    parser.add_argument("--idle-only", action="store_true",
                        help="measure the idle stack (memory, CPU) and stop: no run")
    args = parser.parse_args()

    started = time.monotonic()
    images = build_images()
    build_s = time.monotonic() - started
    started = time.monotonic()
    with compose_stack(args.data_dir.resolve(), images, RICE_EPOCHS=args.epochs,
                       AIRFLOW_SCHEDULER_IDLE_SLEEP_TIME=args.scheduler_idle_sleep) as stack:
        waiting = stack.wait_healthy(timeout=600)
        healthy_s = time.monotonic() - started
        if waiting:
            raise SystemExit(f"not healthy: {waiting}")
        api = Api(stack.airflow, stack.env["AIRFLOW_ADMIN_PASSWORD"])
        wait_for_dag(api, timeout=300)
        api.patch(f"/dags/{DAG_ID}", {"is_paused": False})
        idle = _stack_memory(stack)
        idle_cpu = _idle_cpu(stack, args.idle_cpu_seconds)
        if args.idle_only:
            record("compose_stack_idle", {
                "images_build_s": round(build_s, 1), "up_to_all_healthy_s": round(healthy_s, 1),
                "stack_memory_mib_idle": idle, "idle_cpu_percent_of_a_core": idle_cpu,
                "stack_memory_mib_idle_again": _stack_memory(stack)})
            return 0
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=REPO).stdout.strip()
        sent = time.monotonic()
        answer = send(f"{stack.airflow}/webhooks/github", stack.env["GITHUB_WEBHOOK_SECRET"],
                      push_payload("refs/heads/main", commit, "local/rice-mlops"))
        answer.raise_for_status()
        run = follow(api, answer.json()["dag_run_id"], timeout=3600)
        run_s = time.monotonic() - sent
        summary = summarize(api, run, stack.airflow, stack.mlflow)
        tasks = api.get(f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances")
        durations = {ti["task_id"]: task_seconds(ti) for ti in tasks["task_instances"]
                     if ti["start_date"] and ti["end_date"]}
        times = run_times(tasks["task_instances"])
        after = _stack_memory(stack)
    airflow_image = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}",
                                    "rice-mlops/airflow:3.3.2"], capture_output=True,
                                   text=True).stdout.strip()
    record("compose_stack", {
        "data_dir": str(args.data_dir), "epochs": int(args.epochs),
        "images_build_s": round(build_s, 1),
        "up_to_all_healthy_s": round(healthy_s, 1),
        "webhook_to_finished_run_s": round(run_s, 1),
        "state": run["state"], "test_accuracy": summary["test_accuracy"],
        "image": summary["image"], "task_seconds": durations,
        # first task to last; `overhead_s` is everything but `train`, gaps included
        "scheduler_idle_sleep_s": float(args.scheduler_idle_sleep),
        **{key: times[key] for key in ("run_s", "train_s", "overhead_s", "idle_s", "queued_s",
                                       "timeline")},
        "idle_cpu_percent_of_a_core": idle_cpu,
        "stack_memory_mib_idle": idle, "stack_memory_mib_after_run": after,
        "airflow_image_mb": round(int(airflow_image or 0) / 1e6, 1),
    })
    return 0 if run["state"] == "success" else 1


def _compose_default(variable: str) -> str:
    """The default docker-compose.yaml gives `variable` (`${VARIABLE:-default}`)."""
    text = (REPO / "docker-compose.yaml").read_text()
    return re.search(rf"\${{{variable}:-([^}}]*)}}", text).group(1)


def _cpu_seconds(container: str) -> float:
    """CPU time the container's cgroup has used so far (cgroup v1 or v2 on the host)."""
    cgroup = Path("/sys/fs/cgroup")
    scope = f"docker-{container}.scope"  # the systemd driver's name; cgroupfs uses docker/<id>
    for v1 in (cgroup / "cpuacct" / "docker" / container / "cpuacct.usage",
               cgroup / "cpuacct" / "system.slice" / scope / "cpuacct.usage"):
        if v1.exists():
            return int(v1.read_text()) / 1e9
    for v2 in (cgroup / "unified" / "docker" / container / "cpu.stat",
               cgroup / "docker" / container / "cpu.stat",
               cgroup / "system.slice" / scope / "cpu.stat"):
        if v2.exists():
            usage = dict(line.split() for line in v2.read_text().splitlines())
            return int(usage["usage_usec"]) / 1e6
    raise SystemExit(f"no cgroup CPU account for container {container[:12]}")


def _idle_cpu(stack, seconds: float) -> dict[str, float]:
    """Each service's CPU over `seconds` of the idle stack (DAG unpaused, no run), in % of
    one core: what the stack costs around the clock."""
    listed = stack.compose("ps", "-q").stdout.split()
    fmt = '{{.Id}} {{index .Config.Labels "com.docker.compose.service"}} {{.State.Running}}'
    names = dict(line.split()[:2] for line in subprocess.run(
        ["docker", "inspect", "--format", fmt, *listed],
        capture_output=True, text=True, check=True).stdout.splitlines()
        if line.endswith(" true"))  # the one-shot init containers have exited
    # Every running container's account is found before the 60 s start, not after.
    before, started = {c: _cpu_seconds(c) for c in names}, time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    usage = {names[c]: round(100 * (_cpu_seconds(c) - before[c]) / elapsed, 2) for c in names}
    usage["total"] = round(sum(usage.values()), 2)
    return usage


def _stack_memory(stack) -> dict[str, float]:
    ids = stack.compose("ps", "-q").stdout.split()
    stats = subprocess.run(["docker", "stats", "--no-stream", "--format",
                            "{{.Name}}\t{{.MemUsage}}", *ids], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    memory = {}
    for line in stats:
        name, usage = line.split("\t")
        service = re.sub(r"^rice-ci-[0-9a-f]+_|_\d+$", "", name)
        memory[service] = round(_mib(usage), 1)
    memory["total"] = round(sum(memory.values()), 1)
    return memory


if __name__ == "__main__":
    raise SystemExit(main())
