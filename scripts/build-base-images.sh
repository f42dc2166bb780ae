#!/usr/bin/env bash
# Build Dockyard's local base images with `docker import` (no registry, no pull).
#
#   dockyard-base/busybox:latest   busybox-static + applet symlinks (has httpd)
#   dockyard-base/python:3         debootstrap minbase + python3 + ca-certificates
#   dockyard-base/python:latest    alias of dockyard-base/python:3
#
# Each image is built only when missing. The python rootfs tarball is cached in
# $DOCKYARD_CACHE_DIR so a rebuild after `docker rmi` needs no debootstrap.
set -euo pipefail

CACHE_DIR=${DOCKYARD_CACHE_DIR:-/var/cache/dockyard}
BUSYBOX_BIN=${DOCKYARD_BUSYBOX:-/bin/busybox}
PYTHON_INCLUDE=${DOCKYARD_PYTHON_INCLUDE:-python3,ca-certificates}
STD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

BUSYBOX_IMAGE=dockyard-base/busybox:latest
PYTHON_IMAGE=dockyard-base/python:3
PYTHON_ALIASES=(dockyard-base/python:latest)

say() { echo "-----> $*"; }
info() { echo "       $*"; }
die() { echo " !     $*" >&2; exit 1; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
image_size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.1f MB", $1/1000/1000}'; }

WORK=""
cleanup() { if [ -n "$WORK" ] && [ -d "$WORK" ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT

mkdir -p "$CACHE_DIR"
WORK=$(mktemp -d "$CACHE_DIR/build.XXXXXX")

# ---------------------------------------------------------------- busybox ---
build_busybox() {
    [ -x "$BUSYBOX_BIN" ] || die "$BUSYBOX_BIN not found (install busybox-static)"
    # A dynamically linked busybox would not run in an empty rootfs.
    if command -v file >/dev/null 2>&1 && ! file -L "$BUSYBOX_BIN" | grep -q 'statically linked'; then
        die "$BUSYBOX_BIN is not statically linked (install busybox-static)"
    fi
    "$BUSYBOX_BIN" --list | grep -qx httpd || die "$BUSYBOX_BIN has no httpd applet"

    local root="$WORK/busybox"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,home,proc,sys,dev,var/www,var/log}
    install -d -m 1777 "$root/tmp"
    install -m 0755 "$BUSYBOX_BIN" "$root/bin/busybox"

    # `--list-full` gives each applet's conventional place (usr/bin/env for
    # `#!/usr/bin/env` scripts, bin/sh, sbin/...); fall back to bin/ for all.
    local applets
    if applets=$("$BUSYBOX_BIN" --list-full 2>/dev/null) && [ -n "$applets" ]; then :; else
        applets=$("$BUSYBOX_BIN" --list | sed 's|^|bin/|')
    fi
    local path n=0
    while IFS= read -r path; do
        [ -n "$path" ] || continue
        [ "$(basename "$path")" = busybox ] && continue
        mkdir -p "$root/$(dirname "$path")"
        [ -e "$root/$path" ] || [ -L "$root/$path" ] || { ln -s /bin/busybox "$root/$path"; n=$((n + 1)); }
    done <<<"$applets"
    [ -L "$root/bin/sh" ] || ln -s /bin/busybox "$root/bin/sh"
    [ -L "$root/bin/httpd" ] || [ -L "$root/usr/sbin/httpd" ] || [ -L "$root/sbin/httpd" ] \
        || ln -s /bin/busybox "$root/bin/httpd"

    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
www-data:x:33:
nogroup:x:65534:
EOF
    chmod 0700 "$root/root"
    info "$n applet links"

    tar --numeric-owner --owner=0 --group=0 -C "$root" -c . \
        | docker import \
            --change 'CMD ["/bin/sh"]' \
            --change "ENV PATH=$STD_PATH" \
            --message "dockyard busybox base ($("$BUSYBOX_BIN" 2>&1 | head -n1 | awk '{print $2}'))" \
            - "$BUSYBOX_IMAGE" >/dev/null
}

# ----------------------------------------------------------------- python ---
# The Debian mirror this machine already uses, from apt's own configuration
# (deb822 *.sources first, then one-line sources.list files). Prints the URI of
# the first enabled "deb" source that carries the release suite itself.
debian_mirror() {
    local suite=$1 f
    shopt -s nullglob
    for f in /etc/apt/sources.list.d/*.sources; do
        awk -v suite="$suite" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && suites ~ ("(^| )" suite "( |$)") && enabled != "no" && uri != "")
                    { print uri; found = 1; exit }
                types = ""; suites = ""; uri = ""; enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "types:"   { $1 = ""; types = $0 }
            tolower($1) == "suites:"  { $1 = ""; suites = $0 }
            tolower($1) == "uris:"    { uri = $2 }
            tolower($1) == "enabled:" { enabled = tolower($2) }
            END { if (!found) flush() }
        ' "$f" | head -n1
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # deb [opts] URI SUITE COMPONENTS...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" \
            | awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2; exit }'
    done
    shopt -u nullglob
}

build_python() {
    local suite tarball
    # shellcheck disable=SC1091
    suite=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    suite=${suite:-bookworm}
    tarball="$CACHE_DIR/python3-$suite-minbase.tar"

    if [ -s "$tarball" ]; then
        info "using cached rootfs $tarball"
    else
        command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found (install debootstrap)"
        local mirror
        mirror=$(debian_mirror "$suite" | head -n1)
        [ -n "$mirror" ] || die "no Debian mirror for '$suite' found in /etc/apt/sources.list{,.d/*}"
        info "debootstrap $suite from $mirror (include: $PYTHON_INCLUDE)"
        local root="$WORK/python"
        local dblog="$CACHE_DIR/debootstrap-python.log"
        if ! debootstrap --variant=minbase --include="$PYTHON_INCLUDE" \
                "$suite" "$root" "$mirror" >"$dblog" 2>&1; then
            tail -n 20 "$dblog" >&2
            [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 20 "$root/debootstrap/debootstrap.log" >&2
            die "debootstrap failed; see $dblog"
        fi
        # debootstrap may leave its chroot mounts behind on some hosts.
        local m
        for m in proc sys dev/pts dev; do
            if mountpoint -q "$root/$m" 2>/dev/null; then umount -l "$root/$m" || true; fi
        done
        # Keep it small (as debian:*-slim does): apt caches and lists, logs,
        # docs, message translations. Docker provides hostname/hosts/resolv.conf
        # at run time.
        find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias \
            -exec rm -rf {} + 2>/dev/null || true
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/archives/partial/* \
               "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
               "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
               "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
               "$root"/usr/share/lintian/* \
               "$root"/var/log/*.log "$root"/var/log/apt/* \
               "$root"/tmp/* "$root"/var/tmp/* "$root"/root/.cache
        : >"$root/etc/hostname"
        chroot "$root" python3 -c 'import ssl, sys; print(sys.version.split()[0])' >/dev/null \
            || die "python3 does not run in the new rootfs"
        tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
        mv -f "$tarball.tmp" "$tarball"
        rm -rf "$root"
        info "cached rootfs $tarball ($(du -h "$tarball" | cut -f1))"
    fi

    docker import \
        --change 'CMD ["python3"]' \
        --change "ENV PATH=$STD_PATH" \
        --change 'ENV LANG=C.UTF-8' \
        --message "dockyard python base (debian $suite minbase + $PYTHON_INCLUDE)" \
        "$tarball" "$PYTHON_IMAGE" >/dev/null
}

# ------------------------------------------------------------------- main ---
timeout 15 docker info >/dev/null 2>&1 || die "the Docker engine does not answer (scripts/start-dockerd.sh)"

if have_image "$BUSYBOX_IMAGE"; then
    say "$BUSYBOX_IMAGE present"
else
    say "Building $BUSYBOX_IMAGE from $BUSYBOX_BIN"
    build_busybox
fi
docker run --rm --network none "$BUSYBOX_IMAGE" busybox true \
    || die "$BUSYBOX_IMAGE does not run"
docker run --rm --network none "$BUSYBOX_IMAGE" sh -c 'command -v httpd >/dev/null' \
    || die "$BUSYBOX_IMAGE has no httpd"
info "$BUSYBOX_IMAGE ok ($(image_size "$BUSYBOX_IMAGE"))"

if have_image "$PYTHON_IMAGE"; then
    say "$PYTHON_IMAGE present"
else
    say "Building $PYTHON_IMAGE"
    build_python
fi
for alias in "${PYTHON_ALIASES[@]}"; do
    [ "$(docker image inspect -f '{{.Id}}' "$alias" 2>/dev/null)" = \
      "$(docker image inspect -f '{{.Id}}' "$PYTHON_IMAGE")" ] || docker tag "$PYTHON_IMAGE" "$alias"
done
out=$(docker run --rm --network none "$PYTHON_IMAGE" python3 -c 'print(1)') || die "$PYTHON_IMAGE does not run"
[ "$out" = 1 ] || die "$PYTHON_IMAGE: python3 printed '$out', expected 1"
info "$PYTHON_IMAGE ok ($(image_size "$PYTHON_IMAGE"), also ${PYTHON_ALIASES[*]})"
