#!/usr/bin/env bash
# Images for Swarm test clusters, built once and cached (safe to run again):
#
#   dockyard-swarm/node:bookworm   a Docker-in-Docker node: debootstrap minbase bookworm
#                                  with docker.io, iptables, ca-certificates, procps, curl,
#                                  imported with `docker import`. The rootfs tarball is kept
#                                  in $DOCKYARD_CACHE_DIR, so after `docker rmi` no
#                                  debootstrap is needed (a fresh build takes ~2.5 min).
#   dockyard-swarm/edge:latest     stand-in for the official nginx image (the edge proxy
#                                  on the manager), from dockyard-base/python:3 + nginx-light.
#
# Nothing is pulled: the machine that runs the tests has no container registry.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${DOCKYARD_CACHE_DIR:-/var/cache/dockyard}
SUITE=bookworm
NODE_IMAGE=${DOCKYARD_SWARM_NODE_IMAGE:-dockyard-swarm/node:$SUITE}
EDGE_IMAGE=${DOCKYARD_SWARM_EDGE_IMAGE:-dockyard-swarm/edge:latest}
NODE_INCLUDE=docker.io,iptables,ca-certificates,procps,curl
TARBALL="$CACHE_DIR/swarm-node-$SUITE.tar"
STD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

say() { echo "-----> $*"; }
info() { echo "       $*"; }
die() { echo " !     $*" >&2; exit 1; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap)"
timeout 15 docker info >/dev/null 2>&1 || die "the Docker engine does not answer (scripts/start-dockerd.sh)"
mkdir -p "$CACHE_DIR"

mirror() {
    # The mirror apt already uses (deb822 first, then one-line lists); Debian's default else.
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2; exit}')
    [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        | sed 's/\[[^]]*\]//' | awk '{print $2; exit}')
    echo "${uri:-http://deb.debian.org/debian}"
}

build_tarball() {
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found (apt-get install debootstrap)"
    local work root log
    work=$(mktemp -d "$CACHE_DIR/swarm-node.XXXXXX")
    root="$work/root"
    log="$CACHE_DIR/debootstrap-swarm-node.log"
    trap 'for m in proc sys dev/pts dev; do mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"; done; rm -rf "$work"' RETURN
    info "debootstrap --variant=minbase --include=$NODE_INCLUDE $SUITE ($(mirror))"
    if ! debootstrap --variant=minbase --include="$NODE_INCLUDE" "$SUITE" "$root" "$(mirror)" \
            >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "debootstrap failed; see $log"
    fi
    for m in proc sys dev/pts dev; do
        mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"
    done
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
           "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/var/log/*.log
    chroot "$root" dockerd --version >/dev/null || die "dockerd does not run in the new rootfs"
    tar --numeric-owner -C "$root" -cf "$TARBALL.tmp" .
    mv -f "$TARBALL.tmp" "$TARBALL"
    info "cached $TARBALL ($(du -h "$TARBALL" | cut -f1))"
}

if have_image "$NODE_IMAGE"; then
    say "$NODE_IMAGE present"
else
    say "Building $NODE_IMAGE"
    [ -s "$TARBALL" ] && info "using cached rootfs $TARBALL" || build_tarball
    docker import --change "ENV PATH=$STD_PATH" --change 'CMD ["dockerd"]' \
        --message "dockyard swarm test node (debian $SUITE minbase + $NODE_INCLUDE)" \
        "$TARBALL" "$NODE_IMAGE" >/dev/null
fi

if have_image "$EDGE_IMAGE"; then
    say "$EDGE_IMAGE present"
else
    have_image dockyard-base/python:3 || "$ROOT/scripts/build-base-images.sh"
    say "Building $EDGE_IMAGE (nginx-light from Debian)"
    docker build -q -t "$EDGE_IMAGE" "$ROOT/scripts/swarm-images/edge" >/dev/null
fi
info "$NODE_IMAGE: $(docker image inspect -f '{{.Size}}' "$NODE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
info "$EDGE_IMAGE: $(docker image inspect -f '{{.Size}}' "$EDGE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
