# The Airflow image of the compose stack: the official image with this repository's locked
# requirements and the rice_mlops package (editable, so the Dockerfile and requirements it
# builds serving images from stay beside it in /opt/rice).
FROM apache/airflow:3.3.2-python3.11
USER root
COPY requirements/ /opt/rice/requirements/
COPY pyproject.toml README.md Dockerfile /opt/rice/
COPY include/ /opt/rice/include/
RUN chown -R airflow: /opt/rice
USER airflow
RUN pip install --no-cache-dir -r /opt/rice/requirements/lock.txt \
 && pip install --no-cache-dir --no-deps -e /opt/rice
