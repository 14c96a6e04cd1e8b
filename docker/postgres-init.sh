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
# Logins over TCP only from PostgreSQL's own network (samenet: the subnets it is attached to, in
# compose `metadata` alone), not from anywhere a route leads: Docker isolates networks with
# iptables rules, and an engine run with --iptables=false (as on the CI machine) routes between
# them. A worker holding the airflow role's password still gets "no pg_hba.conf entry".
hba=$PGDATA/pg_hba.conf
grep -Ev '^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+(all|0\.0\.0\.0/0|::/0)[[:space:]]' \
  "$hba" >"$hba.new"
printf 'host all all samenet scram-sha-256\n' >>"$hba.new"
mv "$hba.new" "$hba"
