#!/usr/bin/env bash
# Build local stand-ins for the official service images from Debian's packages, for
# machines that cannot pull (no registry reachable). Each is built only when missing
# (`--rebuild` forces it). They keep the official images' contract for what Dockyard uses
# (environment, data paths, entrypoint that initialises on first start, client tools):
#
#   dockyard-services/postgres:15     postgresql-15          (for postgres:16)
#   dockyard-services/redis:7         redis-server 7.0       (for redis:7)
#   dockyard-services/mariadb:10.11   mariadb-server 10.11   (for mysql:8 / mariadb:11)
#
# Point Dockyard at them with `postgres:set --global image dockyard-services/postgres:15`
# (likewise redis:set, mysql:set). Built FROM dockyard-base/python:3 (scripts/build-base-images.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC="$ROOT/scripts/service-images"
BASE=dockyard-base/python:3
REBUILD=${1:-}

say() { echo "-----> $*"; }
info() { echo "       $*"; }
die() { echo " !     $*" >&2; exit 1; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

timeout 15 docker info >/dev/null 2>&1 || die "the Docker engine does not answer (scripts/start-dockerd.sh)"
have_image "$BASE" || die "$BASE is missing (scripts/build-base-images.sh builds it)"

build() {
    local image=$1 dir=$2
    if have_image "$image" && [ "$REBUILD" != "--rebuild" ]; then
        say "$image present"
        return
    fi
    say "Building $image from $dir (Debian packages)"
    local log
    log=$(mktemp)
    if ! docker build -q -t "$image" "$SRC/$dir" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        rm -f "$log"
        die "building $image failed"
    fi
    rm -f "$log"
}

check() {
    local image=$1; shift
    docker run --rm --network none --entrypoint "" "$image" "$@" >/dev/null 2>&1 \
        || die "$image: \`$*\` does not run"
    info "$image ok ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1000/1000}'))"
}

build dockyard-services/postgres:15 postgres
check dockyard-services/postgres:15 sh -c 'postgres --version && pg_dump --version && pg_isready --version'
build dockyard-services/redis:7 redis
check dockyard-services/redis:7 sh -c 'redis-server --version && redis-cli --version'
build dockyard-services/mariadb:10.11 mariadb
check dockyard-services/mariadb:10.11 sh -c 'mariadbd --version && mariadb-dump --version'
