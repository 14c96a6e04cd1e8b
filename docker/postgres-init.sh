#!/bin/bash
# First start of the compose stack's PostgreSQL: a role and a database for Airflow, and for
# MLflow (its tracking store and its basic-auth users), none of them a superuser, each role able
# to connect only to its own databases. Passwords come from the environment through psql's
# \getenv, so they appear in no command line and need no quoting here.
set -euo pipefail
: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD must be set}" "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD must be set}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres -q <<'SQL'
\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD
CREATE ROLE airflow LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'airflow_password';
CREATE ROLE mlflow LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'mlflow_password';
CREATE DATABASE airflow OWNER airflow;
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
-- PUBLIC may connect to every new database by default: only the owner may here.
REVOKE ALL ON DATABASE airflow, mlflow, mlflow_auth FROM PUBLIC;
SQL
