"""The pipeline DAG run by Airflow's own `dag.test()` loop on a throw-away SQLite metadata
database, with each stage's work replaced by a scenario's result or failure: what state the
run ends in, decided by Airflow's scheduling rules (trigger rules, retries, teardowns), not by
a copy of them. Run in a fresh interpreter (`python -m tests.helpers.dag_run_states SCENARIO`,
with AIRFLOW_HOME set), since Airflow reads its configuration once per process; it prints one
JSON line: the run's state, each task's state and try number, and the report's note.
"""

from __future__ import annotations

import json
import sys

from rice_mlops.core import handoffs as h

DATASET = h.Dataset(data_dir="/tmp/rice", fingerprint="sha256:" + "d" * 64,
                    classes=("Arborio", "Basmati"), counts={"train": {"Arborio": 1}})
FRESH = h.Freshness(train=True, code_digest="sha256:" + "c" * 64, reason="changed")


def _crash(*args, **kwargs):
    raise RuntimeError("the training process died (injected by the scenario)")


def _returns(value):
    return lambda *args, **kwargs: value


SCENARIOS = {
    # train raises on every try: retried (RICE_RETRY_DELAY_SECONDS), then failed for good
    "train_crashes": {"stages.training.train": _crash},
    # started by an event nobody trusts: everything after `admitted` is skipped, yet no
    # decision was taken, so the run is red
    "not_admitted": {"stages.admission.admit": _returns(
        h.Admission(proceed=False, refused="started by a rice_drift event nobody trusts"))},
}
COMMON = {"stages.admission.admit": _returns(h.Admission(proceed=True)),
          "stages.data.validate_data": _returns(DATASET),
          "stages.admission.check_changed": _returns(FRESH)}


def run(scenario: str) -> dict:
    from airflow.dag_processing.dagbag import DagBag

    import rice_mlops.stages as stages
    from rice_mlops.core.vocabulary import DAG_ID
    from rice_mlops.stages import report
    from tests.helpers.paths import REPO

    notes: list[str] = []
    report.write_note = lambda settings, dag_id, run_id, note: notes.append(note)
    for dotted, replacement in {**COMMON, **SCENARIOS[scenario]}.items():
        module, name = dotted.removeprefix("stages.").split(".")
        setattr(getattr(stages, module), name, replacement)
    dag = DagBag(str(REPO / "dags" / "rice_classifier_cicd.py")).dags[DAG_ID]
    dag_run = dag.test()
    tis = {ti.task_id: {"state": str(ti.state), "try_number": ti.try_number}
           for ti in dag_run.get_task_instances()}
    return {"state": str(dag_run.state), "tasks": tis, "notes": notes}


if __name__ == "__main__":
    print("RESULT " + json.dumps(run(sys.argv[1])), flush=True)
