"""What an insider of the compute zone holds on the compose stack, and the test staging around
it: a task's execution API token, and SQL on the metadata database for time travel."""

from __future__ import annotations

import os
import subprocess

from tests.helpers.compose_project import ComposeStack
from tests.helpers.paths import REPO


def task_token(stack: ComposeStack, ti_id: str) -> str:
    """An execution API token for one task instance, signed as the scheduler signs the tokens
    it hands the worker that runs the task: what whoever holds that worker holds."""
    from airflow.api_fastapi.auth.tokens import JWTGenerator

    return JWTGenerator(secret_key=stack.env["AIRFLOW_JWT_SECRET"], valid_for=300,
                        audience="urn:airflow.apache.org:task").generate({"sub": ti_id})


def metadata_sql(stack: ComposeStack, statement: str) -> str:
    """Run one SQL statement on the metadata database as its own role, through psql in the
    postgres container: staging (moving a state or a clock), never what an attacker holds."""
    done = subprocess.run(
        [*stack.command, "exec", "-T", "-e", "PGPASSWORD", "postgres", "psql", "-h",
         "127.0.0.1", "-U", "airflow", "-d", "airflow", "-v", "ON_ERROR_STOP=1", "-tAc",
         statement], capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "PGPASSWORD": stack.env["AIRFLOW_DB_PASSWORD"]})
    if done.returncode != 0:
        raise RuntimeError(f"psql failed: {done.stderr[-1000:]}")
    return done.stdout.strip()
