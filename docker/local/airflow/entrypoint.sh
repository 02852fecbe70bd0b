#!/usr/bin/env bash
# /entrypoint of refit-local/airflow, what docker-compose.yaml relies on of the official image's:
#
#   1. wait for Airflow's metadata database (`airflow db check`, CONNECTION_CHECK_MAX_COUNT tries,
#      20 by default, CONNECTION_CHECK_SLEEP_TIME seconds apart, 3 by default; 0 tries: no wait);
#   2. _AIRFLOW_DB_MIGRATE (or _AIRFLOW_DB_UPGRADE) set: `airflow db migrate`;
#   3. `bash …` and `python …` run as given; `airflow …` and anything else run as `airflow …`,
#      the scheduler and Celery commands once the Celery broker accepts connections.
# dumb-init (the image's ENTRYPOINT) runs this as PID 1's child, in a session of its own unless
# DUMB_INIT_SETSID=0. _AIRFLOW_WWW_USER_CREATE and _PIP_ADDITIONAL_REQUIREMENTS are not supported.
set -euo pipefail

CONNECTION_CHECK_MAX_COUNT=${CONNECTION_CHECK_MAX_COUNT:-20}
CONNECTION_CHECK_SLEEP_TIME=${CONNECTION_CHECK_SLEEP_TIME:-3}

retry() {  # retry WHAT COMMAND...: until COMMAND succeeds, CONNECTION_CHECK_MAX_COUNT tries
    local what=$1 attempt=1 output
    shift
    until output=$("$@" 2>&1); do
        if (( attempt >= CONNECTION_CHECK_MAX_COUNT )); then
            printf '%s\n' "$output" >&2
            echo "entrypoint: $what did not answer after $attempt tries" >&2
            exit 1
        fi
        echo "entrypoint: waiting for $what ($attempt/$CONNECTION_CHECK_MAX_COUNT)" >&2
        sleep "$CONNECTION_CHECK_SLEEP_TIME"
        attempt=$((attempt + 1))
    done
}

broker_accepts() {
    python - "$AIRFLOW__CELERY__BROKER_URL" <<'PY'
import socket
import sys
from urllib.parse import urlsplit

url = urlsplit(sys.argv[1])
ports = {"redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671}
socket.create_connection((url.hostname, url.port or ports.get(url.scheme, 6379)), timeout=5).close()
PY
}

for unsupported in _AIRFLOW_WWW_USER_CREATE _PIP_ADDITIONAL_REQUIREMENTS; do
    if [[ -n ${!unsupported:-} ]]; then
        echo "entrypoint: $unsupported is not supported by refit-local/airflow; ignored" >&2
    fi
done

if (( CONNECTION_CHECK_MAX_COUNT > 0 )); then
    retry "Airflow's metadata database" airflow db check
fi
if [[ -n ${_AIRFLOW_DB_MIGRATE:-}${_AIRFLOW_DB_UPGRADE:-} ]]; then
    airflow db migrate
fi

case ${1:-} in
    bash) shift; exec /bin/bash "$@" ;;
    python) shift; exec python "$@" ;;
    airflow) shift ;;
esac
if [[ ${1:-} == scheduler || ${1:-} == celery ]] && (( CONNECTION_CHECK_MAX_COUNT > 0 )) \
        && [[ -n ${AIRFLOW__CELERY__BROKER_URL:-} ]]; then
    retry "the Celery broker" broker_accepts
fi
exec airflow "$@"
