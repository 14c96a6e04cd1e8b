"""Report: the run's outcome in one line, as a run note, a commit status and an e-mail.

A teardown on the default worker (compute zone): it runs whatever happened, and decides the
run's state (`on_failure_fail_dagrun`): once the note, the status and the mail are out, it
fails when the run failed (`outcome.fails_the_run`), so a run that stopped on a failure is
red like any other, and a run that decided not to ship stays green.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from airflow.sdk.exceptions import AirflowFailException

from rice_mlops.core.handoffs import Admission, Approval, Freshness, Gate, Promoted, Served
from rice_mlops.core.settings import PipelineSettings
from rice_mlops.core.vocabulary import DAG_ID
from rice_mlops.stages.common import checked_request, foreign_handoffs, handoff_parameters
from rice_mlops.stages.publication import commit_status, run_url

log = logging.getLogger(__name__)


def report(settings: PipelineSettings, params: Mapping, admission: Admission | None,
           freshness: Freshness | None, gate: Gate | None, approval: Approval | None,
           promoted: Promoted | None, served: Served | None, ti) -> dict:
    """The run's outcome as a run note, a commit status and, when worth it, an e-mail."""
    from rice_mlops.publication.outcome import (
        REFUSAL_KEY,
        REFUSING_TASKS,
        Outcome,
        answering_drift,
        decide_outcome,
        fails_the_run,
        latest_drift,
    )

    results = {"admission": admission, "freshness": freshness, "gate": gate,
               "approval": approval, "promoted": promoted, "served": served}
    ignored = _ignore_foreign(results)
    dag_run_id = ti.run_id
    states = ti.get_task_states(dag_id=DAG_ID, run_ids=[dag_run_id]).get(dag_run_id, {})
    failed = [task for task, state in states.items() if state == "failed"]
    refusal = None
    for task in REFUSING_TASKS:
        if task in failed:
            pulled = ti.xcom_pull(task_ids=task, key=REFUSAL_KEY)
            refusal = pulled[:2000] if isinstance(pulled, str) else None
    outcome = answering_drift(
        decide_outcome(**results, failed_tasks=failed, release_refusal=refusal),
        latest_drift(_drift_events()))
    if ignored:  # no outcome can be told from values someone else wrote
        forged = (f"the {', '.join(ignored)} result(s) were not written by their tasks "
                  "(changed by hand?)")
        outcome = Outcome("crashed", f"{outcome.note}; {forged}", "error", True) \
            if outcome.kind == "crashed" else \
            Outcome("crashed", f"FAILED: {forged}; not reported as shipped (see the report's "
                    "log)", "error", True)
    log.info("outcome: %s", outcome.note)
    write_note(settings, DAG_ID, dag_run_id, outcome.note)
    try:
        request = checked_request(settings, params)
    except AirflowFailException:
        request = None
    if request is not None:
        commit_status(settings, request, dag_run_id, outcome.state, outcome.description)
    if outcome.notify and settings.notify_emails:
        notify(settings, outcome.kind, outcome.note, dag_run_id)
    if fails_the_run(outcome, failed):  # after the note, the status and the mail: all told
        raise AirflowFailException(f"the run failed: {outcome.note}")
    return outcome.as_dict()


def _drift_events() -> list:
    """The `rice_drift` events the release zone's monitoring raised that started this run
    (none for a push or the cron; another task's event puts no text in the note)."""
    from rice_mlops.stages.assets import triggering_drift_events

    return triggering_drift_events()


def _ignore_foreign(results: dict) -> list[str]:
    """Set to None, in place, each upstream result that is not the hand-off its task writes
    (`stages.common.foreign_handoffs`; a skipped task gives None anyway), and name them. The
    report is a teardown: it says what it could not trust instead of failing, so the run
    still gets its note."""
    ignored = []
    for name, wanted in foreign_handoffs(handoff_parameters(report), results):
        log.error("ignoring %s: a %s, not the %s its task writes (changed by hand?)",
                  name, type(results[name]).__name__, wanted)
        results[name] = None
        ignored.append(name)
    return ignored


def write_note(settings: PipelineSettings, dag_id: str, dag_run_id: str, note: str) -> None:
    """The run's note through the REST API; a failure is logged, never raised (reporting must
    not hide the outcome)."""
    from rice_mlops.stages.connections import airflow_rest

    try:
        api = airflow_rest(settings.airflow_api_conn_id)
        if api is None:
            log.info("no Airflow connection %r: run note not written",
                     settings.airflow_api_conn_id)
        else:
            api.set_note(dag_id, dag_run_id, note)
    except Exception as exc:  # noqa: BLE001 - reporting must not hide the outcome
        log.warning("run note not written: %s", exc)


def notify(settings: PipelineSettings, kind: str, note: str, dag_run_id: str,
           dag_id: str = DAG_ID) -> None:
    """One e-mail through Airflow's SMTP notifier; its texts are set here, so nothing of the
    run (a reason, a path) is ever rendered as a template."""
    import html

    from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    from airflow.sdk import get_current_context

    url = run_url(settings, dag_run_id, dag_id)
    body = (f"<p>{html.escape(note)}</p><p>Airflow run: <a href=\"{html.escape(url)}\">"
            f"{html.escape(dag_run_id)}</a></p>")
    notifier = SmtpNotifier(to=list(settings.notify_emails), from_email=settings.notify_from,
                            subject=f"[rice-mlops] {kind}: {dag_run_id}"[:200],
                            html_content=body, smtp_conn_id=settings.smtp_conn_id)
    try:
        notifier.notify(get_current_context())
        log.info("notified %s", ", ".join(settings.notify_emails))
    except Exception as exc:  # noqa: BLE001 - a mail server down must not hide the outcome
        log.warning("notification not sent: %s", exc)
