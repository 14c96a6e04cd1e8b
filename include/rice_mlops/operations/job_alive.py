"""The compose healthcheck of the triggerer and the DAG processor: is this host's job of a kind
running and heartbeating? The same question `airflow jobs check --job-type T --hostname H`
answers, asked of the metadata database with one query and no Airflow import.

Why not the CLI: it imports Airflow every time, about 3 s of CPU, every 30 s, for each of
those services; with the workers' `celery inspect ping` through Airflow's Celery app that was
0.4 of a core on a 2-core host, taken from training and the webhook around the clock.

    python -m rice_mlops.operations.job_alive TriggererJob "$HOSTNAME"

Exit 0 when one is alive, 1 (with the reason) when none is, 2 on bad arguments. The URL is
the one the service already holds (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN); the threshold is
Airflow's own setting for that job type (30 s by default), read from the environment.
"""

from __future__ import annotations

import os
import re
import sys

# job_type -> the Airflow setting (as an environment variable) that bounds its heartbeat age;
# the kinds this healthcheck serves, no other.
THRESHOLDS = {
    "TriggererJob": "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD",
    "DagProcessorJob": "AIRFLOW__DAG_PROCESSOR__HEALTH_CHECK_THRESHOLD",
}
DEFAULT_THRESHOLD_S = 30.0  # Airflow 3.3's default for both
# Airflow's Job.is_alive: state running and a heartbeat within the threshold.
QUERY = ("SELECT count(*) FROM job WHERE job_type = %s AND hostname = %s AND state = 'running'"
         " AND latest_heartbeat > now() - make_interval(secs => %s)")


def threshold_s(job_type: str, env=os.environ) -> float:
    raw = env.get(THRESHOLDS[job_type], "")
    try:
        value = float(raw) if raw else DEFAULT_THRESHOLD_S
    except ValueError:
        raise ValueError(f"{THRESHOLDS[job_type]}={raw!r} is not a number of seconds") from None
    if not 0 < value < 86_400:
        raise ValueError(f"{THRESHOLDS[job_type]}={raw!r} is not between 0 and 86400 seconds")
    return value


def libpq_url(sqlalchemy_url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as libpq takes it (without the `+driver` part)."""
    url = re.sub(r"^postgres(?:ql)?(\+\w+)?://", "postgresql://", sqlalchemy_url, count=1)
    if not url.startswith("postgresql://"):
        raise ValueError("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN is not a PostgreSQL URL; "
                         "use `airflow jobs check` for other databases")
    return url


def alive(job_type: str, hostname: str, env=os.environ) -> int:
    """How many jobs of `job_type` on `hostname` are running with a fresh heartbeat."""
    import psycopg2

    with psycopg2.connect(libpq_url(env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")),
                          connect_timeout=5) as connection, connection.cursor() as cursor:
        cursor.execute(QUERY, (job_type, hostname, threshold_s(job_type, env)))
        return cursor.fetchone()[0]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in THRESHOLDS or not args[1]:
        jobs = ",".join(THRESHOLDS)
        print(f"usage: python -m rice_mlops.operations.job_alive {{{jobs}}} HOSTNAME",
              file=sys.stderr)
        return 2
    try:
        count = alive(*args)
    except Exception as exc:  # noqa: BLE001 - a healthcheck says why, it does not trace
        print(f"{args[0]} on {args[1]}: cannot check: {type(exc).__name__}: {exc}"
              .replace(os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or "\0", "<url>"),
              file=sys.stderr)
        return 1
    if count == 0:
        print(f"{args[0]} on {args[1]}: no running job with a fresh heartbeat", file=sys.stderr)
        return 1
    print(f"{args[0]} on {args[1]}: alive")
    return 0


if __name__ == "__main__":
    sys.exit(main())
