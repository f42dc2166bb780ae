"""Who answers at which hostname: one hostname belongs to one app. Every rule is here, and
both `domains:*` and the naming of apps (create, rename, first push) go through it.

- `APP.<global domain>` is app APP's alone. No app takes a name one label under the global
  domain other than its own default: that is the name an app of that label has, or would
  get when created.
- No app's domain equals another app's default or custom domain, covers one with a
  wildcard, or falls inside another app's wildcard (nginx prefers the exact name, so that
  would take the other app's traffic for it).
- The bare global domain and wildcards are for admins only.
- An app is not created or renamed onto a name whose default domain another app holds or
  covers.
"""

from __future__ import annotations

from dockyard.apps import App
from dockyard.errors import AccessDenied, Conflict
from dockyard.services import Services
from proxy.router import Router


def covers(wildcard: str, domain: str) -> bool:
    """nginx's `*.example.com`: every name ending in `.example.com`, at any depth."""
    return wildcard.startswith("*.") and domain.endswith(wildcard[1:])


def clash(a: str, b: str) -> bool:
    return a == b or covers(a, b) or covers(b, a)


def _claims(router: Router, skip: App | None) -> list[tuple[str, App, bool]]:
    """(domain, app, is_default) for every app but `skip`."""
    found = []
    for other in router.services.apps.all():
        if skip is not None and other.id == skip.id:
            continue
        found.append((router.default_domain(other), other, True))
        found += [(d, other, False) for d in router.store.domains(other)]
    return found


def check_domains(router: Router, app: App, domains: list[str], is_admin: bool) -> None:
    """Refuse any of `domains` that `app` may not answer at (see the module's rules)."""
    global_domain = router.global_domain()
    claims = _claims(router, app)
    for domain in domains:
        if (domain == global_domain or domain.startswith("*.")) and not is_admin:
            raise AccessDenied(
                f"Only an admin key may add {domain}: the global domain and wildcards "
                "route many apps' names"
            )
        label, _, parent = domain.partition(".")
        if parent == global_domain and domain != router.default_domain(app):
            raise Conflict(
                f"Domain {domain} is the address of app {label} (every APP.{global_domain} "
                "belongs to the app of that name, existing or future)"
            )
        for other_domain, other, is_default in claims:
            if clash(domain, other_domain):
                what = "address" if is_default else "domain"
                raise Conflict(
                    f"Domain {domain} is already used by app {other.name} "
                    f"(its {what} {other_domain})"
                )


def check_app_name(services: Services, name: str, renaming: App | None) -> None:
    """Refuse a new app name whose default domain another app answers at already."""
    router = Router(services)
    default = f"{name}.{router.global_domain()}"
    for other_domain, other, is_default in _claims(router, renaming):
        if not is_default and clash(default, other_domain):
            raise Conflict(
                f"App name {name} is not available: {default} is app {other.name}'s domain "
                f"{other_domain}"
            )


def check_global_domain(router: Router, domain: str) -> None:
    """Refuse a global domain under which an app's address would be another app's domain."""
    apps = router.services.apps.all()
    for app in apps:
        default = f"{app.name}.{domain}"
        for other in apps:
            if other.id == app.id:
                continue
            for other_domain in router.store.domains(other):
                if clash(default, other_domain):
                    raise Conflict(
                        f"With global domain {domain}, app {app.name} would answer at "
                        f"{default}, which is app {other.name}'s domain {other_domain}; "
                        "change that domain first"
                    )
