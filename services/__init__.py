"""services stage: databases and caches as first-class objects (`postgres:*`, `redis:*`,
`mysql:*`).

Importing it registers every kind's commands (one table, services/commands.py), the network
provider through which a linked app's containers join a service's network, the clean-up of
links when an app is destroyed, the services' part of `dockyard backup`, and the watch that
keeps services running. It knows containers and networks, not releases: a link changes an
app's config through the core and asks the core for a redeploy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dockyard import services as app_hooks
from dockyard.apps import App
from dockyard.pipeline import register_network_provider
from services import backup, reconcile  # noqa: F401  (registration)
from services.base import ServiceStore
from services.commands import register
from services.kinds import KINDS
from services.runtime import Runtime

if TYPE_CHECKING:
    from dockyard.services import Services

for _kind in KINDS.values():
    register(_kind)


@register_network_provider
def linked_service_networks(services: Services, app: App) -> list[str]:
    """The networks of the services linked to `app`, made if missing (an engine reset)."""
    return [
        Runtime(services, KINDS[link.service.kind]).ensure_network(link.service)
        for link in ServiceStore(services.state).app_links(app)
        if link.service.kind in KINDS
    ]


@app_hooks.on_destroy
def _forget_links(services: Services, name: str) -> None:
    """A destroyed app is unlinked from every service (its config goes with it)."""
    ServiceStore(services.state).forget_app(name)
