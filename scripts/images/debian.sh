# shellcheck shell=bash
# Debian minbase images: debootstrap → rootfs tarball (cached) → `docker import`.
# Sourced by scripts/build-base-images.sh after lib.sh; works in $WORK.

# debian_tarball SUITE: where the cached rootfs of SUITE lives.
debian_tarball() { echo "$CACHE_DIR/debian-$1-minbase.tar"; }

# build_debian_rootfs SUITE: debootstrap --variant=minbase + ca-certificates, trimmed like
# debian:*-slim, with apt pointed at SUITE, SUITE-updates and SUITE-security; cached as
# a tarball. Does nothing when the tarball is already there.
build_debian_rootfs() {
    local suite=$1 tarball mirror security root dblog m
    tarball=$(debian_tarball "$suite")
    if [ -s "$tarball" ]; then
        info "$suite: using cached rootfs $tarball"
        return 0
    fi
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found (install debootstrap)"
    [ -e "/usr/share/debootstrap/scripts/$suite" ] \
        || die "this debootstrap does not know '$suite' (upgrade debootstrap)"
    mirror=$(mirror_for "$suite")
    security=$(mirror_for "$suite" security)
    root=$(mktemp -d "$WORK/rootfs-$suite.XXXXXX")
    chmod 0755 "$root"  # the image's / (mktemp makes it 0700)
    # shellcheck disable=SC2064  # expand $root now: the trap runs after this function returns
    trap "umount_chroot '$root'; rm -rf --one-file-system '$root'" EXIT
    dblog="$LOG_DIR/debootstrap-$suite.log"
    info "$suite: debootstrap --variant=minbase --include=ca-certificates from $mirror"
    if ! debootstrap --variant=minbase --include=ca-certificates \
            "$suite" "$root" "$mirror" >"$dblog" 2>&1; then
        tail -n 20 "$dblog" >&2
        [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 20 "$root/debootstrap/debootstrap.log" >&2
        die "$suite: debootstrap failed; see $dblog"
    fi
    umount_chroot "$root"

    # apt: the release, its updates and its security suite (deb822, as Debian 12+ does).
    local keyring=""
    for m in /usr/share/keyrings/debian-archive-keyring.pgp /usr/share/keyrings/debian-archive-keyring.gpg; do
        if [ -e "$root$m" ]; then keyring=$m; break; fi
    done
    rm -f "$root/etc/apt/sources.list"
    {
        printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' "$mirror" "$suite" "$suite"
        [ -n "$keyring" ] && printf 'Signed-By: %s\n' "$keyring"
        printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "$security" "$suite"
        [ -n "$keyring" ] && printf 'Signed-By: %s\n' "$keyring"
    } >"$root/etc/apt/sources.list.d/debian.sources"
    # As Debian's official images: no .debs kept after install, no translations, no docs
    # or man pages unpacked, no services started by package scripts during `docker build`.
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CONF
    echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CONF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CONF
    # Image builds need no fsync after each unpacked file (a crash fails the build anyway):
    # about a quarter off installing node's ~400 packages.
    echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
    printf '#!/bin/sh\n# dockyard base image: no services start inside image builds\nexit 101\n' \
        >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"

    # debootstrap installs from the release suite only: add the point-release and security
    # updates published since (as Debian's official images carry them).
    info "$suite: apt-get dist-upgrade from $suite-updates and $suite-security"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    mount -t proc proc "$root/proc"
    if ! chroot "$root" /usr/bin/env -i PATH="$STD_PATH" LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
            /bin/sh -c 'apt-get update -qq && apt-get dist-upgrade -y -qq --no-install-recommends \
                        && apt-get clean' >>"$dblog" 2>&1 </dev/null; then
        tail -n 20 "$dblog" >&2
        die "$suite: apt-get dist-upgrade failed in the new rootfs; see $dblog"
    fi
    umount "$root/proc"
    info "$suite: $(grep -c '^Setting up' "$dblog" || true) packages upgraded"

    # Trim what debootstrap already unpacked the same way; Docker provides
    # hostname/hosts/resolv.conf at run time.
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias \
        -exec rm -rf {} + 2>/dev/null || true
    find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/archives/partial/* \
           "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
           "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
           "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian/* \
           "$root"/var/log/*.log "$root"/var/log/apt/* \
           "$root"/tmp/* "$root"/var/tmp/* "$root"/root/.cache
    # Keep the man section directories: update-alternatives (openjdk's postinst, for one)
    # fails when it cannot place its man page link there.
    mkdir -p "$root"/usr/share/man/man{1..8}
    : >"$root/etc/hostname"
    : >"$root/etc/resolv.conf"

    [ -s "$root/etc/ssl/certs/ca-certificates.crt" ] || die "$suite: rootfs has no CA bundle"
    chroot "$root" /bin/sh -c 'apt-get --version >/dev/null && dpkg -s ca-certificates >/dev/null' \
        || die "$suite: apt or ca-certificates broken in the new rootfs"
    tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
    mv -f "$tarball.tmp" "$tarball"
    rm -rf --one-file-system "$root"
    trap - EXIT
    info "$suite: cached rootfs $tarball ($(du -h "$tarball" | cut -f1), debian $(debian_version_of "$tarball"))"
}

umount_chroot() {
    # debootstrap may leave its chroot mounts behind on some hosts.
    local m
    for m in proc sys dev/pts dev; do
        if mountpoint -q "$1/$m" 2>/dev/null; then umount -l "$1/$m" || true; fi
    done
}

debian_version_of() { tar -xOf "$1" ./etc/debian_version 2>/dev/null | head -n1; }

# import_debian_base SUITE IMAGE: `docker import` the cached rootfs with the procfile labels.
import_debian_base() {
    local suite=$1 image=$2 tarball version
    tarball=$(debian_tarball "$suite")
    version=$(debian_version_of "$tarball")
    [ -n "$version" ] || die "$suite: no /etc/debian_version in $tarball"
    docker import \
        --change 'CMD ["bash"]' \
        --change "ENV PATH=$STD_PATH" \
        --change 'ENV LANG=C.UTF-8' \
        --change 'LABEL dockyard.runtime=procfile' \
        --change "LABEL dockyard.runtime.version=$version" \
        --change "LABEL dockyard.runtime.suite=$suite" \
        --message "dockyard debian base ($suite minbase + ca-certificates, debian $version)" \
        "$tarball" "$image" >/dev/null
}
