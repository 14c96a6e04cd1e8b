"""docker-compose.yaml started for real: PostgreSQL, Redis, airflow-init, the API server with the
webhook plugin, scheduler, DAG processor, triggerer, Celery workers, MLflow and the registry.

Docker Hub is out of reach here, so `scripts/compose-images` builds every image locally (the
real software from Debian packages and PyPI) and the .env points the stack at them. `train`
runs on a worker "on another machine" (issue 24): docker-compose.worker.yaml in a compose
project and network of its own, which reaches the stack only through the TLS edge the stack
publishes on that network. Here: every service healthy, no secret on a command line, the walls
between the zones tried from inside the running containers, and the edge as a remote worker
meets it. The stack's first pipeline run: test_compose_stack_first_run.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers.compose_project import REMOTE_SERVICE, ComposeStack, compose_exec

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(shared_compose_stack) -> ComposeStack:
    """The session's one stack (tests/conftest.py), fresh: these tests run before the chaos
    suite breaks and restores it."""
    return shared_compose_stack


def test_every_service_is_up_and_healthy(stack):
    assert stack.wait_healthy(timeout=300) == {}, stack.compose("ps").stdout
    states = stack.service_states()
    assert states["airflow-init"] == "exited 0" and states["registry-init"] == "exited 0"
    assert states["mlflow-users"] == "exited 0"
    assert {"airflow-worker", "airflow-worker-docker", "edge", "mlflow", "registry"} <= \
        set(states)
    # The worker on the other "machine", up through the edge alone (its health check pings
    # Celery through the broker over TLS).
    assert stack.remote.wait_healthy(timeout=120) == {}, stack.remote.compose("ps").stdout
    assert set(stack.remote.service_states()) == {REMOTE_SERVICE}


def _secret_values(stack: ComposeStack) -> dict[str, str]:
    return {key: value for key, value in stack.env.items()
            if key.endswith(("PASSWORD", "SECRET", "KEY", "TOKEN")) and len(value) >= 8}


def test_no_secret_in_any_command_line(stack):
    """What `docker inspect` shows of each container's command and what `ps` shows of every
    process in it (and on the host) holds no secret value."""
    import json

    secrets = _secret_values(stack)
    ids = stack.compose("ps", "-q", "-a").stdout.split() + \
        stack.remote.compose("ps", "-q", "-a").stdout.split()
    for container in json.loads(subprocess.run(["docker", "inspect", *ids], check=True,
                                               capture_output=True, text=True).stdout):
        config = container["Config"]
        argv = " ".join([container["Path"], *container["Args"], *(config["Cmd"] or []),
                         *(config["Entrypoint"] or [])])
        health = " ".join((config.get("Healthcheck") or {}).get("Test") or [])
        for name, value in secrets.items():
            assert value not in argv + health, (container["Name"], name)
        if container["State"]["Running"]:
            top = subprocess.run(["docker", "top", container["Id"], "-eo", "args"],
                                 capture_output=True, text=True).stdout
            for name, value in secrets.items():
                assert value not in top, (container["Name"], name)
    host = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    for name, value in secrets.items():
        assert value not in host, name


def test_each_database_role_reaches_only_its_own_database(stack):
    query = ["psql", "-h", "127.0.0.1", "-tAc", "select rolsuper from pg_roles "
             "where rolname = current_user"]
    for role, own, other in (("airflow", "airflow", "mlflow"), ("mlflow", "mlflow", "airflow")):
        password = {"PGPASSWORD": stack.env[f"{role.upper()}_DB_PASSWORD"]}
        mine = compose_exec(stack, "postgres", *query, "-U", role, "-d", own, env=password)
        assert mine.returncode == 0 and mine.stdout.strip() == "f", (role, mine.stderr)
        theirs = compose_exec(stack, "postgres", *query, "-U", role, "-d", other, env=password)
        assert theirs.returncode != 0 and "permission denied" in theirs.stderr, (role, theirs)
    trust = compose_exec(stack, "postgres", *query, "-U", "airflow", "-d", "airflow",
                         env={"PGPASSWORD": "wrong"})
    assert trust.returncode != 0 and "password authentication failed" in trust.stderr


# Run inside a worker as an attacker who holds that worker (and, at worst, the airflow role's
# password, passed in RICE_PROBE_PASSWORD by name): every way to the metadata database.
_DB_PROBE = r"""
import json, os, socket
out = {"env": sorted(k for k in os.environ
                     if k in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__FERNET_KEY")),
       "backend": os.environ.get("AIRFLOW__CELERY__RESULT_BACKEND", "").split(":", 1)[0]}
password = os.environ.pop("RICE_PROBE_PASSWORD")
out["holds_password"] = any(password in v for v in os.environ.values())
try:
    socket.getaddrinfo("postgres", 5432)
    out["resolves"] = True
except OSError:
    out["resolves"] = False
out["docker_socket"] = os.path.exists("/var/run/docker.sock") or "DOCKER_HOST" in os.environ
def connect(host):
    try:
        socket.create_connection((host, 5432), timeout=5).close()
    except OSError as exc:
        return "tcp: " + type(exc).__name__
    import psycopg
    try:
        psycopg.connect(host=host, port=5432, user="airflow", dbname="airflow",
                        password=password, connect_timeout=5).close()
        return "connected"
    except psycopg.Error as exc:
        return "refused: " + str(exc).replace(password, "***")[:200]
out["by_ip"] = connect(os.environ["RICE_PROBE_IP"])
from airflow.configuration import conf
out["sql_alchemy_conn"] = conf.get("database", "sql_alchemy_conn").split(":", 1)[0]
for mount in ("/opt/airflow/dags", "/opt/airflow/plugins"):
    try:
        open(os.path.join(mount, ".rice-probe"), "w").close()
        out[mount] = "writable"
    except OSError as exc:
        out[mount] = exc.strerror
print(json.dumps(out))
"""


@pytest.mark.parametrize("service", ["airflow-worker", REMOTE_SERVICE, "airflow-worker-docker"])
def test_no_worker_can_open_the_metadata_database(stack, service):
    """Compute and release zones hold no metadata database (issue 20): from inside each worker
    there is no URL, password or Fernet key, the name `postgres` does not resolve, and even
    with the airflow role's password at PostgreSQL's own address no session opens; dags/ and
    plugins/ cannot be written. The remote worker (issue 24) has no Docker socket either, and
    its broker connection is TLS."""
    import json

    container = stack.compose("ps", "-q", "postgres").stdout.split()[0]
    networks = json.loads(subprocess.run(
        ["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", container],
        capture_output=True, text=True, check=True).stdout)
    assert len(networks) == 1 and next(iter(networks)).endswith("_metadata"), networks
    address = next(iter(networks.values()))["IPAddress"]
    probe = compose_exec(stack, service, "python", "-c", _DB_PROBE,
                         env={"RICE_PROBE_PASSWORD": stack.env["AIRFLOW_DB_PASSWORD"],
                              "RICE_PROBE_IP": address})
    assert probe.returncode == 0, probe.stderr[-2000:].replace(
        stack.env["AIRFLOW_DB_PASSWORD"], "***")
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    zone = f"trust zone broken: {service} reaches the metadata database"
    assert seen["env"] == [] and not seen["holds_password"], (zone, seen)
    assert seen["backend"] == ("rediss" if service == REMOTE_SERVICE else "redis"), (zone, seen)
    assert seen["docker_socket"] is (service == "airflow-worker-docker"), seen
    assert seen["sql_alchemy_conn"] == "sqlite", (zone, seen)  # Airflow's unused default
    assert seen["resolves"] is False, (zone, seen)
    assert seen["by_ip"] != "connected", (zone, seen)
    assert seen["/opt/airflow/dags"] == seen["/opt/airflow/plugins"] == \
        "Read-only file system", (f"trust zone broken: {service} can rewrite the DAG", seen)


def test_the_control_plane_still_reaches_the_metadata_database(stack):
    """The other side of the wall: the scheduler opens a session with its own URL."""
    probe = compose_exec(stack, "airflow-scheduler", "airflow", "db", "check")
    assert probe.returncode == 0, probe.stderr[-2000:].replace(
        stack.env["AIRFLOW_DB_PASSWORD"], "***")


def test_the_webhook_account_may_trigger_and_nothing_else(stack):
    """People and accounts zone (issue 20): with the webhook account's own token, a PATCH of
    quality_gate's XCom, an approval answer, another DAG's trigger and reads get 403; the admin
    gets past authorization on the same requests (404: no such run), so the 403 is the grant."""
    from rice_mlops.operations.demo import DAG_ID

    def token(user: str, password: str) -> dict[str, str]:
        answer = httpx.post(f"{stack.airflow}/auth/token", timeout=30,
                            json={"username": user, "password": password})
        assert answer.status_code == 201, answer.status_code
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    webhook = token("webhook", stack.env["AIRFLOW_WEBHOOK_PASSWORD"])
    admin = token("admin", stack.env["AIRFLOW_ADMIN_PASSWORD"])
    run = f"{stack.airflow}/api/v2/dags/{DAG_ID}/dagRuns/no-such-run"
    attempts = {
        "xcom patch": ("PATCH", f"{run}/taskInstances/quality_gate/xcomEntries/return_value",
                       {"value": {"passed": True}, "map_index": -1}),
        "approval": ("PATCH", f"{run}/taskInstances/approve_release/-1/hitlDetails",
                     {"chosen_options": ["Approve"], "params_input": {}}),
        "run state": ("PATCH", run, {"state": "success"}),
        "other dag": ("POST", f"{stack.airflow}/api/v2/dags/other_dag/dagRuns",
                      {"logical_date": None}),
        "read runs": ("GET", f"{stack.airflow}/api/v2/dags/{DAG_ID}/dagRuns", None),
        "connections": ("GET", f"{stack.airflow}/api/v2/connections", None),
    }
    for name, (method, url, body) in attempts.items():
        refused = httpx.request(method, url, json=body, headers=webhook, timeout=30)
        assert refused.status_code == 403, (
            f"trust zone broken: the webhook account's {name} answered {refused.status_code}")
    for name in ("xcom patch", "approval", "run state"):
        method, url, body = attempts[name]
        past = httpx.request(method, url, json=body, headers=admin, timeout=30)
        assert past.status_code == 404, (name, past.status_code, past.text[:300])


def test_redis_refuses_a_client_without_the_password(stack):
    anonymous = compose_exec(stack, "redis", "env", "-u", "REDISCLI_AUTH", "redis-cli", "ping")
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr, anonymous
    assert "PONG" in compose_exec(stack, "redis", "redis-cli", "ping").stdout


def test_mlflow_refuses_anonymous_and_wrong_passwords(stack):
    create = f"{stack.mlflow}/api/2.0/mlflow/experiments/create"
    assert httpx.post(create, json={"name": "intruder"}, timeout=30).status_code == 401
    wrong = (stack.env["MLFLOW_PIPELINE_USERNAME"], "not-the-password")
    assert httpx.post(create, json={"name": "intruder"}, auth=wrong, timeout=30).status_code \
        == 401
    assert httpx.get(f"{stack.mlflow}/api/2.0/mlflow/experiments/search",
                     params={"max_results": 1}, timeout=30).status_code == 401
    assert httpx.get(f"{stack.mlflow}/api/2.0/mlflow/experiments/search",
                     params={"max_results": 1}, auth=stack.mlflow_pipeline,
                     timeout=30).status_code == 200


def test_the_webhook_proxy_refuses_a_wrong_signature_and_exposes_nothing_else(stack):
    from rice_mlops.ingress.send import push_payload, send

    wrong = send(stack.webhook, "not-the-secret",
                 push_payload("refs/heads/main", "b" * 40, "local/rice-mlops"))
    assert wrong.status_code == 401, wrong.text
    base = stack.webhook.removesuffix("/webhooks/github")
    for path in ("/", "/api/v2/dags", "/auth/token", "/execution/"):  # more: test_webhook_proxy
        assert httpx.get(base + path, timeout=30).status_code == 404, path
    assert httpx.get(stack.webhook, timeout=30).status_code == 403  # POST only


def _over_tls(address: str, port: int, ca: str, request: bytes, lines: int = 1) -> bytes:
    """`request` sent as written over TLS checked against `ca` (as the remote worker checks
    the edge); what came back by the end of its `lines`-th line."""
    import socket
    import ssl

    context = ssl.create_default_context(cafile=ca)
    with socket.create_connection((address, port), 10) as raw, \
            context.wrap_socket(raw, server_hostname="rice-control-plane") as tls:
        tls.sendall(request)
        tls.settimeout(10)
        answer = b""
        while answer.count(b"\r\n") < lines:
            chunk = tls.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


def _raw_get(address: str, port: int, ca: str, path: str) -> int:
    """The status of a GET of `path` exactly as written (no client-side normalisation)."""
    request = f"GET {path} HTTP/1.1\r\nHost: rice-control-plane\r\nConnection: close\r\n\r\n"
    return int(_over_tls(address, port, ca, request.encode()).split(b" ", 2)[1])


def test_the_edge_publishes_only_what_a_remote_worker_needs_over_tls(stack):
    """Issue 24: what the stack publishes for other machines, tried from outside it (this host
    at the published address): the execution API and MLflow over TLS that chains to the
    stack's CA, passwords still asked; nothing else of Airflow, no plain HTTP, no certificate
    other than the CA's; Redis only over TLS and only with the password."""
    import socket
    import ssl

    address, ca = stack.env["RICE_PUBLISH_ADDRESS"], \
        str(Path(stack.env["RICE_TLS_DIR"]) / "worker" / "ca.crt")
    base = f"https://{address}:{stack.env['RICE_EDGE_PORT']}"
    with httpx.Client(verify=ssl.create_default_context(cafile=ca), timeout=30) as client:
        assert client.get(f"{base}/execution/health").json() == {"status": "healthy"}
        # A task's calls need the token the scheduler signed for it.
        assert client.get(f"{base}/execution/variables/anything").status_code in (401, 403)
        search = f"{base}/api/2.0/mlflow/experiments/search"
        assert client.get(search, params={"max_results": 1}).status_code == 401
        assert client.get(search, params={"max_results": 1},
                          auth=stack.mlflow_pipeline).status_code == 200
        for path in ("/", "/api/v2/dags", "/auth/token", "/webhooks/github", "/health",
                     "/ajax-api/2.0/mlflow/experiments/search", "/execution/../api/v2/dags",
                     "/api/2.0/mlflow/users/get?username=admin",
                     "/api/2.0/mlflow/experiments/permissions/get?experiment_id=0&username=x"):
            assert client.get(base + path).status_code == 404, path
        # Spellings nginx would normalise into another path are refused before matching
        # (httpx normalises them itself, so these go out as written).
        for spelling in ("/execution/%2e%2e/api/v2/dags", "/foo/../execution/health",
                         "/api/v2/dags/%2e%2e/%2e%2e/%2e%2e/execution/health",
                         "/execution//health", "/execution/x%2Fy", "/execution/a/./b"):
            assert _raw_get(address, int(stack.env["RICE_EDGE_PORT"]), ca, spelling) == 400, \
                spelling
    with pytest.raises(httpx.ConnectError):  # the system's CAs do not vouch for it
        httpx.get(f"{base}/execution/health", timeout=30)
    plain = httpx.get(f"http://{address}:{stack.env['RICE_EDGE_PORT']}/execution/health",
                      timeout=30)
    assert plain.status_code == 400  # nginx: a plain HTTP request to an HTTPS port

    def broker(*commands: bytes) -> bytes:  # Redis answers one line per command
        return _over_tls(address, int(stack.env["RICE_BROKER_PORT"]), ca, b"".join(commands),
                         lines=len(commands))

    assert broker(b"PING\r\n").startswith(b"-NOAUTH")
    password = stack.env["REDIS_PASSWORD"].encode()
    assert broker(b"AUTH " + password + b"\r\n", b"PING\r\n") == b"+OK\r\n+PONG\r\n"
    with socket.create_connection((address, int(stack.env["RICE_BROKER_PORT"])), 10) as raw:
        raw.sendall(b"PING\r\n")  # plain text to the TLS port: no Redis answer
        raw.settimeout(10)
        assert b"PONG" not in raw.recv(4096)


def test_a_remote_worker_with_a_wrong_broker_password_does_not_start(stack):
    """Issue 24: a worker machine given the wrong REDIS_PASSWORD stops before Celery starts,
    exit 78, with one line that names the setting (and neither password), and takes nothing:
    a message waiting on its queue is still there after its attempts."""
    import json
    import time

    from tests.helpers.remote_worker import up_remote_worker

    queue = "rice-probe-wrong-password"
    assert compose_exec(stack, "redis", "redis-cli", "LPUSH", queue,
                        "waiting").stdout.strip() == "1"
    wrong = "not-" + stack.env["REDIS_PASSWORD"]
    bad = up_remote_worker(stack, "wrong-password",
                           {"REDIS_PASSWORD": wrong, "RICE_WORKER_QUEUE": queue}, wait=False)
    try:
        deadline, state = time.monotonic() + 180, {}
        while time.monotonic() < deadline:
            [container] = bad.compose("ps", "-q", "-a").stdout.split() or [""]
            if container:
                state = json.loads(subprocess.run(
                    ["docker", "inspect", "--format", "{{json .State}}", container],
                    capture_output=True, text=True).stdout or "{}")
                if state.get("ExitCode") == 78:
                    break
            time.sleep(1)
        logs = bad.compose("logs", "--no-color").stdout
        assert state.get("ExitCode") == 78, (state, logs[-3000:])
        assert "refused this worker's password" in logs and "REDIS_PASSWORD" in logs, logs
        assert wrong not in logs and stack.env["REDIS_PASSWORD"] not in logs
        assert "celery@" not in logs and "Connected to" not in logs  # Celery never started
        assert compose_exec(stack, "redis", "redis-cli", "LRANGE", queue, "0",
                            "-1").stdout.split() == ["waiting"]
    finally:
        bad.compose("down", "--volumes", timeout=300)
        compose_exec(stack, "redis", "redis-cli", "DEL", queue)
