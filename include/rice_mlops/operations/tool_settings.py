"""The settings of the command line and the service helpers, read with the package's readers.

`rice-mlops image verify` (`REGISTRY_USERNAME`, `REGISTRY_PASSWORD`), the compose stack's
`mlflow-users` service (`rice_mlops.operations.mlflow_auth`: `MLFLOW_*`) and the API server's auth
manager (`rice_mlops.operations.accounts`: `RICE_SERVICE_ACCOUNTS`), the Airflow processes that
fork tasks (`rice_mlops.operations.preload`: `RICE_PRELOAD`) and a remote worker's check of its
broker (`rice_mlops.operations.broker_check`: `RICE_BROKER_WAIT_SECONDS`). `rice-mlops webhook
send` and the demo sign with `GITHUB_WEBHOOK_SECRET`, the webhook's own variable (catalogued with
`rice_mlops.ingress.settings`), read with the same `readers.secret`.
Each variable is described once in `rice_mlops.operations.settings_catalog`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from rice_mlops.core import readers as read
from rice_mlops.core.readers import SettingsError

# What the pipeline's task callables import, heaviest first.
TASK_LIBRARIES = (
    "mlflow",
    "mlflow.tracking",
    "docker",
    "airflow.providers.docker.operators.docker",
    "rice_mlops.core.model_registry",
    "rice_mlops.stages",
)


def module_names(value: str) -> tuple[str, ...]:
    """RICE_PRELOAD's value (what `rice_mlops.operations.preload` imports): `none` for nothing, or
    module names separated by commas; ValueError for a name that is not a dotted Python
    identifier."""
    if value.lower() in ("none", "false", "0", "no"):
        return ()
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if not names or not all(part.isidentifier() for name in names for part in name.split(".")):
        raise ValueError(value)
    return names


@dataclass(frozen=True)
class ToolSettings:
    # Credentials come from the environment only: never the command line (ps, shell history).
    registry_username: str = ""
    registry_password: str = ""
    service_accounts: str = ""  # name=grant,...; parsed by rice_mlops.operations.accounts
    mlflow_tracking_uri: str = ""
    mlflow_admin_username: str = "admin"
    mlflow_admin_password: str = ""
    mlflow_pipeline_username: str = ""
    mlflow_pipeline_password: str = ""
    # imported before tasks fork (rice_mlops.operations.preload)
    preload: tuple[str, ...] = TASK_LIBRARIES
    # for an unreachable broker (rice_mlops.operations.broker_check)
    broker_wait_seconds: float = 120.0

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
