"""
### Rice classifier CI/CD

Retrains the rice-variety classifier (Arborio, Basmati, Ipsala, Jasmine, Karacadag), tracks the
run in MLflow, and ships it only when it is good enough.

**When it runs:** every night at 02:00 UTC (`RICE_SCHEDULE` overrides the cron), and on every
push to `main` through the GitHub webhook, which triggers it through the REST API with the
commit in the run's conf. Runs never overlap: a second one queues.

**What it does:** `validate_data` checks every image (the synthetic default when no dataset is
configured) → `train` logs params, per-epoch metrics, test metrics, plots, the model and its
TFLite export to MLflow → `fetch_artifacts` stages them with a sha256 manifest →
`quality_gate` registers a model version and compares it with the bar and the `champion` →
publication (the serving image built, smoke-tested against the MLflow model's predictions and
pushed with an immutable tag and `latest`; then a pull request that puts the artifacts into
the repository on the fixed branch `model/latest`) → `promote`
moves the `champion` alias and updates the `rice_classifier_model` asset.

**Reading a run:** a run whose publication tasks are *skipped* did **not ship**: the
`quality_gate` log, and the MLflow tags `rice.gate` / `rice.gate_reason`, say why. A *failed*
task is a crash and was retried twice first.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import Asset, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from docker.types import Mount

from rice_mlops.docker_tasks import RegistryPushOperator, registry_host

log = logging.getLogger(__name__)

# "none" leaves only API-triggered runs (used by the end-to-end tests).
_SCHEDULE = os.environ.get("RICE_SCHEDULE", "0 2 * * *")
_SCHEDULE = None if _SCHEDULE.strip().lower() in ("", "none") else _SCHEDULE
_STAGING_ROOT = os.environ.get("RICE_STAGING_DIR", "/tmp/rice-mlops/staging")
_DATA_DIR = os.environ.get("RICE_DATA_DIR", "")
_DEFAULT_EPOCHS = int(os.environ.get("RICE_EPOCHS", "25"))
_DEFAULT_MIN_ACCURACY = float(os.environ.get("RICE_MIN_TEST_ACCURACY", "0.97"))
_EXPERIMENT = os.environ.get("RICE_MLFLOW_EXPERIMENT", "rice-classifier")
_GITHUB_CONN_ID = os.environ.get("RICE_GITHUB_CONN_ID", "github_default")
_GITHUB_REPOSITORY = os.environ.get("RICE_GITHUB_REPOSITORY", "")  # when conf names none
_PR_BASE = os.environ.get("RICE_PR_BASE", "main")
_PR_BRANCH = os.environ.get("RICE_PR_BRANCH", "model/latest")
_PR_PATH = os.environ.get("RICE_PR_PATH", "MLProject/model_artifact")
_PR_AUTHOR = os.environ.get("RICE_PR_AUTHOR", "rice-mlops-bot")
_PR_EMAIL = os.environ.get("RICE_PR_EMAIL", "rice-mlops-bot@users.noreply.github.com")
_REGISTRY_CONN_ID = os.environ.get("RICE_REGISTRY_CONN_ID", "rice_registry")
_IMAGE_NAME = os.environ.get("RICE_IMAGE_NAME", "rice-classifier")
_BASE_IMAGE = os.environ.get("RICE_BASE_IMAGE", "")  # empty: the Dockerfile's python:3.11-slim
_DOCKER_CLI_IMAGE = os.environ.get("RICE_DOCKER_CLI_IMAGE", "docker:27-cli")
_DOCKER_SOCKET = os.environ.get("RICE_DOCKER_SOCKET", "/var/run/docker.sock")
_WHEELHOUSE = os.environ.get("RICE_SERVING_WHEELHOUSE", "")  # workers without package index
_KEEP_BUILDS = int(os.environ.get("RICE_KEEP_BUILDS", "5"))  # runs whose staging + tags stay
# A Celery queue for `train` alone (workers started with --queues NAME); empty: the default.
_TRAIN_QUEUE = {"queue": q} if (q := os.environ.get("RICE_TRAIN_QUEUE", "")) else {}

RICE_MODEL = Asset(name="rice_classifier_model", uri="mlflow://registered-models/rice-classifier")

_SHA_OR_EMPTY = "^([0-9a-f]{7,40})?$"
_REPO_OR_EMPTY = "^([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)?$"


@dag(
    dag_id="rice_classifier_cicd",
    schedule=_SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["mlops", "rice", "training", "mlflow"],
    default_args={
        "owner": "ml-platform",
        "retries": 2,
        "retry_delay": timedelta(seconds=int(os.environ.get("RICE_RETRY_DELAY_SECONDS", "60"))),
    },
    params={
        "epochs": Param(_DEFAULT_EPOCHS, type="integer", minimum=1, maximum=200,
                        description="Training epochs."),
        "image_size": Param(64, type="integer", minimum=32, maximum=256,
                            description="Side in pixels the model resizes its input to."),
        "batch_size": Param(64, type="integer", minimum=8, maximum=512),
        "data_dir": Param(_DATA_DIR, type="string",
                          description="Dataset directory (split or Kaggle layout); empty for "
                                      "the synthetic default."),
        "min_test_accuracy": Param(_DEFAULT_MIN_ACCURACY, type="number", minimum=0, maximum=1,
                                   description="The gate's absolute bar on test accuracy."),
        "max_regression": Param(0.005, type="number", minimum=0, maximum=1,
                                description="How much worse than the champion is tolerated."),
        "source_commit": Param("", type="string", pattern=_SHA_OR_EMPTY,
                               description="Commit sha from the webhook (hex, 7-40 chars)."),
        "source_ref": Param("", type="string", maxLength=255),
        "source_repository": Param("", type="string", pattern=_REPO_OR_EMPTY,
                                   description="owner/name of the repository pushed to."),
        "pusher": Param("", type="string", maxLength=255),
        "compare_url": Param("", type="string", maxLength=2048),
    },
)
def rice_classifier_cicd():
    @task
    def validate_data(params: dict | None = None) -> dict:
        """Check every image of the dataset and compute its fingerprint."""
        from rice_mlops.data import validate
        from rice_mlops.data.fingerprint import fingerprint
        from rice_mlops.data.synth import ensure_synthetic

        data_dir = params["data_dir"] or str(ensure_synthetic(Path(_STAGING_ROOT) / "datasets"))
        dataset = validate(data_dir)
        counts = dataset.counts()
        log.info("dataset %s valid: %s", data_dir, counts)
        return {"data_dir": data_dir, "fingerprint": fingerprint(dataset),
                "classes": dataset.classes, "counts": counts}

    @task(execution_timeout=timedelta(hours=3), **_TRAIN_QUEUE)
    def train(data: dict, params: dict | None = None, dag_run=None) -> dict:
        """Train and log one MLflow run for this DAG run (a retry reuses a complete run)."""
        from rice_mlops.config import TrainConfig
        from rice_mlops.training import train_once

        source = {"commit": params["source_commit"], "ref": params["source_ref"],
                  "repository": params["source_repository"]}
        config = TrainConfig(
            data_dir=Path(data["data_dir"]), epochs=params["epochs"],
            image_size=params["image_size"], batch_size=params["batch_size"],
            experiment=_EXPERIMENT, source={k: v for k, v in source.items() if v},
        )
        result = train_once(config, dag_run.run_id)
        keep = ("run_id", "model_uri", "model_id", "experiment_id", "tracking_uri",
                "image_size", "classes", "metrics", "dataset_fingerprint", "epochs_run")
        return {key: result[key] for key in keep}

    @task
    def fetch_artifacts(trained: dict) -> dict:
        """Stage the run's model, TFLite file, labels, metrics and plot with a checksum manifest."""
        from rice_mlops.artifacts import MANIFEST, fetch, read_manifest

        staged = fetch(trained["run_id"], trained["model_uri"], _STAGING_ROOT)  # verified
        files = read_manifest(staged)
        log.info("staged %d files in %s", len(files), staged)
        return {"staging_dir": str(staged), "manifest": MANIFEST, "files": len(files)}

    @task.short_circuit
    def quality_gate(trained: dict, data: dict, staged: dict, params: dict | None = None,
                     ti=None) -> bool:
        """Register a model version; publish only if it beats the bar and the champion."""
        from rice_mlops import registry
        from rice_mlops.artifacts import verify_manifest
        from rice_mlops.gate import decide

        verify_manifest(Path(staged["staging_dir"]))
        version = registry.register(trained["run_id"], trained["model_uri"])
        champ = registry.champion()
        champion_accuracy, how = None, "no champion yet"
        if champ is not None and champ.version != version:
            champion_accuracy, how = registry.champion_accuracy(
                champ, trained["dataset_fingerprint"], Path(data["data_dir"]))
        result = decide(
            trained["metrics"]["test_accuracy"],
            min_test_accuracy=params["min_test_accuracy"],
            max_regression=params["max_regression"],
            champion_version=champ.version if champion_accuracy is not None else None,
            champion_accuracy=champion_accuracy,
        )
        registry.record_gate(trained["run_id"], version, result.passed, result.reason)
        ti.xcom_push(key="gate", value={**result.as_dict(), "version": version,
                                        "champion_comparison": how})
        if result.passed:
            log.info("gate PASSED for v%s: %s (%s)", version, result.reason, how)
        else:
            log.warning("gate FAILED for v%s, NOT SHIPPED: %s (%s)", version, result.reason, how)
        return result.passed

    @task(trigger_rule="none_failed")
    def open_pull_request(trained: dict, staged: dict, params: dict | None = None,
                          ti=None) -> dict:
        """Commit the artifacts to the model branch and open or update its pull request."""
        from rice_mlops import publish, registry
        from rice_mlops.artifacts import verify_manifest

        if reason := publish.unusable_connection_reason(_GITHUB_CONN_ID):
            raise AirflowSkipException(reason)
        repository = params["source_repository"] or _GITHUB_REPOSITORY
        if not repository:
            raise AirflowSkipException("no repository: the run's conf names none and "
                                       "RICE_GITHUB_REPOSITORY is not set")
        staged_dir = Path(staged["staging_dir"])
        verify_manifest(staged_dir)
        gate = ti.xcom_pull(task_ids="quality_gate", key="gate")
        image = ti.xcom_pull(task_ids="record_image") or {}
        champion = (registry.version_metrics(gate["champion_version"])
                    if gate.get("champion_version") else None)
        client = publish.client_from_connection(_GITHUB_CONN_ID)
        target = publish.Target(repository=repository, base=_PR_BASE, branch=_PR_BRANCH,
                                path=_PR_PATH, author_name=_PR_AUTHOR, author_email=_PR_EMAIL)
        metrics = json.loads((staged_dir / "metrics.json").read_text())
        run_url = (f"{trained['tracking_uri']}/#/experiments/{trained['experiment_id']}"
                   f"/runs/{trained['run_id']}")
        figure = (f"{publish.web_url(client.api_url)}/{repository}/blob/{_PR_BRANCH}/"
                  f"{_PR_PATH}/confusion_matrix.png?raw=true")
        body = publish.render_body(
            metrics, champion, run_url=run_url, fingerprint=trained["dataset_fingerprint"],
            source_commit=params["source_commit"] or None, image=image.get("digest_ref"),
            confusion_matrix_url=figure, gate_reason=gate["reason"])
        commit = params["source_commit"] or "none (nightly run)"
        message = (f"Update rice classifier v{gate['version']} from MLflow run "
                   f"{trained['run_id']}\n\nSource commit: {commit}\nAirflow run: {ti.run_id}")
        try:
            return publish.publish(
                client, target, publish.artifact_files(staged_dir, _PR_PATH), message=message,
                title=f"Rice classifier v{gate['version']}: test accuracy "
                      f"{trained['metrics']['test_accuracy']:.4f}", body=body)
        except publish.GitHubAuthError as exc:
            raise AirflowFailException(str(exc)) from None

    @task
    def prepare_image_context(trained: dict, staged: dict, data: dict,
                              params: dict | None = None, ti=None) -> dict:
        """Lay out the hermetic build context: Dockerfile, server, model, wheels, smoke set."""
        import shlex

        from rice_mlops.image import (
            build_args,
            build_command,
            image_names,
            prepare_context,
            run_tag,
            smoke_images,
        )

        if not Path(_DOCKER_SOCKET).exists():
            raise AirflowSkipException(f"no Docker engine at {_DOCKER_SOCKET}: image stages "
                                       "skipped (set RICE_DOCKER_SOCKET or start an engine)")
        gate = ti.xcom_pull(task_ids="quality_gate", key="gate")
        registry = registry_host(_REGISTRY_CONN_ID)
        names = image_names(registry, _IMAGE_NAME, params["source_commit"], trained["run_id"])
        metadata = {"model_name": "rice-classifier", "model_version": gate["version"],
                    "run_id": trained["run_id"], "source_commit": params["source_commit"] or None,
                    "dataset_fingerprint": trained["dataset_fingerprint"],
                    "image_size": trained["image_size"]}
        context = prepare_context(
            Path(staged["staging_dir"]), Path(_STAGING_ROOT) / trained["run_id"] / "image",
            metadata=metadata, model_uri=trained["model_uri"],
            smoke_from=smoke_images(Path(data["data_dir"])),
            wheel_cache=Path(_STAGING_ROOT) / "wheels",
            wheelhouse=Path(_WHEELHOUSE) if _WHEELHOUSE else None)
        local = run_tag(_IMAGE_NAME, trained["run_id"])
        command = build_command(context, names, build_args(metadata, _BASE_IMAGE or None),
                                extra_tags=(local,))
        log.info("build context ready in %s for %s", context, names.immutable)
        return {"context": str(context), "smoke_dir": str(context / "smoke"),
                "push_script": str(context / "push.sh"), "image": names.immutable,
                "local": local,
                "latest": names.latest, "repository": names.repository, "registry": registry,
                "build_command": shlex.join(["docker", *command])}

    context_xcom = "ti.xcom_pull(task_ids='prepare_image_context')"
    staging_mount = Mount(source=_STAGING_ROOT, target=_STAGING_ROOT, type="bind",
                          read_only=True)
    socket_mount = Mount(source=_DOCKER_SOCKET, target="/var/run/docker.sock", type="bind")
    docker_defaults = {"docker_url": f"unix://{_DOCKER_SOCKET}", "mount_tmp_dir": False,
                       "auto_remove": "success", "network_mode": "none"}

    build_image = DockerOperator(
        task_id="build_image",
        doc_md="`docker build` of the top-level Dockerfile, run by a docker CLI container.",
        image=_DOCKER_CLI_IMAGE,
        entrypoint=["/bin/sh", "-c"],
        command=[f"{{{{ {context_xcom}['build_command'] }}}}"],
        environment={"DOCKER_BUILDKIT": "0"},
        mounts=[staging_mount, socket_mount],
        **docker_defaults,
    )
    smoke_test = DockerOperator(
        task_id="smoke_test",
        doc_md="Start the built image, wait for /ping, compare its answers on real test images "
               "with the MLflow model's (same class, probabilities within 1e-4).",
        image=f"{{{{ {context_xcom}['local'] }}}}",
        entrypoint=["python3", "-m", "rice_mlops.serving.smoke"],
        command=["--smoke-dir", f"{{{{ {context_xcom}['smoke_dir'] }}}}"],
        mounts=[staging_mount],
        **docker_defaults,
    )

    @task
    def check_registry() -> str:
        """Skip the push, with the reason, when no registry connection is configured."""
        registry = registry_host(_REGISTRY_CONN_ID)
        if registry is None:
            raise AirflowSkipException(
                f"no Airflow connection {_REGISTRY_CONN_ID!r}: image built and smoke-tested "
                "but not pushed (add a connection with the registry host, login, password)")
        return registry

    push_image = RegistryPushOperator(
        task_id="push_image",
        doc_md="Push the immutable tag and `latest`; the last log line is the pushed digest.",
        registry_conn_id=_REGISTRY_CONN_ID,
        image=_DOCKER_CLI_IMAGE,
        entrypoint=["/bin/sh"],
        command=[f"{{{{ {context_xcom}['push_script'] }}}}"],
        environment={
            "REGISTRY": f"{{{{ {context_xcom}['registry'] }}}}",
            "REPOSITORY": f"{{{{ {context_xcom}['repository'] }}}}",
            "LOCAL": f"{{{{ {context_xcom}['local'] }}}}",
            "IMAGE": f"{{{{ {context_xcom}['image'] }}}}",
            "LATEST": f"{{{{ {context_xcom}['latest'] }}}}",
            "CONN_ID": _REGISTRY_CONN_ID,
        },
        mounts=[staging_mount, socket_mount],
        **docker_defaults,
    )

    @task
    def record_image(trained: dict, ti=None) -> dict:
        """Record the pushed digest in MLflow (run and model version tags) and in XCom."""
        from rice_mlops import registry

        pushed = (ti.xcom_pull(task_ids="push_image") or "").strip().splitlines()[-1]
        context = ti.xcom_pull(task_ids="prepare_image_context")
        if "@sha256:" not in pushed:
            raise ValueError(f"push_image did not report a digest (got {pushed!r})")
        gate = ti.xcom_pull(task_ids="quality_gate", key="gate")
        image = {"image": context["image"], "latest": context["latest"], "digest_ref": pushed,
                 "digest": pushed.split("@", 1)[1]}
        registry.tag_image(trained["run_id"], gate["version"], image)
        log.info("pushed %s and %s as %s", context["image"], context["latest"], pushed)
        return image

    @task
    def prune_old_builds(trained: dict) -> dict:
        """Drop the staging directories and local image tags of all but the newest
        RICE_KEEP_BUILDS runs (pushed images stay in the registry)."""
        from dataclasses import asdict

        from rice_mlops.housekeeping import prune

        report = prune(Path(_STAGING_ROOT), keep=_KEEP_BUILDS, current=trained["run_id"],
                       image_name=_IMAGE_NAME, docker_socket=Path(_DOCKER_SOCKET))
        log.info("kept %d runs; removed %d directories and %d local tags: %s",
                 len(report.kept), len(report.removed_dirs), len(report.removed_tags),
                 report.removed_dirs + report.removed_tags)
        return asdict(report)

    @task(outlets=[RICE_MODEL], trigger_rule="none_failed")
    def promote(trained: dict, ti=None, outlet_events=None) -> dict:
        """Move the `champion` alias to this run's version, after every publication succeeded."""
        from rice_mlops import registry

        gate = ti.xcom_pull(task_ids="quality_gate", key="gate")
        image = ti.xcom_pull(task_ids="record_image") or {}
        registry.promote(gate["version"], tags={"rice.promoted_by": ti.run_id})
        metadata = {"mlflow_run_id": trained["run_id"], "model_version": gate["version"],
                    "test_accuracy": trained["metrics"]["test_accuracy"],
                    "image": image.get("digest_ref"), "image_digest": image.get("digest")}
        outlet_events[RICE_MODEL].extra = metadata
        return metadata

    data = validate_data()
    trained = train(data)
    staged = fetch_artifacts(trained)
    gate = quality_gate(trained, data, staged)
    # Before the gate: runs that ship nothing tidy up too, and no image stage of this run
    # (a retag of the same commit) runs while older tags are removed.
    staged >> prune_old_builds(trained) >> gate
    context = prepare_image_context(trained, staged, data)
    recorded = record_image(trained)
    gate >> context >> build_image >> smoke_test >> check_registry() >> push_image >> recorded
    # The pull request names the pushed image, so it follows the image stages (or their skip).
    recorded >> open_pull_request(trained, staged) >> promote(trained)


rice_classifier_cicd()
