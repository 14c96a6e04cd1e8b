"""What the compose stack's healthchecks cost in CPU: each Airflow service's check, as
docker-compose.yaml configures it now ("lean") and as it was ("airflow": the workers' ping
through Airflow's Celery app, `airflow jobs check` for the triggerer and the DAG processor),
run in the same running containers, so both are measured under the same load.

    .venv/bin/python benchmarks/healthchecks.py PROJECT [--repeat 5]

PROJECT is a running stack's compose project name (`docker ps` shows it before `_service_`).
CPU is user + system time of the check's processes, from the kernel (getrusage of children),
median of `--repeat` runs; the share of a core is that over the service's check interval.
Appends a record to results/healthchecks.jsonl.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from results_log import record  # noqa: E402

BEFORE = {  # docker-compose.yaml's checks before issue 25's change (with $$ unescaped)
    "airflow-worker": 'celery --app airflow.providers.celery.executors.celery_executor.app '
                      'inspect ping -d "celery@${HOSTNAME}"',
    "airflow-dag-processor": 'airflow jobs check --job-type DagProcessorJob '
                             '--hostname "${HOSTNAME}"',
    "airflow-triggerer": 'airflow jobs check --job-type TriggererJob --hostname "${HOSTNAME}"',
}
BEFORE["airflow-worker-docker"] = BEFORE["airflow-worker-training"] = BEFORE["airflow-worker"]
# Runs the check in the container and prints the CPU seconds its processes used, and its exit.
TIMER = ("import resource, subprocess, sys; "
         "code = subprocess.run(['sh', '-c', sys.argv[1]], capture_output=True).returncode; "
         "r = resource.getrusage(resource.RUSAGE_CHILDREN); "
         "print(r.ru_utime + r.ru_stime, code)")


def containers(project: str) -> dict[str, dict]:
    ids = subprocess.run(["docker", "ps", "-q", "--filter",
                          f"label=com.docker.compose.project={project}"],
                         capture_output=True, text=True, check=True).stdout.split()
    inspected = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True,
                                          text=True, check=True).stdout) if ids else []
    return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in inspected}


def cpu_seconds(container: str, command: str) -> tuple[float, int]:
    out = subprocess.run(["docker", "exec", container, "python3", "-c", TIMER, command],
                         capture_output=True, text=True, check=True, timeout=120).stdout.split()
    return float(out[0]), int(out[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    found = containers(args.project)
    missing = sorted(set(BEFORE) - set(found))
    if missing:
        print(f"healthchecks: project {args.project!r} runs none of {missing}", file=sys.stderr)
        return 2
    services, totals = {}, {"lean": 0.0, "airflow": 0.0}
    for name in sorted(BEFORE):
        container = found[name]
        check = container["Config"]["Healthcheck"]
        lean = check["Test"][1]
        # Docker waits `interval` after each check ends: an upper bound on the share.
        interval = check["Interval"] / 1e9
        measured = {}
        for variant, command in (("lean", lean), ("airflow", BEFORE[name])):
            runs = [cpu_seconds(container["Id"], command) for _ in range(args.repeat)]
            codes = {code for _, code in runs}
            if codes != {0}:
                print(f"healthchecks: {name} {variant} check exited {codes}", file=sys.stderr)
                return 1
            cpu = statistics.median(s for s, _ in runs)
            measured[variant] = {"cpu_s": round(cpu, 3),
                                 "core_share": round(cpu / interval, 4)}
            totals[variant] += cpu / interval
        services[name] = {"interval_s": interval, **measured}
        print(f"{name:24} lean {measured['lean']['cpu_s']:6.2f} s   "
              f"airflow {measured['airflow']['cpu_s']:6.2f} s   every {interval:.0f} s")
    record("healthchecks", {
        "command": f"benchmarks/healthchecks.py {args.project} --repeat {args.repeat}",
        "services": services,
        "core_share_lean": round(totals["lean"], 3),
        "core_share_airflow": round(totals["airflow"], 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
