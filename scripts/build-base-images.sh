#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Build Dockyard's local base images (no registry, no pull): `docker import` of a rootfs,
# or `docker build` FROM one of those.
#
#   dockyard-base/busybox:latest     busybox-static + applet symlinks (has httpd)   static
#   dockyard-base/debian:bookworm    debootstrap minbase + ca-certificates          procfile
#   dockyard-base/debian:trixie      (the same, Debian 13)                          procfile
#   dockyard-base/python:3.11        bookworm + python3 python3-venv python3-pip    python
#   dockyard-base/python:3.13        trixie, the same packages                      python
#   dockyard-base/node:18 / :20      bookworm / trixie + nodejs npm                 node
#   dockyard-base/go:1.19 / :1.24    bookworm / trixie + golang-go                  go
#   dockyard-base/ruby:3.1           bookworm + ruby bundler                        ruby
#   dockyard-base/php:8.2            bookworm + php-cli php-curl php-zip composer   php
#   dockyard-base/java:17            bookworm + openjdk-17-jdk-headless maven       java
#   dockyard-base/python:3, :latest  aliases of dockyard-base/python:3.11
#
# Every image carries dockyard.runtime (last column), dockyard.runtime.version (what the
# runtime itself reports; the Debian version for procfile, busybox's for static) and
# dockyard.runtime.suite. Dockerfiles and helpers are in scripts/images/.
#
# Each image is built only when missing (or unlabelled). The Debian rootfs tarballs are
# cached in $DOCKYARD_CACHE_DIR (default /var/cache/dockyard), so a rebuild after `docker
# rmi` needs no debootstrap; build logs go to $DOCKYARD_CACHE_DIR/logs. A changed
# Dockerfile or rootfs recipe takes effect only after `docker rmi` of the image (and, for
# a Debian base, removing its tarball).
#
# Runtime images are stand-ins for official ones: when a registry is reachable
# (DOCKYARD_REGISTRY_PROBE, default https://registry-1.docker.io/v2/, answers 401 or 200)
# they are skipped, since the product pulls what it needs, unless DOCKYARD_LOCAL_IMAGES=1;
# DOCKYARD_LOCAL_IMAGES=0 skips them always. busybox, debian:bookworm and python:3.11
# (behind the python:3 alias) are always built. At most DOCKYARD_IMAGE_JOBS (default 3)
# builds run at once.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=images/lib.sh
. "$ROOT/scripts/images/lib.sh"
# shellcheck source=images/busybox.sh
. "$ROOT/scripts/images/busybox.sh"
# shellcheck source=images/debian.sh
. "$ROOT/scripts/images/debian.sh"
# shellcheck source=images/runtimes.sh
. "$ROOT/scripts/images/runtimes.sh"

BUSYBOX_IMAGE=dockyard-base/busybox:latest
PYTHON_IMAGE=dockyard-base/python:3.11
PYTHON_ALIASES=(dockyard-base/python:3 dockyard-base/python:latest)
MAX_JOBS=${DOCKYARD_IMAGE_JOBS:-3}
case $MAX_JOBS in '' | *[!0-9]* | 0) die "DOCKYARD_IMAGE_JOBS must be a positive number, not '$MAX_JOBS'" ;; esac
LOCAL_IMAGES=${DOCKYARD_LOCAL_IMAGES:-}
case $LOCAL_IMAGES in 0 | 1 | "") ;; *) die "DOCKYARD_LOCAL_IMAGES must be 1, 0 or unset, not '$LOCAL_IMAGES'" ;; esac

# Jobs: NAME -> what it builds, what it waits for. Each runs in the background with its
# output in $LOG_DIR/NAME.log; at most MAX_JOBS at once.
declare -A JOB_IMAGE=() JOB_DEPS=() JOB_CMD_ARGS=() JOB_STATE=() JOB_START=() PID_JOB=()
JOBS=()

WORK=""
cleanup() {
    local pid
    # Interrupted: stop the builds still running (and what they started) before their
    # work directory goes.
    for pid in "${!PID_JOB[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            pkill -TERM -P "$pid" 2>/dev/null || true
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then rm -rf --one-file-system "$WORK"; fi
}
trap cleanup EXIT
trap 'warn "interrupted"; exit 130' INT
trap 'warn "terminated"; exit 143' TERM

mkdir -p "$CACHE_DIR" "$LOG_DIR"
WORK=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
started=$(now)

timeout 15 docker info >/dev/null 2>&1 || die "the Docker engine does not answer (scripts/start-dockerd.sh)"

# ---------------------------------------------------------------- busybox ---
if image_complete "$BUSYBOX_IMAGE"; then
    say "$BUSYBOX_IMAGE present"
else
    say "Building $BUSYBOX_IMAGE from $BUSYBOX_BIN"
    build_busybox "$BUSYBOX_IMAGE"
fi
docker run --rm --network none "$BUSYBOX_IMAGE" busybox true \
    || die "$BUSYBOX_IMAGE does not run"
docker run --rm --network none "$BUSYBOX_IMAGE" sh -c 'command -v httpd >/dev/null' \
    || die "$BUSYBOX_IMAGE has no httpd"
info "$BUSYBOX_IMAGE ok ($(image_size "$BUSYBOX_IMAGE"), busybox $(image_label "$BUSYBOX_IMAGE" dockyard.runtime.version))"

# ------------------------------------------------------- runtime images ---
# Stand-ins for official images, for machines that cannot pull (this kind of CI box).
REGISTRY_PROBE=${DOCKYARD_REGISTRY_PROBE:-https://registry-1.docker.io/v2/}
registry_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$REGISTRY_PROBE" 2>/dev/null || true
}
case $LOCAL_IMAGES in
    1) say "Runtime images: building them (DOCKYARD_LOCAL_IMAGES=1)"; want_runtimes=1 ;;
    0) say "Runtime images: skipped (DOCKYARD_LOCAL_IMAGES=0)"; want_runtimes=0 ;;
    "")
        code=$(registry_status)
        if [ "$code" = 401 ] || [ "$code" = 200 ]; then
            say "Runtime images: skipped, a registry is reachable ($REGISTRY_PROBE answered $code)"
            info "official images are pulled when needed; DOCKYARD_LOCAL_IMAGES=1 builds local ones"
            want_runtimes=0
        else
            say "Runtime images: no registry reachable ($REGISTRY_PROBE: ${code:-000}), building local ones"
            want_runtimes=1
        fi
        ;;
esac
if [ "$want_runtimes" = 0 ]; then
    info "still built: dockyard-base/debian:bookworm and $PYTHON_IMAGE (behind ${PYTHON_ALIASES[*]})"
fi

add_job() {  # add_job NAME IMAGE DEPS FUNCTION ARGS...
    local name=$1 image=$2 deps=$3
    shift 3
    JOBS+=("$name")
    JOB_IMAGE[$name]=$image
    JOB_DEPS[$name]=$deps
    JOB_CMD_ARGS[$name]=$(printf '%q ' "$@")
    if image_complete "$image"; then JOB_STATE[$name]=present; else JOB_STATE[$name]=pending; fi
}

base_job() {  # base_job SUITE IMAGE
    build_debian_rootfs "$1"
    echo "== docker import $2"
    import_debian_base "$1" "$2"
}

suites=(bookworm)
[ "$want_runtimes" = 1 ] && suites+=(trixie)
for suite in "${suites[@]}"; do
    add_job "debian-$suite" "dockyard-base/debian:$suite" "" base_job "$suite" "dockyard-base/debian:$suite"
done
for entry in "${RUNTIMES[@]}"; do
    read -r runtime tag suite <<<"$entry"
    image="dockyard-base/$runtime:$tag"
    [ "$want_runtimes" = 1 ] || [ "$image" = "$PYTHON_IMAGE" ] || continue
    add_job "$runtime-$tag" "$image" "debian-$suite" build_runtime "$runtime" "$tag" "$suite"
done

start_job() {
    local name=$1
    say "Building ${JOB_IMAGE[$name]} (log: $LOG_DIR/$name.log)"
    JOB_START[$name]=$(now)
    # shellcheck disable=SC2086  # JOB_CMD_ARGS holds words quoted with printf %q
    (eval "set -- ${JOB_CMD_ARGS[$name]}"; "$@") >"$LOG_DIR/$name.log" 2>&1 </dev/null &
    PID_JOB[$!]=$name
    JOB_STATE[$name]=running
}

failed=()
running=0
for name in "${JOBS[@]}"; do
    [ "${JOB_STATE[$name]}" = present ] && say "${JOB_IMAGE[$name]} present"
done
while :; do
    # Start what can start; a job whose dependency failed fails too.
    for name in "${JOBS[@]}"; do
        [ "${JOB_STATE[$name]}" = pending ] || continue
        ready=1
        for dep in ${JOB_DEPS[$name]}; do
            case ${JOB_STATE[$dep]} in
                present | done) ;;
                failed) JOB_STATE[$name]=failed; failed+=("${JOB_IMAGE[$name]} (needs ${JOB_IMAGE[$dep]})"); ready=0 ;;
                *) ready=0 ;;
            esac
        done
        if [ "$ready" = 1 ] && [ "$running" -lt "$MAX_JOBS" ]; then
            start_job "$name"
            running=$((running + 1))
        fi
    done
    [ "$running" -gt 0 ] || break
    pid=""
    if wait -n -p pid; then rc=0; else rc=$?; fi
    [ -n "$pid" ] || continue
    name=${PID_JOB[$pid]}
    unset "PID_JOB[$pid]"
    running=$((running - 1))
    image=${JOB_IMAGE[$name]}
    if [ "$rc" = 0 ] && image_complete "$image"; then
        JOB_STATE[$name]="done"
        info "$image built in $(elapsed "${JOB_START[$name]}") ($(image_size "$image"), $(image_label "$image" dockyard.runtime) $(image_label "$image" dockyard.runtime.version))"
    else
        JOB_STATE[$name]=failed
        failed+=("$image")
        warn "$image failed after $(elapsed "${JOB_START[$name]}") (exit $rc); end of $LOG_DIR/$name.log:"
        tail -n 15 "$LOG_DIR/$name.log" | sed 's/^/       /' >&2
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    die "not built: ${failed[*]}"
fi

# -------------------------------------------------------------- python:3 ---
for alias in "${PYTHON_ALIASES[@]}"; do
    [ "$(image_id "$alias")" = "$(image_id "$PYTHON_IMAGE")" ] || docker tag "$PYTHON_IMAGE" "$alias"
done
out=$(docker run --rm --network none "${PYTHON_ALIASES[0]}" python3 -c 'print(1)') \
    || die "${PYTHON_ALIASES[0]} does not run"
[ "$out" = 1 ] || die "${PYTHON_ALIASES[0]}: python3 printed '$out', expected 1"
info "${PYTHON_ALIASES[*]} -> $PYTHON_IMAGE ok"

say "Base images ready in $(elapsed "$started")"
for name in "${JOBS[@]}"; do
    image=${JOB_IMAGE[$name]}
    printf '       %-30s %9s  %-8s %-10s %s\n' "$image" "$(image_size "$image")" \
        "$(image_label "$image" dockyard.runtime)" "$(image_label "$image" dockyard.runtime.version)" \
        "$(image_label "$image" dockyard.runtime.suite)"
done
