#!/usr/bin/env bash
# Start a Docker engine in the background when none answers.
#
# For machines without systemd (CI boxes, containers, VMs started bare): if
# `docker info` already works, do nothing. Otherwise start dockerd detached
# (setsid + nohup, so it outlives this script and the shell that ran it), log to
# $DOCKYARD_DOCKERD_LOG and wait until the engine answers.
#
# Options: defaults first. Set DOCKYARD_DOCKERD_OPTS to force a set of options
# (e.g. "--storage-driver=vfs"). Without it, if dockerd *exits* with the
# defaults (a storage-driver or iptables problem, typically), we retry with
# progressively more conservative options and say which one worked.
set -euo pipefail

LOG=${DOCKYARD_DOCKERD_LOG:-/var/log/dockyard-dockerd.log}
TIMEOUT=${DOCKYARD_DOCKERD_TIMEOUT:-60}
SOCK=/var/run/docker.sock

say() { echo "-----> $*"; }
die() { echo " !     $*" >&2; exit 1; }

engine_up() { timeout 15 docker info >/dev/null 2>&1; }

if engine_up; then
    exit 0
fi

command -v dockerd >/dev/null 2>&1 || die "dockerd not found (install docker.io: scripts/setup.sh)"
command -v docker >/dev/null 2>&1 || die "docker CLI not found"
[ "$(id -u)" -eq 0 ] || die "dockerd must be started as root"

# A dockerd that is still running but not answering is not something we should
# paper over by starting a second one.
if pid=$(cat /var/run/docker.pid 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    say "dockerd (pid $pid) is running but not answering yet, waiting"
    for _ in $(seq "$TIMEOUT"); do
        engine_up && exit 0
        sleep 1
    done
    die "dockerd (pid $pid) does not answer after ${TIMEOUT}s; see $LOG"
fi

mkdir -p "$(dirname "$LOG")"

# Each entry is one set of options (word-split on purpose).
if [ -n "${DOCKYARD_DOCKERD_OPTS+x}" ]; then
    attempts=("$DOCKYARD_DOCKERD_OPTS")
else
    attempts=("" "--storage-driver=vfs" "--storage-driver=vfs --iptables=false --ip6tables=false")
fi

for opts in "${attempts[@]}"; do
    say "Starting dockerd ${opts:-(default options)}, log: $LOG"
    {
        echo "==== $(date -u +%FT%TZ) dockerd $opts"
    } >>"$LOG"
    # shellcheck disable=SC2086  # opts is a list of words
    setsid nohup dockerd $opts >>"$LOG" 2>&1 </dev/null &
    pid=$!
    for _ in $(seq "$TIMEOUT"); do
        if [ -S "$SOCK" ] && engine_up; then
            say "dockerd is up (pid $pid${opts:+, options: $opts})"
            exit 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
        tail -n 20 "$LOG" >&2 || true
        die "dockerd (pid $pid) started but does not answer after ${TIMEOUT}s; see $LOG"
    fi
    echo " !     dockerd exited with options '${opts:-default}':" >&2
    tail -n 5 "$LOG" >&2 || true
done

die "could not start dockerd; see $LOG"
