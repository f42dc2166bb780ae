# shellcheck shell=bash
# dockyard-base/busybox:latest: busybox-static + applet symlinks (has httpd), `docker import`ed.
# Sourced by scripts/build-base-images.sh after lib.sh; works in $WORK.

BUSYBOX_BIN=${DOCKYARD_BUSYBOX:-/bin/busybox}

busybox_version() { "$BUSYBOX_BIN" 2>&1 | head -n1 | sed -n 's/^BusyBox v\([0-9][0-9.]*\).*/\1/p'; }

build_busybox() {
    local image=$1 root version
    [ -x "$BUSYBOX_BIN" ] || die "$BUSYBOX_BIN not found (install busybox-static)"
    # A dynamically linked busybox would not run in an empty rootfs.
    if command -v file >/dev/null 2>&1 && ! file -L "$BUSYBOX_BIN" | grep -q 'statically linked'; then
        die "$BUSYBOX_BIN is not statically linked (install busybox-static)"
    fi
    "$BUSYBOX_BIN" --list | grep -qx httpd || die "$BUSYBOX_BIN has no httpd applet"
    version=$(busybox_version)
    [ -n "$version" ] || die "cannot tell the version of $BUSYBOX_BIN"

    root="$WORK/busybox"
    mkdir -p "$root"
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

    cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
    cat >"$root/etc/group" <<'GROUP'
root:x:0:
daemon:x:1:
www-data:x:33:
nogroup:x:65534:
GROUP
    chmod 0700 "$root/root"
    info "$n applet links, busybox $version"

    tar --numeric-owner --owner=0 --group=0 -C "$root" -c . \
        | docker import \
            --change 'CMD ["/bin/sh"]' \
            --change "ENV PATH=$STD_PATH" \
            --change 'LABEL dockyard.runtime=static' \
            --change "LABEL dockyard.runtime.version=$version" \
            --change "LABEL dockyard.runtime.suite=$(host_suite)" \
            --message "dockyard busybox base (busybox $version)" \
            - "$image" >/dev/null
    rm -rf --one-file-system "$root"
}
