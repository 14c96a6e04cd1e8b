"""docker-compose.worker.yaml (a worker on another machine) and the control plane's edge
(docker-compose.yaml, profile `publish`): the worker holds the compute zone's two secrets and
nothing more, reaches the control plane only over TLS it checks, and the GPU override reserves
devices the standard way. What they do on real engines: tests/integration/
test_compose_stack.py (the shared stack's `train` runs on this worker, in its own project)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers.compose_file import SECRETS, SERVICES

REPO = Path(__file__).resolve().parents[2]
TEXT = (REPO / "docker-compose.worker.yaml").read_text()
WORKER_FILE = yaml.safe_load(TEXT)
WORKER = WORKER_FILE["services"]["airflow-worker-remote"]
ENV = WORKER["environment"]
GPU = yaml.safe_load((REPO / "docker-compose.worker.gpu.yaml").read_text())
EXAMPLE = dict(line.split("=", 1) for line in
               (REPO / "worker.env.example").read_text().splitlines()
               if line and not line.startswith("#"))
CA = "/run/rice-tls/ca.crt"


def test_the_file_starts_one_worker_for_the_training_queue_by_default():
    assert list(WORKER_FILE["services"]) == ["airflow-worker-remote"]
    script = WORKER["command"][0].splitlines()
    assert script[0] == "python -m rice_mlops.operations.broker_check || exit"
    assert script[1].startswith('exec airflow celery worker --queues "$${RICE_WORKER_QUEUE}"')
    assert ENV["RICE_WORKER_QUEUE"] == "${RICE_WORKER_QUEUE:-training}"
    assert WORKER["restart"] == "unless-stopped" and "healthcheck" in WORKER


def test_it_holds_only_the_broker_password_and_mlflows_pipeline_user():
    held = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", TEXT)) & SECRETS
    assert held == {"REDIS_PASSWORD", "MLFLOW_PIPELINE_PASSWORD"}
    for name in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__FERNET_KEY",
                 "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY",
                 "RICE_SIGNING_KEY_FILE", "AIRFLOW_CONN_GITHUB_DEFAULT",
                 "AIRFLOW_CONN_RICE_REGISTRY", "AIRFLOW_CONN_RICE_AIRFLOW_API"):
        assert name not in ENV, name


def test_it_gets_no_docker_socket_and_cannot_rewrite_the_dag():
    mounts = WORKER["volumes"]
    assert not any("docker.sock" in m for m in mounts) and "group_add" not in WORKER
    assert "./dags:/opt/airflow/dags:ro" in mounts and "./plugins:/opt/airflow/plugins:ro" in mounts
    data = next(m for m in mounts if m.startswith("${RICE_DATA_DIR"))
    assert data.endswith(":/opt/airflow/data:ro")
    assert next(m for m in mounts if m.startswith("${RICE_CA_FILE")).endswith(f":{CA}:ro")
    assert not any("RICE_STAGING_DIR" in m or "RICE_RELEASE_DIR" in m for m in mounts)


def test_every_connection_to_the_control_plane_is_tls_checked_against_its_ca():
    host = "${RICE_CONTROL_PLANE_HOST:-rice-control-plane}"
    assert ENV["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == \
        f"https://{host}:${{RICE_EDGE_PORT:-8443}}/execution/"
    assert ENV["AIRFLOW__API__SSL_CA_FILE"] == CA
    assert ENV["AIRFLOW__API__CLIENT_USE_PUBLIC_CERTS"] == "false"  # the CA alone
    for name, db in (("AIRFLOW__CELERY__BROKER_URL", 0), ("AIRFLOW__CELERY__RESULT_BACKEND", 1)):
        assert ENV[name] == (f"rediss://:${{REDIS_PASSWORD:?set to the control plane's "
                             f"REDIS_PASSWORD}}@{host}:${{RICE_BROKER_PORT:-6380}}/{db}"
                             f"?ssl_cert_reqs=required&ssl_ca_certs={CA}"), name
    assert ENV["MLFLOW_TRACKING_URI"] == f"https://{host}:${{RICE_EDGE_PORT:-8443}}"
    assert ENV["MLFLOW_TRACKING_SERVER_CERT_PATH"] == CA
    assert WORKER["extra_hosts"] == [f"{host}:${{RICE_CONTROL_PLANE_ADDRESS:?set to the "
                                     "address the control plane publishes on (its "
                                     "RICE_PUBLISH_ADDRESS)}"]


def test_every_variable_is_in_the_example_and_secrets_have_no_default():
    files = TEXT + (REPO / "docker-compose.worker.gpu.yaml").read_text()
    variables = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", files))
    assert variables == set(EXAMPLE)
    for secret in ("REDIS_PASSWORD", "MLFLOW_PIPELINE_PASSWORD"):
        assert EXAMPLE[secret] == ""
        uses = re.findall(r"\$\{" + secret + r"(?![A-Z0-9_])(:?[?-])?", TEXT)
        assert uses and all(use == ":?" for use in uses), secret


def test_the_pipeline_settings_default_as_on_the_control_plane():
    plane = SERVICES["airflow-scheduler"]["environment"]
    for name in ("RICE_SCHEDULE", "RICE_EPOCHS", "RICE_MIN_TEST_ACCURACY",
                 "RICE_MIN_CLASS_RECALL", "RICE_DOCKER_QUEUE",
                 "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES"):
        assert ENV[name] == plane[name], name


def test_the_gpu_override_reserves_the_devices_the_compose_way():
    devices = GPU["services"]["airflow-worker-remote"]["deploy"]["resources"]["reservations"][
        "devices"]
    assert devices == [{"driver": "nvidia", "count": "${RICE_WORKER_GPUS:-all}",
                        "capabilities": ["gpu"]}]
    assert "deploy" not in WORKER  # the plain file reserves nothing


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="needs docker-compose")
def test_compose_merges_the_gpu_override_and_requires_every_address(tmp_path):
    env = tmp_path / "worker.env"
    values = {**EXAMPLE, "REDIS_PASSWORD": "p", "MLFLOW_PIPELINE_PASSWORD": "q",
              "AIRFLOW_IMAGE": "rice@sha256:" + "0" * 64, "RICE_CONTROL_PLANE_ADDRESS": "10.0.0.5",
              "RICE_CA_FILE": "/etc/rice/ca.crt", "RICE_DATA_DIR": "/srv/rice",
              "RICE_WORKER_GPUS": "2"}
    env.write_text("".join(f"{k}={v}\n" for k, v in values.items()))

    def config(*files: str, env_file: Path = env) -> subprocess.CompletedProcess:
        command = ["docker-compose", "--env-file", str(env_file), "-p", "rice-worker"]
        for name in files:
            command += ["-f", str(REPO / name)]
        return subprocess.run([*command, "config"], capture_output=True, text=True, timeout=60,
                              cwd=tmp_path)

    merged = config("docker-compose.worker.yaml", "docker-compose.worker.gpu.yaml")
    assert merged.returncode == 0, merged.stderr
    service = yaml.safe_load(merged.stdout)["services"]["airflow-worker-remote"]
    device = service["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["capabilities"] == ["gpu"] and str(device["count"]) == "2"
    hosts = service["extra_hosts"]  # compose v1 prints a mapping, v2 a list
    assert (hosts if isinstance(hosts, dict) else dict(h.split(":", 1) for h in hosts)) == \
        {"rice-control-plane": "10.0.0.5"}
    plain = config("docker-compose.worker.yaml")
    assert "deploy" not in yaml.safe_load(plain.stdout)["services"]["airflow-worker-remote"]
    # Without the control plane's address, compose refuses and says which variable.
    partial = tmp_path / "partial.env"
    partial.write_text(env.read_text().replace("RICE_CONTROL_PLANE_ADDRESS=10.0.0.5\n", ""))
    refused = config("docker-compose.worker.yaml", env_file=partial)
    assert refused.returncode != 0 and "RICE_CONTROL_PLANE_ADDRESS" in refused.stderr


def test_the_edge_is_published_only_with_its_profile_and_mounts_no_ca_key():
    edge = SERVICES["edge"]
    assert edge["profiles"] == ["publish"]
    assert edge["ports"] == ["${RICE_PUBLISH_ADDRESS:-127.0.0.1}:${RICE_EDGE_PORT:-8443}:8443",
                             "${RICE_PUBLISH_ADDRESS:-127.0.0.1}:${RICE_BROKER_PORT:-6380}:6380"]
    assert edge["volumes"] == ["./docker/edge.conf:/etc/nginx/nginx.conf:ro",
                               "${RICE_TLS_DIR:-./.run/tls}/edge:/run/rice-tls:ro"]
    assert "environment" not in edge  # it holds no secret: TLS ends here, passwords go on
    assert all("publish" not in service.get("profiles", []) for name, service in
               SERVICES.items() if name != "edge")


def test_the_edge_routes_only_the_execution_api_mlflow_and_redis():
    conf = (REPO / "docker" / "edge.conf").read_text()
    assert re.findall(r"location\s+([^{]+?)\s*\{", conf) == [
        "/execution/", r"~ ^/api/(2\.0|3\.0)/mlflow/(users|[a-z-]+/permissions)/",
        r"~ ^/api/(2\.0|3\.0)/mlflow(-artifacts)?/", "@unavailable", "/"]
    # Spellings that normalise into another path are refused before any location matches.
    assert 'if ($request_uri ~ "^[^?]*((^|/)\\.\\.?(/|$)|%2[eEfF]|%5[cC]|//)")' in conf
    # nginx takes the first regular expression that matches: the refusal comes first.
    assert re.search(r"mlflow/\(users.*?\{\s*return 404;", conf, re.S)
    assert re.findall(r"listen\s+([^;]+);", conf) == ["8443 ssl", "6380 ssl"]
    assert re.findall(r"proxy_pass\s+([^;]+);", conf) == ["$api_server", "$mlflow", "$redis"]
    assert re.findall(r"set \$\w+ ([^;]+);", conf) == [
        "http://airflow-apiserver:8080", "http://mlflow:5000", "redis:6379"]
    upstreams = " ".join(re.findall(r"set \$\w+ ([^;]+);", conf))
    assert not re.search(r"postgres|5432|docker|registry", upstreams)


def test_the_compose_page_adds_a_machine_in_five_commands_with_files_that_exist():
    page = (REPO / "docs" / "compose.md").read_text()
    section = page.split("\n## Add a machine\n", 1)[1].split("\n## ", 1)[0].split("\n### ")[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    commands = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert 0 < len(commands) <= 5, commands
    assert not any(c.endswith("\\") for c in commands)  # one line, one command
    for path in ("scripts/tls", "worker.env.example", "docker-compose.worker.yaml",
                 "docker-compose.worker.gpu.yaml"):
        assert path in section and (REPO / path).exists(), path
    # What the control plane's lines set is what its edge reads.
    edge_text = (REPO / "docker-compose.yaml").read_text()
    for variable in re.findall(r"\\n?([A-Z_]+)=", next(c for c in commands if "printf" in c)):
        assert variable == "COMPOSE_PROFILES" or "${" + variable in edge_text, variable
