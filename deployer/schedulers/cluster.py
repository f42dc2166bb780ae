"""The swarm this host's engine belongs to: its state, its nodes, joining and leaving.

Every function talks to the local engine's API (the manager's, when this host manages the
swarm) through the deployer's one SDK client. Node names, labels, addresses and tokens are
checked against narrow patterns before they reach the API; nothing here runs a shell.

Invariant: a function that changes the swarm (init, join, availability, labels) refuses to
run unless this engine is a manager, and says so in words an operator can act on.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

import docker.errors

from deployer import containers as docker_ops
from dockyard.errors import DockyardError, UsageError
from dockyard.names import is_whole_number

NODE_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
LABEL_VALUE_RE = re.compile(r"[A-Za-z0-9._-]{0,63}")
TOKEN_RE = re.compile(r"SWMTKN-1-[a-z0-9]{20,80}-[a-z0-9]{20,40}")
HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
ROLES = ("worker", "manager")
AVAILABILITIES = ("active", "pause", "drain")
SWARM_PORT = 2377
# Node-down detection is heartbeat-driven: a node missing its heartbeats is marked down and
# its tasks are rescheduled. Docker's default period is 5 s.
DEFAULT_HEARTBEAT = 5.0


class NotManager(DockyardError):
    pass


@dataclass(frozen=True)
class SwarmState:
    state: str  # inactive, pending, active, error, locked
    node_id: str
    node_addr: str
    is_manager: bool
    managers: int
    nodes: int
    cluster_id: str

    @property
    def active(self) -> bool:
        return self.state == "active"


def state() -> SwarmState:
    info = docker_ops.client().info().get("Swarm") or {}
    return SwarmState(
        state=info.get("LocalNodeState") or "inactive",
        node_id=info.get("NodeID") or "",
        node_addr=info.get("NodeAddr") or "",
        is_manager=bool(info.get("ControlAvailable")),
        managers=int(info.get("Managers") or 0),
        nodes=int(info.get("Nodes") or 0),
        cluster_id=((info.get("Cluster") or {}).get("ID")) or "",
    )


def require_manager() -> SwarmState:
    found = state()
    if not found.active:
        raise NotManager(
            "This host's Docker engine is not in a swarm; run `swarm:init` (or "
            "`swarm:init --join MANAGER:2377 --token TOKEN`) first"
        )
    if not found.is_manager:
        raise NotManager(
            "This host's Docker engine is a swarm worker; Dockyard must run on a manager "
            "(promote this node, or run Dockyard on a manager)"
        )
    return found


def is_manager() -> bool:
    """True when the local engine manages a swarm; False when it cannot be told (no engine)."""
    try:
        found = state()
    except docker.errors.DockerException:
        return False
    return found.active and found.is_manager


# -- checks ------------------------------------------------------------------------------
def check_node_name(name: str) -> str:
    if not NODE_RE.fullmatch(name):
        raise UsageError(
            f"Invalid node {name!r}: give a node's host name or id (letters, digits, . _ -)"
        )
    return name


def check_label(pair: str) -> tuple[str, str | None]:
    """`K=V` sets, `K=` removes; returns (key, value or None)."""
    key, sep, value = pair.partition("=")
    if not sep or not LABEL_KEY_RE.fullmatch(key) or not LABEL_VALUE_RE.fullmatch(value):
        raise UsageError(
            f"Invalid label {pair!r}: expected KEY=VALUE (KEY= removes it); letters, digits "
            "and . _ -, up to 63 characters each"
        )
    return key, value or None


def check_address(value: str, default_port: int | None = None) -> str:
    """An IP address or host name, with a port (or `default_port`)."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, str(default_port or "")
    if not is_whole_number(port, 5) or not 0 < int(port) < 65536:
        raise UsageError(f"Invalid address {value!r}: expected HOST:PORT")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not HOST_RE.fullmatch(host):
            raise UsageError(f"Invalid address {value!r}: expected HOST:PORT") from None
    return f"{host}:{int(port)}"


def check_advertise(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise UsageError(f"Invalid advertise address {value!r}: give an IP address") from None


def check_token(value: str) -> str:
    if not TOKEN_RE.fullmatch(value):
        raise UsageError("Invalid join token: expected SWMTKN-1-… as swarm:join-token prints it")
    return value


# -- changes -----------------------------------------------------------------------------
def init(advertise_addr: str | None, heartbeat: float = DEFAULT_HEARTBEAT) -> SwarmState:
    found = state()
    if found.active:
        raise DockyardError("This host's engine is already in a swarm (see swarm:report)")
    spec = docker_ops.client().api.create_swarm_spec(
        dispatcher_heartbeat_period=int(heartbeat * 1e9)
    )
    docker_ops.client().api.init_swarm(
        advertise_addr=advertise_addr, listen_addr="0.0.0.0:2377", swarm_spec=spec
    )
    return state()


def join(remote: str, token: str, advertise_addr: str | None) -> SwarmState:
    if state().active:
        raise DockyardError("This host's engine is already in a swarm (see swarm:report)")
    docker_ops.client().api.join_swarm(
        [remote], token, advertise_addr=advertise_addr, listen_addr="0.0.0.0:2377"
    )
    return state()


def join_token(role: str) -> str:
    require_manager()
    tokens = docker_ops.client().api.inspect_swarm().get("JoinTokens") or {}
    return tokens["Manager" if role == "manager" else "Worker"]


def nodes() -> list[dict[str, Any]]:
    require_manager()
    return docker_ops.client().api.nodes()


def node_summary(node: dict[str, Any]) -> dict[str, Any]:
    spec = node.get("Spec") or {}
    status = node.get("Status") or {}
    manager = node.get("ManagerStatus") or {}
    return {
        "id": node["ID"],
        "hostname": (node.get("Description") or {}).get("Hostname", ""),
        "role": spec.get("Role", ""),
        "availability": spec.get("Availability", ""),
        "state": status.get("State", ""),
        "address": status.get("Addr", ""),
        "manager": manager.get("Reachability", "") if manager else "",
        "leader": bool(manager.get("Leader")),
        "labels": dict(spec.get("Labels") or {}),
        "engine": ((node.get("Description") or {}).get("Engine") or {}).get("EngineVersion", ""),
    }


def find_node(name: str) -> dict[str, Any]:
    """A node by exact host name or id (or unique id prefix, as the docker CLI allows)."""
    check_node_name(name)
    found = nodes()
    exact = [n for n in found if n["ID"] == name or node_summary(n)["hostname"] == name]
    if not exact:
        exact = [n for n in found if n["ID"].startswith(name)]
    if len(exact) != 1:
        raise UsageError(f"No single node called {name!r} (see nodes:list)")
    return exact[0]


def update_node(name: str, change: Any) -> dict[str, Any]:
    """Apply `change(spec)` to a node's spec, retrying once if the node changed meanwhile."""
    for attempt in range(2):
        node = find_node(name)
        spec = dict(node.get("Spec") or {})
        change(spec)
        try:
            docker_ops.client().api.update_node(node["ID"], node["Version"]["Index"], spec)
            return find_node(node["ID"])
        except docker.errors.APIError as exc:
            if attempt or "update out of sequence" not in str(exc):
                raise
    raise AssertionError("unreachable")


def set_availability(name: str, availability: str) -> dict[str, Any]:
    assert availability in AVAILABILITIES
    return update_node(name, lambda spec: spec.__setitem__("Availability", availability))


def set_label(name: str, key: str, value: str | None) -> dict[str, Any]:
    def change(spec: dict[str, Any]) -> None:
        labels = dict(spec.get("Labels") or {})
        if value is None:
            labels.pop(key, None)
        else:
            labels[key] = value
        spec["Labels"] = labels

    return update_node(name, change)
