"""rice_mlops.operations.job_alive answers what `airflow jobs check` answers, on the embedded
stack's real triggerer and DAG processor and its PostgreSQL: alive for this host, not for another,
and not once the heartbeat is older than Airflow's own threshold setting."""

from __future__ import annotations

import os
import subprocess

import pytest

from rice_mlops.operations import job_alive
from tests.helpers.paths import REPO

pytestmark = pytest.mark.integration


def _cli_says_alive(stack, kind: str, host: str, env: dict) -> bool:
    checked = subprocess.run(
        [REPO / ".venv" / "bin" / "airflow", "jobs", "check", "--job-type", kind,
         "--hostname", host],
        env={**os.environ, **stack.env, "AIRFLOW_HOME": str(stack.home), **env},
        capture_output=True, text=True, timeout=120)
    return checked.returncode == 0


@pytest.mark.parametrize("kind", ["TriggererJob", "DagProcessorJob"])
def test_the_answer_is_airflows_own(airflow_pg, kind):
    from airflow.utils.net import get_hostname

    here = get_hostname()
    env = {**airflow_pg.env}
    stale = {job_alive.THRESHOLDS[kind]: "0.001"}  # every heartbeat is older than that
    for host, extra, expected in ((here, {}, True), ("elsewhere.invalid", {}, False),
                                  (here, stale, False)):
        ours = job_alive.alive(kind, host, {**env, **extra}) > 0
        assert ours is expected, (host, extra)
        assert _cli_says_alive(airflow_pg, kind, host, extra) is expected, (host, extra)
