"""`network:*`: private networks that apps join so their owners can let them talk.

`network:create NET` makes a Docker bridge network named NET (labelled with this
Dockyard's home) owned by the key that asked; `network:set APP attach-post-deploy NET…`
chooses the networks APP's containers join besides their own. The deployer asks the
network provider registered here at every container start, so the choice applies from the
next deploy or restart, to processes, phases and one-offs alike (Dockyard joins them at
creation, before the app runs, which is also when Dokku's `attach-post-create` would).

Invariants:
- User network names follow app-name rules (no dots, so never `dockyard.app.*` or
  `dockyard.svc.*`), and are never `bridge`, `host` or `none`.
- Only a network's owner (or an admin) may attach an app to it, destroy it or see it; a key
  attaches only apps it may manage. An app is on a network only while a row says so.
- A Docker network of that name that this Dockyard did not make is never adopted or removed.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

import docker.errors

from deployer.networks import ensure_network, remove_network
from dockyard import services as app_hooks
from dockyard.access import Access, can_see, check_access
from dockyard.apps import App
from dockyard.context import Context
from dockyard.errors import Conflict, DockyardError, NotFound, UsageError
from dockyard.names import check_app_name
from dockyard.pipeline import register_network_provider
from dockyard.registry import CommandParser, command
from dockyard.state import StateStore, register_migrations

if TYPE_CHECKING:
    from dockyard.services import Services

LABEL_NETWORK = "dockyard.network"
RESERVED = ("bridge", "host", "none")
NETWORK_PROPERTIES = ("attach-post-deploy",)

register_migrations(
    "network",
    [
        """CREATE TABLE networks (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            owner TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE app_networks (
            app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
            network_id INTEGER NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
            PRIMARY KEY (app_id, network_id)
        )""",
    ],
)


def check_network_name(name: str) -> str:
    check_app_name(name)
    if name in RESERVED:
        raise UsageError(f"{name} is Docker's own network; choose another name")
    if name.startswith("dockyard"):
        raise UsageError(f"{name}: names starting with dockyard are the platform's own")
    return name


class NetworkStore:
    def __init__(self, services: Services) -> None:
        self.state = services.state

    def find(self, name: str) -> sqlite3.Row | None:
        return self.state.query_one("SELECT * FROM networks WHERE name = ?", (name,))

    def all(self) -> list[sqlite3.Row]:
        return self.state.query("SELECT * FROM networks ORDER BY name")

    def add(self, name: str, owner: str) -> None:
        try:
            with self.state.transaction() as conn:
                conn.execute(
                    "INSERT INTO networks (name, owner, created_at) VALUES (?, ?, ?)",
                    (name, owner, time.time()),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"Network {name} already exists") from None

    def delete(self, name: str) -> None:
        with self.state.transaction() as conn:
            conn.execute("DELETE FROM networks WHERE name = ?", (name,))

    def attached_apps(self, name: str) -> list[str]:
        rows = self.state.query(
            "SELECT a.name FROM app_networks x JOIN apps a ON a.id = x.app_id "
            "JOIN networks n ON n.id = x.network_id WHERE n.name = ? ORDER BY a.name",
            (name,),
        )
        return [r["name"] for r in rows]

    def of_app(self, app: App) -> list[str]:
        rows = self.state.query(
            "SELECT n.name FROM app_networks x JOIN networks n ON n.id = x.network_id "
            "WHERE x.app_id = ? ORDER BY n.name",
            (app.id,),
        )
        return [r["name"] for r in rows]

    def set_for_app(self, app: App, names: list[str]) -> None:
        with self.state.transaction() as conn:
            conn.execute("DELETE FROM app_networks WHERE app_id = ?", (app.id,))
            for name in names:
                conn.execute(
                    "INSERT OR IGNORE INTO app_networks (app_id, network_id) "
                    "SELECT ?, id FROM networks WHERE name = ?",
                    (app.id, name),
                )


def _home(services: Services) -> str:
    return str(services.settings.data_dir)


def ensure_docker_network(services: Services, name: str) -> str:
    return ensure_network(_home(services), name, {LABEL_NETWORK: name})


def remove_docker_network(services: Services, name: str) -> None:
    remove_network(_home(services), name)


@register_network_provider
def attached_networks(services: Services, app: App) -> list[str]:
    """The user networks `app` is attached to (made again if the engine lost them)."""
    return [ensure_docker_network(services, n) for n in NetworkStore(services).of_app(app)]


def _owned(ctx: Context, name: str, action: str) -> sqlite3.Row:
    row = NetworkStore(ctx.services).find(check_network_name(name))
    if row is None:
        raise NotFound(f"Network {name} does not exist")
    check_access(ctx.identity, Access.OWNER, name, row["owner"], (), action, kind="network")
    return row


def _engine_errors(name: str, exc: docker.errors.DockerException) -> DockyardError:
    detail = getattr(exc, "explanation", None) or str(exc)
    return DockyardError(f"{name} failed: Docker engine: {detail}")


# ---------------------------------------------------------------------------- commands
@command("network:create", "Create a private network apps can be attached to", "NET",
         access=Access.ANYONE)  # fmt: skip
def create(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("network:create")
    parser.add_argument("net", metavar="NET")
    name = check_network_name(parser.parse_args(argv).net)
    store = NetworkStore(ctx.services)
    if store.find(name) is not None:
        raise Conflict(f"Network {name} already exists")
    ctx.out.step(f"Creating network {name}")
    try:
        ensure_docker_network(ctx.services, name)
    except docker.errors.DockerException as exc:
        raise _engine_errors("network:create", exc) from None
    store.add(name, ctx.identity.name)
    ctx.event("network:create", None, name)


@command("network:destroy", "Destroy a network (detaching the apps on it)", "NET --force",
         access=Access.ANYONE)  # fmt: skip
def destroy(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("network:destroy")
    parser.add_argument("net", metavar="NET")
    parser.add_argument("-f", "--force", action="store_true")
    args = parser.parse_args(argv)
    row = _owned(ctx, args.net, "destroy it")
    attached = NetworkStore(ctx.services).attached_apps(row["name"])
    if not args.force:
        on = f" (attached: {', '.join(attached)})" if attached else ""
        raise DockyardError(
            f"WARNING: destroying network {row['name']} detaches every app from it{on}.\n"
            f"To proceed, run: network:destroy {row['name']} --force"
        )
    ctx.out.step(f"Destroying network {row['name']}")
    try:
        remove_docker_network(ctx.services, row["name"])
    except docker.errors.DockerException as exc:
        raise _engine_errors("network:destroy", exc) from None
    NetworkStore(ctx.services).delete(row["name"])
    ctx.event("network:destroy", None, row["name"])


@command("network:exists", "Exit 0 if the network exists (and you may see it)", "NET",
         access=Access.ANYONE)  # fmt: skip
def exists(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("network:exists")
    parser.add_argument("net", metavar="NET")
    row = _owned(ctx, parser.parse_args(argv).net, "see it")
    ctx.out.step(f"Network {row['name']} exists")


@command("network:list", "List the networks you can manage", "[--format json]",
         access=Access.ANYONE)  # fmt: skip
def list_(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("network:list")
    parser.add_format()
    args = parser.parse_args(argv)
    names = [r["name"] for r in NetworkStore(ctx.services).all()
             if can_see(ctx.identity, r["owner"], ())]  # fmt: skip
    if args.format == "json":
        ctx.out.json(names)
        return
    ctx.out.heading("Networks")
    for name in names:
        ctx.out.line(name)


@command("network:info", "Show a network's owner and attached apps", "NET [--format json]",
         access=Access.ANYONE)  # fmt: skip
def info(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("network:info")
    parser.add_argument("net", metavar="NET")
    parser.add_format()
    args = parser.parse_args(argv)
    row = _owned(ctx, args.net, "see it")
    rows = [
        ("Name", row["name"]),
        ("Driver", "bridge"),
        ("Owner", row["owner"]),
        ("Attached apps", NetworkStore(ctx.services).attached_apps(row["name"])),
        ("Created at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["created_at"]))),
    ]
    ctx.out.report(f"{row['name']} network information", rows, args.format)


@command("network:set", "Choose the networks an app's containers join (next deploy or restart)",
         "APP attach-post-deploy [NET…]")  # fmt: skip
def set_(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("network:set")
    parser.add_argument("app", metavar="APP")
    parser.add_argument("key", choices=NETWORK_PROPERTIES)
    parser.add_argument("nets", nargs="*", metavar="NET")
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    names = []
    for net in args.nets:
        names.append(_owned(ctx, net, f"attach {app.name} to it")["name"])
    with ctx.services.hold(app) as app:
        NetworkStore(ctx.services).set_for_app(app, names)
    if names:
        ctx.out.step(f"Setting {args.key} to {' '.join(names)}")
    else:
        ctx.out.step(f"Unsetting {args.key}")
    ctx.out.detail(f"Applied at the next deploy or restart (ps:restart {app.name})")
    ctx.event("network:set", app.name, f"{args.key}={','.join(names)}")


@command("network:report", "Show the networks of apps", "[APP] [--format json]",
         access=Access.ANYONE)  # fmt: skip
def report(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("network:report")
    parser.add_argument("app", metavar="APP", nargs="?")
    parser.add_format()
    args = parser.parse_args(argv)
    targets = ctx.apps_named_or_visible(args.app)
    store = NetworkStore(ctx.services)
    from deployer.networks import app_network_name

    for app in targets:
        rows = [
            ("Network attach post create", ""),
            ("Network attach post deploy", store.of_app(app)),
            ("Network initial network", app_network_name(app.name)),
        ]
        ctx.out.report(f"{app.name} network information", rows, args.format)


@app_hooks.on_forget_key
def _forget_key_networks(state: StateStore, key_name: str, new_owner: str) -> None:
    """A removed key's networks pass to a name no key can have, like its apps."""
    with state.transaction() as conn:
        conn.execute("UPDATE networks SET owner = ? WHERE owner = ?", (new_owner, key_name))
