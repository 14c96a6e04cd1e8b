"""The serving image the DAG built, smoke-tested and pushed, checked from the outside."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.browser import failed_runs_in_the_ui
from tests.helpers.datasets import CLASSES
from tests.helpers.pipeline import SHA
from tests.helpers.pipeline import dag_conf as _conf
from tests.helpers.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def docker(env, *args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], env=env, check=check, capture_output=True,
                          text=True, timeout=300)


def registry_tags(engine: dict, repository: str = "rice-classifier") -> list[str]:
    import httpx

    response = httpx.get(f"http://{engine['RICE_REGISTRY']}/v2/{repository}/tags/list",
                         auth=(engine["RICE_REGISTRY_USER"], engine["RICE_REGISTRY_PASSWORD"]))
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return response.json().get("tags") or []


def test_registry_holds_the_immutable_tag_and_latest(pushed, docker_engine):
    assert pushed["image"].endswith(f"/rice-classifier:{SHA}")
    assert pushed["digest"].startswith("sha256:")
    tags = registry_tags(docker_engine)
    assert SHA in tags and "latest" in tags


def shipped_version():
    """The registry version the e2e-shipped run registered (later runs may be champion now)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    return next(v for v in client.search_model_versions("name='rice-classifier'")
                if client.get_run(v.run_id).data.tags.get("rice.airflow_dag_run_id")
                == "e2e-shipped")


def test_digest_is_recorded_in_mlflow(pushed, shipped_run):
    from mlflow import MlflowClient

    version = shipped_version()
    assert version.tags["rice.image"] == pushed["digest_ref"]
    assert MlflowClient().get_run(version.run_id).data.tags["rice.image"] == \
        pushed["digest_ref"]


def _post_image(port: int, path: Path) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/predict", body=path.read_bytes(),
                       headers={"Content-Type": "image/jpeg"})
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert response.status == 200, body
    return body


def test_pulled_by_digest_the_image_classifies_real_rice(pushed, docker_login, small_real_dataset,
                                                         shipped_run):
    import mlflow
    from PIL import Image

    env = docker_login
    for ref in (pushed["image"], pushed["latest"]):
        docker(env, "rmi", ref, check=False)  # the pull below must come from the registry
    docker(env, "pull", pushed["digest_ref"])
    port = free_port()
    container = docker(env, "run", "-d", "--rm", "--network", "host", "-e", f"RICE_PORT={port}",
                       pushed["digest_ref"]).stdout.strip()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/ping")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        images = [(cls, p) for cls in CLASSES
                  for p in sorted((small_real_dataset / "test" / cls).iterdir())[:4]]
        answers = [_post_image(port, path) for _, path in images]
        correct = sum(answer["class"] == cls for (cls, _), answer in zip(images, answers,
                                                                           strict=True))
        assert correct >= 16, f"{correct}/20 correct"
        model = mlflow.pyfunc.load_model(f"models:/rice-classifier/{shipped_version().version}")
        for (_, path), answer in zip(images, answers, strict=True):
            pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)[None]
            expected = np.asarray(model.predict(pixels))[0]
            served = np.array([answer["probabilities"][c] for c in CLASSES])
            assert np.abs(served - expected).max() < 1e-4
        labels = json.loads(docker(env, "inspect", "--format", "{{json .Config.Labels}}",
                                   pushed["digest_ref"]).stdout)
        assert labels["org.opencontainers.image.revision"] == shipped_run[0]["source_commit"]
        assert labels["io.rice-mlops.mlflow.run-id"]
        assert docker(env, "inspect", "--format", "{{.Config.User}}",
                      pushed["digest_ref"]).stdout.strip() == "10001"
        # Only the runtime: pip ran in the build stage and stayed there.
        probe = docker(env, "run", "--rm", "--network", "none", "--entrypoint", "python3",
                       pushed["digest_ref"], "-c", "import pip", check=False)
        assert probe.returncode != 0 and "No module named 'pip'" in probe.stderr
    finally:
        docker(env, "stop", container, check=False)


def test_no_secret_in_image_history_layers_or_labels(pushed, docker_login, docker_engine,
                                                     tmp_path):
    env = docker_login
    secret = docker_engine["RICE_REGISTRY_PASSWORD"]
    history = docker(env, "history", "--no-trunc", pushed["digest_ref"]).stdout
    inspect = docker(env, "inspect", pushed["digest_ref"]).stdout
    assert secret not in history and secret not in inspect
    archive = tmp_path / "image.tar"
    docker(env, "save", "-o", str(archive), pushed["digest_ref"])
    result = subprocess.run(["grep", "-a", "-c", "-F", secret, str(archive)],
                            capture_output=True, text=True)
    assert result.stdout.strip() == "0"  # grep -c: no line of the saved image holds it



def test_the_signing_key_is_in_no_layer_and_no_log(pushed, docker_login, signing_keys,
                                                   airflow_pg, tmp_path):
    key_body = signing_keys["private"].read_text().splitlines()[1]  # the base64 line
    archive = tmp_path / "image.tar"
    docker(docker_login, "save", "-o", str(archive), pushed["digest_ref"])
    result = subprocess.run(["grep", "-a", "-c", "-F", key_body, str(archive)],
                            capture_output=True, text=True)
    assert result.stdout.strip() == "0"
    for task_id in ("prepare_image_context", "attest_image", "promote"):
        assert key_body not in airflow_pg.task_log("e2e-shipped", task_id)


def test_rejected_credentials_fail_the_push_clearly(airflow_pg, pushed, docker_engine,
                                                    small_real_dataset):
    wrong = "definitely-not-the-password"
    response = airflow_pg.api("PATCH", "/connections/rice_registry",
                              json={"connection_id": "rice_registry", "conn_type": "generic",
                                    "password": wrong}, params={"update_mask": "password"})
    assert response.status_code == 200, response.text
    try:
        sha = "1111111111111111111111111111111111111111"
        assert airflow_pg.trigger(_conf(small_real_dataset, epochs=1, source_commit=sha),
                                  "e2e-badcreds").status_code == 200
        run = airflow_pg.wait_for_run("e2e-badcreds")
        states = airflow_pg.task_states("e2e-badcreds")
        assert run["state"] == "failed"
        assert states["smoke_test"] == "success"
        assert states["push_image"] == "failed"
        assert states["promote"] == "upstream_failed"
        push = airflow_pg.task_instance("e2e-badcreds", "push_image")
        assert push["try_number"] == 1  # not retried: retrying cannot fix credentials
        log = airflow_pg.task_log("e2e-badcreds", "push_image")
        assert "rejected the credentials of Airflow connection 'rice_registry'" in log
        assert wrong not in log
        assert sha not in registry_tags(docker_engine)
        failed_runs_in_the_ui(airflow_pg.url, airflow_pg.admin_password, "e2e-badcreds",
                              shipped="e2e-shipped")
    finally:
        airflow_pg.api("PATCH", "/connections/rice_registry",
                       json={"connection_id": "rice_registry", "conn_type": "generic",
                             "password": docker_engine["RICE_REGISTRY_PASSWORD"]},
                       params={"update_mask": "password"})


def test_rerunning_the_push_pushes_the_same_tags_again(airflow_pg, pushed, docker_engine):
    push = airflow_pg.clear_task("e2e-shipped", "push_image")
    assert push["state"] == "success", airflow_pg.describe("e2e-shipped")
    value = airflow_pg.xcom("e2e-shipped", "push_image")
    assert str(value).strip().splitlines()[-1] == pushed["digest_ref"]
    tags = registry_tags(docker_engine)
    assert SHA in tags and "latest" in tags


def _registry(engine):
    from rice_mlops.release.oci import Registry

    return Registry(engine["RICE_REGISTRY"], engine["RICE_REGISTRY_USER"],
                    engine["RICE_REGISTRY_PASSWORD"])


def _locked(name: str) -> str:
    lock = (Path(__file__).resolve().parents[2] / "requirements" / "lock.txt").read_text()
    return next(line.split("==")[1].split()[0] for line in lock.splitlines()
                if line.lower().startswith(f"{name}=="))


def test_registry_serves_sbom_provenance_and_signature_for_the_pushed_digest(
        pushed, docker_engine, signing_keys, shipped_run, tmp_path):
    from rice_mlops.release.attestation import VerificationError, verify_image
    from rice_mlops.release.signing import generate_keypair, load_public_key

    version = shipped_version()
    with _registry(docker_engine) as registry:
        report = verify_image(registry, "rice-classifier", pushed["digest"],
                              load_public_key(signing_keys["public"].read_bytes()))
        assert report["sbom"]["pkg:pypi/ai-edge-litert"] == _locked("ai-edge-litert")
        assert report["sbom"]["pkg:pypi/numpy"] == _locked("numpy")
        assert any(name.startswith("pkg:deb/debian/") for name in report["sbom"])
        assert report["source_commit"] == SHA
        assert report["mlflow_run_id"] == version.run_id
        materials = {m["name"]: m for m in report["materials"]}
        assert materials["source"]["digest"]["gitCommit"] == SHA
        assert {"dataset", "mlflow-run", "requirements/lock.txt", "base-image"} <= set(materials)
        _, other = generate_keypair(tmp_path / "other")
        with pytest.raises(VerificationError):
            verify_image(registry, "rice-classifier", pushed["digest"],
                         load_public_key(other.read_bytes()))
    assert version.tags["rice.attachments"].count(".sig") == 1


def test_image_holds_its_sbom_card_key_and_signed_model(pushed, docker_login):
    script = ("import json, os; m = json.load(open('/opt/model/metadata.json')); "
              "print(json.dumps({'card': m.get('model_card'), 'files': sorted(os.listdir("
              "'/opt/model')), 'evidence': sorted(os.listdir('/opt/rice/evidence'))}))")
    out = docker(docker_login, "run", "--rm", "--network", "none", "--entrypoint", "python3",
                 pushed["digest_ref"], "-c", script).stdout
    found = json.loads(out.strip().splitlines()[-1])
    assert found["card"] == "MODEL_CARD.md"
    assert {"MODEL_CARD.md", "model.sig.json", "model.tflite"} <= set(found["files"])
    assert found["evidence"] == ["model-signing.pub", "sbom.cdx.json"]


def test_a_server_with_a_tampered_model_does_not_start(pushed, docker_login, airflow_pg,
                                                      staging_root):
    import shutil

    context = Path(airflow_pg.xcom("e2e-shipped", "prepare_image_context")["context"])
    tampered = staging_root / "tampered-model"
    shutil.copytree(context / "model", tampered, dirs_exist_ok=True)
    tampered.chmod(0o755)
    labels = json.loads((tampered / "labels.json").read_text())
    labels["classes"] = list(reversed(labels["classes"]))  # every answer mislabelled
    (tampered / "labels.json").write_text(json.dumps(labels))
    result = docker(docker_login, "run", "--rm", "--network", "none",
                    "-v", f"{tampered}:/opt/model:ro", pushed["digest_ref"], check=False)
    assert result.returncode == 78, result.stdout + result.stderr
    assert "refusing to start" in result.stderr and "changed labels.json" in result.stderr


def test_an_image_moved_under_the_commit_tag_fails_verify_and_promote(
        airflow_pg, pushed, docker_login, docker_engine, signing_keys, tmp_path):
    """Someone with registry credentials pushes their own image under the commit tag."""
    import sys

    (tmp_path / "Dockerfile").write_text(f"FROM {docker_engine['RICE_BASE_IMAGE']}\n"
                                         "LABEL evil=yes\n")
    evil = f"{docker_engine['RICE_REGISTRY']}/rice-classifier:{SHA}"
    docker({**docker_login, "DOCKER_BUILDKIT": "0"}, "build", "--network", "none",
           "-t", evil, str(tmp_path))
    try:
        docker(docker_login, "push", evil)
        with _registry(docker_engine) as registry:
            evil_digest = registry.manifest("rice-classifier", SHA)[2]
        assert evil_digest != pushed["digest"]
        cli = subprocess.run(
            [sys.executable, "-m", "rice_mlops.operations.cli", "image", "verify",
             f"{evil.rsplit(':', 1)[0]}@{evil_digest}", "--key", str(signing_keys["public"])],
            env={**os.environ, "REGISTRY_USERNAME": docker_engine["RICE_REGISTRY_USER"],
                 "REGISTRY_PASSWORD": docker_engine["RICE_REGISTRY_PASSWORD"]},
            capture_output=True, text=True, timeout=120)
        assert cli.returncode == 1 and "NOT VERIFIED" in cli.stderr
        promote = airflow_pg.clear_task("e2e-shipped", "promote")
        assert promote["state"] == "failed", airflow_pg.describe("e2e-shipped")
        log = airflow_pg.task_log("e2e-shipped", "promote", try_number=promote["try_number"])
        assert "someone moved the tag" in log and evil_digest in log
    finally:
        with _registry(docker_engine) as registry:  # put the commit tag back for later tests
            registry.retag("rice-classifier", pushed["digest"], SHA)
        docker(docker_login, "rmi", evil, check=False)


def test_the_release_zone_measured_what_it_shipped(pushed, airflow_pg, docker_login,
                                                   staging_root, small_real_dataset):
    """Issue 20: the smoke test measured the shipped bytes inside the built image on the test
    split; the image's metadata and model card carry the release zone's figure, which the
    smoke test reproduced; the build context lived where only the release zone writes."""
    smoke = airflow_pg.xcom("e2e-shipped", "smoke_test")
    measured = smoke["measured"]
    test_images = sum(len(list((small_real_dataset / "test" / cls).iterdir()))
                      for cls in CLASSES)
    assert measured["passed"] and measured["images"] == min(test_images, 200 * len(CLASSES))
    assert set(measured["recall"]) == set(CLASSES)
    metadata = json.loads(docker(docker_login, "run", "--rm", "--network", "none",
                                 "--entrypoint", "cat", pushed["digest_ref"],
                                 "/opt/model/metadata.json").stdout)
    assert metadata["release_measurement"]["accuracy"] == measured["accuracy"]
    assert metadata["release_measurement"]["recall"] == measured["recall"]
    card = docker(docker_login, "run", "--rm", "--network", "none", "--entrypoint", "cat",
                  pushed["digest_ref"], "/opt/model/MODEL_CARD.md").stdout
    assert "Measured by the release zone" in card
    gate = airflow_pg.xcom("e2e-shipped", "quality_gate")
    assert gate["measured"] and gate["reported_accuracy"] is not None
    run_id = airflow_pg.xcom("e2e-shipped", "train")["run_id"]
    assert (staging_root / "release" / run_id / "image" / "MANIFEST.sha256").is_file()
    assert not (staging_root / run_id / "image").exists()
    log = airflow_pg.task_log("e2e-shipped", "prepare_image_context")
    assert "pyfunc" not in log and "loader_module" not in log
