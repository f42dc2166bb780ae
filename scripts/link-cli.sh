#!/usr/bin/env bash
# Put `dockyard` on PATH: a symlink LINK -> TARGET (default /usr/local/bin/dockyard -> this
# checkout's .venv/bin/dockyard). Run by scripts/setup.sh; safe to run again.
#
#   scripts/link-cli.sh [TARGET [LINK]]
#
# Invariants: only a missing LINK, or a symlink to some Dockyard virtualenv's bin/dockyard
# (another checkout's, or one since deleted), is (re)placed; any other file at LINK (a
# regular file, a symlink elsewhere) is left alone with a warning, and the script still
# succeeds, so setup goes on. The link is made atomically (ln -s to a temporary name, then
# mv -T), so LINK never exists half-made.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${1:-${DOCKYARD_VENV:-$ROOT/.venv}/bin/dockyard}
LINK=${2:-${DOCKYARD_BIN_DIR:-/usr/local/bin}/dockyard}

say() { echo "-----> $*"; }
info() { echo "       $*"; }
warn() { echo " !     $*" >&2; }

[ -x "$TARGET" ] || { warn "$TARGET is missing: the virtualenv is not installed"; exit 1; }

# A link we may replace: a symlink to a bin/dockyard inside a virtualenv (pyvenv.cfg one
# level above bin/), or a dangling symlink to a …/bin/dockyard (a removed checkout).
ours() {
    local dest
    [ -L "$1" ] || return 1
    dest=$(readlink "$1")
    case $dest in */bin/dockyard) ;; *) return 1 ;; esac
    [ -e "$dest" ] || return 0
    [ -f "$(dirname "$(dirname "$dest")")/pyvenv.cfg" ]
}

if [ -L "$LINK" ] && [ "$(readlink "$LINK")" = "$TARGET" ]; then
    info "dockyard on PATH: $LINK -> $TARGET"
elif [ -e "$LINK" ] || [ -L "$LINK" ]; then
    if ours "$LINK"; then
        before=$(readlink "$LINK")
        ln -s "$TARGET" "$LINK.dockyard-new.$$"
        mv -T "$LINK.dockyard-new.$$" "$LINK"
        say "Linked $LINK -> $TARGET (it pointed at $before)"
    else
        what=$( [ -L "$LINK" ] && echo "a symlink to $(readlink "$LINK")" || echo "a file not made by Dockyard")
        warn "$LINK is $what: left alone."
        warn "Run $TARGET instead, or remove $LINK and run scripts/setup.sh again."
        exit 0
    fi
else
    mkdir -p "$(dirname "$LINK")"
    ln -s "$TARGET" "$LINK.dockyard-new.$$"
    mv -T "$LINK.dockyard-new.$$" "$LINK"
    say "Linked $LINK -> $TARGET"
fi

found=$(command -v dockyard 2>/dev/null || true)
if [ "$found" != "$LINK" ]; then
    warn "\`dockyard\` on this PATH is ${found:-nothing}, not $LINK: add $(dirname "$LINK") to PATH"
fi
