#!/usr/bin/env bash
# The entrypoint of refit-local/postgres:15: what docker-compose.yaml relies on of the official
# postgres image's entrypoint, for Debian's PostgreSQL 15.
#
#   - started as root, it gives PGDATA and the socket folder to the postgres user and re-runs
#     itself as that user;
#   - on an empty PGDATA: initdb with POSTGRES_USER (default postgres) and POSTGRES_PASSWORD
#     (required), trust on the local socket, scram-sha-256 passwords for every TCP client; the
#     database POSTGRES_DB when it is not `postgres`; then every /docker-entrypoint-initdb.d/*.sh
#     (run when executable, sourced otherwise) and *.sql, with POSTGRES_USER and the container's
#     environment, against a server that listens on the socket only (so a TCP health check says
#     "not ready" until they are done);
#   - then `postgres` in the foreground, listening on every address, with any extra arguments.
# Any command other than `postgres` (or its options) runs as given.
set -Eeuo pipefail

if [[ ${1:-} == -* ]]; then
    set -- postgres "$@"
fi
if [[ ${1:-} != postgres ]]; then
    exec "$@"
fi

if [[ $(id -u) == 0 ]]; then
    # A fresh named volume, or a bind mount, may come owned by root.
    install -d -o postgres -g postgres -m 700 "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

export POSTGRES_USER=${POSTGRES_USER:-postgres}
export POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}

if [[ ! -s $PGDATA/PG_VERSION ]]; then
    if [[ -z ${POSTGRES_PASSWORD:-} ]]; then
        echo "docker-entrypoint.sh: the database is not initialised and POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    echo "docker-entrypoint.sh: initialising $PGDATA for $POSTGRES_USER"
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of options, as in the official image
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 \
        ${POSTGRES_INITDB_ARGS:-} >/dev/null
    printf '\n# Every other host, with a password (refit-local/postgres).\nhost all all all scram-sha-256\n' \
        >>"$PGDATA/pg_hba.conf"

    pg_ctl --pgdata="$PGDATA" --options="-c listen_addresses=''" --wait --silent start
    psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres)
    if [[ $POSTGRES_DB != postgres ]]; then
        "${psql[@]}" -v db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    shopt -s nullglob
    for script in /docker-entrypoint-initdb.d/*; do
        case $script in
            *.sh)
                echo "docker-entrypoint.sh: running $script"
                if [[ -x $script ]]; then
                    "$script"
                else
                    # shellcheck disable=SC1090
                    . "$script"
                fi
                ;;
            *.sql)
                echo "docker-entrypoint.sh: running $script"
                "${psql[@]}" --dbname "$POSTGRES_DB" -f "$script"
                ;;
            *) echo "docker-entrypoint.sh: ignoring $script" ;;
        esac
    done
    pg_ctl --pgdata="$PGDATA" --mode=fast --wait --silent stop
    echo "docker-entrypoint.sh: initialised; starting the server"
fi

shift
exec postgres -c listen_addresses='*' "$@"
