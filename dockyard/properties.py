"""Per-app and global settings (Dokku's "properties"): `git:set`, `builder:set`, `apps:set`…

Keys are namespaced by the owning stage (`git.deploy-branch`, `builder.base-python`). An app
value overrides the global one, which overrides the stage's default.
"""

from __future__ import annotations

from dockyard.apps import App
from dockyard.state import StateStore


class PropertyStore:
    def __init__(self, state: StateStore) -> None:
        self.state = state

    def get(self, app: App | None, key: str, default: str | None = None) -> str | None:
        if app is not None:
            row = self.state.query_one(
                "SELECT value FROM app_settings WHERE app_id = ? AND key = ?", (app.id, key)
            )
            if row:
                return row["value"]
        row = self.state.query_one("SELECT value FROM global_settings WHERE key = ?", (key,))
        return row["value"] if row else default

    def get_local(self, app: App | None, key: str) -> str | None:
        """The value set at exactly this level (app, or global when `app` is None)."""
        if app is None:
            row = self.state.query_one("SELECT value FROM global_settings WHERE key = ?", (key,))
        else:
            row = self.state.query_one(
                "SELECT value FROM app_settings WHERE app_id = ? AND key = ?", (app.id, key)
            )
        return row["value"] if row else None

    def set(self, app: App | None, key: str, value: str | None) -> None:
        """Set a value, or unset it when `value` is None or empty (as `dokku …:set` does)."""
        with self.state.transaction() as conn:
            if app is None:
                if value:
                    conn.execute(
                        "INSERT OR REPLACE INTO global_settings (key, value) VALUES (?, ?)",
                        (key, value),
                    )
                else:
                    conn.execute("DELETE FROM global_settings WHERE key = ?", (key,))
            elif value:
                conn.execute(
                    "INSERT OR REPLACE INTO app_settings (app_id, key, value) VALUES (?, ?, ?)",
                    (app.id, key, value),
                )
            else:
                conn.execute(
                    "DELETE FROM app_settings WHERE app_id = ? AND key = ?", (app.id, key)
                )
