"""`storage:*`: persistent directories bind-mounted into every container of an app.

`storage:ensure-directory NAME` makes `DATA_DIR/storage/NAME` (owned by the key that asked);
`storage:mount APP HOST:CONTAINER[:ro]` records a mount that `ReleaseDeployer.spec` puts into
`ProcessSpec.binds` of every process container, release/predeploy/postdeploy phase and
one-off, so it survives redeploys, rollbacks and restarts (it is app state, not release
state). Dokku's shapes; a mount takes effect at the next deploy or restart, as on Dokku.

Invariants (the attack this guards against is a non-admin tenant reaching host files):
- A non-admin may mount only a directory Dockyard made for its key (by full path or by
  NAME), never a sub-path of one, a named Docker volume or any other host path. Admins may
  mount any absolute host path.
- Paths are plain: absolute, normalised (no `.`/`..`/`//`, no trailing `/`), a conservative
  character set (no `:`, `,`, whitespace or control characters reach the engine's bind
  syntax). The container path is not `/` and not a system directory.
- A Dockyard-made directory is re-checked at every container start: it must still be a real
  directory at exactly its path (no symlink anywhere on the way), or the start is refused —
  a link planted there cannot redirect a mount to the host.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dockyard import services as app_hooks
from dockyard.access import Access, can_see, check_access
from dockyard.apps import App
from dockyard.commands.backup import (
    BackupPart,
    add_tree_unfollowed,
    extract_checked,
    register_backup_part,
)
from dockyard.context import Context
from dockyard.errors import Conflict, DockyardError, NotFound, UsageError
from dockyard.names import check_app_name
from dockyard.output import Output
from dockyard.registry import CommandParser, command
from dockyard.state import StateStore, register_migrations

if TYPE_CHECKING:
    from dockyard.services import Services

register_migrations(
    "storage",
    [
        """CREATE TABLE storage_dirs (
            name TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE storage_mounts (
            app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
            host_path TEXT NOT NULL,
            container_path TEXT NOT NULL,
            read_only INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            PRIMARY KEY (app_id, container_path)
        )""",
    ],
)

PATH_RE = re.compile(r"^/[A-Za-z0-9._@+/-]{0,4095}$")
# Where a mount would hide or expose the container's own system.
SYSTEM_DIRS = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr", "/var/run", "/var/lib/docker",
)  # fmt: skip
UNDER_FORBIDDEN = ("/proc", "/sys", "/dev")
# Dokku's --chown choices: who the directory is handed to.
CHOWN = {"herokuish": (32767, 32767), "heroku": (1000, 1000), "paketo": (2000, 2000),
         "packeto": (2000, 2000), "root": (0, 0), "false": None}  # fmt: skip


@dataclass(frozen=True)
class Mount:
    host: str
    container: str
    read_only: bool

    @property
    def bind(self) -> str:
        return f"{self.host}:{self.container}:{'ro' if self.read_only else 'rw'}"

    @property
    def text(self) -> str:
        return f"{self.host}:{self.container}" + (":ro" if self.read_only else "")


def storage_root(services: Services) -> Path:
    return services.settings.data_dir / "storage"


def check_plain_path(path: str, what: str) -> str:
    """Absolute, normalised, conservative characters; raises UsageError otherwise."""
    if (
        not PATH_RE.fullmatch(path)
        or os.path.normpath(path) != path
        or "//" in path
        or any(part in (".", "..") for part in path.split("/"))
    ):
        raise UsageError(
            f"Invalid {what} {path!r}: use an absolute, normalised path of letters, digits "
            "and . _ @ + - /"
        )
    return path


def check_container_path(path: str) -> str:
    check_plain_path(path, "container path")
    if path == "/" or path in SYSTEM_DIRS or any(path.startswith(d + "/") for d in UNDER_FORBIDDEN):
        raise UsageError(f"Refusing to mount over {path} in the container (a system directory)")
    return path


def parse_mount(spec: str) -> tuple[str, str, bool]:
    """`HOST:CONTAINER[:ro|:rw]` → (host, container, read_only)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise UsageError(f"Invalid mount {spec!r}: expected HOST_DIR:CONTAINER_DIR[:ro]")
    option = parts[2] if len(parts) == 3 else "rw"
    if option not in ("ro", "rw"):
        raise UsageError(f"Invalid mount option {option!r}: ro or rw")
    return parts[0], check_container_path(parts[1]), option == "ro"


class StorageStore:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.state = services.state

    def dir_owner(self, name: str) -> str | None:
        row = self.state.query_one("SELECT owner FROM storage_dirs WHERE name = ?", (name,))
        return row["owner"] if row else None

    def dirs(self) -> list[tuple[str, str]]:
        return [(r["name"], r["owner"]) for r in
                self.state.query("SELECT name, owner FROM storage_dirs ORDER BY name")]  # fmt: skip

    def add_dir(self, name: str, owner: str) -> None:
        with self.state.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO storage_dirs (name, owner, created_at) VALUES (?, ?, ?)",
                (name, owner, time.time()),
            )

    def mounts(self, app: App) -> list[Mount]:
        rows = self.state.query(
            "SELECT host_path, container_path, read_only FROM storage_mounts WHERE app_id = ? "
            "ORDER BY created_at, container_path",
            (app.id,),
        )
        return [Mount(r["host_path"], r["container_path"], bool(r["read_only"])) for r in rows]

    def add_mount(self, app: App, mount: Mount) -> None:
        try:
            with self.state.transaction() as conn:
                conn.execute(
                    "INSERT INTO storage_mounts (app_id, host_path, container_path, read_only, "
                    "created_at) VALUES (?, ?, ?, ?, ?)",
                    (app.id, mount.host, mount.container, int(mount.read_only), time.time()),
                )
        except Exception as exc:
            if "UNIQUE" in str(exc):
                raise Conflict("Mount path already exists.") from None
            raise

    def remove_mount(self, app: App, mount: Mount) -> bool:
        with self.state.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM storage_mounts WHERE app_id = ? AND host_path = ? AND "
                "container_path = ?",
                (app.id, mount.host, mount.container),
            )
        return cur.rowcount > 0


def _storage_dir_name(services: Services, host: str) -> str | None:
    """The NAME when `host` is exactly `DATA_DIR/storage/NAME` (or just NAME), else None."""
    if "/" not in host:
        return check_app_name(host)
    root = str(storage_root(services)) + "/"
    if host.startswith(root) and "/" not in host[len(root) :] and host[len(root) :]:
        return host[len(root) :]
    return None


def resolve_host(ctx: Context, host: str) -> str:
    """The host path a mount may use, or a refusal: non-admins only their own storage
    directories; admins any absolute path."""
    services = ctx.services
    name = _storage_dir_name(services, host)
    if name is not None:
        owner = StorageStore(services).dir_owner(name)
        if owner is None:
            raise NotFound(
                f"Storage directory {name} does not exist; make it with "
                f"storage:ensure-directory {name}"
            )
        check_access(ctx.identity, Access.OWNER, name, owner, (), "mount it",
                     kind="storage directory")  # fmt: skip
        path = str(storage_root(services) / name)
        verify_storage_dir(services, path)
        return path
    check_plain_path(host, "host path")
    if not ctx.identity.is_admin:
        raise UsageError(
            "Only directories made by storage:ensure-directory may be mounted by your key "
            f"(as NAME or {storage_root(services)}/NAME); an admin may mount other host paths"
        )
    if host == "/":
        raise UsageError("Refusing to mount the host's root directory")
    return host


def verify_storage_dir(services: Services, path: str) -> None:
    """A Dockyard-made directory must be a real directory exactly at `path` now."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise DockyardError(
            f"Storage directory {path} is missing; run storage:ensure-directory "
            f"{os.path.basename(path)}"
        ) from None
    root = str(storage_root(services))
    expected = os.path.join(os.path.realpath(root), os.path.basename(path))
    if not stat.S_ISDIR(info.st_mode) or os.path.realpath(path) != expected:
        raise DockyardError(f"Storage directory {path} is not a plain directory; refusing it")


def binds(services: Services, app: App) -> tuple[str, ...]:
    """The `HOST:CONTAINER:MODE` binds every container of `app` starts with; Dockyard-made
    directories re-checked now."""
    found = []
    for mount in StorageStore(services).mounts(app):
        if _storage_dir_name(services, mount.host) is not None:
            verify_storage_dir(services, mount.host)
        found.append(mount.bind)
    return tuple(found)


# ---------------------------------------------------------------------------- commands
@command("storage:ensure-directory", "Make a persistent directory under the data dir to mount",
         "NAME [--chown herokuish|heroku|paketo|root|false]", access=Access.ANYONE)  # fmt: skip
def ensure_directory(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("storage:ensure-directory")
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("--chown", choices=sorted(CHOWN), default="herokuish")
    args = parser.parse_args(argv)
    name = check_app_name(args.name)
    store = StorageStore(ctx.services)
    owner = store.dir_owner(name)
    if owner is not None:
        check_access(ctx.identity, Access.OWNER, name, owner, (), "use it",
                     kind="storage directory")  # fmt: skip
    root = storage_root(ctx.services)
    path = root / name
    ctx.out.step(f"Ensuring {path} exists")
    root.mkdir(mode=0o755, exist_ok=True)
    if os.path.lexists(path):
        if owner is None and not ctx.identity.is_admin:
            # Made by hand or left by a removed record: its data is nobody's to take.
            raise Conflict(
                f"{path} exists but was not made for any key; only an admin may take it over"
            )
        verify_storage_dir(ctx.services, str(path))
    else:
        path.mkdir(mode=0o755)
    ids = CHOWN[args.chown]
    if ids is not None:
        ctx.out.detail(f"Setting directory ownership to {ids[0]}:{ids[1]}")
        os.chown(path, *ids, follow_symlinks=False)
    store.add_dir(name, owner or ctx.identity.name)
    ctx.out.step("Directory ready for mounting")
    ctx.event("storage:ensure-directory", None, name)


def _mount_args(ctx: Context, name: str, argv: list[str]) -> tuple[App, Mount]:
    parser = CommandParser(name)
    parser.add_argument("app", metavar="APP")
    parser.add_argument("mount", metavar="HOST_DIR:CONTAINER_DIR[:ro]")
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    host, container, read_only = parse_mount(args.mount)
    return app, Mount(host, container, read_only)


@command("storage:mount", "Mount a persistent directory into an app's containers",
         "APP HOST_DIR:CONTAINER_DIR[:ro]")  # fmt: skip
def mount(ctx: Context, argv: list[str]) -> None:
    app, wanted = _mount_args(ctx, "storage:mount", argv)
    host = resolve_host(ctx, wanted.host)
    with ctx.services.hold(app) as app:
        StorageStore(ctx.services).add_mount(app, Mount(host, wanted.container, wanted.read_only))
    ctx.out.step(f"Mounted {host} at {wanted.container} for {app.name}")
    ctx.out.detail(f"Applied at the next deploy or restart (ps:restart {app.name})")
    ctx.event("storage:mount", app.name, f"{host}:{wanted.container}")


@command("storage:unmount", "Remove a mount from an app", "APP HOST_DIR:CONTAINER_DIR[:ro]")
def unmount(ctx: Context, argv: list[str]) -> None:
    app, wanted = _mount_args(ctx, "storage:unmount", argv)
    name = _storage_dir_name(ctx.services, wanted.host)
    host = str(storage_root(ctx.services) / name) if name else wanted.host
    with ctx.services.hold(app) as app:
        if not StorageStore(ctx.services).remove_mount(app, Mount(host, wanted.container, False)):
            raise NotFound("Mount path does not exist.")
    ctx.out.step(f"Unmounted {host} from {wanted.container} for {app.name}")
    ctx.out.detail(f"Applied at the next deploy or restart (ps:restart {app.name})")
    ctx.event("storage:unmount", app.name, f"{host}:{wanted.container}")


@command("storage:list", "List an app's mounts", "APP [--format json]")
def list_(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("storage:list")
    parser.add_argument("app", metavar="APP")
    parser.add_format()
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    mounts = StorageStore(ctx.services).mounts(app)
    if args.format == "json":
        ctx.out.json([{"host_path": m.host, "container_path": m.container,
                       "volume_options": "ro" if m.read_only else ""} for m in mounts])  # fmt: skip
        return
    ctx.out.heading(f"{app.name} volume bind-mounts:")
    for m in mounts:
        ctx.out.detail(m.text)


@command("storage:report", "Show apps' mounts", "[APP] [--format json]", access=Access.ANYONE)
def report(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("storage:report")
    parser.add_argument("app", metavar="APP", nargs="?")
    parser.add_format()
    args = parser.parse_args(argv)
    targets = ctx.apps_named_or_visible(args.app)
    store = StorageStore(ctx.services)
    for app in targets:
        mounts = " ".join(f"-v {m.text}" for m in store.mounts(app))
        rows = [("Storage build mounts", ""), ("Storage deploy mounts", mounts),
                ("Storage run mounts", mounts)]  # fmt: skip
        ctx.out.report(f"{app.name} storage information", rows, args.format)


@command("storage:list-directories", "List the storage directories you own",
         "[--format json]", access=Access.ANYONE)  # fmt: skip
def list_directories(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("storage:list-directories")
    parser.add_format()
    args = parser.parse_args(argv)
    root = storage_root(ctx.services)
    mine = [(n, o) for n, o in StorageStore(ctx.services).dirs()
            if can_see(ctx.identity, o, ())]  # fmt: skip
    if args.format == "json":
        ctx.out.json([{"name": n, "path": str(root / n), "owner": o} for n, o in mine])
        return
    ctx.out.heading("Storage directories")
    for n, _ in mine:
        ctx.out.line(str(root / n))


# ---------------------------------------------------------------------------- backup
def _backup_write(services: Services, tar: tarfile.TarFile, scratch: Path, out: Output
                  ) -> list[str]:  # fmt: skip
    """Each Dockyard-made directory as its own tar inside the archive (ownership, modes and
    links kept, as the apps wrote them)."""
    included = []
    root = storage_root(services)
    for name, _ in StorageStore(services).dirs():
        path = root / name
        if not path.is_dir() or path.is_symlink():
            continue
        inner = scratch / f"{name}.tar"
        with tarfile.open(inner, "w") as t:
            add_tree_unfollowed(t, path)  # the app may be swapping links in it right now
        tar.add(inner, f"storage/{name}.tar")
        inner.unlink()
        included.append(f"storage/{name}")
    return included


def _backup_restore(services: Services, folder: Path, out: Output) -> list[str]:
    restored = []
    root = storage_root(services)
    root.mkdir(mode=0o755, exist_ok=True)
    for name, _ in StorageStore(services).dirs():
        inner = folder / f"{name}.tar"
        if not inner.is_file():
            continue
        target = root / name
        if os.path.lexists(target):
            if target.is_symlink() or not target.is_dir():
                target.unlink()
            else:
                shutil.rmtree(target)
        target.mkdir(mode=0o755)
        with tarfile.open(inner, "r") as t:
            # Ownership and links kept, nothing lands outside the directory.
            extract_checked(t, target, links=True)
        restored.append(f"storage/{name}")
    return restored


register_backup_part(BackupPart("storage", _backup_write, _backup_restore))


@app_hooks.on_forget_key
def _forget_key_storage_dirs(state: StateStore, key_name: str, new_owner: str) -> None:
    """A removed key's storage dirs pass to a name no key can have, like its apps."""
    with state.transaction() as conn:
        conn.execute("UPDATE storage_dirs SET owner = ? WHERE owner = ?", (new_owner, key_name))
