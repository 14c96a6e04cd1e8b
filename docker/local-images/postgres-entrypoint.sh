#!/bin/bash
# The official postgres image's first-start behaviour: create the cluster with
# POSTGRES_USER/POSTGRES_PASSWORD/POSTGRES_DB, run /docker-entrypoint-initdb.d/*.sql and *.sh once,
# then serve as the postgres user.
set -euo pipefail
if [[ $(id -u) == 0 ]]; then
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec gosu postgres "$0" "$@"
fi
if [[ ! -s $PGDATA/PG_VERSION ]]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set: the cluster accepts password logins only}"
  user=${POSTGRES_USER:-postgres} db=${POSTGRES_DB:-${POSTGRES_USER:-postgres}}
  initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") --auth-local=trust \
    --auth-host=scram-sha-256 -D "$PGDATA" >/dev/null
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  [[ $db == postgres ]] || psql -v ON_ERROR_STOP=1 --username "$user" --dbname postgres -qc "CREATE DATABASE \"$db\""
  export POSTGRES_USER=$user
  for script in /docker-entrypoint-initdb.d/*; do
    [[ -e $script ]] || continue
    echo "docker-entrypoint: running $script"
    case $script in
      *.sql) psql -v ON_ERROR_STOP=1 --username "$user" --dbname "$db" -q -f "$script" ;;
      *.sh) bash "$script" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
# The cluster listens on the container's network, like the official image.
[[ ${1:-} == postgres ]] && set -- "$@" -c listen_addresses='*'
exec "$@"
