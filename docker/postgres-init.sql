-- A second database for the MLflow tracking server, beside Airflow's.
CREATE DATABASE mlflow;
