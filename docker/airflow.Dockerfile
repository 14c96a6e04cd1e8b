# The Airflow image of the compose stack: the official image with this repository's locked
# requirements and the rice_mlops package (editable, so the Dockerfile and requirements it
# builds serving images from stay beside it in /opt/rice). AIRFLOW_BASE_IMAGE points at a
# mirror of the official image where Docker Hub is out of reach (docker/local-images).
ARG AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_BASE_IMAGE}
USER root
COPY requirements/ /opt/rice/requirements/
# A new named volume takes the ownership of its mount point in the image: airflow-init writes
# the UI passwords, the services their logs and the MLflow server its artifacts without root.
RUN chown -R airflow: /opt/rice \
 && mkdir -p /opt/airflow/secrets /opt/airflow/logs /opt/mlflow/artifacts \
 && chown airflow: /opt/airflow/secrets /opt/airflow/logs /opt/mlflow/artifacts \
 && chmod 700 /opt/airflow/secrets
USER airflow
# The lock alone (no test or lint tools: those are requirements/dev.txt), every file checked
# against its sha256. Before the code: a change to include/ rebuilds only the layers below.
RUN pip install --no-cache-dir --require-hashes -r /opt/rice/requirements/lock.txt
COPY --chown=airflow:0 pyproject.toml README.md Dockerfile /opt/rice/
COPY --chown=airflow:0 include/ /opt/rice/include/
RUN pip install --no-cache-dir --no-deps -e /opt/rice
