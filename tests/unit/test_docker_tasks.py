"""The push container held the registry password in its environment: it never outlives the
task, whatever the DAG asks for."""

from __future__ import annotations


def test_the_push_container_is_always_removed():
    from rice_mlops.docker_tasks import RegistryPushOperator

    for asked in ("success", "never", "force"):
        push = RegistryPushOperator(task_id=f"push_{asked}", registry_conn_id="rice_registry",
                                    image="docker:27-cli", auto_remove=asked)
        assert push.auto_remove == "force"
