"""proxy: routes each app's host names to its live containers through nginx.

The public surface the deployer uses is exactly `publish`, `unpublish` and `app_urls`.
`publish` changes one app's routes only (proxy.router): a routine switch of containers
moves traffic in the kernel without reloading nginx, and returns once no new request
reaches a container that left.
Dockyard's own sites (the dashboard) are added with `register_site` (proxy/sites.py).
"""

from __future__ import annotations

from dockyard.services import Services
from proxy import checks, commands, hooks, letsencrypt_commands  # noqa: F401  (registration)
from proxy.router import Router
from proxy.sites import register_site
from proxy.validate import check_upstream

__all__ = ["publish", "unpublish", "app_urls", "register_site"]


def publish(services: Services, app: str, upstreams: list[str]) -> list[str]:
    """Route `app` to these `host:port` upstreams (its live web containers) and return its
    URLs. Returns once every new request goes to these upstreams only (none to a
    container that left); raises DockyardError with nginx's message if the configuration
    is refused (the previous one keeps serving). With no upstreams (its containers are
    stopped) the app's names stay routed and answer 502 at once; `unpublish` removes
    them (404)."""
    target = services.apps.get(app)
    router = Router(services)
    checked = router.resolve(list(dict.fromkeys(check_upstream(u) for u in upstreams)))
    router.apply(lambda: router.store.set_upstreams(target, checked, held=True), app=target)
    return router.urls(target)


def unpublish(services: Services, app: str) -> None:
    """Stop routing `app`: its hosts fall to the default 404 server."""
    target = services.apps.get(app)
    router = Router(services)
    router.apply(lambda: router.store.set_upstreams(target, []), app=target)


def app_urls(services: Services, app: str) -> list[str]:
    return Router(services).urls(services.apps.get(app))
