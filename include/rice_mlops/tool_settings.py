"""The settings of the command line and the service helpers, read with the package's readers.

`rice-mlops image verify` (`REGISTRY_USERNAME`, `REGISTRY_PASSWORD`), the compose stack's
`mlflow-users` service (`rice_mlops.mlflow_auth`: `MLFLOW_*`) and the API server's auth
manager (`rice_mlops.accounts`: `RICE_SERVICE_ACCOUNTS`), the Airflow processes that
fork tasks (`rice_mlops.preload`: `RICE_PRELOAD`) and a remote worker's check of its broker
(`rice_mlops.broker_check`: `RICE_BROKER_WAIT_SECONDS`). `rice-mlops webhook send` and the
demo sign with `GITHUB_WEBHOOK_SECRET`, the webhook's own variable (catalogued with
`rice_mlops.webhook.settings`), read with the same `readers.secret`.
Each variable is described once in `rice_mlops.settings_catalog`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from rice_mlops import readers as read
from rice_mlops.preload import TASK_LIBRARIES, module_names
from rice_mlops.readers import SettingsError


@dataclass(frozen=True)
class ToolSettings:
    # Credentials come from the environment only: never the command line (ps, shell history).
    registry_username: str = ""
    registry_password: str = ""
    service_accounts: str = ""  # name=grant,...; parsed by rice_mlops.accounts
    mlflow_tracking_uri: str = ""
    mlflow_admin_username: str = "admin"
    mlflow_admin_password: str = ""
    mlflow_pipeline_username: str = ""
    mlflow_pipeline_password: str = ""
    preload: tuple[str, ...] = TASK_LIBRARIES  # imported before tasks fork (rice_mlops.preload)
    broker_wait_seconds: float = 120.0  # for an unreachable broker (rice_mlops.broker_check)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ToolSettings:
        env = os.environ if env is None else env
        return cls(
            registry_username=read.text(env, "REGISTRY_USERNAME"),
            registry_password=read.secret(env, "REGISTRY_PASSWORD") or "",
            service_accounts=read.text(env, "RICE_SERVICE_ACCOUNTS"),
            mlflow_tracking_uri=read.text(env, "MLFLOW_TRACKING_URI"),
            mlflow_admin_username=read.text(env, "MLFLOW_AUTH_ADMIN_USERNAME",
                                            cls.mlflow_admin_username),
            mlflow_admin_password=read.secret(env, "MLFLOW_AUTH_ADMIN_PASSWORD") or "",
            mlflow_pipeline_username=read.text(env, "MLFLOW_PIPELINE_USERNAME"),
            mlflow_pipeline_password=read.secret(env, "MLFLOW_PIPELINE_PASSWORD") or "",
            preload=read.parsed(env, "RICE_PRELOAD", cls.preload, module_names,
                                "module names", "comma-separated module names, or `none`"),
            broker_wait_seconds=read.number(env, "RICE_BROKER_WAIT_SECONDS",
                                            cls.broker_wait_seconds, above=True),
        )

    def require_mlflow_users(self) -> None:
        """What `mlflow-users` cannot run without, refused with every missing variable named."""
        missing = [name for name, value in (
            ("MLFLOW_TRACKING_URI", self.mlflow_tracking_uri),
            ("MLFLOW_AUTH_ADMIN_PASSWORD", self.mlflow_admin_password),
            ("MLFLOW_PIPELINE_USERNAME", self.mlflow_pipeline_username),
            ("MLFLOW_PIPELINE_PASSWORD", self.mlflow_pipeline_password)) if not value]
        if missing:
            raise SettingsError(missing[0], f"{', '.join(missing)} not set", "",
                                f"set {', '.join(missing)}")
