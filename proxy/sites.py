"""Hosts Dockyard itself answers beside the apps: the dashboard at `dockyard.<global domain>`.

A stage that serves HTTP from inside `dockyard serve` registers a provider here. The router
renders what the providers return into the same whole configuration as the apps' routes
(`Router.render`), so a site goes through the same render → `nginx -t` → swap → reload as
any app. The proxy knows nothing of the stages behind its sites: a provider returns an
`AppRoute` whose `app` is the site's name and whose one upstream is the site's private
address (`127.0.0.1:PORT` or `unix:/path`).

Invariants:
- A site's name starts with `_`, which no app name can (`^[a-z0-9][a-z0-9-]*$`), so neither
  its upstream name (`dockyard-_NAME`) nor its lines in the access log can be taken for an app's.
- Sites are rendered before every app: nginx keeps the first server block that names a host
  and ignores later ones, so an app that adds a site's host name as one of its domains cannot
  take that host over.
- Providers are pure reads of state and settings, cheap and deterministic (the watchdog
  renders every two seconds and compares), and the local CLI renders the same sites as the
  server because every stage registers its provider on import.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from dockyard.services import Services
from proxy.render import AppRoute

SiteProvider = Callable[[Services], "AppRoute | None"]
SITE_NAME_RE = re.compile(r"^_[a-z0-9][a-z0-9-]{0,30}$")
_providers: list[SiteProvider] = []
_reserved_labels: set[str] = set()


def reserve_label(label: str) -> None:
    """`label.<global domain>` is Dockyard's own whether or not its site is routed now (a
    site that failed to start must not leave its name to the first app that asks)."""
    _reserved_labels.add(label)


def reserved_labels() -> frozenset[str]:
    return frozenset(_reserved_labels)


def register_site(provider: SiteProvider) -> SiteProvider:
    _providers.append(provider)
    return provider


def site_routes(services: Services) -> list[AppRoute]:
    routes = []
    for provider in _providers:
        route = provider(services)
        if route is None:
            continue
        if not SITE_NAME_RE.fullmatch(route.app):
            raise ValueError(f"site name {route.app!r} must match {SITE_NAME_RE.pattern}")
        routes.append(route)
    return routes
