"""The DAG on real Airflow processes and PostgreSQL, triggered through the REST API."""

from __future__ import annotations

import pytest

from rice_mlops.core.handoffs import Gate
from rice_mlops.core.vocabulary import MODEL_ASSET
from tests.helpers.airflow_stack import stored_xcom
from tests.helpers.browser import failed_runs_in_the_ui
from tests.helpers.pipeline import SHA, dag_conf

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_conf = dag_conf


def test_triggered_run_succeeds_with_conf_preserved(airflow_pg, shipped_run):
    conf, run = shipped_run
    assert run["state"] == "success", airflow_pg.describe("e2e-shipped")
    assert run["run_type"] == "manual"
    assert run["conf"] == conf
    states = airflow_pg.task_states("e2e-shipped")
    for task_id in ("admit", "admitted", "check_changed", "changed", "report",
                    "validate_data", "train", "fetch_artifacts", "quality_gate",
                    "prepare_image_context", "build_image", "smoke_test", "shippable",
                    "push_image", "record_image", "attest_image", "open_pull_request", "promote",
                    "prune_old_builds"):
        assert states[task_id] == "success", states


def test_each_task_links_to_what_it_made_and_the_links_lead_there(airflow_pg, shipped_run,
                                                                  docker_engine, github_double):
    """Issue 38: the extra links a worker computed as each task ended, as the UI lists them
    (the REST API's `links`), each followed to its target."""
    import os
    import re

    import httpx

    def links(task_id: str) -> dict:
        answer = airflow_pg.api(
            "GET", f"/dags/rice_classifier_cicd/dagRuns/e2e-shipped/taskInstances/{task_id}/links")
        assert answer.status_code == 200, answer.text
        return answer.json()["extra_links"]

    mlflow_auth = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"])
    trained = airflow_pg.xcom("e2e-shipped", "train")
    run_page = links("train")["MLflow run"]
    assert run_page.endswith(f"/#/experiments/{trained['experiment_id']}/runs/"
                             f"{trained['run_id']}"), run_page
    assert httpx.get(run_page.split("#")[0], auth=mlflow_auth, timeout=30).status_code == 200
    assert links("quality_gate")["Model card"] == f"{run_page}/artifacts/model_card/MODEL_CARD.md"
    registry_auth = (docker_engine["RICE_REGISTRY_USER"], docker_engine["RICE_REGISTRY_PASSWORD"])
    image = airflow_pg.xcom("e2e-shipped", "attest_image")
    for task_id in ("push_image", "attest_image"):
        manifest = links(task_id)["Image in the registry"]
        assert manifest.endswith(f"/manifests/{image['digest']}"), manifest
        answer = httpx.get(manifest, auth=registry_auth, timeout=30, headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        assert answer.status_code == 200
        assert answer.headers["Docker-Content-Digest"] == image["digest"]
    pull = links("open_pull_request")["Pull request"]
    assert pull in [p["html_url"] for p in github_double.pulls], pull
    version = links("roll_out")["Served version"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/version", version), version
    assert httpx.get(version, timeout=30).json()["model_version"]
    # A task that made nothing a person would open has no link; one that was skipped, an empty one.
    assert links("validate_data") == {}
    # In the UI, as a person does it: each task's Details tab shows its link where the API
    # said, and clicking it opens the target (the registry and MLflow ask for their logins).
    from tests.helpers.browser import airflow_login, browser_page, click_extra_link

    pull = next(p for p in github_double.pulls if p["html_url"] == pull)

    def run_page(page, _):
        page.get_by_text(trained["run_id"]).first.wait_for(timeout=60_000)  # MLflow's SPA

    def model_card(page, _):
        page.get_by_text("Model card: rice-classifier v").first.wait_for(timeout=60_000)

    def manifest(_, answer):
        assert answer.headers["docker-content-digest"] == image["digest"]

    def pull_page(page, _):
        shown = page.inner_text("body")
        assert pull["title"] in shown and all(
            name in shown for name in github_double.branch_files(pull["head"])), shown[:2000]

    def served_version(page, _):
        assert '"model_version"' in page.inner_text("body")

    clicks = {mlflow_auth: {"train": ("MLflow run", run_page),
                            "quality_gate": ("Model card", model_card),
                            "open_pull_request": ("Pull request", pull_page),
                            "roll_out": ("Served version", served_version)},
              registry_auth: {"push_image": ("Image in the registry", manifest),
                              "attest_image": ("Image in the registry", manifest)}}
    for credentials, checks in clicks.items():
        with browser_page(http_credentials=credentials) as page:
            airflow_login(page, airflow_pg.url, airflow_pg.admin_password)
            for task_id, (name, check) in checks.items():
                check(*click_extra_link(
                    page, f"{airflow_pg.url}/dags/rice_classifier_cicd/runs/e2e-shipped/tasks/"
                          f"{task_id}/details", name, links(task_id)[name]))


def test_training_log_has_one_line_per_epoch(airflow_pg, shipped_run):
    log = airflow_pg.task_log("e2e-shipped", "train")
    assert log.count("epoch 12/12") == 1
    assert sum(f"epoch {n}/12 " in log for n in range(1, 13)) == 12
    assert "━" not in log  # no progress bars


def test_shipped_run_is_the_champion_with_gate_tags(shipped_run):
    from mlflow import MlflowClient

    client = MlflowClient()
    # Later runs may have been promoted since: find the version this run promoted.
    champion = next(v for v in client.search_model_versions("name='rice-classifier'")
                    if v.tags.get("rice.promoted_by") == "e2e-shipped")
    run = client.get_run(champion.run_id)
    assert run.data.tags["rice.airflow_dag_run_id"] == "e2e-shipped"
    assert run.data.tags["rice.source_commit"] == SHA
    assert run.data.tags["rice.gate"] == "passed"
    assert champion.tags["rice.gate"] == "passed"


def test_the_gate_records_the_versions_drift_reference(airflow_pg, shipped_run):
    """What the version answered on its test split, as the monitoring will compare with."""
    import hashlib
    from pathlib import Path

    import mlflow
    from mlflow import MlflowClient

    from rice_mlops.compute.data import discover
    from rice_mlops.core.vocabulary import DRIFT_REFERENCE_ARTIFACT, DRIFT_REFERENCE_TAG
    from rice_mlops.monitoring.drift import Reference

    gate = airflow_pg.xcom("e2e-shipped", "quality_gate")
    version = MlflowClient().get_model_version("rice-classifier", str(gate["version"]))
    text = mlflow.artifacts.load_text(f"runs:/{version.run_id}/{DRIFT_REFERENCE_ARTIFACT}")
    assert version.tags[DRIFT_REFERENCE_TAG] == hashlib.sha256(text.encode()).hexdigest()
    reference = Reference.from_json(text)
    dataset = discover(Path(airflow_pg.xcom("e2e-shipped", "validate_data")["data_dir"]))
    paths, labels = dataset.examples("test")
    assert reference.model_version == str(gate["version"])
    assert reference.class_names == tuple(dataset.classes)
    assert reference.observations.count == len(paths)
    # The gate's own measurement, read back from the reference's predicted classes.
    correct = sum(dataset.classes[y] == c for y, c in zip(labels, reference.observations.classes,
                                                            strict=True))
    assert correct / len(labels) == pytest.approx(gate["test_accuracy"])
    assert (reference.observations.values["width"] > 0).all()


def test_model_asset_event_carries_run_id_and_image_digest(airflow_pg, shipped_run):
    events = airflow_pg.asset_events("e2e-shipped", MODEL_ASSET)
    assert len(events) == 1
    extra = events[0]["extra"]
    run = airflow_pg.run("e2e-shipped")
    assert extra["mlflow_run_id"] and extra["model_version"]
    assert extra["image_digest"].startswith("sha256:")
    assert extra["image"].endswith(extra["image_digest"])
    assert run["state"] == "success"


def test_pull_request_holds_exactly_the_staged_artifacts(airflow_pg, shipped_run,
                                                         github_double):
    from pathlib import Path

    from rice_mlops.publication.pull_request import git_blob_sha
    from tests.helpers.pipeline import GITHUB_TOKEN

    staged = Path(airflow_pg.xcom("e2e-shipped", "fetch_artifacts")["staging_dir"])
    expected = {f"MLProject/model_artifact/{p.relative_to(staged).as_posix()}":
                git_blob_sha(p.read_bytes()) for p in staged.rglob("*") if p.is_file()}
    card = staged.parent / "evidence" / "MODEL_CARD.md"
    expected["MLProject/model_artifact/MODEL_CARD.md"] = git_blob_sha(card.read_bytes())
    # Later runs (other modules share this stack) reset the branch: read this run's commit.
    heads = github_double.branch_heads["model/latest"]
    commit = next((sha for sha in heads if github_double.git(
        "log", "-1", "--format=%B", sha).endswith("Airflow run: e2e-shipped")), None)
    assert commit, [github_double.git("log", "-1", "--format=%B", sha) for sha in heads]
    on_branch = {path: sha for path, sha in github_double.branch_files(commit).items()
                 if path.startswith("MLProject/")}
    assert on_branch == expected
    assert {"MLProject/model_artifact/MLmodel", "MLProject/model_artifact/model.tflite",
            "MLProject/model_artifact/MANIFEST.sha256"} <= set(on_branch)
    open_pulls = [p for p in github_double.pulls if p["state"] == "open"]
    assert len(open_pulls) == 1
    body = open_pulls[0]["body"]
    # The one pull request is updated by every later run: its body is the branch tip's run.
    tip_run_id = github_double.git("log", "-1", "--format=%s", "model/latest").split()[-1]
    assert "| test accuracy |" in body and tip_run_id in body and "@sha256:" in body
    assert "confusion_matrix.png" in body
    assert "### Quality gate" in body and "**Gate PASSED**" in body
    message = github_double.git("log", "-1", "--format=%B", commit)
    assert "MLflow run" in message and SHA in message
    log = airflow_pg.task_log("e2e-shipped", "open_pull_request")
    assert "opened pull request #1" in log
    assert GITHUB_TOKEN not in log


def test_failing_gate_publishes_nothing_and_keeps_the_champion(airflow_pg, shipped_run,
                                                               tiny_real_dataset):
    from mlflow import MlflowClient

    client = MlflowClient()
    before = client.get_model_version_by_alias("rice-classifier", "champion").version
    response = airflow_pg.trigger(_conf(tiny_real_dataset, min_test_accuracy=1.0), "e2e-gated")
    assert response.status_code == 200, response.text
    run = airflow_pg.wait_for_run("e2e-gated")
    states = airflow_pg.task_states("e2e-gated")
    assert run["state"] == "success", states  # a decision not to ship: green, with its note
    assert states["quality_gate"] == "success" and states["report"] == "success", states
    assert airflow_pg.note("e2e-gated").startswith("NOT SHIPPED: test accuracy")
    assert states["prune_old_builds"] == "success"  # tidying does not depend on shipping
    for task_id in ("open_pull_request", "prepare_image_context", "build_image", "smoke_test",
                    "push_image", "record_image", "promote"):
        assert states[task_id] == "skipped", states
    gate_log = airflow_pg.task_log("e2e-gated", "quality_gate")
    assert "NOT SHIPPED" in gate_log and "below the minimum 1.0000" in gate_log

    assert client.get_model_version_by_alias("rice-classifier", "champion").version == before
    versions = client.search_model_versions("name='rice-classifier'")
    gated = [v for v in versions
             if client.get_run(v.run_id).data.tags.get("rice.airflow_dag_run_id") == "e2e-gated"]
    assert len(gated) == 1
    assert gated[0].tags["rice.gate"] == "failed"
    assert "below the minimum" in gated[0].tags["rice.gate_reason"]
    assert len(versions) >= 2


def test_an_admin_who_patches_the_gate_ships_nothing(airflow_pg, shipped_run, tiny_real_dataset):
    """Insider, the strongest (issue 20, item 4): an admin PATCHes the failed gate's XCom to
    "passed" (and "significant", so no person is asked) and clears `shippable` and everything
    after it. The API refuses to store a `Gate` (serde's keys are Airflow's); the plain dict it
    stores instead is no `Gate`, so `shippable` refuses it without retry: nothing is built,
    pushed or promoted, the run note names the failure, the champion stays. (Had a forged gate
    got through, the release zone would still measure the bytes itself against the run's bar:
    tests/unit/test_release_zone.py.)"""
    from mlflow import MlflowClient

    client = MlflowClient()
    before = client.get_model_version_by_alias("rice-classifier", "champion").version
    if airflow_pg.api("GET", "/dags/rice_classifier_cicd/dagRuns/e2e-gated").status_code == 404:
        response = airflow_pg.trigger(_conf(tiny_real_dataset, min_test_accuracy=1.0),
                                      "e2e-gated")
        assert response.status_code == 200, response.text
    airflow_pg.wait_for_run("e2e-gated")
    gate = airflow_pg.xcom("e2e-gated", "quality_gate")
    assert gate["passed"] is False, gate
    entry = "/dags/rice_classifier_cicd/dagRuns/e2e-gated/taskInstances/quality_gate/" \
            "xcomEntries/return_value"
    forged = {**gate, "passed": True, "significant": True}
    refused = airflow_pg.api("PATCH", entry, json={"value": stored_xcom(Gate(**forged)),
                                                   "map_index": -1})
    assert refused.status_code == 422 and "reserved serialization keys" in refused.text
    patched = airflow_pg.api("PATCH", entry, json={"value": forged, "map_index": -1})
    assert patched.status_code == 200, patched.text
    assert airflow_pg.xcom("e2e-gated", "quality_gate")["passed"] is True
    tries = airflow_pg.task_instance("e2e-gated", "shippable")["try_number"]
    airflow_pg.clear_task("e2e-gated", "shippable", include_downstream=True)
    airflow_pg.wait_for_run("e2e-gated")
    states = airflow_pg.task_states("e2e-gated")
    shippable = airflow_pg.task_instance("e2e-gated", "shippable")
    assert states["shippable"] == "failed", states
    assert shippable["try_number"] == tries + 1  # refused for good: no retry
    log = airflow_pg.task_log("e2e-gated", "shippable", shippable["try_number"])
    assert "takes Admission or Freshness or Gate as decision, not a dict" in log, log[-3000:]
    for task_id in ("approve_release", "prepare_image_context", "build_image", "push_image",
                    "record_image", "open_pull_request", "promote"):
        assert states[task_id] in ("upstream_failed", "skipped"), states
    note = airflow_pg.note("e2e-gated") or ""
    assert note.startswith("FAILED: shippable failed"), note
    # A forged result is no decision: the report, told everything, fails the run.
    assert airflow_pg.run("e2e-gated")["state"] == "failed", states
    assert states["report"] == "failed", states
    assert "the gate result(s) were not written by their tasks" in note, note  # the report's
    assert client.get_model_version_by_alias("rice-classifier", "champion").version == before


def test_a_dataset_with_an_unreadable_image_fails_the_run_red(airflow_pg, tiny_real_dataset,
                                                            tmp_path, github_double):
    """Issue 38: a run that stopped on a failure is `failed` (red in the grid, found by the
    failed-runs filter and `on_failure_callback`), not a green run with every later task
    skipped; its note, its commit status and its report say why."""
    import shutil

    data = tmp_path / "rice"
    shutil.copytree(tiny_real_dataset, data)
    broken = sorted((data / "train").glob("*/*"))[0]
    broken.write_bytes(b"\xff\xd8 not a jpeg after all")
    sha = "4" * 40
    assert airflow_pg.trigger(_conf(data, source_commit=sha), "e2e-unreadable").status_code == 200
    run = airflow_pg.wait_for_run("e2e-unreadable", timeout=300)
    states = airflow_pg.task_states("e2e-unreadable")
    assert run["state"] == "failed", airflow_pg.describe("e2e-unreadable")
    assert states["validate_data"] == "failed" and states["report"] == "failed", states
    for task_id in ("train", "quality_gate", "push_image", "promote"):
        assert states[task_id] in ("upstream_failed", "skipped"), states
    assert airflow_pg.task_instance("e2e-unreadable", "validate_data")["try_number"] == 1
    assert broken.name in airflow_pg.task_log("e2e-unreadable", "validate_data")
    assert airflow_pg.note("e2e-unreadable").startswith("FAILED: validate_data failed")
    assert "the run failed: FAILED: validate_data failed" in airflow_pg.task_log(
        "e2e-unreadable", "report")
    statuses = [s for s in github_double.statuses if s["sha"] == sha]
    assert statuses and statuses[-1]["state"] == "error", statuses
    failed = airflow_pg.api("GET", "/dags/rice_classifier_cicd/dagRuns",
                            params={"state": "failed", "limit": 100}).json()["dag_runs"]
    assert "e2e-unreadable" in {r["dag_run_id"] for r in failed}  # the UI's failed filter
    failed_runs_in_the_ui(airflow_pg.url, airflow_pg.admin_password, "e2e-unreadable",
                          shipped="e2e-shipped")


def test_a_training_that_fails_after_its_retries_fails_the_run_red(
        airflow_pg, shipped_run, mlflow_control, tiny_real_dataset, tmp_path, github_double):
    """Issue 38: `train` crashing on every try (someone deleted the run's MLflow experiment in
    the MLflow UI: MLflow refuses to record into it) is retried, then fails for good, and the
    run is `failed` (red), not a green run with a note; restoring the experiment mends it."""
    import shutil

    import httpx

    data = tmp_path / "rice"
    shutil.copytree(tiny_real_dataset, data)
    sorted((data / "train").glob("*/*"))[0].unlink()  # a dataset no run has trained on
    experiments = f"{mlflow_control.url}/api/2.0/mlflow/experiments"
    experiment_id = airflow_pg.xcom("e2e-shipped", "train")["experiment_id"]
    httpx.post(f"{experiments}/delete", json={"experiment_id": experiment_id},
               auth=mlflow_control.admin, timeout=30).raise_for_status()
    sha = "5" * 40
    try:
        assert airflow_pg.trigger(_conf(data, source_commit=sha),
                                  "e2e-train-crash").status_code == 200
        run = airflow_pg.wait_for_run("e2e-train-crash", timeout=600)
    finally:
        httpx.post(f"{experiments}/restore", json={"experiment_id": experiment_id},
                   auth=mlflow_control.admin, timeout=30).raise_for_status()
    states = airflow_pg.task_states("e2e-train-crash")
    assert run["state"] == "failed", airflow_pg.describe("e2e-train-crash")
    assert states["train"] == "failed" and states["report"] == "failed", states
    train = airflow_pg.task_instance("e2e-train-crash", "train")
    assert train["try_number"] == 3, train  # the DAG's two retries were spent
    assert "deleted experiment" in airflow_pg.task_log("e2e-train-crash", "train", 3)
    assert airflow_pg.note("e2e-train-crash").startswith("FAILED: train failed")
    statuses = [s for s in github_double.statuses if s["sha"] == sha]
    assert statuses and statuses[-1]["state"] == "error", statuses
    failed_runs_in_the_ui(airflow_pg.url, airflow_pg.admin_password, "e2e-train-crash",
                          shipped="e2e-shipped")


@pytest.mark.parametrize(
    ("conf", "fragment"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": "many"}, "epochs"),
        ({"source_commit": "not-a-sha!"}, "source_commit"),
        ({"min_test_accuracy": 1.5}, "min_test_accuracy"),
    ],
)
def test_invalid_conf_is_refused_with_a_clear_message(airflow_pg, conf, fragment):
    response = airflow_pg.trigger(conf, f"e2e-invalid-{fragment}-{abs(hash(str(conf)))}")
    assert response.status_code == 400, response.text
    assert fragment in response.text


def test_task_that_fails_once_succeeds_on_retry_without_duplicates(
        airflow_pg, mlflow_control, tiny_real_dataset):
    """MLflow is down for the first attempt of `train`; the retry finds it back."""
    import time

    from mlflow import MlflowClient

    mlflow_control.stop()
    try:
        # Its own commit: the commit tag of SHA already names the shipped run's image. A bar
        # of 1.0 ends it at the gate: the duplicates a retry could make (MLflow runs, model
        # versions) are all made by then, and no image stage would add to the claim.
        response = airflow_pg.trigger(_conf(tiny_real_dataset, source_commit="2" * 40,
                                            min_test_accuracy=1.0), "e2e-retry")
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            train = airflow_pg.task_instance("e2e-retry", "train")
            if train["state"] in ("up_for_retry", "failed", "success"):
                break
            time.sleep(1)
        assert train["state"] == "up_for_retry", train
    finally:
        mlflow_control.start()
    run = airflow_pg.wait_for_run("e2e-retry")
    states = airflow_pg.task_states("e2e-retry")
    assert run["state"] == "success", states
    assert states["quality_gate"] == "success" and states["push_image"] == "skipped", states
    train = airflow_pg.task_instance("e2e-retry", "train")
    assert train["try_number"] == 2

    client = MlflowClient()
    experiment = client.get_experiment_by_name("rice-classifier")
    runs = client.search_runs([experiment.experiment_id],
                              filter_string="tags.`rice.airflow_dag_run_id` = 'e2e-retry'")
    assert len(runs) == 1
    versions = [v for v in client.search_model_versions("name='rice-classifier'")
                if v.run_id == runs[0].info.run_id]
    assert len(versions) == 1


def test_gate_result_and_tags_carry_the_noise_aware_numbers(airflow_pg, shipped_run):
    from mlflow import MlflowClient

    gate = airflow_pg.xcom("e2e-shipped", "quality_gate")
    assert gate["passed"] is True
    assert set(gate["per_class_recall"]) == {"Arborio", "Basmati", "Ipsala", "Jasmine",
                                             "Karacadag"}
    assert all(v["support"] == 20 for v in gate["per_class_recall"].values())
    assert gate["min_class_recall"] == 0.0 and gate["alpha"] == 0.0  # airflow_env's
    assert "| recall Jasmine |" in gate["table"]
    assert "significant" in gate  # None without a champion, a bool with one
    run = MlflowClient().get_run(airflow_pg.xcom("e2e-shipped", "train")["run_id"])
    assert run.data.tags["rice.gate_verdict"] == gate["verdict"]
    smoke = airflow_pg.xcom("e2e-shipped", "smoke_test")
    assert smoke["passed"] and smoke["p50_ms"] > 0 and smoke["image_mb"] > 10
    assert run.data.tags["rice.budget"].startswith("passed: image ")


def test_model_card_holds_the_runs_own_numbers(airflow_pg, shipped_run, github_double):
    import mlflow
    from mlflow import MlflowClient

    from rice_mlops.compute.model_card import parse

    run_id = airflow_pg.xcom("e2e-shipped", "train")["run_id"]
    text = mlflow.artifacts.load_text(f"runs:/{run_id}/model_card/MODEL_CARD.md")
    card = parse(text)
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert card["run_id"] == run_id
    assert abs(card["test_accuracy"] - metrics["test_accuracy"]) < 5e-5
    for cls, recall in card["recall"].items():
        assert abs(recall - metrics[f"test_recall_{cls}"]) < 5e-5, cls
    evaluation = mlflow.artifacts.load_dict(f"runs:/{run_id}/evaluation/metrics.json")
    assert card["confusion_matrix"] == evaluation["confusion_matrix"]
    assert SHA in text and "## Limits" in text
    # Later runs update the branch: its card is the one MLflow holds for the run it names.
    on_branch = github_double.git("show", "model/latest:MLProject/model_artifact/MODEL_CARD.md")
    latest = parse(on_branch)["run_id"]
    assert on_branch.strip() == mlflow.artifacts.load_text(
        f"runs:/{latest}/model_card/MODEL_CARD.md").strip()
