"""Generate the benchmark repository: deterministic, >= 2,000 commits, >= 20 MB pack.

Content is random bytes (seeded), so the pack really is as large as the data: zlib cannot
shrink it. Each commit adds one ~10 KiB binary file and appends a line to a text file that
every commit touches, so the pack also carries a long delta chain, as real histories do.
Built with `git fast-import` and cached under /tmp, keyed by the parameters.

    python bench/make_repo.py [--commits N] [--blob-size BYTES]   # prints the repo path
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
from pathlib import Path

CACHE_ROOT = Path("/tmp/dockyard-bench")
DEFAULT_COMMITS = 2100
DEFAULT_BLOB_SIZE = 10 * 1024
SEED = 20261122
EPOCH = 1_700_000_000
AUTHOR = b"Bench <bench@example.com>"
CHANGELOG_LINES = 200


def _data(chunk: bytes) -> bytes:
    return b"data %d\n" % len(chunk) + chunk + b"\n"


def fast_import_stream(commits: int, blob_size: int, start: int = 0, parent: bytes = b"") -> bytes:
    """The fast-import commands for `commits` commits on refs/heads/main.

    `start` numbers the commits (and seeds their content), so an extension of the history
    (the incremental push) is as deterministic as the base."""
    out = bytearray()
    rng = random.Random(SEED + start)
    log_lines: list[bytes] = []
    for i in range(start, start + commits):
        log_lines = [
            *log_lines[-(CHANGELOG_LINES - 1) :],
            b"line %d: %s\n" % (i, rng.randbytes(24).hex().encode()),
        ]
        when = EPOCH + i * 60
        out += b"commit refs/heads/main\n"
        out += b"committer %s %d +0000\n" % (AUTHOR, when)
        out += _data(b"commit %d" % i)
        if i == start and parent:
            out += b"from " + parent + b"\n"
        out += b"M 100644 inline data/%02d/blob-%05d.bin\n" % (i % 64, i)
        out += _data(rng.randbytes(blob_size))
        out += b"M 100644 inline CHANGELOG.txt\n" + _data(b"".join(log_lines))
        if i == start:
            out += b"M 100755 inline run.sh\n" + _data(b"#!/bin/sh\necho hello\n")
            out += b"M 120000 inline latest\n" + _data(b"CHANGELOG.txt")
        out += b"\n"
    return bytes(out)


def build(path: Path, commits: int, blob_size: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp)], check=True)
    subprocess.run(
        ["git", "fast-import", "--quiet"],
        cwd=tmp,
        input=fast_import_stream(commits, blob_size),
        check=True,
    )
    subprocess.run(["git", "tag", "-a", "-m", "first release", "v1.0", "main~100"], cwd=tmp,
                   check=True, env=_git_identity())  # fmt: skip
    subprocess.run(["git", "repack", "-adq"], cwd=tmp, check=True)
    subprocess.run(["git", "checkout", "-q", "main"], cwd=tmp, check=True)
    tmp.rename(path)


def _git_identity() -> dict[str, str]:
    import os

    return {
        **os.environ,
        "GIT_COMMITTER_NAME": "Bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
        "GIT_COMMITTER_DATE": f"{EPOCH} +0000",
    }


def ensure_repo(commits: int = DEFAULT_COMMITS, blob_size: int = DEFAULT_BLOB_SIZE) -> Path:
    path = CACHE_ROOT / f"repo-c{commits}-b{blob_size}-s{SEED}"
    if not path.is_dir():
        CACHE_ROOT.mkdir(parents=True, exist_ok=True)
        build(path, commits, blob_size)
    return path


def add_commits(worktree: Path, count: int, start: int, blob_size: int = DEFAULT_BLOB_SIZE) -> None:
    """Append `count` deterministic commits to main in `worktree` (for the incremental push)."""
    head = subprocess.run(
        ["git", "rev-parse", "main"], cwd=worktree, capture_output=True, check=True
    ).stdout.strip()
    subprocess.run(
        ["git", "fast-import", "--quiet", "--force"],
        cwd=worktree,
        input=fast_import_stream(count, blob_size, start=start, parent=head),
        check=True,
    )


def pack_size(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / ".git" / "objects" / "pack").glob("*.pack"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=DEFAULT_COMMITS)
    parser.add_argument("--blob-size", type=int, default=DEFAULT_BLOB_SIZE)
    args = parser.parse_args()
    path = ensure_repo(args.commits, args.blob_size)
    print(path)
    print(f"pack size: {pack_size(path) / 1e6:.1f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
