"""What a user, a run's conf and MLflow cannot make the pipeline do (real Airflow, MLflow,
PostgreSQL, Docker engine and registry)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from rice_mlops.core.handoffs import Trained
from rice_mlops.core.vocabulary import MODEL_ASSET
from tests.helpers.airflow_stack import stored_xcom
from tests.helpers.pipeline import SHA, dag_conf

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG = "/dags/rice_classifier_cicd"
RUN = "trust-champion"


def _user_token(stack) -> str:
    """A token of the `webhook` account, whose role is the ordinary `user`."""
    password = (stack.home / "webhook_password").read_text().strip()
    response = httpx.post(f"{stack.url}/auth/token", timeout=10,
                          json={"username": "webhook", "password": password})
    assert response.status_code == 201, response.text
    return response.json()["access_token"]


def _as_user(stack, token: str, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{stack.url}/api/v2{path}", timeout=30,
                         headers={"Authorization": f"Bearer {token}"}, **kwargs)


@pytest.mark.parametrize(("conf", "fragment"), [
    ({"min_test_accuracy": 0.0}, "min_test_accuracy"),  # below the deployment's 0.01
    ({"source_repository": "evil/fork"}, "source_repository"),
])
def test_conf_looser_than_the_deployment_is_refused_at_trigger(airflow_pg, small_real_dataset,
                                                               conf, fragment):
    response = airflow_pg.trigger(dag_conf(small_real_dataset, **conf),
                                  f"trust-loose-{fragment}")
    assert response.status_code == 400, response.text
    assert fragment in response.text


def test_data_dir_outside_the_root_fails_before_any_mlflow_write(airflow_pg, tmp_path_factory):
    from mlflow import MlflowClient

    link = tmp_path_factory.mktemp("escape") / "data"
    link.symlink_to("/etc")
    for run_id, data_dir in (("trust-root", "/"), ("trust-symlink", str(link))):
        response = airflow_pg.trigger(dag_conf(Path(data_dir)), run_id)
        assert response.status_code == 200, response.text
        run = airflow_pg.wait_for_run(run_id, timeout=300)
        states = airflow_pg.task_states(run_id)
        assert run["state"] == "failed" and states["validate_data"] == "failed", states
        ti = airflow_pg.task_instance(run_id, "validate_data")
        assert ti["try_number"] == 1  # a refusal is not retried
        log = airflow_pg.task_log(run_id, "validate_data")
        assert "outside the data root" in log
        assert "passwd" not in log  # nothing of the foreign directory is listed
        experiment = MlflowClient().get_experiment_by_name("rice-classifier")
        runs = MlflowClient().search_runs([experiment.experiment_id], filter_string=(
            f"tags.`rice.airflow_dag_run_id` = '{run_id}'"))
        assert runs == []


@pytest.fixture(scope="module")
def champion_run(airflow_pg, shipped_run, small_real_dataset, tmp_path_factory):
    """A run after someone registered a pickled pyfunc model and aliased it `champion` behind
    the pipeline's back; it reuses the shipped run's commit."""
    import mlflow
    from mlflow import MlflowClient

    marker = tmp_path_factory.mktemp("pyfunc") / "loaded"

    class Trap(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            Path(str(marker)).write_text("loaded")

        def predict(self, context, model_input):
            Path(str(marker)).write_text("ran")
            return model_input

    client = MlflowClient()
    mlflow.set_experiment("intruder")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="trap", python_model=Trap())
    version = mlflow.register_model(info.model_uri, "rice-classifier").version
    # MLflow itself loads a pyfunc model while logging it (to check it): only what happens
    # after this point is the pipeline's doing.
    marker.unlink(missing_ok=True)

    before = client.get_model_version_by_alias("rice-classifier", "champion").version
    client.set_registered_model_alias("rice-classifier", "champion", version)
    try:
        response = airflow_pg.trigger(dag_conf(small_real_dataset, epochs=2), RUN)
        assert response.status_code == 200, response.text
        run = airflow_pg.wait_for_run(RUN, timeout=900)
        assert client.get_model_version_by_alias("rice-classifier", "champion").version == \
            version  # not promoted
    finally:
        client.set_registered_model_alias("rice-classifier", "champion", before)
    return run, version, marker


def test_champion_moved_behind_the_pipelines_back_is_never_loaded(airflow_pg, champion_run):
    run, version, marker = champion_run
    states = airflow_pg.task_states(RUN)
    gate_log = airflow_pg.task_log(RUN, "quality_gate")
    assert f"points at v{version}, which this pipeline did not promote" in gate_log
    assert not marker.exists()
    assert states["quality_gate"] == "success", states


def test_a_commit_tag_never_moves_to_another_image(airflow_pg, champion_run, docker_engine):
    run, _, _ = champion_run
    states = airflow_pg.task_states(RUN)
    # A new model under the shipped run's commit: built and tested, but the tag stays.
    assert states["smoke_test"] == "success", states
    assert states["push_image"] == "failed" and run["state"] == "failed", states
    push = airflow_pg.task_instance(RUN, "push_image")
    assert push["try_number"] == 1  # not retried: no retry can make the tag free
    assert "already names another image" in airflow_pg.task_log(RUN, "push_image")
    assert states["promote"] == "upstream_failed"
    shipped = airflow_pg.asset_events("e2e-shipped", MODEL_ASSET)
    answer = httpx.head(
        f"http://{docker_engine['RICE_REGISTRY']}/v2/rice-classifier/manifests/{SHA}",
        auth=(docker_engine["RICE_REGISTRY_USER"], docker_engine["RICE_REGISTRY_PASSWORD"]),
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert answer.status_code == 200
    assert answer.headers["Docker-Content-Digest"] == \
        shipped[0]["extra"]["image_digest"]


def test_a_user_patching_xcom_cannot_change_what_runs_next_to_the_socket(airflow_pg,
                                                                           champion_run,
                                                                           staging_root):
    marker = staging_root / "pwned"
    token = _user_token(airflow_pg)
    xcom = f"{DAG}/dagRuns/{RUN}/taskInstances"
    evil = f"run --rm -v {staging_root}:/x busybox touch /x/pwned"
    # The old hand-off (a shell string from prepare_image_context) and the `Trained` hand-off
    # the Docker tasks take from `train`, its run id replaced with a command. The API refuses
    # to store a hand-off (serde's keys are Airflow's), so the user stores its fields.
    honest = airflow_pg.xcom(RUN, "train")
    trained = {**honest, "run_id": f"$(docker {evil})"}
    # The stored form of a hand-off with the command as its run id (a Trained cannot be built
    # with one: its constructor refuses it, and serde rebuilds through the constructor).
    stored = stored_xcom(Trained(**honest))
    stored["__data__"]["run_id"] = trained["run_id"]
    forged = _as_user(airflow_pg, token, "PATCH", f"{xcom}/train/xcomEntries/return_value",
                      json={"value": stored, "map_index": -1})
    assert forged.status_code == 422 and "reserved serialization keys" in forged.text
    for task_id, key, value in (
            ("prepare_image_context", "return_value", {"build_command": f"docker {evil}"}),
            ("train", "return_value", trained)):
        response = _as_user(airflow_pg, token, "PATCH", f"{xcom}/{task_id}/xcomEntries/{key}",
                            json={"value": value, "map_index": -1})
        assert response.status_code == 200, response.text
    build = airflow_pg.clear_task(RUN, "build_image", token=token)  # the user may clear
    assert build["state"] == "failed"
    log = airflow_pg.task_log(RUN, "build_image", try_number=build["try_number"])
    assert "the train task handed on a dict, not a Trained" in log
    assert not marker.exists()
    airflow_pg.wait_for_run(RUN)


