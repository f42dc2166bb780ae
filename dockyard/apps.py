"""Apps, their owners and grants, and the hooks stages attach to an app's rename and destroy."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dockyard.errors import Conflict, NotFound
from dockyard.names import check_app_name
from dockyard.state import StateStore

if TYPE_CHECKING:
    from dockyard.registry import Services


@dataclass(frozen=True)
class App:
    id: int
    name: str
    owner: str
    created_at: float


# Stages register what they keep outside state.db (repos, containers, nginx files) here;
# the core calls them without knowing who they are. A rename hook runs after the new name
# is committed; a destroy hook runs before the app's rows are deleted.
RenameHook = Callable[["Services", str, str], None]
DestroyHook = Callable[["Services", str], None]
_rename_hooks: list[RenameHook] = []
_destroy_hooks: list[DestroyHook] = []
# Other owned things (services, storage directories, networks) give up a removed key's
# ownership the same way its apps do: `hook(state, key_name, new_owner)`.
ForgetKeyHook = Callable[[StateStore, str, str], None]
_forget_key_hooks: list[ForgetKeyHook] = []


def on_forget_key(hook: ForgetKeyHook) -> ForgetKeyHook:
    _forget_key_hooks.append(hook)
    return hook


def on_rename(hook: RenameHook) -> RenameHook:
    _rename_hooks.append(hook)
    return hook


def on_destroy(hook: DestroyHook) -> DestroyHook:
    _destroy_hooks.append(hook)
    return hook


def _row_to_app(row: sqlite3.Row) -> App:
    return App(id=row["id"], name=row["name"], owner=row["owner"], created_at=row["created_at"])


class AppStore:
    def __init__(self, state: StateStore, services: Services | None = None) -> None:
        self.state = state
        self.services = services  # what the rename/destroy hooks act on

    def find(self, name: str) -> App | None:
        row = self.state.query_one("SELECT * FROM apps WHERE name = ?", (check_app_name(name),))
        return _row_to_app(row) if row else None

    def get(self, name: str) -> App:
        app = self.find(name)
        if app is None:
            raise NotFound(f"App {name} does not exist")
        return app

    def all(self) -> list[App]:
        return [_row_to_app(r) for r in self.state.query("SELECT * FROM apps ORDER BY name")]

    def create(self, name: str, owner: str) -> App:
        check_app_name(name)
        try:
            with self.state.transaction() as conn:
                conn.execute(
                    "INSERT INTO apps (name, owner, created_at) VALUES (?, ?, ?)",
                    (name, owner, time.time()),
                )
        except sqlite3.IntegrityError:
            raise Conflict("Name is already taken") from None
        return self.get(name)

    def rename(self, old: str, new: str) -> App:
        app = self.get(old)
        check_app_name(new)
        try:
            with self.state.transaction() as conn:
                conn.execute("UPDATE apps SET name = ? WHERE id = ?", (new, app.id))
        except sqlite3.IntegrityError:
            raise Conflict("Name is already taken") from None
        if self.services is not None:
            for hook in _rename_hooks:
                hook(self.services, old, new)
        return self.get(new)

    def destroy(self, name: str) -> None:
        app = self.get(name)
        # Outside resources first: if one of them fails, the app still exists and the
        # destroy can be run again, instead of leaving containers nobody can name.
        if self.services is not None:
            for hook in _destroy_hooks:
                hook(self.services, app.name)
        with self.state.transaction() as conn:
            conn.execute("DELETE FROM apps WHERE id = ?", (app.id,))

    # Grants: who besides the owner may manage an app.
    def grants(self, app: App) -> list[str]:
        rows = self.state.query(
            "SELECT key_name FROM acl WHERE app_id = ? ORDER BY key_name", (app.id,)
        )
        return [r["key_name"] for r in rows]

    def grant(self, app: App, key_name: str) -> bool:
        with self.state.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO acl (app_id, key_name) VALUES (?, ?)", (app.id, key_name)
            )
        return cur.rowcount > 0

    def revoke(self, app: App, key_name: str) -> bool:
        with self.state.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM acl WHERE app_id = ? AND key_name = ?", (app.id, key_name)
            )
        return cur.rowcount > 0

    def forget_key(self, key_name: str) -> None:
        """A removed key loses its grants, and the apps it owned pass to a name no key can
        have (admins manage them), so a later key added under the same name inherits
        nothing."""
        with self.state.transaction() as conn:
            conn.execute("DELETE FROM acl WHERE key_name = ?", (key_name,))
            conn.execute(
                "UPDATE apps SET owner = ? WHERE owner = ?", (f"removed:{key_name}", key_name)
            )
            for hook in _forget_key_hooks:
                hook(self.state, key_name, f"removed:{key_name}")
