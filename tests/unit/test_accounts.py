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


# The writes a grant names, before Airflow's routes: the auth manager sees "PUT on a run" for a
# note, a state and a clearing alike.
RUN = f"/api/v2/dags/{DAG_ID}/dagRuns/manual__2026-12-07T21:00:00+00:00"


@pytest.mark.parametrize(("grant", "method", "path", "query", "allowed"), [
    ("annotate", "PATCH", RUN, "update_mask=note", True),
    ("annotate", "PATCH", RUN, "", False),  # no mask: the body's state would apply too
    ("annotate", "PATCH", RUN, "update_mask=state", False),
    ("annotate", "PATCH", RUN, "update_mask=note&update_mask=state", False),
    ("annotate", "PATCH", RUN, "update_mask=note,state", False),
    ("annotate", "POST", RUN + "/clear", "", False),
    ("annotate", "PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns", "", False),  # bulk
    ("annotate", "POST", f"/api/v2/dags/{DAG_ID}/clearDagRuns", "", False),
    ("annotate", "DELETE", RUN, "", False),
    ("annotate", "PATCH", "/api/v2/dags/other_dag/dagRuns/x", "update_mask=note", False),
    ("annotate", "PATCH", RUN + "/taskInstances/train", "update_mask=note", False),
    ("trigger", "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", "", True),
    ("trigger", "POST", RUN + "/clear", "", False),
    ("trigger", "PATCH", RUN, "update_mask=note", False),
    ("verify", "PATCH", RUN, "update_mask=note", False),
])
def test_a_grant_names_its_writes_exactly(grant, method, path, query, allowed):
    from rice_mlops.operations.accounts import write_allowed

    assert write_allowed(grant, method, path, query) is allowed


def _through_middleware(monkeypatch, method, path, query="", headers=(), user="pipeline",
                        root_path=""):
    """One request through GrantedWritesOnly in front of an app that records what reached it;
    the auth manager's token check answers `user` for the token "valid" and refuses others."""
    import asyncio

    from jwt import InvalidTokenError

    from rice_mlops.operations.accounts import GrantedWritesOnly

    class Manager:
        async def get_user_from_token(self, token):
            if token != "valid":
                raise InvalidTokenError("bad signature")
            return _user(user)

    monkeypatch.setattr("airflow.api_fastapi.app.get_auth_manager", lambda: Manager())
    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append((scope["method"], scope["path"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    middleware = GrantedWritesOnly(app, {"pipeline": "annotate", "webhook": "trigger"})
    scope = {"type": "http", "method": method, "path": root_path + path,
             "root_path": root_path, "query_string": query.encode(),
             "headers": [(k.encode(), v.encode()) for k, v in headers]}
    asyncio.run(middleware(scope, receive, send))
    return reached, sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize("headers", [[("authorization", "Bearer valid")],
                                     [("cookie", "_token=valid")],
                                     [("authorization", "Bearer nonsense"),
                                      ("cookie", "_token=valid")]])
def test_the_pipelines_token_may_write_a_note_and_not_a_state(monkeypatch, headers):
    reached, status, _ = _through_middleware(monkeypatch, "PATCH", RUN, "update_mask=note",
                                             headers)
    assert status == 200 and reached == [("PATCH", RUN)]
    reached, status, body = _through_middleware(monkeypatch, "POST", RUN + "/clear", "",
                                                headers)
    assert status == 403 and reached == []
    assert b"service account 'pipeline' (grant 'annotate') may not POST" in body


def test_people_invalid_tokens_and_reads_pass_to_airflow(monkeypatch):
    clear = RUN + "/clear"
    for kwargs in ({"user": "ana"},  # a person: Airflow's roles decide
                   {"headers": [("authorization", "Bearer forged")]},  # Airflow refuses it
                   {"method": "GET"}):
        method = kwargs.pop("method", "POST")
        headers = kwargs.pop("headers", [("authorization", "Bearer valid")])
        reached, status, _ = _through_middleware(monkeypatch, method, clear, "", headers,
                                                 **kwargs)
        assert status == 200 and reached == [(method, clear)], kwargs
    # Outside the public API (the webhook, the execution API, the UI's pages): untouched.
    reached, status, _ = _through_middleware(monkeypatch, "POST", "/webhooks/github", "",
                                             [("authorization", "Bearer valid")])
    assert status == 200 and reached


def test_behind_a_base_url_path_the_same_writes_are_refused(monkeypatch):
    """Airflow served under /airflow ([api] base_url): the routes' paths start with it."""
    bearer = [("authorization", "Bearer valid")]
    reached, status, _ = _through_middleware(monkeypatch, "POST", RUN + "/clear", "", bearer,
                                             root_path="/airflow")
    assert status == 403 and reached == []
    reached, status, _ = _through_middleware(monkeypatch, "PATCH", RUN, "update_mask=note",
                                             bearer, root_path="/airflow")
    assert status == 200 and reached
