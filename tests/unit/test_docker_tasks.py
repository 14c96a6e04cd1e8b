"""The push container holds the registry password in its environment: it never outlives the
task, and neither do the build and smoke-test containers."""

from __future__ import annotations

from rice_mlops.settings import PipelineSettings


def test_every_docker_task_container_is_always_removed():
    from rice_mlops.docker_tasks import image_stages

    settings = PipelineSettings(docker_queue="docker")
    for task in image_stages("0" * 32, settings):
        assert task.auto_remove == "force", task.task_id
        assert task.network_mode == "none" and task.queue == "docker"
    push = image_stages("0" * 32, settings)[2]
    assert "REGISTRY_PASSWORD" not in str(push.environment)
