"""The pipeline's own user on an MLflow server running the `basic-auth` app.

The admin account manages users and nothing else; the pipeline writes with a user of its own
(MANAGE on the experiments and models it creates, READ elsewhere: the server's default), and
people who browse log in with accounts that get READ. Run by `scripts/mlflow-server start` and
the compose stack's `mlflow-users` service; every credential comes from the environment
(`rice_mlops.operations.tool_settings`):

    MLFLOW_TRACKING_URI, MLFLOW_AUTH_ADMIN_USERNAME (admin), MLFLOW_AUTH_ADMIN_PASSWORD,
    MLFLOW_PIPELINE_USERNAME, MLFLOW_PIPELINE_PASSWORD
    python -m rice_mlops.operations.mlflow_auth
"""

from __future__ import annotations

import sys
import time

import httpx

_USERS = "/api/2.0/mlflow/users"


class MlflowAuthError(RuntimeError):
    pass


def ensure_user(url: str, admin: tuple[str, str], username: str, password: str,
                timeout: float = 120.0) -> str:
    """Create `username` with `password`, or set that password if the user exists: a
    re-run converges on what the environment says. Returns "created" or "updated"."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url.rstrip("/"), auth=admin, timeout=30) as client:
        while True:
            try:
                found = client.get(f"{_USERS}/get", params={"username": username})
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise MlflowAuthError(f"MLflow at {url} did not answer") from None
                time.sleep(2)
        if found.status_code == 401:
            raise MlflowAuthError("MLflow refused the admin credentials "
                                  "(MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD)")
        if found.status_code == 200:
            response = client.patch(f"{_USERS}/update-password",
                                    json={"username": username, "password": password})
            outcome = "updated"
        else:
            response = client.post(f"{_USERS}/create",
                                   json={"username": username, "password": password})
            outcome = "created"
        if response.status_code != 200:
            # MLflow's message names the field, never the password.
            raise MlflowAuthError(f"could not set up MLflow user {username!r}: "
                                  f"{response.status_code} {response.text[:300]}")
    return outcome


def main() -> int:
    from rice_mlops.operations.tool_settings import SettingsError, ToolSettings

    try:
        settings = ToolSettings.from_env()
        settings.require_mlflow_users()
    except SettingsError as exc:
        print(f"mlflow-users: {exc}", file=sys.stderr)
        return 2
    admin = (settings.mlflow_admin_username, settings.mlflow_admin_password)
    try:
        outcome = ensure_user(settings.mlflow_tracking_uri, admin,
                              settings.mlflow_pipeline_username,
                              settings.mlflow_pipeline_password)
    except MlflowAuthError as exc:
        print(f"mlflow-users: {exc}", file=sys.stderr)
        return 1
    print(f"mlflow-users: pipeline user {settings.mlflow_pipeline_username!r} {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
