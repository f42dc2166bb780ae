#!/usr/bin/env bash
# Prepare a Debian 12 machine (as root, no stdin needed) to run and test Dockyard:
# system packages, a running Docker engine, the .venv with Dockyard installed
# editable (built from Debian's /usr/bin/python3), `dockyard` on PATH
# (/usr/local/bin/dockyard, scripts/link-cli.sh), and the local base images. Ends
# with the next three steps. Safe to run again: each step does only what is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Debian's own python3: what users have (a version manager's python on PATH would hide
# differences such as 3.11.2's tarfile).
PYTHON=${PYTHON:-/usr/bin/python3}
VENV=${DOCKYARD_VENV:-$ROOT/.venv}

say() { echo "-----> $*"; }
info() { echo "       $*"; }
# How long each part took, reported at the end (where the first run's minutes go).
SETUP_STARTED=$SECONDS
PHASE_STARTED=$SECONDS
TIMINGS=()
phase_done() { TIMINGS+=("$1 $((SECONDS - PHASE_STARTED))s"); PHASE_STARTED=$SECONDS; }
die() { echo " !     $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts dockerd)"

# ----------------------------------------------------------- packages ---
# python3-venv: Debian's python3 has no ensurepip without it. systemd: the tests verify
# the unit with systemd-analyze. wrk: the proxy benchmark's load generator. pebble (with
# pebble-challtestsrv): Let's Encrypt's test ACME server, for the letsencrypt tests.
# docker-registry: the registry Dockyard runs for swarm nodes (and the swarm tests).
# chromium, chromium-driver: the dashboard's browser tests (Selenium drives Debian's
# Chromium; no browser is ever downloaded).
PACKAGES=(docker.io nginx git openssh-client openssh-server busybox-static
          debootstrap ca-certificates iptables python3 python3-venv curl systemd wrk pebble
          docker-registry chromium chromium-driver)
OPTIONAL_PACKAGES=(sqlite3)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
optional_missing=()
for p in "${OPTIONAL_PACKAGES[@]}"; do installed "$p" || optional_missing+=("$p"); done

if [ ${#missing[@]} -gt 0 ] || [ ${#optional_missing[@]} -gt 0 ]; then
    say "Installing ${missing[*]} ${optional_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Services must not start as a side effect of the install: the system nginx
    # would take port 80 from Dockyard's own nginx master. policy-rc.d (honoured
    # by invoke-rc.d and deb-systemd-invoke) says "don't"; only add it when the
    # machine has none, and only for the duration of the install.
    policy_added=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# added by dockyard scripts/setup.sh during apt-get install\nexit 101\n' \
            >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    nginx_was_installed=""
    installed nginx && nginx_was_installed=1
    registry_was_installed=""
    installed docker-registry && registry_was_installed=1
    restore_policy() { if [ -n "$policy_added" ]; then rm -f /usr/sbin/policy-rc.d; fi; }
    trap restore_policy EXIT

    apt-get update -qq </dev/null
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
    fi
    for p in "${optional_missing[@]}"; do
        apt-get install -y -qq --no-install-recommends "$p" </dev/null \
            || info "optional package $p could not be installed, going on"
    done

    restore_policy
    trap - EXIT
    # On a systemd host the package also *enables* nginx.service for the next
    # boot; undo that, but only for an nginx we just installed.
    if [ -z "$nginx_was_installed" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        systemctl disable nginx >/dev/null 2>&1 || true
    fi
    # Likewise the package's own registry service (htpasswd on :5000): Dockyard runs its own.
    if [ -z "$registry_was_installed" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        systemctl disable --now docker-registry >/dev/null 2>&1 || true
    fi
else
    say "System packages present"
fi

if pgrep -x nginx >/dev/null 2>&1; then
    info "note: an nginx is already running on this machine (not started by this script);"
    info "      Dockyard runs its own nginx master and needs its listen ports free"
fi

# ------------------------------------------------------------- docker ---
phase_done packages
say "Docker engine"
"$ROOT/scripts/start-dockerd.sh"
info "$(docker version -f 'server {{.Server.Version}}, client {{.Client.Version}}' 2>/dev/null || true)"

phase_done engine
# ----------------------------------------------------------------- venv ---
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    say "Creating virtualenv $VENV ($("$PYTHON" --version 2>&1))"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi

[ -f "$ROOT/pyproject.toml" ] || die "no pyproject.toml in $ROOT"
# Reinstall only when pyproject.toml changed (or the install is missing): an
# editable install picks up source changes by itself.
stamp="$VENV/.dockyard-install.sha256"
want=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] \
        || ! "$VENV/bin/python" -m pip show -q dockyard >/dev/null 2>&1; then
    say "Installing dockyard (editable) with test extras into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "${ROOT}[test]" </dev/null
    echo "$want" >"$stamp"
else
    say "Python environment up to date"
fi

# Put `dockyard` on PATH; a file there that is not ours is left alone (with a warning).
"$ROOT/scripts/link-cli.sh" "$VENV/bin/dockyard"

phase_done venv
# --------------------------------------------------------------- images ---
say "Base images"
"$ROOT/scripts/build-base-images.sh"

phase_done "base images"
# Stand-ins for the official postgres/redis/mysql images (nothing can be pulled here).
say "Service images"
"$ROOT/scripts/build-service-images.sh"

phase_done "service images"
# The Swarm edge proxy's stand-in, and the Docker-in-Docker node the swarm tests cluster.
say "Swarm images"
"$ROOT/scripts/build-swarm-images.sh"

phase_done "swarm images"
timings=$(printf '%s, ' "${TIMINGS[@]}")
say "Setup done in $((SECONDS - SETUP_STARTED))s (${timings%, })"
next_steps() {
    local here
    here=$(hostname -I 2>/dev/null | cut -d' ' -f1)
    here=${here:-THIS-SERVER}
    cat <<STEPS
       Next (dockyard serve runs the server; README.md has the whole quick start):
       1. Add your key:  dockyard init
                         (your ~/.ssh/authorized_keys becomes the admin; or --key FILE.pub)
       2. Set a domain:  dockyard init --domain apps.example.com
                         (with DNS *.apps.example.com -> $here; or --domain $here.sslip.io)
       3. Push an app:   git push ssh://dockyard@$here:2222/hello main
                         (from your machine, in an app such as examples/python)
STEPS
}
next_steps
