"""Who answers at which hostname: one hostname belongs to one app. Every rule is here, and
both `domains:*` and the naming of apps (create, rename, first push) go through it.

- `APP.<global domain>` is app APP's alone. No app takes a name one label under the global
  domain other than its own default: that is the name an app of that label has, or would
  get when created.
- No app's domain equals another app's default or custom domain, covers one with a
  wildcard, or falls inside another app's wildcard (nginx prefers the exact name, so that
  would take the other app's traffic for it).
- A name under another app's domain (`login.victim.example.com`) is that app's: only a key
  that may manage that app adds it (a cookie or a phishing page there is trusted as the
  other app's). Under the global domain, `X.APP.<global domain>` is app APP's.
- The bare global domain, wildcards and IP addresses (which route every request made to
  the server by address) are for admins only.
- A non-admin key gives an app at most MAX_DOMAINS_PER_APP domains.
- An app is not created or renamed onto a name whose default domain another app holds or
  covers.
"""

from __future__ import annotations

import ipaddress

from dockyard.access import Identity, can_see
from dockyard.apps import App
from dockyard.errors import AccessDenied, Conflict
from dockyard.services import Services
from proxy.router import Router

MAX_DOMAINS_PER_APP = 100


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


def under(domain: str, parent: str) -> bool:
    return domain.endswith("." + parent.removeprefix("*."))


def is_ip_address(domain: str) -> bool:
    try:
        ipaddress.ip_address(domain)
    except ValueError:
        return False
    return True


def check_domains(router: Router, app: App, domains: list[str], who: Identity) -> None:
    """Refuse any of `domains` that `app` may not answer at (see the module's rules)."""
    global_domain = router.global_domain()
    claims = _claims(router, app)
    apps = router.services.apps
    may_manage = {}  # app id -> bool, for the subdomain rule
    if not who.is_admin:
        total = len(set(router.store.domains(app)) | set(domains))
        if total > MAX_DOMAINS_PER_APP:
            raise AccessDenied(
                f"App {app.name} would have {total} domains; a non-admin key may give an app "
                f"at most {MAX_DOMAINS_PER_APP}"
            )
    for domain in domains:
        if not who.is_admin and (
            domain == global_domain or domain.startswith("*.") or is_ip_address(domain)
        ):
            raise AccessDenied(
                f"Only an admin key may add {domain}: the global domain, wildcards and IP "
                "addresses route many apps' names"
            )
        if under(domain, global_domain):
            owner_label = domain.removesuffix("." + global_domain).rsplit(".", 1)[-1]
            if owner_label != app.name:
                raise Conflict(
                    f"Domain {domain} is under the address of app {owner_label} (every "
                    f"APP.{global_domain} and the names under it belong to the app of that "
                    "name, existing or future)"
                )
        for other_domain, other, is_default in claims:
            what = "address" if is_default else "domain"
            if clash(domain, other_domain):
                raise Conflict(
                    f"Domain {domain} is already used by app {other.name} "
                    f"(its {what} {other_domain})"
                )
            if under(domain, other_domain) and not who.is_admin:
                if other.id not in may_manage:
                    may_manage[other.id] = can_see(who, other.owner, apps.grants(other))
                if not may_manage[other.id]:
                    raise Conflict(
                        f"Domain {domain} is under app {other.name}'s {what} {other_domain}; "
                        f"only a key that may manage {other.name} can add it"
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
