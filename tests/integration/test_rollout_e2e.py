"""The rollout (issue 22) on the runs the session has anyway: the e2e-shipped run of the real
Airflow stack (RICE_ROLLOUT on, tests/integration/conftest.py) must end serving its verified
image behind the real nginx proxy, and a digest that does not verify must never start, while
the image that serves keeps serving."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.datasets import CLASSES

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def serving_layout(stack):
    from rice_mlops.settings import PipelineSettings
    from rice_mlops.stages.serving import layout

    return layout(PipelineSettings.from_env(stack.env))


def test_the_shipped_run_serves_its_image_behind_the_proxy(airflow_pg, pushed,
                                                          small_real_dataset):
    served = airflow_pg.xcom("e2e-shipped", "roll_out")
    assert served is not None, airflow_pg.task_states("e2e-shipped")
    assert served["served"] and served["reference"] == pushed["digest_ref"]
    assert served["client_errors"] == 0, served
    # (The run note is the report's; later tests re-run e2e-shipped's tasks and rewrite it, so
    # the note's "; serving vN" is held by the unit tests of the outcome.)
    layout = serving_layout(airflow_pg)
    url = f"http://127.0.0.1:{layout.proxy_port}"
    image = sorted((small_real_dataset / "test" / CLASSES[0]).iterdir())[0]
    answer = httpx.post(f"{url}/predict", content=image.read_bytes(),
                        headers={"Content-Type": "image/jpeg", "X-Request-Id": "mine"})
    assert answer.status_code == 200 and answer.json()["class"] in CLASSES
    request_id = answer.headers["x-request-id"]
    assert len(request_id) == 32 and request_id != "mine"  # the proxy's, never the client's
    assert httpx.get(f"{url}/ping").status_code == 200
    assert b"rice_serving_requests_total" in httpx.get(f"{url}/metrics").content
    state = json.loads((layout.state_file).read_text())
    stable = state["stable"]
    # Later runs of the session may serve a newer version: whatever serves is what the state
    # says, and its prediction log has the request just made, under the proxy's id.
    log = layout.log_dir(stable["slot"]) / "predictions.jsonl"

    def logged() -> bool:  # written by the server's log thread, just after the answer
        return log.exists() and any(json.loads(line).get("request_id") == request_id
                                    for line in log.read_text().splitlines() if line)

    deadline = time.monotonic() + 10
    while not logged():
        assert time.monotonic() < deadline, f"{request_id} not in {log}"
        time.sleep(0.1)


def test_the_proxy_runs_as_nobody_on_a_read_only_root(airflow_pg, pushed):
    layout = serving_layout(airflow_pg)
    inspected = json.loads(subprocess.run(
        ["docker", "inspect", layout.proxy_name, layout.container("blue"),
         layout.container("green")], capture_output=True, text=True).stdout or "[]")
    assert inspected, "no serving containers"
    for container in inspected:
        config, host = container["Config"], container["HostConfig"]
        assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"], container["Name"]
        assert "no-new-privileges" in host["SecurityOpt"]
        assert host["NetworkMode"] == "host" and host["Memory"] > 0
        assert config["User"] in ("65534:65534", "10001"), container["Name"]
        assert not any("PASSWORD" in env for env in config["Env"])


@pytest.fixture(scope="module")
def relabelled(pushed, docker_login, docker_engine, tmp_path_factory) -> str:
    """The shipped image with one more label, pushed: same model and server, a new digest
    that nobody signed."""
    registry = docker_engine["RICE_REGISTRY"]
    tag = f"{registry}/rice-classifier:relabelled"
    context = tmp_path_factory.mktemp("relabelled")
    (context / "Dockerfile").write_text(f"FROM {pushed['digest_ref']}\nLABEL relabelled=yes\n")
    subprocess.run(["docker", "build", "-q", "-t", tag, str(context)],
                   env={**docker_login, "DOCKER_BUILDKIT": "0"}, check=True, capture_output=True)
    subprocess.run(["docker", "push", "-q", tag], env=docker_login, check=True,
                   capture_output=True)
    digest = subprocess.run(["docker", "inspect", "--format", "{{index .RepoDigests 0}}", tag],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert digest.startswith(f"{registry}/rice-classifier@sha256:")
    return digest


def test_a_digest_that_does_not_verify_never_starts_and_stable_keeps_serving(
        airflow_pg, pushed, relabelled, docker_engine, signing_keys):
    """The rollout refuses an unsigned digest before any container starts."""
    from rice_mlops.attestation import verify_image
    from rice_mlops.oci import Registry, split_reference
    from rice_mlops.rollout import state as st
    from rice_mlops.rollout.engine import Engine
    from rice_mlops.rollout.rollout import Plan, Rollout, RolloutRefused
    from rice_mlops.signing import load_public_key

    registry = docker_engine["RICE_REGISTRY"]
    digest = relabelled
    public = load_public_key(Path(signing_keys["public"]).read_bytes())

    def verify(reference: str) -> None:
        _, name, image_digest = split_reference(reference)
        with Registry(registry, docker_engine["RICE_REGISTRY_USER"],
                      docker_engine["RICE_REGISTRY_PASSWORD"]) as client:
            verify_image(client, name, image_digest, public)

    layout = serving_layout(airflow_pg)
    before = st.load(layout.state_file)
    engine = Engine("/var/run/docker.sock", layout)
    try:
        rollout = Rollout(engine, Plan(), [(b"unused", "image/jpeg")])
        with pytest.raises(RolloutRefused, match="does not verify, so it was not started"):
            rollout.roll_out(digest, "999", verify)
        assert engine.running_reference(before.free_slot()) is None
    finally:
        engine.close()
    after = st.load(layout.state_file)
    assert after.stable == before.stable and after.candidate is None
    assert httpx.get(f"http://127.0.0.1:{layout.proxy_port}/ping").status_code == 200


def test_a_candidate_killed_mid_canary_is_rolled_back_and_clients_see_no_error(
        airflow_pg, pushed, relabelled, small_real_dataset):
    """Verification is the test above's subject; here the candidate (the same model under a
    new digest) is killed at the first canary step while a client keeps calling."""
    import threading
    import time

    from rice_mlops.rollout import state as st
    from rice_mlops.rollout.engine import Engine
    from rice_mlops.rollout.rollout import Plan, Rollout
    from rice_mlops.rollout.verdicts import Budgets

    layout = serving_layout(airflow_pg)
    before = st.load(layout.state_file)
    images = [(path.read_bytes(), "image/jpeg")
              for path in sorted((small_real_dataset / "test").rglob("*.jpg"))[:20]]
    plan = Plan(steps=(10, 50, 100), window_seconds=6, replay_rate=30,
                budgets=Budgets(min_requests=20, min_agreement=0.0, max_p99_ms=5000))
    engine = Engine("/var/run/docker.sock", layout)
    statuses: list[int] = []
    done = threading.Event()

    def client() -> None:  # a user of the endpoint, apart from the rollout's own replay
        url = f"http://127.0.0.1:{layout.proxy_port}/predict"
        with httpx.Client(timeout=30) as session:
            while not done.is_set():
                body, kind = images[len(statuses) % len(images)]
                try:
                    statuses.append(session.post(url, content=body,
                                                 headers={"Content-Type": kind}).status_code)
                except httpx.HTTPError:
                    statuses.append(0)

    def killer() -> None:
        while not done.is_set():
            now = st.load(layout.state_file)
            if now.phase == "canary" and now.candidate_percent == 10:
                time.sleep(1.0)  # inside the window, with requests going to it
                engine.kill_server(now.candidate.slot)
                return
            time.sleep(0.05)

    threads = [threading.Thread(target=client), threading.Thread(target=killer)]
    for thread in threads:
        thread.start()
    try:
        outcome = Rollout(engine, plan, images).roll_out(relabelled, "999", lambda ref: None)
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=60)
    try:
        assert not outcome.served, outcome.summary
        assert outcome.summary.startswith("rolled back v999 at 10 %"), outcome.summary
        assert "the candidate's /metrics failed" in outcome.summary
        after = st.load(layout.state_file)
        assert after.stable == before.stable and after.candidate is None
        assert engine.running_reference(before.free_slot()) is None
        # Requests to a dead candidate go to stable (nginx's backup): what a client can lose is
        # what was in flight on the killed container, one per caller at most.
        errors = [code for code in statuses + [s for s, n in outcome.client_statuses.items()
                                                for _ in range(n)] if code != 200]
        print(f"killed mid-canary: {len(statuses)} client requests, "
              f"{sum(outcome.client_statuses.values())} replayed, errors {errors}")
        assert len(errors) <= 1 + plan.replay_concurrency, errors
        assert len(statuses) > 20
    finally:
        engine.close()


def test_rice_rollback_puts_the_previous_verified_digest_back_and_says_who_asked(
        airflow_pg, pushed, relabelled, small_real_dataset):
    """Whatever serves now becomes history behind `relabelled` (served here without the
    pipeline's checks, as above), then the rollback DAG, triggered through the REST API,
    serves it again after it verifies against the deployment's key."""
    from rice_mlops.rollout import state as st
    from rice_mlops.rollout.engine import Engine
    from rice_mlops.rollout.rollout import Plan, Rollout
    from rice_mlops.rollout.verdicts import Budgets
    from rice_mlops.vocabulary import ROLLBACK_DAG_ID

    layout = serving_layout(airflow_pg)
    earlier = st.load(layout.state_file).stable
    images = [(path.read_bytes(), "image/jpeg")
              for path in sorted((small_real_dataset / "test").rglob("*.jpg"))[:20]]
    engine = Engine("/var/run/docker.sock", layout)
    try:
        plan = Plan(window_seconds=2, budgets=Budgets(min_requests=20, min_agreement=0.0,
                                                      max_p99_ms=5000))
        served = Rollout(engine, plan, images).roll_out(relabelled, "999", lambda ref: None)
        assert served.served, served.summary
    finally:
        engine.close()
    assert st.load(layout.state_file).history[0] == earlier
    airflow_pg.unpause(ROLLBACK_DAG_ID)
    response = airflow_pg.trigger({}, "rollback-1", dag_id=ROLLBACK_DAG_ID)
    assert response.status_code == 200, response.text
    run = airflow_pg.wait_for_run("rollback-1", timeout=300, dag_id=ROLLBACK_DAG_ID)
    assert run["state"] == "success", airflow_pg.task_states("rollback-1", ROLLBACK_DAG_ID)
    result = airflow_pg.xcom("rollback-1", "roll_back", dag_id=ROLLBACK_DAG_ID)
    assert result["reference"] == earlier.reference
    assert f"rollback on demand by admin to v{earlier.model_version}" in result["summary"]
    now = st.load(layout.state_file)
    assert now.stable.reference == earlier.reference and now.candidate is None
    assert now.history[0].reference == relabelled
    answer = httpx.post(f"http://127.0.0.1:{layout.proxy_port}/predict",
                        content=images[0][0], headers={"Content-Type": "image/jpeg"})
    assert answer.status_code == 200
    # A version that never served here is refused with the ones that did.
    airflow_pg.trigger({"model_version": "424242"}, "rollback-2", dag_id=ROLLBACK_DAG_ID)
    run = airflow_pg.wait_for_run("rollback-2", timeout=300, dag_id=ROLLBACK_DAG_ID)
    assert run["state"] == "failed"
    assert st.load(layout.state_file).stable.reference == earlier.reference
