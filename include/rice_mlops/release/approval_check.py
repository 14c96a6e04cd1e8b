"""The release zone's own look at the run's approval, before it builds anything.

`approve_release` runs in the compute zone, and Airflow's execution API lets a task's token
answer an approval: what the compute zone says about the answer is a claim, not a fact. What
Airflow records is not: an answer given through the REST API names the person who gave it
(`responded_by_user`), while one written with a task's token names nobody. So the release zone
reads the approval through the REST API with an account of its own (RICE_RELEASE_API_CONN_ID:
in compose the `release` account, grant `verify`, held by the Docker worker alone) and builds
only when

- nobody was asked, and neither the deployment nor the run's conf requires approval; or
- a person named in RICE_APPROVERS (any named person when it is empty) chose Approve.

Whether the gate's `significant` asked for approval is the compute zone's word; a run that
requires approval (RICE_REQUIRE_APPROVAL, or conf `require_approval`) does not depend on it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rice_mlops.core.airflow_rest import AirflowRest

log = logging.getLogger(__name__)

APPROVAL_TASK = "approve_release"
APPROVE = "Approve"  # ApprovalOperator's option


def approval_refusal(detail: Mapping | None, required: bool, approvers: Sequence[str]
                     ) -> str | None:
    """Why the release zone must not build, given the REST API's HITL detail of
    approve_release (None: nobody was asked), or None when the release may go on."""
    if detail is None:
        if required:
            return ("this run requires approval, but approve_release asked nobody: its "
                    "decision was not the pipeline's (changed by hand?)")
        return None
    chosen = detail.get("chosen_options") or []
    if not detail.get("response_received") or chosen != [APPROVE]:
        return f"approve_release was not approved (answer: {chosen or 'none'})"
    person = detail.get("responded_by_user") or {}
    who = person.get("id") if isinstance(person, Mapping) else None
    if not who:
        return ("approve_release was answered with a task's token, not by a person: an "
                "approval counts only when one of RICE_APPROVERS gives it in Airflow")
    if approvers and who not in approvers:
        return f"approve_release was answered by {who!r}, who is not one of RICE_APPROVERS"
    return None


def check_approval(api: AirflowRest | None, settings, request, dag_run_id: str) -> str | None:
    """`approval_refusal` for this DAG run, read with the release zone's own account (`api`,
    from RICE_RELEASE_API_CONN_ID); None (with a warning) where no such account is configured."""
    from rice_mlops.core.vocabulary import DAG_ID

    if api is None:
        log.warning("approval not checked in the release zone: no connection %r (a one-zone "
                    "deployment; compose gives the Docker worker one)",
                    settings.release_api_conn_id)
        return None
    detail = api.hitl_detail(DAG_ID, dag_run_id, APPROVAL_TASK)
    return approval_refusal(detail, request.require_approval, settings.approvers)
