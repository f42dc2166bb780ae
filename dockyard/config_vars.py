"""Config vars: the environment an app's containers run with. App values override global ones.

Values are stored verbatim (any byte sequence a user can type, spaces, quotes, `$`, unicode)
and are only ever passed as environment, never on a command line or in a log line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dockyard.apps import App
from dockyard.errors import UsageError
from dockyard.names import check_config_key
from dockyard.state import StateStore

# The revision the running release was built from, as Dokku sets it; written when a release
# goes live (never before), so it always names the code that runs.
GIT_REV = "GIT_REV"


class ConfigStore:
    def __init__(self, state: StateStore) -> None:
        self.state = state

    def local(self, app: App | None) -> dict[str, str]:
        """Vars set at exactly this level: the app's own, or the global ones for None."""
        if app is None:
            rows = self.state.query("SELECT key, value FROM global_config")
        else:
            rows = self.state.query(
                "SELECT key, value FROM app_config WHERE app_id = ?", (app.id,)
            )
        return {r["key"]: r["value"] for r in rows}

    def effective(self, app: App) -> dict[str, str]:
        """What the app's containers see: global vars overlaid by the app's own."""
        merged = self.local(None)
        merged.update(self.local(app))
        return merged

    def set(self, app: App | None, values: Mapping[str, str]) -> None:
        for key, value in values.items():
            check_config_key(key)
            if "\x00" in value:
                # A process environment is C strings: the container could never see it.
                raise UsageError(f"The value of {key} contains a NUL byte, which no process "
                                 "environment can hold")  # fmt: skip
        with self.state.transaction() as conn:
            for key, value in values.items():
                if app is None:
                    conn.execute(
                        "INSERT OR REPLACE INTO global_config (key, value) VALUES (?, ?)",
                        (key, value),
                    )
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO app_config (app_id, key, value) VALUES (?, ?, ?)",
                        (app.id, key, value),
                    )

    def unset(self, app: App | None, keys: Iterable[str]) -> list[str]:
        """Remove keys; returns those that were actually set."""
        removed = []
        with self.state.transaction() as conn:
            for key in keys:
                if app is None:
                    cur = conn.execute("DELETE FROM global_config WHERE key = ?", (key,))
                else:
                    cur = conn.execute(
                        "DELETE FROM app_config WHERE app_id = ? AND key = ?", (app.id, key)
                    )
                if cur.rowcount:
                    removed.append(key)
        return removed

    def replace(self, app: App, values: Mapping[str, str]) -> None:
        """Make the app's own vars exactly `values` (a rollback, an undone change)."""
        with self.state.transaction():
            self.unset(app, [k for k in self.local(app) if k not in values])
            if values:
                self.set(app, values)
