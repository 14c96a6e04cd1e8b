"""Service accounts with the least they need: SimpleAuthManager for people, grants for services.

Airflow 3.3.2's SimpleAuthManager checks a role and nothing else: `user` may PUT every Dag
entity of every Dag (XCom, task instances, approvals that name no assigned user), so it cannot
say "trigger this Dag and nothing more". This auth manager keeps SimpleAuthManager (its logins,
tokens, roles for people) and adds one thing: an account named in RICE_SERVICE_ACCOUNTS is
refused every request except what its grant allows on the pipeline's Dag, whatever its role.

    RICE_SERVICE_ACCOUNTS=webhook=trigger,pipeline=annotate,release=verify
    AIRFLOW__CORE__AUTH_MANAGER=rice_mlops.operations.accounts.ServiceAccountAuthManager

- `trigger`: POST a run of `rice_classifier_cicd` (what the webhook does). Nothing else, not even
  reading it back.
- `annotate`: read `rice_classifier_cicd` and its runs, and write a run's note (what the
  pipeline's own account does for run notes and the newer-push check). Airflow checks a run's
  note, its state, clearing it and the bulk forms of both with one permission (PUT on the
  run), so the auth manager alone cannot tell them apart: `GrantedWritesOnly`, a middleware
  of the API server, lets through only the writes a grant names (here a PATCH of one run with
  `update_mask=note`). It reaches no XCom, task instance, approval, connection, variable, pool
  or other Dag.
- `verify`: read the approval records of `rice_classifier_cicd` (what the release zone's own
  account does before it builds: `rice_mlops.release.approval_check`). It cannot answer one.

Read once when the API server creates its auth manager; an unknown grant name stops it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from urllib.parse import parse_qs

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

from rice_mlops.core.vocabulary import DAG_ID
from rice_mlops.operations.tool_settings import SettingsError, ToolSettings

# grant -> the (method, Dag entity) pairs it allows on DAG_ID; None is the Dag itself.
GRANTS: Mapping[str, frozenset[tuple[str, DagAccessEntity | None]]] = {
    "trigger": frozenset({("POST", DagAccessEntity.RUN)}),
    "annotate": frozenset({("GET", None), ("GET", DagAccessEntity.RUN),
                           ("PUT", DagAccessEntity.RUN)}),
    "verify": frozenset({("GET", DagAccessEntity.HITL_DETAIL)}),
}


# grant -> the writes (any method but GET, HEAD, OPTIONS) its account may send to the public
# API at all: method, path, and the exact set of `update_mask` values (empty: none). Checked
# by GrantedWritesOnly before Airflow's own route and auth manager see the request.
_RUN = rf"/api/v2/dags/{re.escape(DAG_ID)}/dagRuns"
WRITES: Mapping[str, tuple[tuple[str, re.Pattern, frozenset[str]], ...]] = {
    "trigger": (("POST", re.compile(_RUN), frozenset()),),
    "annotate": (("PATCH", re.compile(_RUN + r"/[^/]+"), frozenset({"note"})),),
    "verify": (),
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
log = logging.getLogger(__name__)


def write_allowed(grant: str, method: str, path: str, query: str) -> bool:
    """Whether a service account with `grant` may send this write (see WRITES)."""
    masks = frozenset(parse_qs(query, keep_blank_values=True).get("update_mask", []))
    return any(method == allowed and pattern.fullmatch(path) and masks == mask
               for allowed, pattern, mask in WRITES[grant])


def parse_service_accounts(value: str) -> dict[str, str]:
    """`name=grant,...` -> {name: grant}; an unknown grant or a malformed entry is refused."""
    accounts: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in value.split(","))):
        name, sep, grant = (piece.strip() for piece in entry.partition("="))
        if not sep or not name or grant not in GRANTS:
            raise SettingsError("RICE_SERVICE_ACCOUNTS",
                                f"RICE_SERVICE_ACCOUNTS: {entry!r} is not name=grant",
                                f"comma-separated name=grant, a grant one of {sorted(GRANTS)}")
        accounts[name] = grant
    return accounts


class ServiceAccountAuthManager(SimpleAuthManager):
    """SimpleAuthManager, with the accounts of RICE_SERVICE_ACCOUNTS held to their grants."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.service_accounts = parse_service_accounts(ToolSettings.from_env().service_accounts)

    def _grant(self, user) -> frozenset | None:
        """The grant of a service account; None for a person (SimpleAuthManager decides)."""
        grant = self.service_accounts.get(getattr(user, "username", None))
        return None if grant is None else GRANTS[grant]

    def is_authorized_dag(self, *, method, user, access_entity=None, details=None) -> bool:
        grant = self._grant(user)
        if grant is None:
            return super().is_authorized_dag(method=method, user=user,
                                             access_entity=access_entity, details=details)
        return (details is not None and details.id == DAG_ID
                and (method, access_entity) in grant)

    # Everything else a service account might ask for is refused. Every is_authorized_* of
    # the base class is listed (tests/unit/test_accounts.py fails when Airflow adds one).
    def is_authorized_configuration(self, *, method, user, details=None) -> bool:
        return self._grant(user) is None and super().is_authorized_configuration(
            method=method, user=user, details=details)

    def is_authorized_connection(self, *, method, user, details=None) -> bool:
        return self._grant(user) is None and super().is_authorized_connection(
            method=method, user=user, details=details)

    def is_authorized_asset(self, *, method, user, details=None) -> bool:
        return self._grant(user) is None and super().is_authorized_asset(
            method=method, user=user, details=details)

    def is_authorized_asset_alias(self, *, method, user, details=None) -> bool:
        return self._grant(user) is None and super().is_authorized_asset_alias(
            method=method, user=user, details=details)

    def is_authorized_pool(self, *, method, user, details=None) -> bool:
        return self._grant(user) is None and super().is_authorized_pool(
            method=method, user=user, details=details)

    def is_authorized_team(self, *, method, user, details=None) -> bool:
        return self._grant(user) is None and super().is_authorized_team(
            method=method, user=user, details=details)

    def is_authorized_variable(self, *, method, user, details=None) -> bool:
        return self._grant(user) is None and super().is_authorized_variable(
            method=method, user=user, details=details)

    def is_authorized_view(self, *, access_view, user) -> bool:
        return self._grant(user) is None and super().is_authorized_view(
            access_view=access_view, user=user)

    def is_authorized_custom_view(self, *, method, resource_name, user) -> bool:
        return self._grant(user) is None and super().is_authorized_custom_view(
            method=method, resource_name=resource_name, user=user)

    def is_authorized_hitl_task(self, *, assigned_users, user) -> bool:
        return self._grant(user) is None and super().is_authorized_hitl_task(
            assigned_users=assigned_users, user=user)

    def filter_authorized_menu_items(self, menu_items, *, user):
        if self._grant(user) is not None:
            return []
        return super().filter_authorized_menu_items(menu_items, user=user)


class GrantedWritesOnly:
    """ASGI middleware of the API server: a write to the public API sent with a service
    account's token (the Bearer header or the UI's cookie, each one presented) must be one its
    grant names in WRITES, or it is refused with 403 before any route runs.

    Needed because Airflow authorizes a run's note, its state and clearing it with the same
    permission; the auth manager still decides everything else. A token that is not valid is
    left to Airflow, which refuses it. Reads and everything outside /api/v2 pass untouched.
    """

    def __init__(self, app, accounts: Mapping[str, str] | None = None) -> None:
        self.app = app
        self.accounts = (parse_service_accounts(ToolSettings.from_env().service_accounts)
                         if accounts is None else dict(accounts))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or not self.accounts:
            return await self.app(scope, receive, send)
        # Behind a base URL with a path ([api] base_url), the routes are under root_path.
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        if not path.startswith("/api/v2/"):
            return await self.app(scope, receive, send)
        query = scope.get("query_string", b"").decode("latin-1")
        for name in await self._service_accounts(scope):
            if not write_allowed(self.accounts[name], scope["method"], path, query):
                log.warning("refused %s %s for service account %r (grant %s)", scope["method"],
                            path[:200], name, self.accounts[name])
                from starlette.responses import JSONResponse

                refused = JSONResponse({"detail": f"service account {name!r} (grant "
                                                  f"{self.accounts[name]!r}) may not "
                                                  f"{scope['method']} {path[:200]}"},
                                       status_code=403)
                return await refused(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _service_accounts(self, scope) -> list[str]:
        """The service accounts whose valid tokens the request presents."""
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
        from jwt import InvalidTokenError
        from starlette.requests import Request

        request = Request(scope)
        tokens = []
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            tokens.append(credentials.strip())
        if cookie := request.cookies.get(COOKIE_NAME_JWT_TOKEN):
            tokens.append(cookie)
        names = []
        for token in tokens:
            try:
                user = await get_auth_manager().get_user_from_token(token)
            except (InvalidTokenError, ValueError, KeyError):
                continue
            if (name := getattr(user, "username", None)) in self.accounts:
                names.append(name)
        return names

