"""The DAG's stop decisions, and the rule that makes each one skip every task after it.

A stop (`admitted`, `changed`, `shippable`: short-circuits; `approve_release` on Reject) skips
its direct downstream tasks; a task further on is skipped only when its trigger rule passes the
skip on (`all_success`). A task with another rule would run past the stop: the joins
`open_pull_request` and `promote` (`none_failed_min_one_success`, so they run when only the
image stages were skipped) are such tasks. `skip_all_after` makes every task after a stop whose
rule does not pass the skip on a direct downstream of that stop, so a task added after a stop
is skipped with it whatever its trigger rule, and nobody keeps a list of them. Teardowns (the
`report`) run whatever happened, by design.

Imports nothing: it reads the tasks' relatives and trigger rules only.
"""

from __future__ import annotations

PASSES_SKIP_ON = "all_success"  # the one trigger rule that skips a task after a skipped one


def _task(node):
    """The operator of an XComArg (a @task call), or the operator itself."""
    return getattr(node, "operator", node)


def bypasses(stop) -> list[str]:
    """Tasks after `stop` that its stop would not skip: neither its direct downstream nor
    skipped through an all_success chain (teardowns excepted)."""
    stop = _task(stop)
    direct = stop.downstream_task_ids
    return sorted(task_id for task_id in stop.get_flat_relative_ids(upstream=False)
                  if task_id not in direct
                  and not stop.dag.get_task(task_id).is_teardown
                  and stop.dag.get_task(task_id).trigger_rule != PASSES_SKIP_ON)


def skip_all_after(*stops) -> None:
    """Make every task after each stop that would not be skipped with it its direct
    downstream. Call it once the DAG is wired."""
    for stop in map(_task, stops):
        for task_id in bypasses(stop):
            stop.set_downstream(stop.dag.get_task(task_id))
