#!/usr/bin/env bash
# Builds every image of the deployed stack on a Docker host that cannot pull from any registry
# and whose builds have no network, from what this host can download itself:
#
#   1. wheelhouse  every Python package the images install, as wheels in docker/wheelhouse/
#                  (this host's pip, requirements.lock as constraints); the Dockerfiles install
#                  from it with --no-index when it holds wheels, and from PyPI when it is empty.
#   2. bases       Debian bookworm made by debootstrap on this host and imported (docker import):
#                  refit-local/bookworm:minbase, and richer ones (refit-local/debian:*) whose
#                  Debian packages are installed in the chroot before import, since builds
#                  cannot reach a mirror (BASES below says what each holds and why).
#   3. local       stand-ins for the upstream images docker-compose.yaml names (docker/local/*/):
#                  refit-local/python:3.11, refit-local/airflow:3.3.2-python3.11,
#                  refit-local/postgres:15, refit-local/redis:7, refit-local/s3:moto,
#                  refit-local/socket-proxy:haproxy.
#   4. project     refit-airflow, refit-mlflow and refit-trainer (CPU torch) from the project's own
#                  Dockerfiles, unchanged, with their base-image build arguments pointed at the
#                  stand-ins and `--network none`.
#
#   docker/local/build.sh                  # from anywhere; every step, each cached
#   docker/local/build.sh local project    # only these steps (their inputs must exist)
#   REFIT_REBUILD=1 docker/local/build.sh  # ignore every cache (or name steps: REFIT_REBUILD=bases,local)
#
# Needs root (debootstrap, chroot), debootstrap, a Docker Engine that answers, CPython 3.11 (at
# least 3.11.5) on this host (the .venv's base interpreter by default), and network from this
# host to deb.debian.org and PyPI (only when a cache is cold). Each step prints its wall time; the
# end lists the images' sizes. Caches: docker/wheelhouse/.stamp (the lock and the package lists
# below), a recipe label on each base image (the code that makes it), and Docker's layer cache.
# Nothing here is used by users' builds: the Dockerfiles' defaults remain the upstream images.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

HOST_PIP=${REFIT_HOST_PIP:-$ROOT/.venv/bin/pip}
DEBIAN_MIRROR=${REFIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SUITE=bookworm
# debootstrap's tree is kept here between runs: the richer bases start from a copy of it.
CACHE_DIR=${REFIT_LOCAL_CACHE:-/var/tmp/refit-local}
WHEELHOUSE=docker/wheelhouse
REBUILD=${REFIT_REBUILD:-0}
# The legacy builder: this engine has no BuildKit, and the stand-ins are referenced by local tag.
export DOCKER_BUILDKIT=0

# What the images pip-install, for the wheelhouse. Keep in step with the `pip install` lines of
# docker/*/Dockerfile and docker/local/*/Dockerfile: a package missing here fails that build
# (no index) with pip naming it.
AIRFLOW_PACKAGES=(  # refit-local/airflow: what the official image brings that the stack uses
    "apache-airflow==3.3.2" apache-airflow-providers-celery apache-airflow-providers-fab
    apache-airflow-providers-postgres apache-airflow-providers-amazon apache-airflow-providers-docker
    apache-airflow-providers-standard psycopg2-binary redis
    # Celery 5.7 dropped what apache-airflow-providers-celery 3.26 imports
    # (celery.backends.database.retry): the 5.6 line, with its kombu.
    "celery[redis]==5.6.3" "kombu==5.6.2"
)
# docker/airflow and docker/trainer; torch's CPU build (this host's pip finds it, see TORCH_INDEX)
REFIT_PACKAGES=(
    "torch==2.13.0+cpu" lightgbm mlflow scikit-learn statsmodels numpy pandas pyarrow SQLAlchemy
    "psycopg[binary]" adbc-driver-postgresql boto3 docker pydantic PyYAML Jinja2 matplotlib
    threadpoolctl croniter
)
# docker/mlflow: mlflow, boto3 and psycopg are above
MLFLOW_PACKAGES=("Flask-WTF==1.3.0" "WTForms==3.3.2" "minio==7.2.20")
S3_PACKAGES=("moto[server]")  # refit-local/s3
TOOL_PACKAGES=("pip==26.3" setuptools)  # the images' pip; ml_tasks' build backend
# Where this host's pip finds torch's CPU build: its own configuration (find-links) by default, or
# this index (https://download.pytorch.org/whl/cpu) when set.
TORCH_INDEX=${REFIT_TORCH_INDEX:-}

# The richer Debian bases: for each, a shell snippet run in the chroot first, the packages
# apt-get installs there (builds cannot reach a mirror, so they are all in the base), and for
# cpython a step that adds the interpreter.
#   cpython   CPython 3.11 in /usr/local, as in python:3.11-slim-bookworm (which builds it from
#             source), with the libraries its modules link, curl, wget, dumb-init and libgomp1:
#             the base of refit-local/python, refit-local/airflow and refit-local/s3. Debian's
#             own 3.11 is 3.11.2, older than requirements.lock allows (soupsieve 4.1.2, which the
#             Amazon provider pulls in, needs 3.11.5), and no mirror this host reaches has a newer
#             one or CPython's sources; so the interpreter is this host's, the one the tests run
#             (the .venv's base; REFIT_LOCAL_PYTHON names another installation prefix).
#   trainer   Debian's python3.11 and python3.11-venv, ca-certificates and libgomp1: what
#             docker/trainer/Dockerfile apt-gets on the CUDA base, so it skips apt (the trainer
#             needs nothing newer than 3.11.2).
#   postgres  PostgreSQL 15; its user gets the official image's ids (999), and the package makes
#             no "main" cluster: the image's entrypoint makes the data directory at run time.
#   services  Redis and HAProxy (refit-local/redis, refit-local/socket-proxy); redis gets ids 998
#             so its Dockerfile can name it numerically (the packages keep users that exist).
BASES=(cpython trainer postgres services)
declare -A BASE_SETUP=(
    [cpython]=":"
    [trainer]=":"
    [postgres]="mkdir -p /etc/postgresql-common/createcluster.d
echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/refit-local.conf
groupadd --system --gid 999 postgres
useradd --system --uid 999 --gid 999 --home-dir /var/lib/postgresql --shell /bin/bash postgres"
    [services]="groupadd --system --gid 998 redis
useradd --system --uid 998 --gid 998 --home-dir /var/lib/redis --shell /usr/sbin/nologin redis"
)
declare -A BASE_PACKAGES=(
    [cpython]="ca-certificates netbase tzdata libssl3 libffi8 libsqlite3-0 libbz2-1.0 liblzma5 zlib1g \
libreadline8 libncursesw6 libuuid1 libexpat1 libgomp1 curl wget dumb-init procps"
    [trainer]="python3.11 python3.11-venv ca-certificates libgomp1"
    [postgres]="postgresql-15 procps tzdata"
    [services]="redis-server redis-tools haproxy wget ca-certificates procps"
)
declare -A BASE_HOOK=([cpython]=install_cpython)
LOCAL_PYTHON=${REFIT_LOCAL_PYTHON:-$(sed -n 's/^home *= *//p' "$ROOT/.venv/pyvenv.cfg" 2>/dev/null | xargs -r dirname)}

CURRENT_STEP=setup
trap 'echo "build.sh: FAILED in step \"$CURRENT_STEP\" (exit $?); the lines above say why" >&2' ERR

say() { printf '[build.sh] %s\n' "$*"; }

rebuilding() {  # rebuilding STEP: REFIT_REBUILD names it (or says 1/all)
    case ",$REBUILD," in
        *,1,* | *,all,* | *,"$1",*) return 0 ;;
        *) return 1 ;;
    esac
}

timed() {  # timed STEP COMMAND...: run it, print its wall time
    local started=$SECONDS
    CURRENT_STEP=$1
    say "== $1"
    "${@:2}"
    say "== $1 done in $((SECONDS - started))s"
}

hash_of() { sha256sum | cut -c1-16; }

image_label() {  # image_label IMAGE LABEL: the label's value, empty when the image is missing
    docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}

# -- 1. wheelhouse -------------------------------------------------------------------------------

wheelhouse() {
    local packages=("${AIRFLOW_PACKAGES[@]}" "${REFIT_PACKAGES[@]}" "${MLFLOW_PACKAGES[@]}" "${S3_PACKAGES[@]}"
                    "${TOOL_PACKAGES[@]}")
    local want
    want=$({ cat requirements.lock; printf '%s\n' "${packages[@]}" "$TORCH_INDEX"; } | hash_of)
    if ! rebuilding wheelhouse && [[ -f $WHEELHOUSE/.stamp && $(cat "$WHEELHOUSE/.stamp") == "$want" ]]; then
        say "wheelhouse up to date ($(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1))"
        return
    fi
    [[ -x $HOST_PIP ]] || { echo "no pip at $HOST_PIP (set REFIT_HOST_PIP)" >&2; return 1; }
    # One resolution for every image, so the wheelhouse holds one version of each package and
    # an image's --no-index install can only pick that one.
    find "$WHEELHOUSE" -maxdepth 1 \( -name '*.whl' -o -name .stamp \) -delete
    local index=()
    [[ -z $TORCH_INDEX ]] || index=(--extra-index-url "$TORCH_INDEX")
    "$HOST_PIP" wheel --quiet --wheel-dir "$WHEELHOUSE" --constraint requirements.lock "${index[@]}" "${packages[@]}"
    # The constraints the wheels were resolved with, for the stand-ins' builds (their context,
    # docker/, does not hold the lock).
    cp requirements.lock "$WHEELHOUSE/constraints.txt"
    echo "$want" >"$WHEELHOUSE/.stamp"
    say "wheelhouse: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"
}

# -- 2. Debian bases -----------------------------------------------------------------------------

# The debootstrap tree, kept in CACHE_DIR/minbase (its recipe hash in .refit-recipe beside it).
make_minbase_tree() {
    local tree=$CACHE_DIR/minbase
    rm -rf "$tree" "$tree.tmp"
    mkdir -p "$CACHE_DIR"
    debootstrap --variant=minbase "$DEBIAN_SUITE" "$tree.tmp" "$DEBIAN_MIRROR"
    # Point releases and security fixes too, for the richer bases' apt-get.
    cat >"$tree.tmp/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $DEBIAN_SUITE main
deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security $DEBIAN_SUITE-security main
EOF
    # As in Debian's official images: services installed in an image are not started by dpkg.
    printf '#!/bin/sh\nexit 101\n' >"$tree.tmp/usr/sbin/policy-rc.d"
    chmod 755 "$tree.tmp/usr/sbin/policy-rc.d"
    rm -rf "$tree.tmp"/var/cache/apt/archives/*.deb "$tree.tmp"/var/lib/apt/lists/*
    mv "$tree.tmp" "$tree"
}

import_tree() {  # import_tree TREE IMAGE RECIPE: the tree as a one-layer image labelled with RECIPE
    tar --numeric-owner --xattrs -C "$1" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
        --exclude='./run/*' --exclude='./tmp/*' -c . \
        | docker import --change "LABEL refit.local.recipe=$3" --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["bash"]' - "$2" >/dev/null
}

# A copy of the debootstrap tree with PACKAGES installed by apt in a chroot, trimmed like
# Debian's slim images (no docs but copyrights, no man pages, no apt lists).
make_variant_tree() {  # make_variant_tree TREE SETUP PACKAGES...: SETUP is a shell snippet run first
    local tree=$1 setup=$2
    shift 2
    rm -rf "$tree"
    cp -a "$CACHE_DIR/minbase" "$tree"
    cp /etc/resolv.conf "$tree/etc/resolv.conf"
    mount -t proc proc "$tree/proc"
    local status=0
    chroot "$tree" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
        sh -euc "$setup"'
                 apt-get update -qq
                 apt-get -y -qq dist-upgrade
                 apt-get install -y -qq --no-install-recommends "$@"
                 apt-get clean' sh "$@" || status=$?
    umount "$tree/proc"
    [[ $status == 0 ]] || return "$status"
    : >"$tree/etc/resolv.conf"
    rm -rf "$tree"/var/lib/apt/lists/* "$tree"/usr/share/man/* "$tree"/usr/share/info/* \
        "$tree"/var/cache/debconf/*-old "$tree"/var/log/apt/* "$tree"/var/log/dpkg.log
    find "$tree/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    find "$tree/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
}

# CPython 3.11 from LOCAL_PYTHON (an installation prefix) into TREE's /usr/local: the
# interpreter, its shared library and the standard library (less tests, IDLE and Tk, and without
# the installation's own site-packages); the loader finds libpython through ldconfig.
install_cpython() {  # install_cpython TREE
    local tree=$1
    [[ -n $LOCAL_PYTHON && -x $LOCAL_PYTHON/bin/python3.11 ]] \
        || { echo "no CPython 3.11 at '$LOCAL_PYTHON' (set REFIT_LOCAL_PYTHON to an installation prefix)" >&2; return 1; }
    tar -C "$LOCAL_PYTHON" -c --exclude='lib/python3.11/site-packages/*' --exclude=lib/python3.11/test \
        --exclude=lib/python3.11/idlelib --exclude=lib/python3.11/tkinter --exclude=lib/python3.11/turtledemo \
        --exclude='lib/python3.11/lib-dynload/_tkinter*' --exclude='lib/python3.11/config-3.11-*/*.a' \
        bin/python3.11 lib/libpython3.11.so.1.0 lib/libpython3.11.so lib/libpython3.so lib/python3.11 include/python3.11 \
        | tar -x -C "$tree/usr/local"
    ln -sf python3.11 "$tree/usr/local/bin/python3"
    ln -sf python3 "$tree/usr/local/bin/python"
    chroot "$tree" /sbin/ldconfig
    chroot "$tree" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin python3 -c 'import sys, ssl, ctypes, sqlite3, bz2, lzma, zlib, readline, uuid, curses, hashlib, decimal, pyexpat, zoneinfo, venv, ensurepip
print("CPython", sys.version.split()[0], "in", sys.prefix, "with", ssl.OPENSSL_VERSION)'
}

bases() {
    [[ $(id -u) == 0 ]] || { echo "making the Debian bases needs root (debootstrap, chroot)" >&2; return 1; }
    command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; return 1; }
    local minbase_recipe
    minbase_recipe=$({ declare -f make_minbase_tree import_tree; echo "$DEBIAN_SUITE $DEBIAN_MIRROR"; } | hash_of)
    local tree_fresh=false
    if rebuilding bases || [[ ! -d $CACHE_DIR/minbase || $(cat "$CACHE_DIR/minbase.recipe" 2>/dev/null) != "$minbase_recipe" ]]; then
        say "debootstrap $DEBIAN_SUITE (minbase) from $DEBIAN_MIRROR"
        make_minbase_tree
        echo "$minbase_recipe" >"$CACHE_DIR/minbase.recipe"
        tree_fresh=true
    fi
    if $tree_fresh || [[ $(image_label refit-local/bookworm:minbase refit.local.recipe) != "$minbase_recipe" ]]; then
        import_tree "$CACHE_DIR/minbase" refit-local/bookworm:minbase "$minbase_recipe"
        say "imported refit-local/bookworm:minbase"
    else
        say "refit-local/bookworm:minbase up to date"
    fi
    local name setup packages hook recipe
    for name in "${BASES[@]}"; do
        setup=${BASE_SETUP[$name]} hook=${BASE_HOOK[$name]:-}
        read -r -a packages <<<"${BASE_PACKAGES[$name]}"
        recipe=$({ echo "$minbase_recipe"; declare -f make_variant_tree import_tree; echo "$setup"
                   printf '%s\n' "${packages[@]}"
                   if [[ -n $hook ]]; then declare -f "$hook"; "$LOCAL_PYTHON/bin/python3.11" -VV 2>/dev/null || true; fi
                 } | hash_of)
        if ! $tree_fresh && [[ $(image_label "refit-local/debian:$name" refit.local.recipe) == "$recipe" ]]; then
            say "refit-local/debian:$name up to date"
            continue
        fi
        say "refit-local/debian:$name: apt-get install ${packages[*]}"
        make_variant_tree "$CACHE_DIR/$name" "$setup" "${packages[@]}"
        [[ -z $hook ]] || "$hook" "$CACHE_DIR/$name"
        import_tree "$CACHE_DIR/$name" "refit-local/debian:$name" "$recipe"
        rm -rf "${CACHE_DIR:?}/$name"
        say "imported refit-local/debian:$name"
    done
}

# -- 3. and 4. images ----------------------------------------------------------------------------

build() {  # build STEP TAG DOCKERFILE CONTEXT [docker build options...]
    local step=$1 tag=$2 dockerfile=$3 context=$4
    shift 4
    local options=(--network none --tag "$tag" --file "$dockerfile")
    rebuilding "$step" && options+=(--no-cache)
    local started=$SECONDS log="$CACHE_DIR/logs/${tag//[\/:]/_}.log"
    mkdir -p "$CACHE_DIR/logs"
    if ! docker build "${options[@]}" "$@" "$context" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "docker build of $tag ($dockerfile) failed; its whole log: $log" >&2
        return 1
    fi
    say "$tag built in $((SECONDS - started))s (log: $log)"
}

local_images() {
    # Context docker/: the stand-ins need the wheelhouse and their own folder, not the repository.
    build local refit-local/python:3.11 docker/local/python/Dockerfile docker
    build local refit-local/airflow:3.3.2-python3.11 docker/local/airflow/Dockerfile docker
    build local refit-local/s3:moto docker/local/s3/Dockerfile docker
    build local refit-local/postgres:15 docker/local/postgres/Dockerfile docker/local/postgres
    build local refit-local/redis:7 docker/local/redis/Dockerfile docker/local/redis
    build local refit-local/socket-proxy:haproxy docker/local/socket-proxy/Dockerfile docker/local/socket-proxy
}

project_images() {
    local code_version
    code_version=${REFIT_CODE_VERSION:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
    build project refit-airflow:latest docker/airflow/Dockerfile . \
        --build-arg AIRFLOW_BASE_IMAGE=refit-local/airflow:3.3.2-python3.11 --build-arg "REFIT_CODE_VERSION=$code_version"
    build project refit-mlflow:latest docker/mlflow/Dockerfile . --build-arg PYTHON_BASE_IMAGE=refit-local/python:3.11
    build project refit-trainer:latest docker/trainer/Dockerfile . \
        --build-arg TRAINER_BASE_IMAGE=refit-local/debian:trainer --build-arg TORCH_VARIANT=cpu
}

sizes() {
    docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' \
        | grep -E '^(refit-local/|refit-(airflow|mlflow|trainer):)' | sort | column -t -s $'\t'
}

# ------------------------------------------------------------------------------------------------

# One run at a time on this host: two would share the wheelhouse, the bases' trees and the tags.
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/build.lock"
if ! flock --nonblock 9; then
    say "another docker/local/build.sh is running; waiting for it"
    flock 9
fi

# A build stopped in a chroot step (tests/parts.py stops the background build when a test part
# fails) leaves /proc (and debootstrap's /sys) mounted in a tree; unmount them on the way out and,
# for a build killed harder than that, before starting, so no later rm -rf walks into them.
release_mounts() {
    findmnt --raw --noheadings --output TARGET | { grep "^$CACHE_DIR/" || true; } | sort -r \
        | while read -r mount; do umount --lazy "$mount" || true; done
}
release_mounts
trap release_mounts EXIT
trap 'exit 143' TERM INT

steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(wheelhouse bases local project)
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
    || { echo "build.sh: no Docker Engine answers (start dockerd first)" >&2; exit 1; }
total_started=$SECONDS
for step in "${steps[@]}"; do
    case $step in
        wheelhouse) timed wheelhouse wheelhouse ;;
        bases) timed bases bases ;;
        local) timed local local_images ;;
        project) timed project project_images ;;
        *) echo "build.sh: unknown step $step (wheelhouse, bases, local, project)" >&2; exit 2 ;;
    esac
done
CURRENT_STEP=sizes
say "all done in $((SECONDS - total_started))s; image sizes:"
sizes
