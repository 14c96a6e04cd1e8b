"""The push container holds the registry password in its environment: it never outlives the
task, and neither do the build and smoke-test containers."""

from __future__ import annotations

import pytest

from rice_mlops.core.run_policy import PolicyError, param_schemas
from rice_mlops.core.settings import PipelineSettings
from tests.helpers import handoffs

TRAINED = handoffs.trained("0" * 32)


def test_every_docker_task_container_is_always_removed():
    from rice_mlops.stages.docker_tasks import image_stages

    settings = PipelineSettings(docker_queue="docker")
    for task in image_stages(TRAINED, settings):
        assert task.auto_remove == "force", task.task_id
        assert task.network_mode == "none" and task.queue == "docker"
    push = image_stages(TRAINED, settings)[2]
    assert "REGISTRY_PASSWORD" not in str(push.environment)


def test_docker_tasks_mount_only_the_release_zones_directory_and_run_its_own_push_step(
        tmp_path):
    """Issue 20, item 2: the build, smoke and push containers see the release directory (which
    no compute worker mounts), never the shared staging directory, and the push step is the
    installed package's script given to `sh -c`, not a file from any directory."""
    from rice_mlops.release.image import PACKAGE_DIR, push_script
    from rice_mlops.stages.docker_tasks import image_stages

    settings = PipelineSettings(staging_root=tmp_path / "staging",
                                release_dir=str(tmp_path / "release"))
    assert settings.release_root == tmp_path / "release"
    assert PipelineSettings(staging_root=tmp_path / "s").release_root == tmp_path / "s-release"
    for task in image_stages(TRAINED, settings):
        sources = {mount["Source"] for mount in task.mounts}
        assert str(settings.release_root) in sources, task.task_id
        assert not any(s.startswith(str(settings.staging_root)) for s in sources), task.task_id
    push = image_stages(TRAINED, settings)[2]
    assert push.entrypoint == ["/bin/sh", "-c"]
    assert push_script() == (PACKAGE_DIR / "serving" / "push.sh").read_text()


def test_settings_read_the_release_directory():
    env = {"RICE_STAGING_DIR": "/srv/staging", "RICE_RELEASE_DIR": "/srv/release"}
    from pathlib import Path

    assert PipelineSettings.from_env(env).release_root == Path("/srv/release")
    assert PipelineSettings.from_env({"RICE_STAGING_DIR": "/srv/staging"}).release_root == \
        Path("/srv/staging-release")


def test_a_docker_task_plans_only_from_a_trained_hand_off_with_a_run_id(tmp_path):
    """The train task's XCom is untrusted: a plain dict where the `Trained` hand-off belongs,
    or a run id that is a command, plans nothing; a good one plans only this run's context,
    which must be what prepare_image_context wrote."""
    from airflow.sdk.exceptions import AirflowFailException

    from rice_mlops.stages.docker_tasks import image_stages

    settings = PipelineSettings(staging_root=tmp_path / "staging")
    context = {"params": {name: schema["default"]
                          for name, schema in param_schemas(settings).items()}}
    # A run id that is a command never becomes a Trained (serde rebuilds an XCom through the
    # constructor, which checks it), so no Docker task is ever handed one.
    with pytest.raises(PolicyError, match="is not an MLflow run id"):
        handoffs.trained("$(docker run evil)")
    cases = [({"run_id": "0" * 32}, "handed on a dict, not a Trained"),
             (TRAINED, "is not what prepare_image_context wrote")]
    for trained, refusal in cases:
        for task in image_stages(trained, settings):
            with pytest.raises(AirflowFailException, match=refusal):
                task.plan(context)
