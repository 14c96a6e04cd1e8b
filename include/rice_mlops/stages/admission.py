"""Admission: the first look at a run, whose conf and push are untrusted input.

`admit` posts `pending` on the commit and stops a queued push that a newer push superseded;
`check_changed` stops a run whose dataset and training code equal the champion's. Both run on
the default worker (compute zone) and hand on `Admission` and `Freshness` through XCom.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException

from rice_mlops.core.handoffs import Admission, Dataset, Freshness
from rice_mlops.core.settings import PipelineSettings
from rice_mlops.core.vocabulary import DAG_ID
from rice_mlops.stages.common import checked_handoffs, checked_request
from rice_mlops.stages.publication import commit_status

log = logging.getLogger(__name__)


def admit(settings: PipelineSettings, params: Mapping, ti) -> Admission:
    """Pending on the commit; a queued push superseded by a newer one to its branch stops.

    Clearing any task of a run re-runs this setup task too: a run that has already gone past
    it (a task after it holds a state) is a re-run, never superseded after the fact.
    """
    from rice_mlops.core.run_policy import newer_push
    from rice_mlops.stages.connections import airflow_rest

    refused = untrusted_drift_trigger()
    if refused:
        log.error("%s", refused)
        return Admission(proceed=False, refused=refused)
    dag_run_id = ti.run_id
    states = ti.get_task_states(dag_id=DAG_ID, run_ids=[dag_run_id]).get(dag_run_id, {})
    rerun = any(state for task, state in states.items() if task not in ("admit", "report"))

    try:
        request = checked_request(settings, params)
    except AirflowFailException as exc:  # validate_data fails the run with the reason
        log.warning("%s", exc)
        return Admission(proceed=True)
    commit_status(settings, request, dag_run_id, "pending", "training and gating")
    if not request.source_commit or rerun:
        return Admission(proceed=True)
    api = airflow_rest(settings.airflow_api_conn_id)
    if api is None:
        log.info("no Airflow connection %r: superseded pushes are not detected",
                 settings.airflow_api_conn_id)
        return Admission(proceed=True)
    newer = newer_push(api.run(DAG_ID, dag_run_id), api.recent_runs(DAG_ID))
    if newer:
        log.warning("superseded by %s, a newer push to %s: not trained", newer,
                    request.source_ref)
        return Admission(proceed=False, superseded_by=newer)
    return Admission(proceed=True)


def untrusted_drift_trigger(context=None) -> str | None:
    """Why a run that `rice_drift` events started must not train: none of them was raised by
    the release zone's monitoring (`rice_mlops.stages.assets.DRIFT_SOURCE`). Any task's token can
    list that asset among its outlets; only the monitoring's verdict starts a training."""
    from airflow.sdk import get_current_context

    from rice_mlops.stages.assets import DRIFT_SOURCE, RICE_DRIFT, raised_by_monitoring

    context = context if context is not None else get_current_context()
    run_type = getattr(context.get("dag_run"), "run_type", None)
    if getattr(run_type, "value", run_type) != "asset_triggered":
        return None
    try:
        events = list(context["triggering_asset_events"][RICE_DRIFT])
    except (KeyError, TypeError):
        events = []
    if raised_by_monitoring(events):
        return None
    sources = sorted({f"{getattr(e, 'source_dag_id', None)}.{getattr(e, 'source_task_id', None)}"
                      for e in events})
    return (f"started by rice_drift event(s) from {', '.join(sources) or 'nowhere'}, not "
            f"{'.'.join(DRIFT_SOURCE)} (the release zone's monitoring): not trained")


@checked_handoffs
def check_changed(settings: PipelineSettings, params: Mapping, data: Dataset,
                  champion_events: Iterable) -> Freshness:
    """Whether training could change anything: not when the dataset fingerprint and the
    training code digest equal the recorded champion's (unless `force`)."""
    from rice_mlops.compute.champion import latest_record
    from rice_mlops.compute.code_digest import training_code_digest
    from rice_mlops.compute.training_config import TrainConfig

    request = checked_request(settings, params)
    config = TrainConfig(data_dir=Path(data.data_dir), epochs=request.epochs,
                         image_size=request.image_size, batch_size=request.batch_size)
    digest = training_code_digest(config.model_params())
    judged_by = {"model_params": config.model_params(),
                 "source_digest": training_code_digest(config.model_params(), packages=[])}
    record = latest_record(champion_events, DAG_ID)
    same = (record is not None and record.dataset_fingerprint == data.fingerprint
            and record.code_digest == digest)
    if same and not request.force:
        reason = f"same dataset and training code as champion v{record.version}"
        log.info("not training: %s (conf force=true retrains)", reason)
        return Freshness(train=False, code_digest=digest, reason=reason, **judged_by)
    return Freshness(train=True, code_digest=digest,
                     reason="forced" if same else "dataset or training code changed", **judged_by)
