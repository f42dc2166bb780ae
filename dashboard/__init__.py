"""dashboard stage: a read-mostly web dashboard served by Dockyard itself.

Importing it registers the `dashboard:*` commands, the dashboard's site in the proxy
(`dockyard.<global domain>`), and the server-life hooks that start its HTTP server beside
asyncssh and feed its metrics (dashboard/server.py).

It is the one stage that reads every other stage's state (releases, builds, routes,
certificates, services) and knows none of their internals beyond their stores; nothing
imports it but `dockyard/cli.py`. Where each rule lives:

- who may see what: `dockyard.access`, applied in `dashboard.data` (never a copy of the rule);
- sign-in links, sessions, tokens, CSRF: `dashboard.auth`;
- the one write, rollback: `releases:rollback` through `dockyard.registry.dispatch`;
- HTTP, escaping, security headers: `dashboard.web` and the autoescaping templates;
- metrics: `dashboard.metrics` (traffic from nginx's JSON access log) and
  `dashboard.engine` (containers, CPU and memory from the engine).
"""

from __future__ import annotations

from dashboard import commands, server, site  # noqa: F401  (registration)
