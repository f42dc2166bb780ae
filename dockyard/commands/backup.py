"""`backup FILE` / `restore FILE`: the whole data dir that matters, in one archive.

Certificates and their keys (`nginx/certs`) and ACME account keys (`letsencrypt/accounts`)
are kept, so a restored server serves and renews the same certificates.

Consistent while the server runs: state.db is copied with SQLite's online backup API, and
each repo is archived under its app lock, so no push is half-included. Build logs, nginx
runtime files and locks are not kept: they are rebuilt. Local CLI only: the archive path
names a file on the server.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from pathlib import Path

from dockyard import __version__
from dockyard.access import Access
from dockyard.context import Context
from dockyard.errors import DockyardError, UsageError
from dockyard.locks import app_lock
from dockyard.registry import CommandParser, command
from dockyard.services import Services

MANIFEST = "dockyard-backup.json"
# What a backup holds, relative to the data dir. Nothing else is restored.
KEPT = ("state.db", "authorized_keys", "host_keys", "repos", "nginx/certs", "letsencrypt/accounts")
# Directories holding private keys: 0700 after a restore, whatever the archive said.
PRIVATE_DIRS = ("host_keys", "nginx/certs", "letsencrypt", "letsencrypt/accounts")


def _require_local(ctx: Context, name: str) -> None:
    if not ctx.local:
        raise UsageError(f"{name} runs on the server itself: dockyard {name} FILE")


def write_backup(services: Services, target: Path) -> list[str]:
    data = services.settings.data_dir
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    included: list[str] = []
    with tempfile.TemporaryDirectory(dir=data) as scratch:
        db_copy = Path(scratch) / "state.db"
        source = sqlite3.connect(services.settings.state_db)
        dest = sqlite3.connect(db_copy)
        try:
            source.backup(dest)
        finally:
            dest.close()
            source.close()
        with tarfile.open(tmp, "w:gz") as tar:
            manifest = {"version": __version__, "created": time.time(), "contents": list(KEPT)}
            blob = json.dumps(manifest).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(blob), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(blob))
            tar.add(db_copy, "state.db")
            included.append("state.db")
            for name in ("authorized_keys", "host_keys", "nginx/certs", "letsencrypt/accounts"):
                if (data / name).exists():
                    tar.add(data / name, name)
                    included.append(name)
            repos = services.settings.repos_dir
            for repo in sorted(repos.glob("*.git")) if repos.exists() else []:
                with app_lock(services.settings.locks_dir, repo.name[: -len(".git")]):
                    tar.add(repo, f"repos/{repo.name}")
                included.append(f"repos/{repo.name}")
    os.chmod(tmp, 0o600)
    os.replace(tmp, target)
    return included


def _check_member(member: tarfile.TarInfo) -> None:
    path = Path(member.name)
    if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
        raise DockyardError(f"Refusing archive: unsafe entry {member.name!r}")
    if member.name != MANIFEST and not any(
        member.name == k or member.name.startswith(k + "/") for k in KEPT
    ):
        raise DockyardError(f"Refusing archive: unexpected entry {member.name!r}")


def _extract(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: Path) -> None:
    """What `extractall(filter="data")` does, which Debian 12's Python (3.11.2) lacks: the
    members are already checked to be plain files and directories below `dest`; each gets
    its mode without setuid, setgid, sticky or write for others, and belongs to us."""
    for member in members:
        target = dest / member.name
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True, mode=0o700)
            continue
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        source = tar.extractfile(member)
        assert source is not None  # a regular file, checked above
        with source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
        os.chmod(target, member.mode & 0o755)
    for member in members:
        if member.isdir():
            os.chmod(dest / member.name, member.mode & 0o755)


def restore_backup(archive: Path, data_dir: Path) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        if MANIFEST not in {m.name for m in members}:
            raise DockyardError(f"{archive} is not a Dockyard backup (no {MANIFEST})")
        for member in members:
            _check_member(member)
        with tempfile.TemporaryDirectory(dir=data_dir) as scratch:
            _extract(tar, members, Path(scratch))
            restored = []
            for name in KEPT:
                src = Path(scratch) / name
                if not src.exists():
                    continue
                dest = data_dir / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.is_dir():
                    shutil.rmtree(dest)
                elif dest.exists():
                    dest.unlink()
                os.replace(src, dest)
                restored.append(name)
    for private in PRIVATE_DIRS:
        if (data_dir / private).is_dir():
            os.chmod(data_dir / private, 0o700)
    for leftover in ("state.db-wal", "state.db-shm"):
        (data_dir / leftover).unlink(missing_ok=True)
    return restored


@command("backup", "Write state, repos, keys, host keys, certs and ACME accounts to FILE",
         "FILE",
         access=Access.ADMIN)  # fmt: skip
def backup(ctx: Context, argv: list[str]) -> None:
    _require_local(ctx, "backup")
    parser = CommandParser("backup")
    parser.add_argument("file", metavar="FILE")
    target = Path(parser.parse_args(argv).file).absolute()
    if not target.parent.is_dir():
        raise UsageError(f"{target.parent} is not a directory")
    ctx.out.step(f"Backing up {ctx.services.settings.data_dir} to {target}")
    for name in write_backup(ctx.services, target):
        ctx.out.detail(name)
    ctx.event("backup", None, str(target))


@command("restore", "Restore a backup into this data dir (server stopped)", "FILE [--force]",
         access=Access.ADMIN)  # fmt: skip
def restore(ctx: Context, argv: list[str]) -> None:
    _require_local(ctx, "restore")
    parser = CommandParser("restore")
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    archive = Path(args.file)
    if not archive.is_file():
        raise UsageError(f"{archive} does not exist")
    if ctx.services.apps.all() and not args.force:
        raise DockyardError(
            "This data dir already has apps; restoring replaces its state, repos and keys.\n"
            f"To proceed, run: restore {archive} --force"
        )
    ctx.out.step(f"Restoring {archive} into {ctx.services.settings.data_dir}")
    for name in restore_backup(archive, ctx.services.settings.data_dir):
        ctx.out.detail(name)
    ctx.out.step("Restored. Start the server, then rebuild the apps: ps:rebuild --all")
