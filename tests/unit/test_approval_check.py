"""The release zone's own look at approve_release (issue 35): an approval counts only when
Airflow recorded a person of RICE_APPROVERS choosing Approve; an answer written with a task's
token names nobody, and a run that requires approval must have asked."""

from __future__ import annotations

import pytest

from rice_mlops.release.approval_check import approval_refusal


def _detail(chosen=("Approve",), by=("admin", "admin"), received=True) -> dict:
    return {"options": ["Approve", "Reject"], "subject": "Ship?", "response_received": received,
            "chosen_options": list(chosen) if chosen is not None else None,
            "responded_by_user": {"id": by[0], "name": by[1]} if by else None}


@pytest.mark.parametrize("detail, required, approvers", [
    (None, False, ("admin",)),  # nobody asked, nothing requires it
    (_detail(), True, ("admin",)),
    (_detail(by=("alice", "Alice")), False, ("admin", "alice")),
    (_detail(by=("bob", "Bob")), True, ()),  # no list: any person Airflow named
])
def test_an_approval_a_person_gave_lets_the_release_go_on(detail, required, approvers):
    assert approval_refusal(detail, required, approvers) is None


@pytest.mark.parametrize("detail, required, expected", [
    (None, True, "asked nobody"),
    (_detail(by=None), False, "answered with a task's token"),
    (_detail(by=("", "")), False, "answered with a task's token"),
    (_detail(by=("mallory", "Mallory")), False, "'mallory', who is not one of RICE_APPROVERS"),
    (_detail(chosen=("Reject",)), False, "not approved (answer: ['Reject'])"),
    (_detail(chosen=("Approve", "Reject")), False, "not approved"),
    (_detail(chosen=None, by=None, received=False), False, "not approved (answer: none)"),
    (_detail(received=False), False, "not approved"),
])
def test_anything_else_builds_nothing(detail, required, expected):
    reason = approval_refusal(detail, required, ("admin",))
    assert reason and expected in reason, reason
