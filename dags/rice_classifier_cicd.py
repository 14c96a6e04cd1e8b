"""### Rice classifier CI/CD

Retrains the rice classifier nightly, on a push to `main` and on `rice_drift` (conf only tightens):
admit → validate_data → check_changed → train → fetch_artifacts → quality_gate → approval →
image built, smoke-tested, pushed, attested → pull request → roll_out → promote → report.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from rice_mlops import stages
from rice_mlops.core import handoffs as h  # the typed results the tasks hand each other
from rice_mlops.core.run_policy import param_schemas
from rice_mlops.core.settings import PipelineSettings
from rice_mlops.core.vocabulary import DAG_ID
from rice_mlops.stages.approval import ReleaseApproval
from rice_mlops.stages.assets import RICE_MODEL, RICE_SERVING, training_schedule
from rice_mlops.stages.docker_tasks import image_stages
from rice_mlops.stages.links import attach_links
from rice_mlops.stages.stops import skip_all_after

SETTINGS = PipelineSettings.from_env()
_DOCKER = SETTINGS.queue("docker")  # only the workers of this queue hold the socket
_AFTER_SKIPS = {"trigger_rule": "none_failed_min_one_success"}  # an optional stage skipped


@dag(
    dag_id=DAG_ID, schedule=training_schedule(SETTINGS), start_date=datetime(2026, 1, 1),
    catchup=False, max_active_runs=1, doc_md=__doc__, tags=["mlops", "rice", "training", "mlflow"],
    dagrun_timeout=timedelta(minutes=SETTINGS.dagrun_timeout_minutes),
    default_args={"owner": "ml-platform", "retries": 2,
                  "retry_delay": timedelta(seconds=SETTINGS.retry_delay_seconds),
                  "execution_timeout": timedelta(minutes=SETTINGS.task_timeout_minutes)},
    params={name: Param(**schema) for name, schema in param_schemas(SETTINGS).items()},
)
def rice_classifier_cicd():
    @task
    def admit(params=None, ti=None) -> h.Admission:
        """Post `pending`; stop a queued push that a newer push to its branch superseded."""
        return stages.admission.admit(SETTINGS, params, ti)

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def proceed(decision: h.Admission | h.Freshness | h.Gate, field: str) -> bool:
        """Skip what follows when the decision says stop (the report still runs)."""
        return stages.common.proceed(decision, field)

    @task
    def validate_data(params=None) -> h.Dataset:
        """Check every image of the dataset and compute its fingerprint."""
        return stages.data.validate_data(SETTINGS, params)

    @task(inlets=[RICE_MODEL])
    def check_changed(data: h.Dataset, params=None, inlet_events=None) -> h.Freshness:
        """Stop when data and training code equal the champion's (conf `force` retrains)."""
        return stages.admission.check_changed(SETTINGS, params, data, inlet_events[RICE_MODEL])

    @task(execution_timeout=timedelta(minutes=SETTINGS.train_timeout_minutes),
          **SETTINGS.queue("train"))
    def train(data: h.Dataset, fresh: h.Freshness, params=None, run_id=None) -> h.Trained:
        """Train and log one MLflow run for this DAG run (a retry reuses a verified run)."""
        return stages.training.train(SETTINGS, params, data, fresh, run_id)

    @task
    def fetch_artifacts(trained: h.Trained) -> h.Staged:
        """Stage the run's model, TFLite file, labels, metrics and plot with a manifest."""
        return stages.training.fetch_artifacts(SETTINGS, trained)

    @task(inlets=[RICE_MODEL])
    def quality_gate(data: h.Dataset, trained: h.Trained, staged: h.Staged, params=None,
                     inlet_events=None) -> h.Gate:
        """Register a version; decide against the bar and the recorded champion."""
        return stages.evaluation.quality_gate(SETTINGS, params, data, trained,
                                              inlet_events[RICE_MODEL])

    @task(**_DOCKER)
    def prune_old_builds(trained: h.Trained) -> dict:
        """Drop staging and local tags of all but the newest RICE_KEEP_BUILDS runs."""
        return stages.release.prune_old_builds(SETTINGS, trained)

    @task(**_DOCKER)
    def prepare_image_context(data: h.Dataset, trained: h.Trained, gate: h.Gate, params=None,
                              run_id=None) -> h.BuildContext:
        """Check who approved; lay out the hermetic build context (Dockerfile, server, model)."""
        return stages.release.prepare_image_context(SETTINGS, params, data, trained, gate, run_id)

    @task
    def record_image(trained: h.Trained, gate: h.Gate, plan: h.BuildContext, push: str) -> h.Image:
        """Record the pushed digest on the MLflow run and model version."""
        return stages.release.record_image(SETTINGS, trained, gate, plan, push)

    @task(**_DOCKER)
    def attest_image(trained: h.Trained, image: h.Image, params=None, run_id=None) -> h.Image:
        """Sign the pushed digest; attach provenance, SBOM and signature to it."""
        return stages.release.attest_image(SETTINGS, params, trained, image, run_id)

    @task(**_AFTER_SKIPS)
    def open_pull_request(trained: h.Trained, gate: h.Gate, image: h.Image | None, params=None,
                          run_id=None) -> dict:
        """Commit the artifacts to the model branch and open or update its pull request."""
        return stages.publication.open_pull_request(SETTINGS, params, trained, gate, image, run_id)

    @task(inlets=[RICE_MODEL], outlets=[RICE_SERVING], **_AFTER_SKIPS, **_DOCKER)
    def roll_out(trained: h.Trained, gate: h.Gate, image: h.Image | None, params=None,
                 run_id=None, inlet_events=None, outlet_events=None) -> h.Served:
        """Serve the verified image: shadow, canary steps, then 100 %, or roll back."""
        return stages.serving.roll_out(SETTINGS, params, trained, gate, image, run_id,
                                       inlet_events[RICE_MODEL], outlet_events[RICE_SERVING])

    @task(inlets=[RICE_MODEL], outlets=[RICE_MODEL], **_AFTER_SKIPS, **_DOCKER)
    def promote(data: h.Dataset, trained: h.Trained, staged: h.Staged, gate: h.Gate,
                image: h.Image | None, params=None, run_id=None, inlet_events=None,
                outlet_events=None) -> h.Promoted:
        """Verify the pushed image's attachments, then move `champion`; record it in Airflow."""
        return stages.release.promote(SETTINGS, params, data, trained, staged, gate, image, run_id,
                                      inlet_events[RICE_MODEL], outlet_events[RICE_MODEL])

    @task
    def report(*results, params=None, ti=None) -> dict:
        """Write the outcome: run note, commit status, e-mail; fail when the run failed."""
        return stages.report.report(SETTINGS, params, *results, ti)

    admission = admit()
    admitted = proceed.override(task_id="admitted")(admission, "proceed")
    data = admitted >> validate_data()
    freshness = check_changed(data)
    changed = proceed.override(task_id="changed")(freshness, "train")
    trained = changed >> train(data, freshness)
    staged = fetch_artifacts(trained)
    gate = quality_gate(data, trained, staged)
    # Before the gate: runs that ship nothing tidy up too, and no retag races the pruning.
    staged >> prune_old_builds(trained) >> gate
    ship = proceed.override(task_id="shippable")(gate, "passed")
    approval = ship >> ReleaseApproval(task_id="approve_release", gate=gate, settings=SETTINGS)
    plan = approval >> prepare_image_context(data, trained, gate)
    build, smoke, push = image_stages(trained, SETTINGS)
    plan >> build >> smoke >> push
    image = attest_image(trained, record_image(trained, gate, plan, push.output))
    pull = open_pull_request(trained, gate, image)  # names the pushed image, so after it
    served = pull >> roll_out(trained, gate, image)  # champion moves only once it serves
    promoted = served >> promote(data, trained, staged, gate, image)
    skip_all_after(admitted, changed, ship, approval)  # whatever a later task's trigger rule
    outcome = report(admission, freshness, gate, approval.output, promoted, served)
    outcome.as_teardown(setups=admission, on_failure_fail_dagrun=True)  # it says the state
    attach_links(outcome.operator.dag)  # each task's link to what it made, in the UI


rice_classifier_cicd()
