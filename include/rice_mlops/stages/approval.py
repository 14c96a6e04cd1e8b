"""People asked when it is risky: a human approves a release before anything is published.

Approval is asked when the deployment requires it (RICE_REQUIRE_APPROVAL) or when the gate
says the challenger's lead over the champion is within the noise (`significant: false`).
Otherwise the task answers at once. Approve → publication; Reject or no answer before
RICE_APPROVAL_TIMEOUT_MINUTES → every publication task is skipped: not shipped. Who answered
is recorded on the MLflow model version. RICE_APPROVERS names the only people who may answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowFailException

from rice_mlops.core.handoffs import Approval, Gate
from rice_mlops.core.settings import PipelineSettings


def approval_reason(gate: Gate, require_approval: bool, not_significant: bool = True
                    ) -> str | None:
    """Why a person must approve this release, or None when nobody needs to.

    `not_significant`: ask when the gate says the lead over the champion may be noise."""
    if not gate.passed:
        return None  # nothing will be published anyway
    if require_approval:
        return "this deployment requires approval for every release (RICE_REQUIRE_APPROVAL)"
    if not_significant and gate.significant is False:
        return "the challenger's lead over the champion is not statistically significant"
    return None


def approval_body(gate: Gate, reason: str) -> str:
    def pct(value):
        return "—" if value is None else f"{100 * value:.2f} %"

    return (f"**Why you are asked:** {reason}.\n\n"
            "| | test accuracy |\n|---|---|\n"
            f"| challenger v{gate.version} | {pct(gate.test_accuracy)} |\n"
            f"| champion v{gate.champion_version or '—'} | {pct(gate.champion_accuracy)} |\n\n"
            f"**Gate:** {gate.reason}\n\n"
            "Approve to build, push and promote it; Reject (or no answer in time) ships nothing.")


class ReleaseApproval(ApprovalOperator):
    """Asks only when `approval_reason` says so; a rejection skips its direct downstream."""

    template_fields = (*ApprovalOperator.template_fields, "gate")

    def __init__(self, *, gate, settings: PipelineSettings, **kwargs):
        # Named approvers: Airflow then lets only them answer (is_authorized_hitl_task),
        # whatever role another account holds.
        approvers = [{"id": name, "name": name} for name in settings.approvers]
        super().__init__(subject="Ship the rice classifier?", defaults="Reject",
                         response_timeout=timedelta(minutes=settings.approval_timeout_minutes),
                         assigned_users=approvers or None, **kwargs)
        self.gate = gate
        self.settings = settings

    def checked_gate(self) -> Gate:
        """The rendered `quality_gate` XCom, refused without retry unless it is the `Gate`
        that task writes: a plain value in its place was written by someone else (the REST
        API stores only plain values), and no retry makes it the gate's."""
        if not isinstance(self.gate, Gate):
            raise AirflowFailException(
                f"approve_release takes the quality_gate's Gate, not a "
                f"{type(self.gate).__name__}: that XCom was not written by its task (changed "
                "by hand?); clear quality_gate to write it again")
        return self.gate

    def execute(self, context):
        from rice_mlops.core.run_policy import run_request

        gate = self.checked_gate()
        required = run_request(context["params"], self.settings).require_approval
        reason = approval_reason(gate, required, self.settings.approve_not_significant)
        if reason is None:
            self.log.info("no approval needed for this release")
            return Approval(required=False, approved=True)
        self.subject = f"Ship rice classifier v{gate.version}?"
        self.body = approval_body(gate, reason)
        return super().execute(context)

    def execute_complete(self, context, event):
        from rice_mlops.core import model_registry as registry

        # Recorded before the base class acts on the answer: on Reject it skips the direct
        # downstream by raising, so nothing after it would run.
        chosen = event.get("chosen_options") or []
        approved = chosen == [self.APPROVE]
        user = event.get("responded_by_user") or {}
        responder = (user.get("name") or user.get("id")) if isinstance(user, Mapping) else user
        decision = Approval(required=True, approved=approved,
                            by=str(responder) if responder else None)
        if chosen:
            registry.tag_version(self.checked_gate().version, {
                "rice.approval": "approved" if approved else "rejected",
                "rice.approval_by": str(responder or "nobody (timed out)")})
            context["ti"].xcom_push(key="return_value", value=decision)
        super().execute_complete(context=context, event=event)
        return decision
