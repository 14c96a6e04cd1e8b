"""The Docker tasks: build, smoke-test and push the serving image of one training run.

Each operator derives what its container runs (image, argv, environment, mounts) from values it
checks itself: the training run id (32 hex characters) of the `train` task's hand-off, the
run's conf through the run policy, the settings and the registry connection. Nothing executable
is read from XCom or from a directory another zone can write: the build context lives in the
release zone's own directory (RICE_RELEASE_DIR, mounted by the Docker worker alone), its
Dockerfile and server code must equal this worker's installed package before anything is built,
and the push step is this package's script, passed to the container as an argument. Only the
DAG file imports this module (it needs Airflow and the docker provider); the registry
connection's addresses, which the release stage needs too, are read in
`rice_mlops.stages.connections`.
"""

from __future__ import annotations

from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from docker.types import Mount

from rice_mlops.core.handoffs import Trained
from rice_mlops.core.settings import PipelineSettings
from rice_mlops.release import ledger as release_ledger
from rice_mlops.release.image import run_image_plan
from rice_mlops.stages.connections import optional_connection, registry_host

SOCKET_IN_CONTAINER = "/var/run/docker.sock"


def _container_logs(exc: DockerContainerFailedException) -> str:
    return "\n".join(line.decode() if isinstance(line, bytes) else str(line)
                     for line in exc.logs or [])


class PlannedDockerOperator(DockerOperator):
    """A DockerOperator for one training run's image plan (see `rice_mlops.release.image.plan_for`).

    `trained` is the only value taken from upstream (templated: the `train` task's XComArg,
    rendered to its `Trained` hand-off), and only its run id is read, which selects a directory
    under the release root once it is checked.
    """

    template_fields = (*DockerOperator.template_fields, "trained")

    def __init__(self, *, trained, settings: PipelineSettings, socket: bool, **kwargs):
        mounts = [Mount(source=str(settings.release_root), target=str(settings.release_root),
                        type="bind", read_only=True)]
        if socket:
            mounts.append(Mount(source=settings.docker_socket, target=SOCKET_IN_CONTAINER,
                                type="bind"))
        kwargs.setdefault("image", settings.docker_cli_image)
        # "force": a stopped container keeps its environment (the push's registry password)
        # for anyone who can `docker inspect`, so none is kept, whatever the outcome.
        super().__init__(docker_url=f"unix://{settings.docker_socket}", mount_tmp_dir=False,
                         auto_remove="force", network_mode="none", mounts=mounts,
                         **settings.queue("docker"), **kwargs)
        self.trained = trained
        self.settings = settings

    def plan(self, context):
        from rice_mlops.core.run_policy import PolicyError, run_request
        from rice_mlops.core.staged_artifacts import ManifestError, verify_manifest
        from rice_mlops.release.image import NotOwned, verify_owned

        if not isinstance(self.trained, Trained):
            raise AirflowFailException(f"the train task handed on a {type(self.trained).__name__},"
                                       " not a Trained: clear `train` to record one")
        try:
            self.request = run_request(context["params"], self.settings)
            plan = run_image_plan(self.trained, self.settings, self.request.source_commit,
                                           registry_host(self.settings.registry_conn_id))
        except PolicyError as exc:
            raise AirflowFailException(str(exc)) from None
        try:
            verify_manifest(plan.context)
            verify_owned(plan.context)
        except (ManifestError, NotOwned) as exc:
            raise AirflowFailException(f"build context of run {plan.run_id} is not what "
                                       f"prepare_image_context wrote: {exc}") from None
        try:  # the run prepare_image_context measured for this DAG run, not another
            release_ledger.check(self.settings.release_root, context.get("run_id"),
                                 mlflow_run_id=plan.run_id)
        except release_ledger.LedgerMismatch as exc:
            raise AirflowFailException(str(exc)) from None
        return plan


class ImageBuildOperator(PlannedDockerOperator):
    """`docker build` of the run's context by a docker CLI container (argv, no shell)."""

    def __init__(self, **kwargs):
        super().__init__(socket=True, entrypoint=["docker"], environment={"DOCKER_BUILDKIT": "0"},
                         **kwargs)

    def execute(self, context):
        plan = self.plan(context)
        self.command = plan.build_argv(self.settings.base_image, self.settings.build_image)
        self.log.info("building %s as %s", plan.context, plan.local)
        return super().execute(context)


class SmokeTestOperator(PlannedDockerOperator):
    """Run the built image on its smoke set, with no network and no socket."""

    def __init__(self, **kwargs):
        super().__init__(socket=False, entrypoint=["python3", "-m", "rice_mlops.serving.smoke"],
                         **kwargs)

    def execute(self, context):
        from rice_mlops.serving.smoke import parse_measurement

        plan = self.plan(context)
        self.image = plan.local
        # The bar and the floor come from the settings and the run policy (conf may only
        # raise them), never from the smoke set or XCom.
        self.command = ["--smoke-dir", str(plan.smoke_dir),
                        "--min-test-accuracy", repr(self.request.min_test_accuracy),
                        "--min-class-recall", repr(self.settings.min_class_recall)]
        self.xcom_all = True
        try:
            output = super().execute(context)
        except DockerContainerFailedException as exc:
            logs = _container_logs(exc)
            if "REFUSED below" in logs:  # no retry makes the shipped bytes more accurate
                raise AirflowFailException(
                    "not shipped: the release zone measured the built image below the bar: "
                    + next(line for line in logs.splitlines() if "REFUSED below" in line)
                ) from None
            raise
        lines = output if isinstance(output, list) else [output]
        measured = parse_measurement("\n".join(str(line) for line in lines))
        self.log.info("measured inside the image: accuracy %.4f on %d test images, recall %s",
                      measured["accuracy"], measured["images"], measured["recall"])
        return {**self.check_budgets(context, plan), "measured": measured}

    def check_budgets(self, context, plan) -> dict:
        """Image size from the engine, p50 latency from a second run of the same image with
        the constant probe (no network); over either budget the image is not pushed."""
        from rice_mlops.core import model_registry as registry
        from rice_mlops.release import budgets

        self.entrypoint, self.command = ["python3", "-c", budgets.PROBE], \
            [str(plan.smoke_dir), str(budgets.ROUNDS)]
        self.xcom_all = True
        output = super().execute(context)
        lines = output if isinstance(output, list) else [output]
        result = budgets.check(
            size_bytes=int(self.cli.inspect_image(plan.local)["Size"]),
            latencies_ms=budgets.parse_probe("\n".join(str(line) for line in lines)),
            max_image_mb=self.settings.max_image_mb, max_p50_ms=self.settings.max_p50_ms)
        registry.record_budget(plan.run_id, result)
        self.log.info("budgets %s: %s", "met" if result["passed"] else "EXCEEDED",
                      result["reason"])
        if not result["passed"]:  # no retry makes the image smaller or faster
            raise AirflowFailException(f"not shipped: {result['reason']}")
        return result


class RegistryPushOperator(PlannedDockerOperator):
    """Push the commit tag and `latest` with this package's push.sh, given to the container's
    shell as an argument (no file of any directory is run); the last log line is the pushed
    digest. Registry credentials come from an Airflow connection and reach the container only
    through `private_environment` (never templated, logged or in XCom)."""

    def __init__(self, **kwargs):
        super().__init__(socket=True, entrypoint=["/bin/sh", "-c"], **kwargs)

    def execute(self, context):
        conn_id = self.settings.registry_conn_id
        conn = optional_connection(conn_id)
        if conn is None:
            raise AirflowSkipException(
                f"no Airflow connection {conn_id!r}: image built and smoke-tested but not "
                "pushed, so not shipped (add a connection with the registry host, login, "
                "password)")
        plan = self.plan(context)
        from rice_mlops.release.image import push_script

        self.command = [push_script(), "push.sh"]
        self.environment = plan.push_environment(conn_id)
        conn = BaseHook.get_connection(conn_id)
        # The provider keeps private variables in `_private_environment`, out of templates.
        self._private_environment = {"REGISTRY_USERNAME": conn.login or "",
                                     "REGISTRY_PASSWORD": conn.password or ""}
        try:
            return super().execute(context)
        except DockerContainerFailedException as exc:
            logs = _container_logs(exc)
            # Retrying cannot fix wrong credentials or a tag that names another image.
            if "rejected the credentials" in logs:
                raise AirflowFailException(
                    f"registry rejected the credentials of Airflow connection {conn_id!r}: "
                    "fix its login/password") from None
            if "immutable tag is never moved" in logs:
                raise AirflowFailException(
                    f"{plan.names.immutable} already names another image in the registry; "
                    "the tag was not moved (push a new commit to ship a new image)") from None
            raise


def image_stages(trained, settings: PipelineSettings) -> tuple[DockerOperator, ...]:
    """The build, smoke-test and push tasks of one DAG, in that order; `trained` is the train
    task's XComArg (or a `Trained`)."""
    return (ImageBuildOperator(task_id="build_image", trained=trained, settings=settings),
            SmokeTestOperator(task_id="smoke_test", trained=trained, settings=settings),
            RegistryPushOperator(task_id="push_image", trained=trained, settings=settings))
