"""Where the dashboard is: its private listening address, its public URL, its certificate,
and the site it adds to Dockyard's nginx (`proxy.register_site`).

Invariants:
- The route follows the address the running server actually bound (`dashboard.upstream`,
  recorded at start), not the setting, so nginx never points at an address nobody listens
  on after `dashboard:set --global listen …`.
- Public name: `dockyard.<global domain>`, on the proxy's HTTP port, or its HTTPS port once
  a certificate was added with `dashboard:certs-add` (HTTP then redirects, with HSTS).
- The certificate and key live under `DATA_DIR/dashboard/tls/` (0600, validated by the
  proxy's own `certs.parse_bundle`); what nginx is told comes from state
  (`dashboard.cert`), so a render never depends on probing files.
"""

from __future__ import annotations

import json
from pathlib import Path

from dockyard.services import Services
from proxy import certs, register_site
from proxy.render import HTTP_DEFAULT_PORT, HTTPS_DEFAULT_PORT, AppRoute, CertPaths, Hsts
from proxy.router import Router, nginx_paths
from proxy.sites import reserve_label

SITE_NAME = "_dashboard"
HOST_LABEL = "dockyard"
UPSTREAM_KEY = "dashboard.upstream"  # where the running server listens (`unix:/…`, `H:P`)
CERT_KEY = "dashboard.cert"  # JSON facts of the installed certificate, or unset
TLS_SLOT = "tls"
SOCKET_NAME = "http.sock"
reserve_label(HOST_LABEL)


def dashboard_dir(services: Services) -> Path:
    return services.settings.data_dir / "dashboard"


def socket_path(services: Services) -> Path:
    return dashboard_dir(services) / SOCKET_NAME


def host_name(services: Services) -> str:
    return f"{HOST_LABEL}.{Router(services).global_domain()}"


def cert_paths(services: Services) -> CertPaths:
    return certs.cert_paths(dashboard_dir(services), TLS_SLOT)


def cert_info(services: Services) -> dict | None:
    stored = services.properties.get(None, CERT_KEY)
    return json.loads(stored) if stored else None


def url(services: Services) -> str:
    router = Router(services)
    if cert_info(services):
        scheme, port, default = "https", router.https_listen()[1], HTTPS_DEFAULT_PORT
    else:
        scheme, port, default = "http", router.http_listen()[1], HTTP_DEFAULT_PORT
    suffix = "" if port == default else f":{port}"
    return f"{scheme}://{host_name(services)}{suffix}"


@register_site
def dashboard_route(services: Services) -> AppRoute | None:
    upstream = services.properties.get(None, UPSTREAM_KEY)
    if not upstream:
        return None  # no server has started yet: nothing to route to
    return AppRoute(
        app=SITE_NAME,
        server_names=[host_name(services)],
        upstreams=[upstream],
        client_max_body_size="64k",
        cert=cert_paths(services) if cert_info(services) else None,
        acme_root=nginx_paths(services).acme_root,
        hsts=Hsts(),
    )
