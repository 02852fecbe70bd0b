#!/bin/sh
# The entrypoint of refit-local/s3:moto: MinIO's command line, `server DIR... [--address ADDR]
# [--console-address ADDR]`, served by moto's S3 server (serve.py). The S3 API listens on
# --address (":9000" by default, MinIO's); the first folder keeps the objects across restarts,
# as MinIO's volume does; the console address is accepted and ignored (moto has no console).
# Any other command runs as given.
set -eu

if [ "${1:-}" != server ]; then
    exec "$@"
fi
shift
address=:9000
data=
while [ $# -gt 0 ]; do
    case $1 in
        --address) address=${2:?--address needs a value}; shift 2 ;;
        --address=*) address=${1#*=}; shift ;;
        --console-address) echo "s3-server: no console (moto); ignoring --console-address ${2:-}"; shift $(( $# > 1 ? 2 : 1 )) ;;
        --console-address=*) echo "s3-server: no console (moto); ignoring $1"; shift ;;
        -*) echo "s3-server: ignoring MinIO option $1"; shift ;;
        *) if [ -z "$data" ]; then data=$1; else echo "s3-server: one folder only; $1 is not used"; fi; shift ;;
    esac
done
host=${address%:*}
port=${address##*:}
exec python /usr/local/lib/s3-server/serve.py --data "${data:-/data}" --host "${host:-0.0.0.0}" --port "$port"
