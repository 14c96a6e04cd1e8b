"""The scripts' state directories as an attacker on the same machine sees them (issue #13): a
directory someone else owns or can write to is refused, planted files are never executed, and
a pid file never makes a script signal a process it did not start."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.script_env import parse_env_lines

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"

# script, command that reads its state, the variable that moves its state directory
STATEFUL = [("docker-engine", "env", "RICE_DOCKER_STATE"),
            ("mlflow-server", "status", "MLFLOW_HOME"),
            ("airflow-stack", "status", "AIRFLOW_HOME"),
            ("postgres", "url", "PG_STATE")]


def _run(script: str, command: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPTS / script, command], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
@pytest.mark.parametrize("script,command,variable", STATEFUL, ids=[s[0] for s in STATEFUL])
def test_a_state_directory_owned_by_another_user_is_refused(tmp_path, script, command,
                                                            variable):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)  # nobody, as if pre-created by another local user
    result = _run(script, command, **{variable: str(state)})
    assert result.returncode != 0
    assert f"state directory {state} is owned by uid 65534" in result.stderr, result.stderr
    assert os.listdir(state) == []  # nothing written into it


@pytest.mark.parametrize("script,command,variable", STATEFUL, ids=[s[0] for s in STATEFUL])
def test_a_group_or_world_writable_state_directory_is_refused(tmp_path, script, command,
                                                              variable):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    result = _run(script, command, **{variable: str(state)})
    assert result.returncode != 0
    assert "writable by group or others (mode 777)" in result.stderr, result.stderr


def test_a_symlinked_state_directory_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "state").symlink_to(tmp_path / "elsewhere")
    result = _run("docker-engine", "env", RICE_DOCKER_STATE=str(tmp_path / "state"))
    assert result.returncode != 0 and "symbolic link" in result.stderr


def test_a_new_state_directory_is_private(tmp_path):
    state = tmp_path / "new" / "state"
    result = _run("docker-engine", "env", RICE_DOCKER_STATE=str(state))
    assert result.returncode == 0, result.stderr
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    assert oct((state / "registry_password").stat().st_mode & 0o777) == "0o600"


def test_a_planted_registry_password_is_refused_not_run(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    marker = tmp_path / "pwned"
    (state / "registry_password").write_text(f"x$(touch {marker})`touch {marker}`;touch {marker}\n")
    result = _run("docker-engine", "env", RICE_DOCKER_STATE=str(state))
    assert result.returncode != 0
    assert "registry_password holds characters other than" in result.stderr
    # Even if it were printed, the demo's reader refuses it before anything could run it.
    demo = subprocess.run(["bash", "-c", f"set -e; source {SCRIPTS}/lib/state.sh; "
                           "load_env_lines RICE_REGISTRY_PASSWORD <<<\"$LINE\"; "
                           "echo \"$RICE_REGISTRY_PASSWORD\""],
                          env={**os.environ,
                               "LINE": f"export RICE_REGISTRY_PASSWORD=$(touch {marker})"},
                          capture_output=True, text=True)
    assert demo.returncode != 0 and "refusing" in demo.stderr
    assert not marker.exists()


def test_env_lines_are_quoted_for_the_shell(tmp_path):
    marker = tmp_path / "pwned"
    hostile = f"a b'c\"$(touch {marker});`touch {marker}`\\"
    result = _run("docker-engine", "env", RICE_DOCKER_STATE=str(tmp_path / "s"),
                  RICE_REGISTRY_PASSWORD=hostile)
    assert result.returncode == 0, result.stderr
    assert parse_env_lines(result.stdout)["RICE_REGISTRY_PASSWORD"] == hostile
    shell = subprocess.run(["bash", "-c", 'eval "$LINES"; printf %s "$RICE_REGISTRY_PASSWORD"'],
                           env={**os.environ, "LINES": result.stdout}, capture_output=True,
                           text=True)
    assert shell.stdout == hostile
    assert not marker.exists()


def test_the_demo_never_evals_what_it_reads():
    for script in ("demo.sh", "airflow-stack", "docker-engine", "mlflow-server", "postgres"):
        assert not re.search(r"\beval\b", (SCRIPTS / script).read_text()), script


@pytest.mark.parametrize("content", ["{pid} 1", "{pid}"], ids=["wrong-start-time", "pid-only"])
def test_stop_never_signals_a_process_it_did_not_start(tmp_path, content):
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        home = tmp_path / "mlflow"
        home.mkdir(mode=0o700)
        (home / "server.pid").write_text(content.format(pid=stranger.pid) + "\n")
        result = _run("mlflow-server", "stop", MLFLOW_HOME=str(home), MLFLOW_PORT="1")
        assert result.returncode == 0, result.stderr
        time.sleep(0.3)
        assert stranger.poll() is None, "a process the script did not start was signalled"

        airflow = tmp_path / "airflow"
        (airflow / "pids").mkdir(parents=True, mode=0o700)
        airflow.chmod(0o700)
        (airflow / "pids" / "scheduler.pid").write_text(content.format(pid=stranger.pid))
        result = _run("airflow-stack", "stop", AIRFLOW_HOME=str(airflow))
        assert result.returncode == 0, result.stderr
        time.sleep(0.3)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.skipif(shutil.which("htpasswd") is None, reason="htpasswd not installed")
def test_the_registry_password_is_never_on_a_command_line():
    engine = (SCRIPTS / "docker-engine").read_text()
    assert "htpasswd -niB" in engine and "-Bbn" not in engine
