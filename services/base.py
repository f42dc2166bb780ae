"""What every kind of service is, and the state all kinds share.

A service is one container of an official database image (`postgres:16`, `redis:7`,
`mysql:8`), with its data on a directory under the data dir, on a network of its own.
Each kind (services/postgres.py, redis.py, mysql.py) is a `Kind`: a handful of facts (port,
data path, URL shape, default alias) and the argv of its own tools (readiness probe,
client, dump, restore). Everything else — the state table, the container, the network, the
passwords, the commands — is written once, here and in services/runtime.py and
services/commands.py.

Invariants:
- Service names follow app-name rules and are at most 48 characters, so the host name
  `dokku-KIND-NAME` stays one DNS label; a name is checked before it reaches a path, a
  container or a network name.
- Passwords come from `secrets`, live only in state.db (0600) and in the container's
  environment or command, and reach a client only as the DSN its owner asked for or as a
  config var of an app linked to it; they are never logged or recorded in events.
- Links are rows (service, app, config var): unlink unsets exactly the var link set,
  whatever the app's config holds since.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from dockyard import services as app_hooks
from dockyard.apps import App
from dockyard.errors import Conflict, NotFound, UsageError
from dockyard.names import APP_NAME_RE
from dockyard.state import StateStore, register_migrations

if TYPE_CHECKING:
    from services.runtime import Runtime

SERVICE_NAME_MAX = 48
# Dokku's list, in its order: the second link of one kind to an app takes the first free.
COLORS = (
    "AQUA", "BLACK", "BLUE", "FUCHSIA", "GRAY", "GREEN", "LIME", "MAROON", "NAVY", "OLIVE",
    "PURPLE", "RED", "SILVER", "TEAL", "WHITE", "YELLOW",
)  # fmt: skip

register_migrations(
    "services",
    [
        """CREATE TABLE services (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            owner TEXT NOT NULL,
            image TEXT NOT NULL,
            password TEXT NOT NULL,
            root_password TEXT NOT NULL DEFAULT '',
            running INTEGER NOT NULL DEFAULT 1,
            exposed TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            UNIQUE (kind, name)
        )""",
        """CREATE TABLE service_links (
            service_id INTEGER NOT NULL REFERENCES services(id) ON DELETE CASCADE,
            app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
            var TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (service_id, app_id)
        )""",
    ],
)


def check_service_name(name: str) -> str:
    if not APP_NAME_RE.fullmatch(name) or len(name) > SERVICE_NAME_MAX:
        raise UsageError(
            f"Invalid service name {name!r}: use 1-{SERVICE_NAME_MAX} lowercase letters, "
            "digits and dashes, starting with a letter or digit"
        )
    return name


def new_password() -> str:
    """32 hex characters: safe in a URL, an environment and a command line as they are."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Service:
    id: int
    kind: str
    name: str
    owner: str
    image: str
    password: str
    root_password: str
    running: bool  # what the owner wants; reconcile makes the container match
    exposed: str  # "" or "ADDRESS:PORT" asked for (PORT 0: any free port)
    created_at: float

    @property
    def database(self) -> str:
        """Dokku's database name: the service name with dashes as underscores."""
        return self.name.replace("-", "_")


@dataclass(frozen=True)
class Link:
    service: Service
    app_id: int
    app_name: str
    var: str


class Kind:
    """One kind of service. Subclasses set the facts and say how to run their tools; the
    argv they return are run in the service container with `docker exec`, never through a
    shell with user input in it, and secrets go in the exec's environment."""

    name: ClassVar[str]  # command prefix: postgres
    title: ClassVar[str]  # Postgres
    default_image: ClassVar[str]  # the official image
    local_image: ClassVar[str]  # its stand-in, used when the official one is not here
    port: ClassVar[int]
    data_path: ClassVar[str]  # where the image keeps its data
    scheme: ClassVar[str]
    default_alias: ClassVar[str]  # DATABASE → DATABASE_URL
    variable: ClassVar[str]  # POSTGRES → POSTGRES_DATABASE_SCHEME, DOKKU_POSTGRES_<COLOR>
    dump_name: ClassVar[str] = "dump"  # file name of its dump in a backup
    needs_root_password: ClassVar[bool] = False

    @property
    def host_alias(self) -> str:
        return f"dokku-{self.name}"

    def host(self, svc: Service) -> str:
        """The service's host name on its network (Dokku's)."""
        return f"dokku-{self.name}-{svc.name}"

    def url(self, svc: Service, scheme: str | None = None) -> str:
        raise NotImplementedError

    def environment(self, svc: Service) -> dict[str, str]:
        """The container's environment: the official image's contract."""
        return {}

    def command(self, svc: Service) -> list[str] | None:
        """The container's command, or None for the image's own."""
        return None

    def ready_argv(self, svc: Service) -> tuple[list[str], dict[str, str]]:
        """Exits 0 once the server accepts clients over TCP (not during first-start init)."""
        raise NotImplementedError

    def client_argv(self, svc: Service) -> tuple[list[str], dict[str, str]]:
        """The interactive client (`connect`): with a tty interactive, without one it runs
        what it reads on stdin and prints the result."""
        raise NotImplementedError

    def export_argv(self, svc: Service) -> tuple[list[str], dict[str, str]]:
        """Writes a consistent dump, taken online, on stdout."""
        raise NotImplementedError

    def import_argv(self, svc: Service) -> tuple[list[str], dict[str, str]]:
        """Reads a dump made by `export_argv` on stdin into the service."""
        raise NotImplementedError

    def import_stream(self, runtime: Runtime, svc: Service, source: object) -> None:
        """Load a dump read from `source` (a binary file object). Kinds whose dumps are not
        replayed by a client (Redis's RDB file) override this."""
        runtime.import_with_client(svc, source)

    def version(self, svc: Service) -> str:
        return svc.image


class ServiceStore:
    def __init__(self, state: StateStore) -> None:
        self.state = state

    @staticmethod
    def _row(row: sqlite3.Row) -> Service:
        return Service(
            id=row["id"], kind=row["kind"], name=row["name"], owner=row["owner"],
            image=row["image"], password=row["password"], root_password=row["root_password"],
            running=bool(row["running"]), exposed=row["exposed"], created_at=row["created_at"],
        )  # fmt: skip

    def find(self, kind: str, name: str) -> Service | None:
        row = self.state.query_one(
            "SELECT * FROM services WHERE kind = ? AND name = ?", (kind, check_service_name(name))
        )
        return self._row(row) if row else None

    def get(self, kind: Kind, name: str) -> Service:
        svc = self.find(kind.name, name)
        if svc is None:
            raise NotFound(f"{kind.title} service {name} does not exist")
        return svc

    def all(self, kind: str | None = None) -> list[Service]:
        if kind is None:
            rows = self.state.query("SELECT * FROM services ORDER BY kind, name")
        else:
            rows = self.state.query("SELECT * FROM services WHERE kind = ? ORDER BY name", (kind,))
        return [self._row(r) for r in rows]

    def create(self, kind: Kind, name: str, owner: str, image: str) -> Service:
        check_service_name(name)
        root = new_password() if kind.needs_root_password else ""
        try:
            with self.state.transaction() as conn:
                conn.execute(
                    "INSERT INTO services (kind, name, owner, image, password, root_password, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (kind.name, name, owner, image, new_password(), root, time.time()),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"{kind.title} service {name} already exists") from None
        return self.get(kind, name)

    def delete(self, svc: Service) -> None:
        with self.state.transaction() as conn:
            conn.execute("DELETE FROM services WHERE id = ?", (svc.id,))

    def set_running(self, svc: Service, running: bool) -> None:
        with self.state.transaction() as conn:
            conn.execute("UPDATE services SET running = ? WHERE id = ?", (int(running), svc.id))

    def set_exposed(self, svc: Service, exposed: str) -> None:
        with self.state.transaction() as conn:
            conn.execute("UPDATE services SET exposed = ? WHERE id = ?", (exposed, svc.id))

    # -- links ----------------------------------------------------------------------
    def links(self, svc: Service) -> list[Link]:
        rows = self.state.query(
            "SELECT l.app_id, l.var, a.name FROM service_links l JOIN apps a ON a.id = l.app_id "
            "WHERE l.service_id = ? ORDER BY a.name",
            (svc.id,),
        )
        return [Link(svc, r["app_id"], r["name"], r["var"]) for r in rows]

    def app_links(self, app: App, kind: str | None = None) -> list[Link]:
        rows = self.state.query(
            "SELECT s.*, l.var FROM service_links l JOIN services s ON s.id = l.service_id "
            "WHERE l.app_id = ? ORDER BY s.kind, s.name",
            (app.id,),
        )
        return [
            Link(self._row(r), app.id, app.name, r["var"])
            for r in rows
            if kind is None or r["kind"] == kind
        ]

    def link_of(self, svc: Service, app: App) -> Link | None:
        row = self.state.query_one(
            "SELECT var FROM service_links WHERE service_id = ? AND app_id = ?", (svc.id, app.id)
        )
        return Link(svc, app.id, app.name, row["var"]) if row else None

    def add_link(self, svc: Service, app: App, var: str) -> None:
        with self.state.transaction() as conn:
            conn.execute(
                "INSERT INTO service_links (service_id, app_id, var, created_at) "
                "VALUES (?, ?, ?, ?)",
                (svc.id, app.id, var, time.time()),
            )

    def remove_link(self, svc: Service, app: App) -> None:
        with self.state.transaction() as conn:
            conn.execute(
                "DELETE FROM service_links WHERE service_id = ? AND app_id = ?", (svc.id, app.id)
            )

    def forget_app(self, app_name: str) -> None:
        with self.state.transaction() as conn:
            conn.execute(
                "DELETE FROM service_links WHERE app_id IN (SELECT id FROM apps WHERE name = ?)",
                (app_name,),
            )


@app_hooks.on_forget_key
def _forget_key_services(state: StateStore, key_name: str, new_owner: str) -> None:
    """A removed key's services pass to a name no key can have, like its apps."""
    with state.transaction() as conn:
        conn.execute("UPDATE services SET owner = ? WHERE owner = ?", (new_owner, key_name))
