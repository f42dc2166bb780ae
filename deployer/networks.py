"""Each app's own Docker network: its containers reach each other, and nothing else does.

Every container of an app (processes, release and deploy phases, one-offs, cron) joins
`dockyard.app.APP` first, a bridge network of its own; Docker isolates bridge networks
from one another, so one app cannot reach another's containers except through the proxy
(the host, where nginx runs, reaches every bridge). Other networks an app joins — linked
services', `network:set … attach-post-deploy` — come from providers registered in
`dockyard.pipeline` and are joined after the app's own.

Names are `dockyard.app.APP`: user-made networks take app-style names (no dots, not
starting with `dockyard`), so no user can create, or destroy, a network that stands for an
app or the platform. Networks are labelled with the Dockyard home that made them; one that
is not this home's is never taken over or removed.

Addresses: every network Dockyard makes is a /26 (62 addresses) from Dockyard's own range,
`DOCKYARD_APP_SUBNET_POOL` (default 10.201.0.0/16: 1,024 networks), the first one no other
network overlaps, starting at a place derived from the network's name so that concurrent
deploys rarely try the same one. Docker's default pools hold about thirty bridge networks
per engine (15 × /16 and 16 × /20), fewer than the apps one server runs, and are left to
everything else on the engine. A network made before keeps its addresses.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os

import docker.errors
import docker.types

from deployer import containers as docker_ops
from dockyard.errors import DockyardError

APP_NETWORK_PREFIX = "dockyard.app."
LABEL_HOME = docker_ops.LABEL_HOME
LABEL_APP = docker_ops.LABEL_APP
DEFAULT_APP_SUBNET_POOL = "10.201.0.0/16"
APP_SUBNET_PREFIX = 26
OVERLAPS = "overlaps"


def app_subnet_pool() -> ipaddress.IPv4Network:
    """The range Dockyard's networks are cut from: private IPv4, room for one /26 or more."""
    value = os.environ.get("DOCKYARD_APP_SUBNET_POOL", DEFAULT_APP_SUBNET_POOL)
    try:
        pool = ipaddress.ip_network(value, strict=True)
    except ValueError:
        pool = None
    if (
        not isinstance(pool, ipaddress.IPv4Network)
        or not pool.is_private
        or pool.prefixlen > APP_SUBNET_PREFIX
    ):
        raise DockyardError(
            f"DOCKYARD_APP_SUBNET_POOL={value!r} is not a private IPv4 range of /"
            f"{APP_SUBNET_PREFIX} or larger (for example {DEFAULT_APP_SUBNET_POOL})"
        )
    return pool


def app_network_name(app: str) -> str:
    return f"{APP_NETWORK_PREFIX}{app}"


def ensure_app_network(home: str, app: str) -> str:
    """The app's network, created when missing; returns its name."""
    return ensure_network(home, app_network_name(app), {LABEL_APP: app})


def remove_app_network(home: str, app: str) -> None:
    """Remove the app's network (its containers are gone); a missing one is fine."""
    remove_network(home, app_network_name(app))


def ensure_network(home: str, name: str, labels: dict[str, str]) -> str:
    """Network `name` of this Dockyard (a bridge labelled with `home` and `labels`), created
    when missing. A network of that name that is not this Dockyard's is never taken over or
    removed (it may be the platform's own, another Dockyard's or the admin's): that is a
    refusal. Every Docker network Dockyard makes (apps', services', users') is made here."""
    api = docker_ops.client().api
    try:
        found = api.inspect_network(name)
    except docker.errors.NotFound:
        found = None
    if found is not None:
        if (found.get("Labels") or {}).get(LABEL_HOME) == home:
            return name
        raise DockyardError(
            f"A Docker network named {name} exists and does not belong to this Dockyard"
        )
    _create_in_own_pool(api, name, {**labels, LABEL_HOME: home})
    return name


def _create_in_own_pool(api: docker.APIClient, name: str, labels: dict[str, str]) -> None:
    pool = app_subnet_pool()
    subnets = list(pool.subnets(new_prefix=APP_SUBNET_PREFIX))
    start = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")
    for i in range(len(subnets)):
        subnet = subnets[(start + i) % len(subnets)]
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(subnet))])
        try:
            api.create_network(name, driver="bridge", labels=labels, ipam=ipam,
                               check_duplicate=True)  # fmt: skip
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # a concurrent deploy made it first
                return
            if OVERLAPS not in str(exc.explanation or exc):
                raise
    raise DockyardError(f"No address range left for network {name}: {pool} is all in use")


def remove_network(home: str, name: str) -> None:
    """Remove this Dockyard's network `name`, disconnecting what is still on it."""
    api = docker_ops.client().api
    try:
        found = api.inspect_network(name)
    except docker.errors.NotFound:
        return
    if (found.get("Labels") or {}).get(LABEL_HOME) != home:
        return
    for container_id in found.get("Containers") or {}:
        try:  # e.g. an app linked with --no-restart and not redeployed since
            api.disconnect_container_from_network(container_id, found["Id"], force=True)
        except docker.errors.APIError:
            pass
    try:
        api.remove_network(found["Id"])
    except docker.errors.NotFound:
        pass


def home_networks(home: str) -> list[dict]:
    """Every app network this Dockyard made (for clean-up of destroyed apps); not the
    networks of services or of `network:create`, which carry no app label."""
    return docker_ops.client().api.networks(filters={"label": [f"{LABEL_HOME}={home}", LABEL_APP]})
