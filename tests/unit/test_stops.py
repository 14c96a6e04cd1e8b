"""A stop skips every task after it: a task wired after it with a trigger rule that would run
past a skipped upstream becomes its direct downstream; nobody keeps a list."""

from __future__ import annotations

import pytest


def test_a_task_added_after_a_stop_is_skipped_with_it_whatever_its_trigger_rule():
    pytest.importorskip("airflow")
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from rice_mlops.stages.stops import bypasses, skip_all_after

    with DAG("stops_example", schedule=None):
        stop = EmptyOperator(task_id="stop")
        build = EmptyOperator(task_id="build")
        join = EmptyOperator(task_id="join", trigger_rule="none_failed_min_one_success")
        after_join = EmptyOperator(task_id="after_join")
        anyway = EmptyOperator(task_id="anyway", trigger_rule="all_done")
        tidy = EmptyOperator(task_id="tidy").as_teardown()
        stop >> build >> join >> after_join >> anyway
        build >> tidy
    assert bypasses(stop) == ["anyway", "join"]
    skip_all_after(stop)
    assert bypasses(stop) == []
    assert stop.downstream_task_ids == {"build", "join", "anyway"}
    # after_join passes the skip on from join (all_success); the teardown runs anyway.
    assert "after_join" not in stop.downstream_task_ids
    assert "tidy" not in stop.downstream_task_ids
    skip_all_after(stop)  # idempotent
    assert stop.downstream_task_ids == {"build", "join", "anyway"}
