#!/usr/bin/env bash
# The README's promise, checked on a fresh machine: a Debian 12 container with a Docker
# engine of its own (Docker-in-Docker), with nothing installed first but git, make and an
# ssh client, runs the README's two commands on a fresh clone of this repository and the
# quick start in between, and reports how long each took and whether it passed. It takes
# minutes (the first setup builds every local image) and is not part of the test suite.
#
#   scripts/fresh-debian-check.sh                   # the README's test command: all of tests/
#   DOCKYARD_FRESH_TESTS="tests/test_readme.py tests/test_operations.py" \
#       scripts/fresh-debian-check.sh               # a selection instead of `tests`
#
# Run as root on a machine with Docker and the image dockyard-base/debian:bookworm
# (scripts/setup.sh builds it). The clone is of the committed HEAD (uncommitted changes are
# not part of the check), through a bare copy mounted read-only.
#
# In order:
#   1. prepare:    apt-get install git make openssh-client (the reader's "first")
#   2. clone:      git clone of the bare copy into /opt/dockyard
#   3. command 1:  the README's first command (setup, then `dockyard serve`), in the
#                  background; done when the server answers SSH on port 2222
#   4. quick start: the README's quick start blocks against that server, on the real
#                  ports (python -m tests.quickstart: the same harness as tests/test_readme.py)
#   5. command 2:  the README's second command (setup again, then pytest; `tests` replaced
#                  by DOCKYARD_FRESH_TESTS when set), after `apps:destroy hello --force`:
#                  the tests deploy an app of that name too, on the same engine, and app
#                  networks are named after their app
#
# The container (the recipe of /work/shared/MACHINE-NOTES.md): no --privileged; an explicit
# capability list; seccomp and AppArmor unconfined; the host's cgroup namespace with
# /sys/fs/cgroup writable; a volume for /var/lib/docker; its dockerd started by
# scripts/start-dockerd.sh with `--cgroup-parent /NAME` (DOCKYARD_DOCKERD_OPTS), so its
# containers' cgroups stay apart; tini as PID 1 (--init) to reap. When this host trusts
# local CAs (/usr/local/share/ca-certificates: an egress proxy's), the container trusts them
# too, as any machine on this network must to reach PyPI.
#
# Invariants: whatever happens (failure, Ctrl-C), the container, its volume, its network,
# the cgroup directories under /sys/fs/cgroup/*/NAME and the bare copy are removed; the exit
# status is 0 only if every phase passed. Logs are kept in $DOCKYARD_FRESH_LOG_DIR
# (default /var/tmp/dockyard-fresh/NAME).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${DOCKYARD_FRESH_IMAGE:-dockyard-base/debian:bookworm}
TESTS=${DOCKYARD_FRESH_TESTS:-tests}
NAME=dockyard-fresh-$(date +%Y%m%d%H%M%S)-$$
LOG_DIR=${DOCKYARD_FRESH_LOG_DIR:-/var/tmp/dockyard-fresh/$NAME}
SERVE_DEADLINE=${DOCKYARD_FRESH_SERVE_DEADLINE:-2400}  # seconds for setup + serve
CAPS=(AUDIT_CONTROL DAC_READ_SEARCH IPC_LOCK LINUX_IMMUTABLE MKNOD NET_ADMIN NET_BROADCAST
      NET_RAW SETFCAP SETPCAP SYS_ADMIN SYS_CHROOT SYS_MODULE SYS_NICE SYS_PTRACE)
APP_DIR=/opt/dockyard

say() { echo "-----> $*"; }
info() { echo "       $*"; }
warn() { echo " !     $*" >&2; }
die() { warn "$*"; exit 1; }
now() { date +%s; }
took() { local s=$(( $(now) - $1 )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

[ "$(id -u)" -eq 0 ] || die "run as root (it runs a Docker-in-Docker container)"
timeout 15 docker info >/dev/null 2>&1 || die "the Docker engine does not answer"
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "$IMAGE is missing: run scripts/setup.sh"

WORK=$(mktemp -d /var/tmp/dockyard-fresh-work.XXXXXX)
mkdir -p "$LOG_DIR"
started_container=""

cleanup() {
    local status=$?
    set +e
    # The engine may be restarting under us (another fault test on this host): wait for it
    # before removing anything, and check each removal.
    local _
    for _ in $(seq 120); do timeout 15 docker info >/dev/null 2>&1 && break; sleep 1; done
    if [ -n "$started_container" ]; then
        docker logs "$NAME" >"$LOG_DIR/container.log" 2>&1
        docker rm -f "$NAME" >/dev/null 2>&1
    fi
    docker volume rm -f "$NAME-docker" >/dev/null 2>&1
    docker network rm "$NAME-net" >/dev/null 2>&1
    local leftover=()
    docker container inspect "$NAME" >/dev/null 2>&1 && leftover+=("container $NAME")
    docker volume inspect "$NAME-docker" >/dev/null 2>&1 && leftover+=("volume $NAME-docker")
    docker network inspect "$NAME-net" >/dev/null 2>&1 && leftover+=("network $NAME-net")
    [ ${#leftover[@]} -eq 0 ] || warn "left behind (remove by hand): ${leftover[*]}"
    # The nested engine's cgroups, deepest first; a cgroup whose last tasks are still
    # exiting refuses rmdir (EBUSY) for a moment, so try again for a while.
    local dir left="" tries
    for tries in $(seq 30); do
        for dir in /sys/fs/cgroup/*/"$NAME" /sys/fs/cgroup/"$NAME"; do
            [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
        done
        left=$(ls -d /sys/fs/cgroup/*/"$NAME" /sys/fs/cgroup/"$NAME" 2>/dev/null || true)
        [ -n "$left" ] || break
        sleep 1
    done
    [ -z "$left" ] || warn "cgroup directories left behind after ${tries}s: $left"
    rm -rf --one-file-system "$WORK"
    if [ ${#leftover[@]} -eq 0 ] && [ -z "$left" ]; then
        info "cleaned up: container, volume $NAME-docker, network $NAME-net, cgroups, bare copy"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'warn "interrupted"; exit 130' INT
trap 'warn "terminated"; exit 143' TERM

in_box() { docker exec -i "$NAME" bash -c "$1"; }

# The README's two commands, read from README.md itself: the first ```sh block.
readme_commands=$(awk '/^```sh/{n++; next} /^```/{if (n == 1) exit; next} n == 1' "$ROOT/README.md")
COMMAND_1=$(sed -n 1p <<<"$readme_commands")
COMMAND_2=$(sed -n 2p <<<"$readme_commands")
case $COMMAND_1 in *"dockyard serve"*) ;; *) die "README's first command is not the serve one: $COMMAND_1" ;; esac
case $COMMAND_2 in *pytest*) ;; *) die "README's second command is not the test one: $COMMAND_2" ;; esac
if [ "$TESTS" != tests ]; then
    COMMAND_2=${COMMAND_2% tests}" $TESTS"
fi

commit=$(git -C "$ROOT" rev-parse --short HEAD)
[ -z "$(git -C "$ROOT" status --porcelain)" ] || warn "uncommitted changes are not part of the check"
git init -q --bare "$WORK/dockyard.git"
git -C "$ROOT" push -q "$WORK/dockyard.git" "HEAD:refs/heads/fresh-check"
git -C "$WORK/dockyard.git" symbolic-ref HEAD refs/heads/fresh-check

say "Fresh Debian 12 check of $commit in container $NAME"
info "host: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), logs in $LOG_DIR"
info "command 1: $COMMAND_1"
info "command 2: $COMMAND_2"

caps=()
for cap in "${CAPS[@]}"; do caps+=(--cap-add "$cap"); done
ca_mount=()
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    ca_mount=(-v /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro)
    info "this host trusts local CAs (/usr/local/share/ca-certificates): so does the container"
fi
docker network create "$NAME-net" >/dev/null
docker volume create "$NAME-docker" >/dev/null
docker run -d --name "$NAME" --hostname fresh-debian --init --network "$NAME-net" \
    "${caps[@]}" --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
    -v "$NAME-docker:/var/lib/docker" -v "$WORK/dockyard.git:/src/dockyard.git:ro" \
    "${ca_mount[@]}" -e "DOCKYARD_DOCKERD_OPTS=--cgroup-parent /$NAME" \
    "$IMAGE" sleep infinity >/dev/null
started_container=1

results=()
failed=""
record() { results+=("$(printf '%-58s %8s  %s' "$1" "$2" "$3")"); }

# --- 1. prepare --------------------------------------------------------------------------
t=$(now)
say "1. prepare: git, make and an ssh client"
if in_box 'set -e; export DEBIAN_FRONTEND=noninteractive
        if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then update-ca-certificates >/dev/null 2>&1; fi
        apt-get update -qq && apt-get install -y -qq --no-install-recommends git make openssh-client >/dev/null
        git --version; ssh -V 2>&1; make --version | head -n 1' >"$LOG_DIR/1-prepare.log" 2>&1; then
    record "prepare (apt-get install git make openssh-client)" "$(took "$t")" "ok"
    info "$(tr '\n' ' ' <"$LOG_DIR/1-prepare.log")"
else
    tail -n 20 "$LOG_DIR/1-prepare.log" >&2
    die "preparing the container failed"
fi

# --- 2. clone ------------------------------------------------------------------------------
t=$(now)
say "2. clone"
in_box "git clone -q /src/dockyard.git $APP_DIR && git -C $APP_DIR log --oneline -1" \
    >"$LOG_DIR/2-clone.log" 2>&1 || die "git clone failed: $(cat "$LOG_DIR/2-clone.log")"
record "git clone" "$(took "$t")" "ok ($(cut -c1-60 "$LOG_DIR/2-clone.log"))"

# --- 3. command 1: setup, then serve -------------------------------------------------------
t_zero=$(now)
t=$(now)
say "3. command 1, in the background: $COMMAND_1"
docker exec -d "$NAME" bash -c "cd $APP_DIR && { $COMMAND_1; } >/var/log/readme-command-1.log 2>&1; echo \$? >/var/log/readme-command-1.rc"
deadline=$(( $(now) + SERVE_DEADLINE ))
serving=""
while [ "$(now)" -lt "$deadline" ]; do
    if in_box 'exec 3<>/dev/tcp/127.0.0.1/2222 && head -c 8 <&3' 2>/dev/null | grep -q '^SSH-2.0'; then
        serving=1
        break
    fi
    if in_box 'test -e /var/log/readme-command-1.rc' 2>/dev/null; then
        break
    fi
    if [ "$(docker inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" != true ]; then
        warn "the container stopped (was this host's Docker engine restarted?)"
        break
    fi
    sleep 2
done
docker cp "$NAME:/var/log/readme-command-1.log" "$LOG_DIR/3-command-1.log" >/dev/null 2>&1 || true
setup_line=$(grep -m1 -E '^-----> Setup done' "$LOG_DIR/3-command-1.log" || true)
if [ -n "$serving" ]; then
    record "command 1: setup, then dockyard serve answers on :2222" "$(took "$t")" "ok"
    grep -E '^-----> (Linked|Installing|Building)' "$LOG_DIR/3-command-1.log" | sed 's/^/       | /' | head -40 || true
    [ -z "$setup_line" ] || echo "       | $setup_line"
else
    tail -n 40 "$LOG_DIR/3-command-1.log" >&2
    record "command 1: setup, then dockyard serve" "$(took "$t")" "FAILED${setup_line:+ (after setup)}"
    failed=1
fi

# --- 4. the quick start ---------------------------------------------------------------------
if [ -z "$failed" ]; then
    t=$(now)
    say "4. the README's quick start (python -m tests.quickstart, on the real ports)"
    if in_box "cd $APP_DIR && .venv/bin/python -m tests.quickstart" >"$LOG_DIR/4-quickstart.log" 2>&1; then
        record "quick start: init, push, curl, config, domain, HTTPS" "$(took "$t")" "ok"
        record "  fresh container to the app deployed and served (1-4)" "$(took "$t_zero")" "(from command 1)"
    else
        record "quick start" "$(took "$t")" "FAILED"
        failed=1
    fi
    grep -E '^\+ (curl|git push|dockyard|ssh)|from Python|Application deployed|http://hello|resolves to|Certificate installed|quick start: exit' \
        "$LOG_DIR/4-quickstart.log" | sed 's/^/       | /' | head -40 || true
    [ -z "$failed" ] || tail -n 40 "$LOG_DIR/4-quickstart.log" >&2
fi

# --- 5. command 2: setup again, then the tests -----------------------------------------------
in_box "dockyard apps:destroy hello --force" >>"$LOG_DIR/4-quickstart.log" 2>&1 || true
t=$(now)
say "5. command 2: $COMMAND_2"
if in_box "cd $APP_DIR && $COMMAND_2" >"$LOG_DIR/5-command-2.log" 2>&1; then
    status=ok
else
    status=FAILED
    failed=1
fi
summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed)|^[0-9]+ (passed|failed)|(passed|failed|error).* in [0-9.]+s' "$LOG_DIR/5-command-2.log" | tail -n 1 || true)
record "command 2: setup again, then pytest" "$(took "$t")" "$status: ${summary:-no pytest summary}"
grep -E '^(FAILED|ERROR) ' "$LOG_DIR/5-command-2.log" | sed 's/^/       | /' | head -30 || true
[ "$status" = ok ] || tail -n 30 "$LOG_DIR/5-command-2.log" >&2

# --- report ------------------------------------------------------------------------------------
if [ "$(docker inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" != true ]; then
    warn "the container is no longer running (was this host's Docker engine restarted?)"
    failed=1
fi
say "Result for $commit on $(date -u +%Y-%m-%d) ($(nproc) cores, load average now $(cut -d' ' -f1-3 /proc/loadavg))"
for line in "${results[@]}"; do info "$line"; done
if [ -n "$failed" ]; then
    warn "FAILED (logs: $LOG_DIR)"
    exit 1
fi
say "PASSED (logs: $LOG_DIR)"
