"""The cluster (admin only): `swarm:init`, `swarm:join-token`, `swarm:report`, `nodes:list`,
`nodes:drain`, `nodes:activate`, `nodes:label`; and the settings groups `scheduler:*` and
`registry:*`, derived from their declarations in `deployer.schedulers.settings`.

Every node name, label, address and token is checked by `deployer.schedulers.cluster`
before it reaches the engine's API; nothing here runs a shell.
"""

from __future__ import annotations

from deployer.commands.common import command
from deployer.schedulers import cluster, registry
from deployer.schedulers.settings import REGISTRY, SCHEDULER, SERVER
from dockyard.access import Access
from dockyard.context import Context
from dockyard.errors import DockyardError
from dockyard.property_commands import ReportRow, register_property_commands
from dockyard.registry import CommandParser


@command(
    "swarm:init", "Make this host's engine a swarm manager, or join an existing swarm",
    "[--advertise-addr IP] [--heartbeat SECONDS] | --join MANAGER[:2377] --token TOKEN",
    access=Access.ADMIN,
)  # fmt: skip
def swarm_init(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("swarm:init")
    parser.add_argument("--advertise-addr")
    parser.add_argument("--heartbeat", type=float, default=cluster.DEFAULT_HEARTBEAT)
    parser.add_argument("--join")
    parser.add_argument("--token")
    args = parser.parse_args(argv)
    advertise = cluster.check_advertise(args.advertise_addr) if args.advertise_addr else None
    if args.join:
        if not args.token:
            raise DockyardError("--join needs --token (swarm:join-token manager on a manager)")
        remote = cluster.check_address(args.join, cluster.SWARM_PORT)
        ctx.out.step(f"Joining the swarm at {remote}")
        found = cluster.join(remote, cluster.check_token(args.token), advertise)
    else:
        if not 1 <= args.heartbeat <= 60:
            raise DockyardError("--heartbeat takes 1 to 60 seconds")
        ctx.out.step("Initialising a swarm with this host as its manager")
        found = cluster.init(advertise, args.heartbeat)
    ctx.out.detail(f"Node {found.node_id} at {found.node_addr} (manager: {found.is_manager})")
    if found.is_manager and not SERVER.raw(ctx.services.properties, None):
        own = registry.managed(ctx.services)
        own.ensure_running()
        ctx.out.detail(f"Registry for the nodes: {own.listen} (Dockyard's own)")
        ctx.out.detail(f"Every node's dockerd needs --insecure-registry {own.listen}")
    ctx.out.detail("Add nodes with: docker swarm join --token $(swarm:join-token) "
                   f"{found.node_addr}:{cluster.SWARM_PORT}")  # fmt: skip
    ctx.event("swarm:init", None, "join" if args.join else "init")


@command(
    "swarm:join-token", "Print the token a new node joins with", "[worker|manager]",
    access=Access.ADMIN,
)  # fmt: skip
def swarm_join_token(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("swarm:join-token")
    parser.add_argument("role", nargs="?", choices=cluster.ROLES, default="worker")
    args = parser.parse_args(argv)
    ctx.out.line(cluster.join_token(args.role))


@command("swarm:report", "Show the swarm and its registry", "[--format json]",
         access=Access.ADMIN)  # fmt: skip
def swarm_report(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("swarm:report")
    parser.add_format()
    args = parser.parse_args(argv)
    found = cluster.state()
    rows: list[ReportRow] = [
        ("Swarm state", found.state),
        ("Swarm manager", found.is_manager),
        ("Swarm node id", found.node_id),
        ("Swarm node address", found.node_addr),
        ("Swarm cluster id", found.cluster_id),
        ("Swarm managers", found.managers),
        ("Swarm nodes", found.nodes),
    ]
    if found.is_manager:
        where = registry.target(ctx.services, start=False)
        rows.append(("Swarm registry", where.address))
        rows.append(("Swarm registry managed", where.managed))
        if where.managed:
            running = registry.managed(ctx.services).answers()
            rows.append(("Swarm registry running", running))
    ctx.out.report("Swarm information", rows, args.format)


@command("nodes:list", "List the swarm's nodes", "[--format json]", access=Access.ADMIN)
def nodes_list(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("nodes:list")
    parser.add_format()
    args = parser.parse_args(argv)
    found = sorted((cluster.node_summary(n) for n in cluster.nodes()),
                   key=lambda n: n["hostname"])  # fmt: skip
    if args.format == "json":
        ctx.out.json(found)
        return
    ctx.out.heading("Nodes")
    table = [["HOSTNAME", "ID", "ROLE", "STATE", "AVAILABILITY", "MANAGER", "LABELS"]]
    for n in found:
        labels = ",".join(f"{k}={v}" for k, v in sorted(n["labels"].items()))
        manager = ("leader" if n["leader"] else n["manager"]) or "-"
        table.append([n["hostname"], n["id"][:12], n["role"], n["state"], n["availability"],
                      manager, labels or "-"])  # fmt: skip
    ctx.out.table(table)


def _availability(ctx: Context, argv: list[str], name: str, availability: str) -> None:
    parser = CommandParser(name)
    parser.add_argument("node")
    node = cluster.check_node_name(parser.parse_args(argv).node)
    ctx.out.step(f"Setting {node} to {availability}")
    updated = cluster.node_summary(cluster.set_availability(node, availability))
    ctx.out.detail(f"{updated['hostname']}: {updated['availability']}")
    if availability == "drain":
        ctx.out.detail("Its tasks move to other nodes (start-first, through the health checks)")
    ctx.event(name, None, updated["hostname"])


@command("nodes:drain", "Move every task off a node and keep new ones away", "NODE",
         access=Access.ADMIN)  # fmt: skip
def nodes_drain(ctx: Context, argv: list[str]) -> None:
    _availability(ctx, argv, "nodes:drain", "drain")


@command("nodes:activate", "Let a drained or paused node take tasks again", "NODE",
         access=Access.ADMIN)  # fmt: skip
def nodes_activate(ctx: Context, argv: list[str]) -> None:
    _availability(ctx, argv, "nodes:activate", "active")


@command("nodes:label", "Set (K=V) or remove (K=) a node label for placement constraints",
         "NODE K=V…", access=Access.ADMIN)  # fmt: skip
def nodes_label(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("nodes:label")
    parser.add_argument("node")
    parser.add_argument("labels", nargs="+", metavar="K=V")
    args = parser.parse_args(argv)
    node = cluster.check_node_name(args.node)
    pairs = [cluster.check_label(pair) for pair in args.labels]  # all checked before any is set
    for key, value in pairs:
        updated = cluster.node_summary(cluster.set_label(node, key, value))
        ctx.out.step(f"{'Setting' if value is not None else 'Removing'} label {key} on "
                     f"{updated['hostname']}")  # fmt: skip
    ctx.event("nodes:label", None, f"{node} " + " ".join(args.labels))


register_property_commands(SCHEDULER)
register_property_commands(REGISTRY)
