"""The `KIND:*` commands, generated for every kind from one table.

`VERBS` below is the whole command set (Dokku's names and shapes: `create`, `info NAME
[--dsn|…]`, `link NAME APP [-a ALIAS] [-q QS] [-n]`, `unlink`, `linked`, `links`,
`app-links`, `list`, `logs [-t]`, `connect`, `export`, `import`, `expose`, `unexpose`,
`start`, `stop`, `restart`, `destroy [-f]`, `exists`, `set --global image`); `register`
binds each verb to a kind, so `postgres:link`, `redis:link` and `mysql:link` are one
function.

Rules, all decided here through `dockyard.access.check_access`:
- any key may create a service (it owns it); a non-admin sees and manages only its own;
- `link` needs the service's owner (or an admin) *and* a key that may manage the app;
- `expose` and choosing an image are for admins only;
- a service and an app are locked in that order (service, then app) wherever both are.
Linking sets a config var through the core's config store and asks for a zero-downtime
redeploy through `dockyard.pipeline.redeploy`; the app's containers join the service's
network through the network provider registered in services/__init__.py.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import docker.errors

from dockyard import pipeline
from dockyard.access import Access, can_see, check_access
from dockyard.apps import App
from dockyard.context import Context
from dockyard.errors import Conflict, DockyardError, UsageError
from dockyard.images import has_image
from dockyard.locks import file_lock
from dockyard.names import check_config_key, is_whole_number
from dockyard.properties import GROUPS, Level, Property, PropertyGroup
from dockyard.property_commands import register_property_commands
from dockyard.registry import CommandParser, command
from dockyard.services import Services
from services.base import COLORS, Kind, Service, ServiceStore, check_service_name
from services.runtime import Runtime, ServiceError, docker_message

# ---------------------------------------------------------------------------- settings
IMAGE_RE = re.compile(
    r"^(?:[a-z0-9]+(?:[.-][a-z0-9]+)*(?::[0-9]{1,5})?/)?"  # registry[:port]/
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


def check_image(value: str) -> str:
    if len(value) > 255 or not IMAGE_RE.fullmatch(value):
        raise UsageError(
            f"Invalid image reference {value!r}: expected NAME[:TAG], like postgres:16"
        )
    return value


# Each kind's settings, declared once per kind: `KIND:set --global image IMAGE` (admins)
# comes from the declaration, like every `X:set`.
IMAGES: dict[str, Property] = {}


def declare_settings(kind: Kind) -> PropertyGroup:
    group = PropertyGroup(kind.name, kind.title)
    IMAGES[kind.name] = group.declare(
        "image", check_image, default=kind.default_image, levels=Level.GLOBAL,
        help=f"the image new {kind.name} services run (the official one unless set)",
    )  # fmt: skip
    return group


def setting(services: Services, kind: Kind, name: str) -> str:
    return GROUPS[kind.name].find(name).raw(services.properties, None)


def new_service_image(services: Services, kind: Kind) -> str:
    """The image set for the kind; unset, the official one, or — on a host that has not got
    it but has the local stand-in (no registry here) — the stand-in."""
    configured = IMAGES[kind.name].local(services.properties, None)
    if configured:
        return configured
    if not has_image(kind.default_image) and has_image(kind.local_image):
        return kind.local_image
    return kind.default_image


# ---------------------------------------------------------------------------- helpers
SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]{0,31}$")
QUERYSTRING_RE = re.compile(r"^[A-Za-z0-9._~%=&+,:/-]{1,512}$")
ALIAS_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,62}$")
LOCK_WAIT = 600.0


@contextmanager
def service_lock(
    services: Services, kind: Kind, name: str, timeout: float = LOCK_WAIT
) -> Iterator[None]:
    """An flock per service, like the per-app ones: across processes, released on death."""
    check_service_name(name)
    path = services.settings.locks_dir / "services" / f"{kind.name}.{name}.lock"
    with file_lock(path, timeout, f"{kind.title} service {name} is busy; try again later"):
        yield


def store_of(ctx: Context) -> ServiceStore:
    return ServiceStore(ctx.services.state)


def owned(ctx: Context, kind: Kind, name: str, action: str = "manage it") -> Service:
    """The named service, if this key owns it (or is an admin)."""
    svc = store_of(ctx).get(kind, check_service_name(name))
    check_access(ctx.identity, Access.OWNER, svc.name, svc.owner, (), action,
                 kind=f"{kind.name} service")  # fmt: skip
    return svc


def fresh(ctx: Context, kind: Kind, svc: Service) -> Service:
    """Re-read under the service lock: a command that waited must see the current row."""
    found = store_of(ctx).find(kind.name, svc.name)
    if found is None or found.id != svc.id:
        raise DockyardError(f"{kind.title} service {svc.name} was destroyed meanwhile")
    return found


def masked(svc: Service, text: str) -> str:
    return text.replace(svc.password, "********") if svc.password else text


def _url_for(ctx: Context, kind: Kind, svc: Service, app: App, querystring: str | None) -> str:
    scheme = ctx.services.config.effective(app).get(f"{kind.variable}_DATABASE_SCHEME")
    if scheme and not SCHEME_RE.fullmatch(scheme):
        raise UsageError(f"Invalid {kind.variable}_DATABASE_SCHEME {scheme!r} on {app.name}")
    url = kind.url(svc, scheme or None)
    return f"{url}?{querystring}" if querystring else url


def _alias_var(ctx: Context, kind: Kind, app: App, alias: str | None) -> str:
    """Dokku's choice of config var: `-a ALIAS` → ALIAS_URL (refused when taken); else
    the kind's default (DATABASE_URL), or when that is taken `DOKKU_KIND_<COLOR>_URL`."""
    existing = ctx.services.config.local(app)
    if alias:
        name = alias.upper().replace("-", "_")
        name = name[: -len("_URL")] if name.endswith("_URL") else name
        if not ALIAS_RE.fullmatch(name):
            raise UsageError(f"Invalid alias {alias!r}: use letters, digits and underscores")
        var = check_config_key(f"{name}_URL")
        if var in existing:
            raise Conflict(f"Specified alias {name} already in use")
        return var
    var = f"{kind.default_alias}_URL"
    if var not in existing:
        return var
    for color in COLORS:
        candidate = f"DOKKU_{kind.variable}_{color}_URL"
        if candidate not in existing:
            return candidate
    raise Conflict("Unable to use default or generated URL alias")


# ---------------------------------------------------------------------------- the table
VerbHandler = Callable[[Context, Kind, list[str]], "int | None"]


@dataclass(frozen=True)
class Verb:
    name: str
    summary: str  # {title} and {kind} are filled in per kind
    usage: str
    handler: VerbHandler
    access: Access = Access.ANYONE  # ADMIN: checked by the registry before the handler


VERBS: list[Verb] = []


def verb(name: str, summary: str, usage: str = "NAME", access: Access = Access.ANYONE
         ) -> Callable[[VerbHandler], VerbHandler]:  # fmt: skip
    def add(handler: VerbHandler) -> VerbHandler:
        VERBS.append(Verb(name, summary, usage, handler, access))
        return handler

    return add


def register(kind: Kind) -> None:
    """Register every verb as `KIND:VERB`, and `KIND:set` from the kind's settings."""
    register_property_commands(declare_settings(kind), with_report=False)
    for v in VERBS:
        command(
            f"{kind.name}:{v.name}",
            v.summary.format(title=kind.title, kind=kind.name),
            v.usage.format(kind=kind.name),
            access=v.access,
        )(_bound(v, kind))


def _bound(v: Verb, kind: Kind) -> Callable[[Context, list[str]], int | None]:
    @functools.wraps(v.handler)
    def run(ctx: Context, argv: list[str]) -> int | None:
        try:
            return v.handler(ctx, kind, argv)
        except docker.errors.DockerException as exc:
            raise ServiceError(f"{kind.name}:{v.name} failed: Docker engine: "
                               f"{docker_message(exc)}") from None  # fmt: skip

    return run


def _parser(kind: Kind, name: str) -> CommandParser:
    return CommandParser(f"{kind.name}:{name}")


def _one_name(kind: Kind, name: str, argv: list[str]) -> str:
    parser = _parser(kind, name)
    parser.add_argument("service", metavar="NAME")
    return parser.parse_args(argv).service


# ---------------------------------------------------------------------------- verbs
@verb("create", "Create a {title} service", "NAME [--image IMAGE]")
def create(ctx: Context, kind: Kind, argv: list[str]) -> None:
    parser = _parser(kind, "create")
    parser.add_argument("service", metavar="NAME")
    parser.add_argument("-i", "--image")
    args = parser.parse_args(argv)
    name = check_service_name(args.service)
    if args.image:
        ctx.require_admin("choose a service's image")
        image = check_image(args.image)
    else:
        image = new_service_image(ctx.services, kind)
    store = store_of(ctx)
    with service_lock(ctx.services, kind, name):
        svc = store.create(kind, name, ctx.identity.name, image)
        runtime = Runtime(ctx.services, kind)
        ctx.out.step(f"Creating {kind.name} service {name} ({image})")
        try:
            runtime.create(svc, ctx.out)
            ctx.out.detail("Waiting for the service to be ready")
            runtime.wait_ready(svc)
        except BaseException:
            try:
                runtime.destroy(svc)
            finally:
                store.delete(svc)
            raise
    ctx.out.heading(f"{kind.title} container created: {name}")
    ctx.out.detail(f"DSN: {masked(svc, kind.url(svc))}  ({kind.name}:info {name} --dsn shows it)")
    ctx.event(f"{kind.name}:create", None, name)


INFO_FLAGS = ("data-dir", "dsn", "exposed-ports", "id", "internal-ip", "links", "service-root",
              "status", "version")  # fmt: skip


@verb("info", "Show a {title} service's connection details and status",
      "NAME [--dsn|--status|--version|--links|--exposed-ports|--id|--internal-ip|--data-dir|"
      "--service-root] [--format json]")  # fmt: skip
def info(ctx: Context, kind: Kind, argv: list[str]) -> None:
    parser = _parser(kind, "info")
    parser.add_argument("service", metavar="NAME")
    parser.add_format()
    group = parser.add_mutually_exclusive_group()
    for flag in INFO_FLAGS:
        group.add_argument(f"--{flag}", action="store_true")
    args = parser.parse_args(argv)
    svc = owned(ctx, kind, args.service, "see it")
    runtime = Runtime(ctx.services, kind)
    found = runtime.container(svc)
    values = {
        "data-dir": str(runtime.data_dir(svc)),
        "dsn": kind.url(svc),
        "exposed-ports": (f"{kind.port}->{runtime.exposed_port(svc)}"
                          if runtime.exposed_port(svc) else "-"),
        "id": found.id if found is not None else "",
        "internal-ip": runtime.internal_ip(svc),
        "links": " ".join(link.app_name for link in store_of(ctx).links(svc)) or "-",
        "service-root": str(runtime.root(svc)),
        "status": found.status if found is not None else "missing",
        "version": svc.image,
    }  # fmt: skip
    for flag in INFO_FLAGS:
        if getattr(args, flag.replace("-", "_")):
            ctx.out.line(values[flag])
            return
    rows = [(flag.replace("-", " ").capitalize(), values[flag]) for flag in INFO_FLAGS]
    ctx.out.report(f"{svc.name} {kind.name} service information", rows, args.format)


@verb("list", "List the {title} services you can manage", "[--format json]")
def list_(ctx: Context, kind: Kind, argv: list[str]) -> None:
    parser = _parser(kind, "list")
    parser.add_format()
    args = parser.parse_args(argv)
    store = store_of(ctx)
    mine = [s for s in store.all(kind.name) if can_see(ctx.identity, s.owner, ())]
    if args.format == "json":
        runtime = Runtime(ctx.services, kind)
        ctx.out.json([
            {"name": s.name, "version": s.image, "status": runtime.status(s), "owner": s.owner,
             "links": [link.app_name for link in store.links(s)]}
            for s in mine
        ])  # fmt: skip
        return
    ctx.out.heading(f"{kind.title} services")
    if not mine:
        ctx.out.warn(f"There are no {kind.title} services")
    for s in mine:
        ctx.out.line(s.name)


@verb("exists", "Exit 0 if the {title} service exists (and is yours)")
def exists(ctx: Context, kind: Kind, argv: list[str]) -> None:
    svc = owned(ctx, kind, _one_name(kind, "exists", argv), "see it")
    ctx.out.step(f"Service {svc.name} exists")


@verb("link", "Link a {title} service to an app (sets its URL and redeploys)",
      "NAME APP [-a|--alias ALIAS] [-q|--querystring QS] [-n|--no-restart]")  # fmt: skip
def link(ctx: Context, kind: Kind, argv: list[str]) -> None:
    parser = _parser(kind, "link")
    parser.add_argument("service", metavar="NAME")
    parser.add_argument("app", metavar="APP")
    parser.add_argument("-a", "--alias")
    parser.add_argument("-q", "--querystring")
    parser.add_argument("-n", "--no-restart", action="store_true")
    args = parser.parse_args(argv)
    querystring = args.querystring[1:] if (args.querystring or "").startswith("?") else (
        args.querystring)  # fmt: skip
    if querystring and not QUERYSTRING_RE.fullmatch(querystring):
        raise UsageError(f"Invalid querystring {args.querystring!r}")
    svc = owned(ctx, kind, args.service, "link it")
    app = ctx.app(args.app)
    store = store_of(ctx)
    with service_lock(ctx.services, kind, svc.name), ctx.services.hold(app) as app:
        svc = fresh(ctx, kind, svc)
        existing = store.link_of(svc, app)
        if existing is not None:
            raise Conflict(f"Already linked as {existing.var}")
        var = _alias_var(ctx, kind, app, args.alias)
        url = _url_for(ctx, kind, svc, app, querystring)
        with ctx.services.state.transaction():
            store.add_link(svc, app, var)
            ctx.services.config.set(app, {var: url})
        Runtime(ctx.services, kind).ensure_network(svc)
        ctx.out.step("Setting config vars")
        ctx.out.detail(f"{var}:  {masked(svc, url)}")
        if not args.no_restart:
            pipeline.redeploy(ctx, app, f"Link {kind.name} {svc.name} as {var}")
    ctx.event(f"{kind.name}:link", app.name, f"{svc.name} as {var}")


def unlink_app(ctx: Context, kind: Kind, svc: Service, app: App, restart: bool) -> bool:
    """Remove the link and the var it set, then redeploy (the caller holds both locks).
    False when the two were not linked."""
    store = store_of(ctx)
    found = store.link_of(svc, app)
    if found is None:
        return False
    with ctx.services.state.transaction():
        store.remove_link(svc, app)
        ctx.services.config.unset(app, [found.var])
    ctx.out.step(f"Unsetting {found.var}")
    if restart:
        pipeline.redeploy(ctx, app, f"Unlink {kind.name} {svc.name}")
    return True


@verb("unlink", "Unlink a {title} service from an app (unsets its URL and redeploys)",
      "NAME APP [-n|--no-restart]")  # fmt: skip
def unlink(ctx: Context, kind: Kind, argv: list[str]) -> None:
    parser = _parser(kind, "unlink")
    parser.add_argument("service", metavar="NAME")
    parser.add_argument("app", metavar="APP")
    parser.add_argument("-n", "--no-restart", action="store_true")
    args = parser.parse_args(argv)
    svc = owned(ctx, kind, args.service, "unlink it")
    app = ctx.app(args.app)
    with service_lock(ctx.services, kind, svc.name), ctx.services.hold(app) as app:
        svc = fresh(ctx, kind, svc)
        if not unlink_app(ctx, kind, svc, app, restart=not args.no_restart):
            raise DockyardError(f"Not linked to app {app.name}")
    ctx.event(f"{kind.name}:unlink", app.name, svc.name)


@verb("linked", "Exit 0 if the {title} service is linked to the app, 1 if not", "NAME APP")
def linked(ctx: Context, kind: Kind, argv: list[str]) -> int:
    parser = _parser(kind, "linked")
    parser.add_argument("service", metavar="NAME")
    parser.add_argument("app", metavar="APP")
    args = parser.parse_args(argv)
    svc = owned(ctx, kind, args.service, "see it")
    app = ctx.app(args.app)
    if store_of(ctx).link_of(svc, app) is None:
        ctx.out.warn(f"Service {svc.name} is not linked to {app.name}")
        return 1
    ctx.out.step(f"Service {svc.name} is linked to {app.name}")
    return 0


@verb("links", "List the apps a {title} service is linked to")
def links(ctx: Context, kind: Kind, argv: list[str]) -> None:
    svc = owned(ctx, kind, _one_name(kind, "links", argv), "see it")
    for found in store_of(ctx).links(svc):
        ctx.out.line(found.app_name)


@verb("app-links", "List the {title} services linked to an app", "APP")
def app_links(ctx: Context, kind: Kind, argv: list[str]) -> None:
    parser = _parser(kind, "app-links")
    parser.add_argument("app", metavar="APP")
    app = ctx.app(parser.parse_args(argv).app)
    for found in store_of(ctx).app_links(app, kind.name):
        ctx.out.line(found.service.name)


@verb("logs", "Show a {title} service's logs (-t follows)", "NAME [-t|--tail] [-n N]")
def logs(ctx: Context, kind: Kind, argv: list[str]) -> None:
    parser = _parser(kind, "logs")
    parser.add_argument("service", metavar="NAME")
    parser.add_argument("-t", "--tail", action="store_true")
    parser.add_line_count(default=100)
    args = parser.parse_args(argv)
    svc = owned(ctx, kind, args.service, "see its logs")
    found = Runtime(ctx.services, kind).container(svc)
    if found is None:
        raise ServiceError("Service container does not exist")
    tail = max(args.num, 0)
    if not args.tail:
        ctx.stdout.write(found.logs(tail=tail))
        return
    stream = found.logs(stream=True, follow=True, tail=tail)
    done = threading.Event()

    def close_on_cancel() -> None:
        while not done.wait(0.25):
            if ctx.cancelled.is_set():
                stream.close()
                return

    threading.Thread(target=close_on_cancel, daemon=True).start()
    try:
        for chunk in stream:
            ctx.stdout.write(chunk)
    except (OSError, ValueError, AttributeError):
        pass  # the stream was closed under us: the client went away
    finally:
        done.set()
        stream.close()


@verb("connect", "Open the {title} client on a service (ssh -t); without a terminal, run "
      "what stdin holds and print the result")  # fmt: skip
def connect(ctx: Context, kind: Kind, argv: list[str]) -> int:
    svc = owned(ctx, kind, _one_name(kind, "connect", argv), "connect to it")
    argv_, env = kind.client_argv(svc)
    if ctx.interactive:
        env = {**env, "TERM": "xterm"}
    ctx.event(f"{kind.name}:connect", None, svc.name)
    return Runtime(ctx.services, kind).exec(
        svc, argv_, env, ctx.stdout, ctx.stderr, stdin=ctx.stdin, tty=ctx.interactive,
        cancelled=ctx.cancelled,
    )  # fmt: skip


@verb("export", "Write a dump of a {title} service to stdout", "NAME > FILE")
def export(ctx: Context, kind: Kind, argv: list[str]) -> None:
    svc = owned(ctx, kind, _one_name(kind, "export", argv), "export it")
    if ctx.interactive:
        raise UsageError("export writes a binary dump: run it without -t, into a file")
    Runtime(ctx.services, kind).export_to(svc, ctx.stdout)
    ctx.event(f"{kind.name}:export", None, svc.name)


@verb("import", "Load a dump (from export) read on stdin into a {title} service", "NAME < FILE")
def import_(ctx: Context, kind: Kind, argv: list[str]) -> None:
    svc = owned(ctx, kind, _one_name(kind, "import", argv), "import into it")
    if ctx.interactive:
        raise UsageError("No data provided on stdin.")
    runtime = Runtime(ctx.services, kind)
    with service_lock(ctx.services, kind, svc.name):
        svc = fresh(ctx, kind, svc)
        runtime.running_container(svc)
        kind.import_stream(runtime, svc, ctx.stdin)
    ctx.out.step(f"Imported into {kind.name} service {svc.name}")
    ctx.event(f"{kind.name}:import", None, svc.name)


def _parse_expose(value: str | None) -> str:
    """`[ADDRESS:]PORT` → "ADDRESS:PORT"; no value: 127.0.0.1 and any free port."""
    if not value:
        return "127.0.0.1:0"
    address, sep, port = value.rpartition(":")
    address = address.strip("[]") if sep else "127.0.0.1"
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise UsageError(f"Invalid address {address!r}: expected an IP address") from None
    if not is_whole_number(port, 5) or not 1 <= int(port) <= 65535:
        raise UsageError(f"Invalid port {port!r}: expected 1-65535")
    return f"{address}:{int(port)}"


@verb("expose", "Publish a {title} service's port on the host (127.0.0.1 unless an address "
      "is given)", "NAME [[ADDRESS:]PORT]", access=Access.ADMIN)  # fmt: skip
def expose(ctx: Context, kind: Kind, argv: list[str]) -> None:
    parser = _parser(kind, "expose")
    parser.add_argument("service", metavar="NAME")
    parser.add_argument("port", nargs="?", metavar="[ADDRESS:]PORT")
    args = parser.parse_args(argv)
    wanted = _parse_expose(args.port)
    svc = owned(ctx, kind, args.service)
    runtime = Runtime(ctx.services, kind)
    store = store_of(ctx)
    with service_lock(ctx.services, kind, svc.name):
        svc = fresh(ctx, kind, svc)
        if svc.exposed:
            raise Conflict(f"Service {svc.name} already exposed on {runtime.exposed_port(svc)}")
        store.set_exposed(svc, wanted)
        try:
            _recreate(ctx, runtime, fresh(ctx, kind, svc))
        except DockyardError:
            store.set_exposed(svc, "")
            _recreate(ctx, runtime, fresh(ctx, kind, svc))
            raise
        svc = fresh(ctx, kind, svc)
    ctx.out.step(
        f"Service {svc.name} exposed on port(s) [container->host]: "
        f"{kind.port}->{runtime.exposed_port(svc)}"
    )
    ctx.event(f"{kind.name}:expose", None, f"{svc.name} {wanted}")


def _recreate(ctx: Context, runtime: Runtime, svc: Service) -> None:
    runtime.create(svc, ctx.out)
    runtime.wait_ready(svc)
    if not svc.running:
        runtime.stop(svc)


@verb("unexpose", "Stop publishing a {title} service's port")
def unexpose(ctx: Context, kind: Kind, argv: list[str]) -> None:
    svc = owned(ctx, kind, _one_name(kind, "unexpose", argv))
    runtime = Runtime(ctx.services, kind)
    with service_lock(ctx.services, kind, svc.name):
        svc = fresh(ctx, kind, svc)
        if not svc.exposed:
            raise DockyardError("Service not exposed")
        store_of(ctx).set_exposed(svc, "")
        _recreate(ctx, runtime, fresh(ctx, kind, svc))
    ctx.out.step(f"Service {svc.name} unexposed")
    ctx.event(f"{kind.name}:unexpose", None, svc.name)


@verb("start", "Start a stopped {title} service")
def start(ctx: Context, kind: Kind, argv: list[str]) -> None:
    svc = owned(ctx, kind, _one_name(kind, "start", argv))
    with service_lock(ctx.services, kind, svc.name):
        svc = fresh(ctx, kind, svc)
        store_of(ctx).set_running(svc, True)
        ctx.out.step("Starting container")
        Runtime(ctx.services, kind).start(svc, ctx.out)
    ctx.out.detail("Container started")
    ctx.event(f"{kind.name}:start", None, svc.name)


@verb("stop", "Stop a {title} service (its linked apps lose it until it starts)")
def stop(ctx: Context, kind: Kind, argv: list[str]) -> None:
    svc = owned(ctx, kind, _one_name(kind, "stop", argv))
    with service_lock(ctx.services, kind, svc.name):
        svc = fresh(ctx, kind, svc)
        store_of(ctx).set_running(svc, False)
        ctx.out.step("Stopping container")
        Runtime(ctx.services, kind).stop(svc)
    ctx.out.detail("Container stopped")
    ctx.event(f"{kind.name}:stop", None, svc.name)


@verb("restart", "Restart a {title} service (graceful stop, start, wait until it answers)")
def restart(ctx: Context, kind: Kind, argv: list[str]) -> None:
    svc = owned(ctx, kind, _one_name(kind, "restart", argv))
    runtime = Runtime(ctx.services, kind)
    with service_lock(ctx.services, kind, svc.name):
        svc = fresh(ctx, kind, svc)
        store_of(ctx).set_running(svc, True)
        ctx.out.step("Restarting container")
        runtime.stop(svc)
        runtime.start(svc, ctx.out)
    ctx.out.detail("Container restarted")
    ctx.event(f"{kind.name}:restart", None, svc.name)


@verb("destroy", "Destroy a {title} service and its data (--force: also when linked, "
      "unlinking it)", "NAME [-f|--force]")  # fmt: skip
def destroy(ctx: Context, kind: Kind, argv: list[str]) -> None:
    parser = _parser(kind, "destroy")
    parser.add_argument("service", metavar="NAME")
    parser.add_argument("-f", "--force", action="store_true")
    args = parser.parse_args(argv)
    svc = owned(ctx, kind, args.service, "destroy it")
    store = store_of(ctx)
    if not args.force:
        linked_to = [found.app_name for found in store.links(svc)]
        if linked_to:
            raise DockyardError(
                f"Cannot delete linked service (linked to {', '.join(linked_to)}); unlink it "
                f"first, or run: {kind.name}:destroy {svc.name} --force"
            )
        raise DockyardError(
            f"WARNING: destroying {kind.name} service {svc.name} deletes its container and "
            f"data. This cannot be undone.\nTo proceed, run: {kind.name}:destroy {svc.name} "
            "--force"
        )
    with service_lock(ctx.services, kind, svc.name):
        svc = fresh(ctx, kind, svc)
        for found in store.links(svc):
            # The owner withdraws its own service: no right over the app is needed.
            app = ctx.services.apps.find(found.app_name)
            if app is None:
                continue
            with ctx.services.hold(app) as app:
                unlink_app(ctx, kind, svc, app, restart=True)
        ctx.out.heading(f"Deleting {svc.name}")
        ctx.out.step("Deleting container data")
        Runtime(ctx.services, kind).destroy(svc)
        store.delete(svc)
    ctx.out.heading(f"{kind.title} container deleted: {svc.name}")
    ctx.event(f"{kind.name}:destroy", None, svc.name)


@verb("report", "Show the {kind} settings", "[--format json]")
def report(ctx: Context, kind: Kind, argv: list[str]) -> None:
    parser = _parser(kind, "report")
    parser.add_format()
    args = parser.parse_args(argv)
    rows = [(prop.report_label, setting(ctx.services, kind, prop.name))
            for prop in GROUPS[kind.name].properties.values()]  # fmt: skip
    ctx.out.report(f"{kind.name} settings", rows, args.format)
