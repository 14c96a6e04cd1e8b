"""The rollout (issue 22) on the runs the session has anyway: the e2e-shipped run of the real
Airflow stack (RICE_ROLLOUT on, tests/integration/conftest.py) must end serving its verified
image behind the real nginx proxy, and a digest that does not verify must never start, while
the image that serves keeps serving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rice_mlops.core.vocabulary import DEPLOYED_ALIAS, MODEL_NAME, SERVING_ASSET
from tests.helpers.datasets import CLASSES
from tests.helpers.rollout_under_traffic import (
    rolled_back_beside_a_client,
    serving_layout,
    smoke_like,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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
    # The pipeline's record of what it served, and MLflow's display of what serves now.
    events = airflow_pg.asset_events("e2e-shipped", SERVING_ASSET)
    assert any(event["extra"]["reference"] == pushed["digest_ref"] and
               event["extra"]["percent"] == 100 and event["source_task_id"] == "roll_out"
               for event in events), events
    from mlflow import MlflowClient

    deployed = MlflowClient().get_model_version_by_alias(MODEL_NAME, DEPLOYED_ALIAS)
    assert deployed.version == stable["model_version"]
    assert json.loads(deployed.tags["rice.deployed"])["reference"] == stable["reference"]
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
        # CPU and processes are bounded too (issue 35).
        assert 0 < host["NanoCpus"] <= 1e9 and 0 < host["PidsLimit"] <= 128, container["Name"]
        assert config["User"] in ("65534:65534", "10001"), container["Name"]
        assert not any("PASSWORD" in env for env in config["Env"])


def derived_image(tag: str, context: Path, lines: list[str], base: str, engine: dict,
                  login: dict) -> str:
    """An image made FROM the shipped one with `lines` added, pushed: its digest reference."""
    tagged = f"{engine['RICE_REGISTRY']}/rice-classifier:{tag}"
    (context / "Dockerfile").write_text("\n".join([f"FROM {base}", *lines]) + "\n")
    subprocess.run(["docker", "build", "-q", "-t", tagged, str(context)],
                   env={**login, "DOCKER_BUILDKIT": "0"}, check=True, capture_output=True)
    subprocess.run(["docker", "push", "-q", tagged], env=login, check=True, capture_output=True)
    digest = subprocess.run(["docker", "inspect", "--format", "{{index .RepoDigests 0}}",
                             tagged], capture_output=True, text=True, check=True).stdout.strip()
    assert digest.startswith(f"{engine['RICE_REGISTRY']}/rice-classifier@sha256:")
    return digest


@pytest.fixture(scope="module")
def relabelled(pushed, docker_login, docker_engine, tmp_path_factory) -> str:
    """The shipped image with one more label, pushed: same model and server, a new digest
    that nobody signed."""
    return derived_image("relabelled", tmp_path_factory.mktemp("relabelled"),
                         ["LABEL relabelled=yes"], pushed["digest_ref"], docker_engine,
                         docker_login)


@pytest.fixture(scope="module")
def mislabelled(pushed, docker_login, docker_engine, signing_keys, tmp_path_factory) -> str:
    """The shipped model with its class names rotated by one, signed with the pipeline's key:
    a model that starts, verifies and answers, always wrongly."""
    from rice_mlops.release.signing import load_private_key, sign_model_dir

    context = tmp_path_factory.mktemp("mislabelled")
    created = subprocess.run(["docker", "create", pushed["digest_ref"]], capture_output=True,
                             text=True, check=True).stdout.strip()
    try:
        subprocess.run(["docker", "cp", f"{created}:/opt/model", str(context / "model")],
                       check=True, capture_output=True)
    finally:
        subprocess.run(["docker", "rm", created], capture_output=True, check=False)
    labels_file = context / "model" / "labels.json"
    labels = json.loads(labels_file.read_text())
    labels["classes"] = labels["classes"][1:] + labels["classes"][:1]
    labels_file.write_text(json.dumps(labels))
    sign_model_dir(context / "model", load_private_key(Path(signing_keys["private"]).read_bytes()),
                   {"model_name": "rice-classifier", "model_version": "998"})
    return derived_image("mislabelled", context, ["COPY model/ /opt/model/"],
                         pushed["digest_ref"], docker_engine, docker_login)


@pytest.fixture(scope="module")
def slow(pushed, docker_login, docker_engine, tmp_path_factory) -> str:
    """The shipped image with the server's test-only latency: every prediction 1.2 s late."""
    return derived_image("slow", tmp_path_factory.mktemp("slow"),
                         ["ENV RICE_SERVING_TEST_ADDED_LATENCY_MS=1200"], pushed["digest_ref"],
                         docker_engine, docker_login)


def test_a_digest_that_does_not_verify_never_starts_and_stable_keeps_serving(
        airflow_pg, pushed, relabelled, docker_engine, signing_keys):
    """The rollout refuses an unsigned digest before any container starts."""
    from rice_mlops.release.attestation import verify_image
    from rice_mlops.release.oci import Registry, split_reference
    from rice_mlops.release.rollout import state as st
    from rice_mlops.release.rollout.driver import Plan, Rollout, RolloutRefused
    from rice_mlops.release.rollout.engine import Engine
    from rice_mlops.release.signing import load_public_key

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


def test_a_model_that_answers_wrongly_is_rolled_back_in_shadow_and_clients_see_only_stable(
        airflow_pg, pushed, mislabelled, small_real_dataset):
    from rice_mlops.release.rollout.driver import Plan
    from rice_mlops.release.rollout.verdicts import Budgets

    plan = Plan(window_seconds=2, budgets=Budgets(min_requests=20, min_agreement=0.9,
                                                  max_p99_ms=5000))
    outcome, answers, slot, errors = rolled_back_beside_a_client(
        airflow_pg, small_real_dataset, mislabelled, "998", plan)
    assert errors == []
    assert outcome.summary.startswith("rolled back v998 in shadow: shadow: agreement "), \
        outcome.summary
    assert "< 90.0%" in outcome.summary
    # The candidate saw the client's requests, mirrored, and answered nothing but those
    # copies: no client ever got one of its answers.
    log = serving_layout(airflow_pg).log_dir(slot) / "predictions.jsonl"
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(logged) >= 20 and all(line["shadow"] for line in logged)
    assert {request_id for _, request_id in answers} & {line["request_id"] for line in logged}


def test_a_slow_model_is_rolled_back_on_its_p99_and_clients_see_no_error(
        airflow_pg, pushed, slow, small_real_dataset):
    """The shadow stage measures the candidate's own p99 on the mirrored copies, so a model
    slow on every request never takes a user's request (the canary steps' p99 check is for
    a model slow only under real load)."""
    from rice_mlops.release.rollout.driver import Plan
    from rice_mlops.release.rollout.verdicts import Budgets

    plan = Plan(window_seconds=2, budgets=Budgets(min_requests=20, min_agreement=0.0,
                                                  max_p99_ms=1000))
    outcome, _, _, errors = rolled_back_beside_a_client(airflow_pg, small_real_dataset, slow,
                                                        "997", plan)
    assert errors == []
    assert outcome.summary.startswith("rolled back v997 in shadow: shadow: p99 "), \
        outcome.summary
    assert "> 1000 ms" in outcome.summary


def test_a_candidate_killed_mid_canary_is_rolled_back_and_clients_see_no_error(
        airflow_pg, pushed, relabelled, small_real_dataset):
    """Verification is the test above's subject; here the candidate (the same model under a
    new digest) is killed at the first canary step while a client keeps calling."""
    from rice_mlops.release.rollout import state as st
    from rice_mlops.release.rollout.driver import Plan
    from rice_mlops.release.rollout.verdicts import Budgets

    plan = Plan(steps=(10, 50, 100), window_seconds=6, replay_rate=30,
                budgets=Budgets(min_requests=20, min_agreement=0.0, max_p99_ms=5000))

    def killer(engine, layout, done) -> None:
        while not done.is_set():
            now = st.load(layout.state_file)
            if now.phase == "canary" and now.candidate_percent == 10:
                time.sleep(1.0)  # inside the window, with requests going to it
                engine.kill_server(now.candidate.slot)
                return
            time.sleep(0.05)

    outcome, answers, _, errors = rolled_back_beside_a_client(
        airflow_pg, small_real_dataset, relabelled, "999", plan, beside=killer)
    assert outcome.summary.startswith("rolled back v999 at 10 %"), outcome.summary
    assert "the servers' /metrics failed" in outcome.summary
    # Requests to a dead candidate go to stable (nginx's backup): what a client can lose is
    # what was in flight on the killed container, one per caller at most.
    print(f"killed mid-canary: {len(answers)} client requests, "
          f"{sum(outcome.client_statuses.values())} replayed, errors {errors}")
    assert len(errors) <= 1 + plan.replay_concurrency, errors


def test_rice_rollback_puts_the_previous_verified_digest_back_and_says_who_asked(
        airflow_pg, pushed, relabelled, small_real_dataset):
    """Whatever serves now becomes history behind `relabelled` (served here without the
    pipeline's checks, as above), then the rollback DAG, triggered through the REST API,
    serves it again after it verifies against the deployment's key."""
    from rice_mlops.core.vocabulary import ROLLBACK_DAG_ID
    from rice_mlops.release.rollout import state as st
    from rice_mlops.release.rollout.driver import Plan, Rollout
    from rice_mlops.release.rollout.engine import Engine
    from rice_mlops.release.rollout.verdicts import Budgets

    layout = serving_layout(airflow_pg)
    earlier = st.load(layout.state_file).stable
    images = smoke_like(small_real_dataset)
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
    [event] = airflow_pg.asset_events("rollback-1", SERVING_ASSET, dag_id=ROLLBACK_DAG_ID)
    assert event["extra"]["reference"] == earlier.reference
    from mlflow import MlflowClient

    deployed = MlflowClient().get_model_version_by_alias(MODEL_NAME, DEPLOYED_ALIAS)
    assert deployed.version == earlier.model_version
    answer = httpx.post(f"http://127.0.0.1:{layout.proxy_port}/predict",
                        content=images[0][0], headers={"Content-Type": "image/jpeg"})
    assert answer.status_code == 200
    # A version that never served here is refused with the ones that did.
    airflow_pg.trigger({"model_version": "424242"}, "rollback-2", dag_id=ROLLBACK_DAG_ID)
    run = airflow_pg.wait_for_run("rollback-2", timeout=300, dag_id=ROLLBACK_DAG_ID)
    assert run["state"] == "failed"
    assert st.load(layout.state_file).stable.reference == earlier.reference


def test_serving_lost_with_its_containers_comes_back_serving_the_last_good_digest(
        airflow_pg, pushed, small_real_dataset, docker_engine):
    """A new engine or a pruned host: the proxy and the slots are gone, the release zone's
    directory is not. `rice-mlops serving restore` (what a stack start runs) brings back the
    digest the state records, behind the proxy. (An engine restart needs nothing: the
    containers are `unless-stopped`.)"""
    from rice_mlops.release.rollout import state as st
    from rice_mlops.release.rollout.engine import Engine
    from tests.helpers.pipeline import remove_serving_containers

    layout = serving_layout(airflow_pg)
    last_good = st.load(layout.state_file).stable
    assert last_good is not None
    remove_serving_containers(layout.name)
    url = f"http://127.0.0.1:{layout.proxy_port}"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/ping", timeout=2)
    # The release zone's registry connection, as the CLI reads it (the compose worker holds
    # it in its environment): the digest is verified before anything starts.
    host, port = docker_engine["RICE_REGISTRY"].split(":")
    registry = json.dumps({"conn_type": "generic", "host": host, "port": int(port),
                           "login": docker_engine["RICE_REGISTRY_USER"],
                           "password": docker_engine["RICE_REGISTRY_PASSWORD"]})
    restored = subprocess.run([str(Path(sys.executable).parent / "rice-mlops"), "serving",
                               "restore"], env={**os.environ, **airflow_pg.env,
                                                "AIRFLOW_CONN_RICE_REGISTRY": registry},
                              capture_output=True, text=True, timeout=300)
    assert restored.returncode == 0, restored.stderr
    assert f"serving v{last_good.model_version} ({last_good.reference})" in restored.stdout
    image = sorted((small_real_dataset / "test").rglob("*.jpg"))[0]
    answer = httpx.post(f"{url}/predict", content=image.read_bytes(),
                        headers={"Content-Type": "image/jpeg"})
    assert answer.status_code == 200 and answer.json()["class"] in CLASSES
    engine = Engine("/var/run/docker.sock", layout)
    try:
        assert engine.running_reference(last_good.slot) == last_good.reference
    finally:
        engine.close()
    assert st.load(layout.state_file).stable == last_good
