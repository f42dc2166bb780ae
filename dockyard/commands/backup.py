"""`backup FILE` / `restore FILE`: the whole data dir that matters, in one archive.

Certificates and their keys (`nginx/certs`) and ACME account keys (`letsencrypt/accounts`)
are kept, so a restored server serves and renews the same certificates.

Consistent while the server runs: state.db is copied with SQLite's online backup API, and
each repo is archived under its app lock, so no push is half-included. Build logs, nginx
runtime files and locks are not kept: they are rebuilt. Local CLI only: the archive path
names a file on the server.

Stages add what they keep outside these files (database services' dumps, storage
directories) as backup parts: each writes its members under its own top-level folder of the
archive, and restores them after state.db is back (with the restored state open), so a
part can recreate what its rows describe.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import sqlite3
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dockyard import __version__
from dockyard.access import Access
from dockyard.context import Context
from dockyard.errors import DockyardError, UsageError
from dockyard.locks import app_lock
from dockyard.output import Output
from dockyard.registry import CommandParser, command
from dockyard.services import Services
from dockyard.settings import Settings

MANIFEST = "dockyard-backup.json"
# What a backup holds, relative to the data dir. Nothing else is restored.
KEPT = ("state.db", "authorized_keys", "host_keys", "repos", "nginx/certs", "letsencrypt/accounts")
# Directories holding private keys: 0700 after a restore, whatever the archive said.
PRIVATE_DIRS = ("host_keys", "nginx/certs", "letsencrypt", "letsencrypt/accounts")
# Where a restore leaves the parts' folders for their restore step, under the data dir.
RESTORING = ".restoring"


@dataclass(frozen=True)
class BackupPart:
    """What one stage adds to a backup. `write(services, tar, scratch, out)` adds members
    under `prefix/` (scratch is a private directory for temporary files) and returns what it
    included; `restore(services, folder, out)` brings back what `folder` (the archive's
    `prefix/`, extracted) holds and returns what it restored."""

    prefix: str
    write: Callable[[Services, tarfile.TarFile, Path, Output], list[str]]
    restore: Callable[[Services, Path, Output], list[str]]


_parts: list[BackupPart] = []


def register_backup_part(part: BackupPart) -> BackupPart:
    if part.prefix in KEPT or part.prefix in (MANIFEST, RESTORING) or "/" in part.prefix:
        raise RuntimeError(f"backup part {part.prefix} clashes with the core's")
    _parts.append(part)
    return part


def _prefixes() -> tuple[str, ...]:
    return KEPT + tuple(p.prefix for p in _parts)


def _require_local(ctx: Context, name: str) -> None:
    if not ctx.local:
        raise UsageError(f"{name} runs on the server itself: dockyard {name} FILE")


def write_backup(services: Services, target: Path, out: Output | None = None) -> list[str]:
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
            for part in _parts:
                part_scratch = Path(scratch) / f"part-{part.prefix}"
                part_scratch.mkdir(mode=0o700)
                included += part.write(services, tar, part_scratch, out or _null_output())
                shutil.rmtree(part_scratch, ignore_errors=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, target)
    return included


def _check_member(member: tarfile.TarInfo) -> None:
    path = Path(member.name)
    if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
        raise DockyardError(f"Refusing archive: unsafe entry {member.name!r}")
    if member.name != MANIFEST and not any(
        member.name == k or member.name.startswith(k + "/") for k in _prefixes()
    ):
        raise DockyardError(f"Refusing archive: unexpected entry {member.name!r}")


class _Padded:
    """A file read as exactly `size` bytes: a file an app shrinks while it is archived is
    padded with zeros instead of breaking the archive (tarfile reads exactly the size)."""

    def __init__(self, f: io.BufferedReader, size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        data += b"\0" * (n - len(data))
        self.left -= n
        return data


def add_tree_unfollowed(tar: tarfile.TarFile, path: Path, arcname: str = ".") -> None:
    """Archive the directory `path` as `arcname`, following no symbolic link at any depth.

    The tree may be written by a running app while it is read (a storage mount): every
    entry is opened relative to its parent's descriptor with O_NOFOLLOW, so a directory
    swapped for a link to `/` between listing and opening is refused by the kernel, not
    archived. Files, directories and symbolic links (as links) only."""
    root_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        _add_dir(tar, root_fd, arcname)
    finally:
        os.close(root_fd)


def _tar_info(name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid, info.mtime = st.st_uid, st.st_gid, int(st.st_mtime)
    return info


def _add_dir(tar: tarfile.TarFile, dir_fd: int, arcname: str) -> None:
    tar.addfile(_tar_info(arcname, os.fstat(dir_fd), tarfile.DIRTYPE))
    for entry in sorted(os.listdir(dir_fd)):
        member = f"{arcname}/{entry}"
        try:
            st = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                info = _tar_info(member, st, tarfile.SYMTYPE)
                info.linkname = os.readlink(entry, dir_fd=dir_fd)
                tar.addfile(info)
            elif stat.S_ISDIR(st.st_mode):
                fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
                try:
                    _add_dir(tar, fd, member)
                finally:
                    os.close(fd)
            elif stat.S_ISREG(st.st_mode):
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                with os.fdopen(os.open(entry, flags, dir_fd=dir_fd), "rb") as f:
                    st = os.fstat(f.fileno())
                    if not stat.S_ISREG(st.st_mode):
                        continue  # swapped for a fifo or device after the listing
                    info = _tar_info(member, st, tarfile.REGTYPE)
                    info.size = st.st_size
                    tar.addfile(info, _Padded(f, st.st_size))
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed (or swapped) while archived: it is not in this backup
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            # ELOOP: swapped for a symbolic link after the listing; never followed.


def extract_checked(
    tar: tarfile.TarFile,
    dest: Path,
    members: list[tarfile.TarInfo] | None = None,
    links: bool = False,
) -> None:
    """Extract into `dest`, never writing outside it, on every Python this runs on (Debian
    12's 3.11.2 has no `extractall(filter=…)`). Refused: absolute names, `..`, devices and
    fifos, links unless `links` (then hard links must point inside), and any member whose
    directory resolves outside `dest` through a link extracted before it. An existing link
    at a member's path is replaced, never followed. Setuid/setgid bits are dropped; owners
    are kept when running as root (storage directories keep their apps' owners)."""
    root = os.path.realpath(dest)
    later_dirs: list[tuple[tarfile.TarInfo, str]] = []
    for member in members if members is not None else tar.getmembers():
        name = member.name.rstrip("/")
        if name in ("", "."):
            if member.isdir():
                later_dirs.append((member, root))
            continue
        parts = Path(name).parts
        is_link = member.issym() or member.islnk()
        allowed = member.isfile() or member.isdir() or (links and is_link)
        if Path(name).is_absolute() or ".." in parts or not allowed:
            raise DockyardError(f"Refusing archive: unsafe entry {member.name!r}")
        target = os.path.join(root, name)
        parent = os.path.realpath(os.path.dirname(target))
        if parent != root and not parent.startswith(root + os.sep):
            raise DockyardError(f"Refusing archive: {member.name!r} leads outside")
        if member.islnk():
            linked = os.path.normpath(os.path.join(root, member.linkname))
            if not linked.startswith(root + os.sep):
                raise DockyardError(f"Refusing archive: hard link {member.name!r} leads outside")
        if os.path.islink(target) or (os.path.lexists(target) and not member.isdir()):
            os.unlink(target)
        member.mode &= 0o1777
        if member.isdir():
            os.makedirs(target, mode=0o700, exist_ok=True)
            later_dirs.append((member, target))
            continue
        tar.extract(member, root, set_attrs=True, numeric_owner=True)
    # Directory owners and modes last, deepest first: a read-only directory must not stop
    # its own files from being written.
    for member, target in reversed(later_dirs):
        if os.geteuid() == 0:
            tar.chown(member, target, numeric_owner=True)
        tar.chmod(member, target)
        tar.utime(member, target)


def restore_backup(archive: Path, data_dir: Path) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        if MANIFEST not in {m.name for m in members}:
            raise DockyardError(f"{archive} is not a Dockyard backup (no {MANIFEST})")
        for member in members:
            _check_member(member)
        with tempfile.TemporaryDirectory(dir=data_dir) as scratch:
            extract_checked(tar, Path(scratch), members)
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
            staging = data_dir / RESTORING
            if staging.exists():
                shutil.rmtree(staging)
            for part in _parts:
                src = Path(scratch) / part.prefix
                if src.exists():
                    staging.mkdir(mode=0o700, exist_ok=True)
                    os.replace(src, staging / part.prefix)
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
    for name in write_backup(ctx.services, target, ctx.out):
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
    failed = restore_parts(ctx.services.settings, ctx.out)
    ctx.out.step("Restored. Start the server, then rebuild the apps: ps:rebuild --all")
    if failed:
        raise DockyardError("Not restored: " + ", ".join(failed))


def restore_parts(settings: Settings, out: Output) -> list[str]:
    """Run each part's restore on what `restore_backup` staged, with the restored state
    open (a new Services: the old one's database connection names the replaced file).
    Returns the parts that failed; one failing part does not stop the others."""
    staging = settings.data_dir / RESTORING
    if not staging.exists():
        return []
    services = Services(settings)
    failed = []
    try:
        for part in _parts:
            folder = staging / part.prefix
            if not folder.exists():
                continue
            try:
                for name in part.restore(services, folder, out):
                    out.detail(name)
            except DockyardError as exc:
                out.error(f"{part.prefix}: {exc.message}")
                failed.append(part.prefix)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return failed


class _NullStream:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def _null_output() -> Output:
    return Output(_NullStream(), _NullStream())  # type: ignore[arg-type]
