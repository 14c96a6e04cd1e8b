"""The Airflow layer: the DAG's task callables, one module per stage (the zone each runs in is
in its docstring), and the Airflow glue they need (assets, connections, the Docker tasks, the
approval operator, the release executor and channel). Only this layer, `operations`, `dags/`
and `plugins/` import Airflow (an import contract).

Each callable takes the deployment's settings, the run's params (checked again by the run
policy), the upstream tasks' results in pipeline order, then Airflow's context values, and
returns the typed result the next tasks need (`rice_mlops.core.handoffs`, through XCom). Nothing
read from XCom or conf is executed; heavy libraries (TensorFlow, MLflow, docker) are imported
inside the functions, so parsing the DAG stays light.
"""

from rice_mlops.stages import (
    admission,
    common,
    data,
    evaluation,
    publication,
    release,
    report,
    serving,
    training,
)

__all__ = ["admission", "common", "data", "evaluation", "publication", "release", "report",
           "serving", "training"]
