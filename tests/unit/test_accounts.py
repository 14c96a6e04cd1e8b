"""Service accounts held to their grants (rice_mlops.operations.accounts): the webhook may trigger
the pipeline's Dag and nothing else; people keep SimpleAuthManager's roles."""

from __future__ import annotations

import inspect

import pytest
from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
from airflow.api_fastapi.auth.managers.models.resource_details import (
    AccessView,
    ConnectionDetails,
    DagAccessEntity,
    DagDetails,
    VariableDetails,
)
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

from rice_mlops.operations.accounts import DAG_ID, ServiceAccountAuthManager, parse_service_accounts

OURS = DagDetails(id=DAG_ID)
OTHER = DagDetails(id="someone_elses_dag")
METHODS = ("GET", "POST", "PUT", "DELETE")


@pytest.fixture
def manager(monkeypatch):
    monkeypatch.setenv("RICE_SERVICE_ACCOUNTS",
                       "webhook=trigger, pipeline=annotate, release=verify")
    return ServiceAccountAuthManager()


def _user(name: str, role: str = "user") -> SimpleAuthManagerUser:
    return SimpleAuthManagerUser(username=name, role=role)


def _allowed_on_dags(manager, user) -> set[tuple[str, str, DagAccessEntity | None]]:
    return {(details.id, method, entity)
            for details in (OURS, OTHER) for method in METHODS
            for entity in (None, *DagAccessEntity)
            if manager.is_authorized_dag(method=method, user=user, access_entity=entity,
                                         details=details)}


@pytest.mark.parametrize("role", ["viewer", "user", "op", "admin"])
def test_the_webhook_may_trigger_this_dag_and_nothing_else(manager, role):
    """Whatever role it was given, the webhook's token creates runs of this Dag: no XCom PATCH,
    no approval answer, no other Dag, not even a read."""
    webhook = _user("webhook", role)
    assert _allowed_on_dags(manager, webhook) == {(DAG_ID, "POST", DagAccessEntity.RUN)}
    assert not manager.is_authorized_hitl_task(assigned_users=set(), user=webhook)
    assert not manager.is_authorized_hitl_task(assigned_users={"webhook"}, user=webhook)
    for method in METHODS:
        assert not manager.is_authorized_connection(method=method, user=webhook,
                                                    details=ConnectionDetails(conn_id="x"))
        assert not manager.is_authorized_variable(method=method, user=webhook,
                                                  details=VariableDetails(key="x"))
        assert not manager.is_authorized_pool(method=method, user=webhook)
        assert not manager.is_authorized_asset(method=method, user=webhook)
        assert not manager.is_authorized_asset_alias(method=method, user=webhook)
        assert not manager.is_authorized_configuration(method=method, user=webhook)
        assert not manager.is_authorized_custom_view(method=method, resource_name="x",
                                                     user=webhook)
    assert not any(manager.is_authorized_view(access_view=view, user=webhook)
                   for view in AccessView)
    assert manager.filter_authorized_menu_items([object()], user=webhook) == []
    # The base class's batch and listing helpers go through the same checks.
    assert manager.filter_authorized_dag_ids(dag_ids={DAG_ID, "x"}, user=webhook) == set()
    assert manager.batch_is_authorized_dag(
        [{"method": "POST", "access_entity": DagAccessEntity.RUN, "details": OURS}],
        user=webhook)
    assert not manager.batch_is_authorized_dag(
        [{"method": "PUT", "access_entity": DagAccessEntity.XCOM, "details": OURS}],
        user=webhook)


def test_the_pipeline_account_reads_and_annotates_this_dags_runs_only(manager):
    allowed = _allowed_on_dags(manager, _user("pipeline"))
    assert allowed == {(DAG_ID, "GET", None), (DAG_ID, "GET", DagAccessEntity.RUN),
                       (DAG_ID, "PUT", DagAccessEntity.RUN)}
    assert not manager.is_authorized_hitl_task(assigned_users=set(), user=_user("pipeline"))


def test_people_keep_simple_auth_managers_roles(manager):
    """The same answers as SimpleAuthManager for every account not named a service account."""
    plain = SimpleAuthManager()
    for name, role in (("admin", "admin"), ("ana", "user"), ("vic", "viewer")):
        person = _user(name, role)
        assert _allowed_on_dags(manager, person) == _allowed_on_dags(plain, person), name
        assert manager.is_authorized_connection(method="PUT", user=person) == \
            plain.is_authorized_connection(method="PUT", user=person)
    assert (DAG_ID, "PUT", DagAccessEntity.XCOM) in _allowed_on_dags(manager, _user("ana"))


def test_every_authorization_hook_is_held(manager):
    """A new is_authorized_* in a later Airflow must be reviewed here, not inherited open."""
    hooks = {name for name in dir(BaseAuthManager) if name.startswith("is_authorized_")}
    assert hooks <= set(vars(ServiceAccountAuthManager)), hooks - set(
        vars(ServiceAccountAuthManager))
    for name in hooks:
        ours = inspect.signature(getattr(ServiceAccountAuthManager, name)).parameters
        theirs = inspect.signature(getattr(SimpleAuthManager, name)).parameters
        assert list(ours) == list(theirs), name
    # Nothing else in SimpleAuthManager answers an authorization question by itself.
    own = {name for name in vars(SimpleAuthManager)
           if name.startswith(("batch_is_authorized", "get_authorized", "filter_authorized"))}
    assert own == {"filter_authorized_menu_items"}


@pytest.mark.parametrize("value", ["webhook", "webhook=admin", "=trigger", "webhook=trigger,x"])
def test_a_malformed_grant_is_refused(value):
    with pytest.raises(ValueError, match="RICE_SERVICE_ACCOUNTS"):
        parse_service_accounts(value)


def test_no_service_accounts_is_plain_simple_auth_manager(monkeypatch):
    monkeypatch.delenv("RICE_SERVICE_ACCOUNTS", raising=False)
    manager = ServiceAccountAuthManager()
    assert manager.service_accounts == {}
    assert (DAG_ID, "PUT", DagAccessEntity.XCOM) in _allowed_on_dags(manager, _user("webhook"))


@pytest.mark.parametrize("role", ["viewer", "admin"])
def test_the_release_account_may_read_approvals_and_answer_none(manager, role):
    """Issue 35: the release zone's own account reads who answered approve_release; it cannot
    answer, read XCom, or touch another Dag, whatever its role."""
    release = _user("release", role)
    assert _allowed_on_dags(manager, release) == {(DAG_ID, "GET", DagAccessEntity.HITL_DETAIL)}
    assert not manager.is_authorized_hitl_task(assigned_users={"release"}, user=release)
    assert not manager.is_authorized_variable(method="GET", user=release,
                                              details=VariableDetails(key="x"))
