"""What one running command sees: who runs it, its streams, and the data dir opened.

The access rule is applied here, once, for every app a command names (`Context.app`), and
for global settings (`Context.target`); commands never check access themselves.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from dockyard.access import Access, Identity, can_see, check_access
from dockyard.apps import App
from dockyard.errors import UsageError
from dockyard.names import check_app_name
from dockyard.output import Output
from dockyard.services import Services


@dataclass
class Context:
    services: Services
    identity: Identity
    stdin: BinaryIO
    stdout: BinaryIO
    stderr: BinaryIO
    out: Output
    interactive: bool = False  # a pty was requested (`ssh -t`)
    local: bool = False  # the local CLI, run by root on the server itself
    command: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Client environment variables the front door let through: validated, and only those a
    # command is documented to read (`GIT_PROTOCOL` for git's commands); empty otherwise.
    client_env: Mapping[str, str] = field(default_factory=dict)

    def app(self, name: str, need: Access = Access.APP, action: str = "do this") -> App:
        """The named app, if it exists and this key may manage it (or own it, for OWNER:
        `action` then says what a grantee was refused)."""
        app = self.services.apps.get(check_app_name(name))
        grants = self.services.apps.grants(app)
        check_access(self.identity, need, app.name, app.owner, grants, action=action)
        return app

    def visible_apps(self) -> list[App]:
        """Every app this key may see (admins: all), by name."""
        apps = self.services.apps
        return [a for a in apps.all() if can_see(self.identity, a.owner, apps.grants(a))]

    def apps_named_or_visible(self, name: str | None) -> list[App]:
        """The named app (access checked), or with no name every app this key may see."""
        return [self.app(name)] if name else self.visible_apps()

    def target(self, app_name: str | None, is_global: bool, action: str) -> App | None:
        """The app a settings command acts on, or None for `--global` (admins only)."""
        if is_global:
            self.require_admin(action)
            return None
        if not app_name:
            raise UsageError("Give an app name, or --global")
        return self.app(app_name)

    def require_admin(self, action: str) -> None:
        check_access(self.identity, Access.ADMIN, action=action)

    def event(self, kind: str, app: str | None = None, detail: str = "") -> None:
        self.services.state.record_event(self.identity.name, kind, app, detail)
