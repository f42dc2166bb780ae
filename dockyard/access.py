"""Who may do what. Every access decision in Dockyard is made by `check_access`.

- An admin key may do everything.
- Any key may create apps (it then owns them), list the apps it can see, and read help.
- A non-admin key may manage an app only if it owns it or was granted it (`acl:add`).
- Only the owner (or an admin) may grant or revoke access to an app.
- Keys and global settings are admin-only.
- Other owned things (a database service, a storage directory, a network) follow the same
  rule with no grants: their owner or an admin (`kind` names the thing in refusals).
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass

from dockyard.errors import AccessDenied


class Access(enum.Enum):
    ANYONE = "anyone"  # help, version, apps:list (filtered), apps:create
    APP = "app"  # the app named in the command: owner, grantee or admin
    OWNER = "owner"  # who else may manage the app (acl:*): owner or admin
    ADMIN = "admin"  # keys, global settings, server-wide operations


@dataclass(frozen=True)
class Identity:
    name: str
    is_admin: bool


LOCAL_ADMIN = Identity(name="local-admin", is_admin=True)


def check_access(
    who: Identity,
    need: Access,
    app_name: str | None = None,
    app_owner: str | None = None,
    grants: Collection[str] = (),
    action: str = "do this",
    kind: str = "app",
) -> None:
    if who.is_admin or need is Access.ANYONE:
        return
    if need is Access.ADMIN:
        raise AccessDenied(f"Only an admin key may {action} (you are {who.name})")
    if who.name == app_owner:
        return
    if who.name in grants:
        if need is Access.APP:
            return
        raise AccessDenied(f"Only the owner of {app_name} ({app_owner}) or an admin may {action}")
    if kind != "app":
        raise AccessDenied(
            f"Key {who.name} may not {action}: {kind} {app_name} belongs to another key"
        )
    raise AccessDenied(
        f"Key {who.name} may not manage app {app_name}: "
        "it is neither the owner nor granted access (an admin or the owner can run acl:add)"
    )


def can_see(who: Identity, app_owner: str, grants: Collection[str]) -> bool:
    return who.is_admin or who.name == app_owner or who.name in grants
