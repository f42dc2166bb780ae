"""proxy: routes each app's host names to its live containers through nginx.

The public surface the deployer uses is exactly `publish`, `unpublish` and `app_urls`.
"""

from __future__ import annotations

from dockyard.services import Services
from proxy import checks, commands, hooks, letsencrypt_commands  # noqa: F401  (registration)
from proxy.router import Router
from proxy.validate import check_upstream

__all__ = ["publish", "unpublish", "app_urls"]


def publish(services: Services, app: str, upstreams: list[str]) -> list[str]:
    """Route `app` to these `host:port` upstreams (its live web containers) and return its
    URLs. Returns once nginx serves the new configuration; raises DockyardError with
    nginx's message if the configuration is refused (the previous one keeps serving)."""
    target = services.apps.get(app)
    checked = list(dict.fromkeys(check_upstream(u) for u in upstreams))
    router = Router(services)
    router.apply(lambda: router.store.set_upstreams(target, checked))
    return router.urls(target)


def unpublish(services: Services, app: str) -> None:
    """Stop routing `app`: its hosts fall to the default 404 server."""
    target = services.apps.get(app)
    router = Router(services)
    router.apply(lambda: router.store.set_upstreams(target, []))


def app_urls(services: Services, app: str) -> list[str]:
    return Router(services).urls(services.apps.get(app))
