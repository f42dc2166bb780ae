"""The deployer's per-app settings (`checks:set`, `ps:set`, `resource:limit`), stored as
namespaced properties so an app value overrides a global one."""

from __future__ import annotations

from deployer.containers import DEFAULT_RESTART_POLICY, Limits
from dockyard.apps import App
from dockyard.properties import PropertyStore

CHECKS_DISABLED = "deployer.checks-disabled"
WAIT_TO_RETIRE = "deployer.wait-to-retire"
RESTART_POLICY = "deployer.restart-policy"
MEMORY = "deployer.resource-memory"
CPUS = "deployer.resource-cpu"

DEFAULT_WAIT_TO_RETIRE = 10.0


class DeploySettings:
    def __init__(self, properties: PropertyStore, app: App) -> None:
        self.properties = properties
        self.app = app

    def _get(self, key: str) -> str | None:
        return self.properties.get(self.app, key)

    @property
    def checks_enabled(self) -> bool:
        return self._get(CHECKS_DISABLED) != "true"

    @property
    def wait_to_retire(self) -> float:
        value = self._get(WAIT_TO_RETIRE)
        return float(value) if value else DEFAULT_WAIT_TO_RETIRE

    @property
    def restart_policy(self) -> str:
        return self._get(RESTART_POLICY) or DEFAULT_RESTART_POLICY

    @property
    def limits(self) -> Limits:
        cpus = self._get(CPUS)
        return Limits(memory=self._get(MEMORY), cpus=float(cpus) if cpus else None)
