# shellcheck shell=bash
# Shared helpers for scripts/build-base-images.sh and scripts/images/*.sh (sourced, not run).
# shellcheck disable=SC2034  # the variables are used by the scripts that source this one

STD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CACHE_DIR=${DOCKYARD_CACHE_DIR:-/var/cache/dockyard}
LOG_DIR=$CACHE_DIR/logs
IMAGES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { echo "-----> $*"; }
info() { echo "       $*"; }
warn() { echo " !     $*" >&2; }
die() { echo " !     $*" >&2; exit 1; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null; }
image_size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.1f MB", $1/1000/1000}'; }
image_label() {
    docker image inspect -f "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}
# An image counts as built only once it carries its runtime labels (the version label is
# the last thing added): a half-built or older unlabelled image is rebuilt.
image_complete() {
    have_image "$1" && [ -n "$(image_label "$1" dockyard.runtime)" ] \
        && [ -n "$(image_label "$1" dockyard.runtime.version)" ]
}

now() { date +%s; }
elapsed() { echo "$(($(now) - $1))s"; }

# The host's own Debian codename (bookworm on Debian 12).
host_suite() {
    local suite
    # shellcheck disable=SC1091
    suite=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    echo "${suite:-bookworm}"
}

# The Debian mirror this machine already uses, from apt's own configuration
# (deb822 *.sources first, then one-line sources.list files). Prints the URI of
# the first enabled "deb" source that carries the given suite.
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

# The archive URI for SUITE (e.g. trixie) or its security suite (KIND=security): the one
# apt is configured with for that suite, else the one it uses for the host's own suite (one
# archive carries every release), else deb.debian.org.
mirror_for() {
    local suite=$1 kind=${2:-main} host uri
    host=$(host_suite)
    if [ "$kind" = security ]; then
        uri=$(debian_mirror "$suite-security" | head -n1)
        [ -n "$uri" ] || uri=$(debian_mirror "$host-security" | head -n1)
        echo "${uri:-http://deb.debian.org/debian-security}"
    else
        uri=$(debian_mirror "$suite" | head -n1)
        [ -n "$uri" ] || uri=$(debian_mirror "$host" | head -n1)
        echo "${uri:-http://deb.debian.org/debian}"
    fi
}
