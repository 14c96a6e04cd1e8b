"""Airflow's local-settings hook, imported by every Airflow process as it starts: the processes
that fork task processes import the tasks' libraries first (`rice_mlops.operations.preload`)."""

import sys

from rice_mlops.operations.preload import preload

# Airflow copies every public name of this module into airflow.settings: export none.
__all__: list[str] = []


def _executor() -> str:
    from airflow.configuration import conf

    return conf.get("core", "executor")


preload(sys.argv, _executor)
