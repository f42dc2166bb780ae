"""The deployer's settings, declared once: `ps:set`, `checks:set` and the limits that
`resource:limit` sets. Reports and setters come from these declarations."""

from __future__ import annotations

from deployer.containers import DEFAULT_PIDS_LIMIT, DEFAULT_RESTART_POLICY, Limits
from deployer.containers import parse_restart_policy as _restart_policy
from dockyard.apps import App
from dockyard.names import is_whole_number
from dockyard.properties import (
    BOOLEAN,
    BadValue,
    Level,
    PropertyGroup,
    PropertyStore,
    decimal,
    whole_number,
)

APPLIED_LATER = "Applied at the next deploy or restart"
MAX_TENANT_PIDS = 4096


def _restart(value: str) -> str:
    try:
        _restart_policy(value)
    except ValueError:
        raise BadValue("is one of: no, always, unless-stopped, on-failure[:N]") from None
    return value


def _memory(value: str) -> str:
    """`512m`, `1g`, `256` (megabytes, as on Dokku): from 6 MB, the engine's floor."""
    value = value.lower()
    number, unit = (value[:-1], value[-1]) if value[-1:] in "bkmg" else (value, "m")
    scale = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    if not is_whole_number(number) or not 6 * 1024**2 <= int(number) * scale <= 2**50:
        raise BadValue("takes a size of at least 6m, like 512m or 1g")
    return f"{int(number)}{unit}"


PS = PropertyGroup("ps")
RESTART_POLICY = PS.declare(
    "restart-policy", _restart, default=DEFAULT_RESTART_POLICY, note=APPLIED_LATER,
    help="what the engine does when a process exits",
)  # fmt: skip

CHECKS = PropertyGroup("checks")
CHECKS_DISABLED = CHECKS.declare(
    "disabled", BOOLEAN, lambda v: v == "true", default="false",
    help="switch without waiting for checks (checks:disable / checks:enable)",
)  # fmt: skip
WAIT_TO_RETIRE = CHECKS.declare(
    "wait-to-retire", decimal(0, 3600), float, default="10",
    help="seconds old containers keep serving requests in flight after a switch",
)  # fmt: skip

RESOURCE = PropertyGroup("resource")
MEMORY = RESOURCE.declare(
    "memory", _memory, label="Limit memory", note=APPLIED_LATER,
    help="memory limit per container (docker syntax: 512m, 1g)",
)  # fmt: skip
CPU = RESOURCE.declare(
    "cpu", decimal(0.01, 256), float, label="Limit cpu", note=APPLIED_LATER,
    help="CPUs per container (1.5 = one and a half)",
)  # fmt: skip
ONE_OFFS = RESOURCE.declare(
    "max-one-offs", whole_number(1, 1000), int, default="8", levels=Level.GLOBAL,
    label="Limit one-offs", help="one-off containers (run, cron) one app may run at once",
)  # fmt: skip
PIDS = RESOURCE.declare(
    "pids", whole_number(16, 1_000_000), int, default=str(DEFAULT_PIDS_LIMIT),
    label="Limit pids", note=APPLIED_LATER, help="processes per container (fork bombs end here)",
    # The cap is the host's protection: raising it far is an admin's call, not a tenant's.
    admin_only=lambda v: is_whole_number(v) and int(v) > MAX_TENANT_PIDS,
)  # fmt: skip


class DeploySettings:
    """What one app deploys with, read from the declarations above."""

    def __init__(self, properties: PropertyStore, app: App) -> None:
        self.properties = properties
        self.app = app

    @property
    def checks_enabled(self) -> bool:
        return not CHECKS_DISABLED.get(self.properties, self.app)

    @property
    def wait_to_retire(self) -> float:
        return WAIT_TO_RETIRE.get(self.properties, self.app)

    @property
    def restart_policy(self) -> str:
        return RESTART_POLICY.get(self.properties, self.app)

    @property
    def limits(self) -> Limits:
        cpus = CPU.raw(self.properties, self.app)
        return Limits(
            memory=MEMORY.raw(self.properties, self.app) or None,
            cpus=float(cpus) if cpus else None,
            pids=PIDS.get(self.properties, self.app),
        )
