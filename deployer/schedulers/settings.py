"""The schedulers' settings, declared once: `scheduler:set` and `registry:set` come from here.

- `scheduler selected` (app or global): `docker-local` (default) or `swarm`, Dokku's names.
- `scheduler constraint` (app): Swarm placement constraints, comma-separated, each one of a
  few exact shapes (`node.labels.K==V`, `node.role==worker`, `node.hostname!=NAME`…).
- `scheduler edge-image` (global): the nginx image of the edge proxy on the manager.
- `registry server|username|password` (global; the password is secret): an external
  registry that every node can pull from. Without `server`, Dockyard runs its own on this
  host, listening on `registry listen` (default: the swarm's advertise address, port 5000).

Invariant: every value is parsed by one of the narrow parsers below before it is stored, so
what reaches the engine's API (a constraint, an image reference, a registry address) has one
of the shapes these parsers accept and nothing else.
"""

from __future__ import annotations

import re

from dockyard.properties import BadValue, Level, PropertyGroup, choice

LOCAL = "docker-local"
SWARM = "swarm"
APPLIED_LATER = "Applied at the next deploy"
MAX_CONSTRAINTS = 8
DEFAULT_EDGE_IMAGE = "nginx:1.27"
MANAGED_REGISTRY_PORT = 5000

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"
CONSTRAINT_RE = re.compile(
    rf"node\.labels\.{_NAME}(?:==|!=){_NAME}"
    r"|node\.role(?:==|!=)(?:manager|worker)"
    r"|node\.hostname(?:==|!=)[A-Za-z0-9](?:[A-Za-z0-9.-]{0,61}[A-Za-z0-9])?"
    r"|node\.id(?:==|!=)[a-z0-9]{25}"
)
# host[:port] of a registry: a DNS name or IPv4 address, an optional port.
REGISTRY_RE = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*)"
    r"(?::[0-9]{1,5})?"
)
LISTEN_RE = re.compile(r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|localhost):[0-9]{1,5}")
# An image reference as the engine takes it: [registry/]path[:tag], lower-case path.
IMAGE_RE = re.compile(
    r"(?:[a-z0-9.-]+(?::[0-9]{1,5})?/)?[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
)
USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")


def parse_constraints(value: str) -> str:
    items = [item.strip() for item in value.split(",")]
    if len(items) > MAX_CONSTRAINTS or not all(CONSTRAINT_RE.fullmatch(i) for i in items):
        raise BadValue(
            "takes up to 8 comma-separated constraints of the shapes node.labels.KEY==VALUE, "
            "node.labels.KEY!=VALUE, node.role==manager|worker, node.hostname==NAME, "
            "node.id==ID (names: letters, digits, '.', '_', '-')"
        )
    return ",".join(items)


def constraints_of(stored: str) -> list[str]:
    return [c for c in stored.split(",") if c]


def _registry_server(value: str) -> str:
    value = value.lower()
    if not REGISTRY_RE.fullmatch(value) or not _port_ok(value):
        raise BadValue("takes a registry address: HOST or HOST:PORT (no scheme, no path)")
    return value


def _listen(value: str) -> str:
    if not LISTEN_RE.fullmatch(value) or not _port_ok(value):
        raise BadValue("takes IPV4:PORT, the address every node reaches this host on")
    return value


def _port_ok(value: str) -> bool:
    _, sep, port = value.rpartition(":")
    return not sep or 0 < int(port) < 65536


def _image(value: str) -> str:
    if len(value) > 255 or not IMAGE_RE.fullmatch(value):
        raise BadValue("takes an image reference like nginx:1.27 or registry:5000/nginx:1.27")
    return value


def _username(value: str) -> str:
    if not USERNAME_RE.fullmatch(value):
        raise BadValue("takes a user name of letters, digits and . _ @ + -")
    return value


def _password(value: str) -> str:
    if len(value) > 1024 or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise BadValue("takes up to 1024 printable characters")
    return value


SCHEDULER = PropertyGroup("scheduler")
SELECTED = SCHEDULER.declare(
    "selected", choice(LOCAL, SWARM), default=LOCAL, note=APPLIED_LATER,
    help="where the app's processes run: docker-local (this host) or swarm (the cluster)",
)  # fmt: skip
CONSTRAINT = SCHEDULER.declare(
    "constraint", parse_constraints, levels=Level.APP, note=APPLIED_LATER,
    help="swarm placement constraints, comma-separated (node.labels.K==V, node.role==worker)",
)  # fmt: skip
EDGE_IMAGE = SCHEDULER.declare(
    "edge-image", _image, levels=Level.GLOBAL, default=DEFAULT_EDGE_IMAGE,
    help="nginx image of the swarm edge proxy on the manager (pulled when missing)",
)  # fmt: skip

REGISTRY = PropertyGroup("registry")
SERVER = REGISTRY.declare(
    "server", _registry_server, levels=Level.GLOBAL, note=APPLIED_LATER,
    help="registry every swarm node pulls from (empty: Dockyard runs one on this host)",
)  # fmt: skip
USERNAME = REGISTRY.declare(
    "username", _username, levels=Level.GLOBAL, help="user name for the registry server",
)  # fmt: skip
PASSWORD = REGISTRY.declare(
    "password", _password, levels=Level.GLOBAL, secret=True,
    help="password for the registry server",
)  # fmt: skip
LISTEN = REGISTRY.declare(
    "listen", _listen, levels=Level.GLOBAL,
    help="where Dockyard's own registry listens (default: swarm advertise address:5000)",
)  # fmt: skip
