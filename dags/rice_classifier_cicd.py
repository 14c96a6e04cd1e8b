"""
### Rice classifier CI/CD

Retrains the rice-variety classifier (Arborio, Basmati, Ipsala, Jasmine, Karacadag), tracks the
run in MLflow, and ships it only when it is good enough.

**When it runs:** nightly at 02:00 UTC (`RICE_SCHEDULE`) and on every push to `main` through
the GitHub webhook, which triggers it through the REST API with the commit in the run's conf
(one run per pushed commit). Runs never overlap: a second one queues.

**What it does:** `validate_data` checks every image → `train` logs params, metrics, plots,
the model and its TFLite export to MLflow → `fetch_artifacts` stages them with a sha256
manifest → `quality_gate` registers a version, tests it against the bar, the class-recall floor
and (paired, McNemar) the champion this pipeline last promoted, and writes its model card →
`shippable` → the serving image built (signed model, SBOM), smoke-tested within its size and
latency budgets, pushed (an immutable commit tag, never moved, and `latest`) and attested
(signature, provenance, SBOM on its digest) → a pull request with the artifacts and the card →
`promote` verifies the attestations, moves `champion` and records it in the asset.

**Reading a run:** *skipped* publication tasks mean **not shipped**: the `quality_gate`
result and log, and the MLflow tags `rice.gate` / `rice.gate_reason`, say why. A *failed*
task is a crash (retried first) or a refusal that no retry can change.

**Conf** may make a run stricter, never looser: the deployment's `RICE_MIN_TEST_ACCURACY`
and `RICE_MAX_REGRESSION` bound the bars, `data_dir` must lie under `RICE_DATA_ROOT`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, dag, task

from rice_mlops import tasks
from rice_mlops.docker_tasks import ImageBuildOperator, RegistryPushOperator, SmokeTestOperator
from rice_mlops.run_policy import param_schemas
from rice_mlops.settings import PipelineSettings
from rice_mlops.vocabulary import MODEL_NAME

SETTINGS = PipelineSettings.from_env()
RICE_MODEL = Asset(name="rice_classifier_model", uri=f"mlflow://registered-models/{MODEL_NAME}")
_DOCKER = SETTINGS.queue("docker")  # only the workers of this queue hold the socket


@dag(
    dag_id=tasks.DAG_ID,
    schedule=SETTINGS.schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=SETTINGS.dagrun_timeout_minutes),
    doc_md=__doc__,
    tags=["mlops", "rice", "training", "mlflow"],
    default_args={
        "owner": "ml-platform",
        "retries": 2,
        "retry_delay": timedelta(seconds=SETTINGS.retry_delay_seconds),
        "execution_timeout": timedelta(minutes=SETTINGS.task_timeout_minutes),
    },
    params={name: Param(**schema) for name, schema in param_schemas(SETTINGS).items()},
)
def rice_classifier_cicd():
    @task
    def validate_data(params=None) -> dict:
        """Check every image of the dataset and compute its fingerprint."""
        return tasks.validate_data(SETTINGS, params)

    @task(execution_timeout=timedelta(minutes=SETTINGS.train_timeout_minutes),
          **SETTINGS.queue("train"))
    def train(data: dict, params=None, run_id=None) -> dict:
        """Train and log one MLflow run for this DAG run (a retry reuses a verified run)."""
        return tasks.train(SETTINGS, params, data, run_id)

    @task
    def fetch_artifacts(trained: dict) -> dict:
        """Stage the run's model, TFLite file, labels, metrics and plot with a manifest."""
        return tasks.fetch_artifacts(SETTINGS, trained)

    @task(inlets=[RICE_MODEL])
    def quality_gate(trained: dict, data: dict, staged: dict, params=None,
                     inlet_events=None) -> dict:
        """Register a version; decide against the bar and the recorded champion."""
        return tasks.quality_gate(SETTINGS, params, trained, data, inlet_events[RICE_MODEL])

    @task.short_circuit
    def shippable(gate: dict) -> bool:
        """Skip every publication task when the gate failed."""
        return gate["passed"]

    @task(**_DOCKER)
    def prune_old_builds(trained: dict) -> dict:
        """Drop staging and local tags of all but the newest RICE_KEEP_BUILDS runs."""
        return tasks.prune_old_builds(SETTINGS, trained)

    @task(**_DOCKER)
    def prepare_image_context(trained: dict, data: dict, gate: dict, params=None) -> dict:
        """Lay out the hermetic build context: Dockerfile, server, model, wheels, smoke set."""
        return tasks.prepare_image_context(SETTINGS, params, trained, data, gate)

    @task
    def record_image(trained: dict, gate: dict, plan: dict, pushed: str) -> dict:
        """Record the pushed digest on the MLflow run and model version."""
        return tasks.record_image(trained, gate, plan, pushed)

    @task(**_DOCKER)
    def attest_image(trained: dict, image: dict, params=None, run_id=None) -> dict:
        """Sign the pushed digest; attach provenance, SBOM and signature to it."""
        return tasks.attest_image(SETTINGS, params, trained, image, run_id)

    @task(trigger_rule="none_failed")
    def open_pull_request(trained: dict, gate: dict, image: dict | None, params=None,
                          run_id=None) -> dict:
        """Commit the artifacts to the model branch and open or update its pull request."""
        return tasks.open_pull_request(SETTINGS, params, trained, gate, image, run_id)

    @task(outlets=[RICE_MODEL], trigger_rule="none_failed", **_DOCKER)
    def promote(trained: dict, data: dict, staged: dict, gate: dict, image: dict | None,
                run_id=None, outlet_events=None, params=None) -> dict:
        """Verify the pushed image's attachments, then move `champion`; record it in Airflow."""
        record = tasks.promote(SETTINGS, trained, data, staged, gate, image, run_id, params)
        outlet_events[RICE_MODEL].extra = record
        return record

    data = validate_data()
    trained = train(data)
    staged = fetch_artifacts(trained)
    gate = quality_gate(trained, data, staged)
    # Before the gate: runs that ship nothing tidy up too, and no image stage of this run
    # (a retag of the same commit) runs while older tags are removed.
    staged >> prune_old_builds(trained) >> gate
    plan = prepare_image_context(trained, data, gate)
    shippable(gate) >> plan
    build = ImageBuildOperator(task_id="build_image", training_run_id=trained["run_id"],
                               settings=SETTINGS)
    smoke = SmokeTestOperator(task_id="smoke_test", training_run_id=trained["run_id"],
                              settings=SETTINGS)
    push = RegistryPushOperator(task_id="push_image", training_run_id=trained["run_id"],
                                settings=SETTINGS)
    plan >> build >> smoke >> push
    image = attest_image(trained, record_image(trained, gate, plan, push.output))
    # The pull request names the pushed image, so it follows the image stages (or their skip).
    pull = open_pull_request(trained, gate, image)
    pull >> promote(trained, data, staged, gate, image)


rice_classifier_cicd()
