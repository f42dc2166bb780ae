"""The dashboard's tables in state.db, one migration list (append only, never edit a step).

- `dashboard_logins`, `dashboard_sessions`, `dashboard_tokens`: digests of sign-in links,
  sessions and API tokens, with the key each names (dashboard/auth.py).
- `dashboard_http`: traffic per app and minute from nginx's access log; `latency` is a
  sparse JSON histogram (dashboard/metrics.py). `dashboard_http_10m` holds the same per ten
  minutes, written in the same transaction, for the 6-hour and day views.
  `dashboard_log_cursor` is how far that log has been read, written in the same
  transaction as the counts it produced, so a restart neither loses nor counts twice.
- `dashboard_stats`: containers' CPU and memory samples (dashboard/engine.py).

App-scoped rows reference `apps(id)` with ON DELETE CASCADE: a destroyed app's metrics go
with it, and a rename keeps them.
"""

from __future__ import annotations

from dockyard.state import register_migrations

register_migrations(
    "dashboard",
    [
        """CREATE TABLE dashboard_logins (
            hash TEXT PRIMARY KEY,
            key_name TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            used_at REAL
        )""",
        """CREATE TABLE dashboard_sessions (
            hash TEXT PRIMARY KEY,
            key_name TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )""",
        """CREATE TABLE dashboard_tokens (
            hash TEXT PRIMARY KEY,
            key_name TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )""",
        # Traffic per app and minute, from nginx's access log (dashboard/metrics.py).
        """CREATE TABLE dashboard_http (
            app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
            minute INTEGER NOT NULL,
            requests INTEGER NOT NULL,
            s1 INTEGER NOT NULL, s2 INTEGER NOT NULL, s3 INTEGER NOT NULL,
            s4 INTEGER NOT NULL, s5 INTEGER NOT NULL,
            latency TEXT NOT NULL,
            PRIMARY KEY (app_id, minute)
        )""",
        "CREATE INDEX dashboard_http_minute ON dashboard_http (minute)",
        # Containers' CPU and memory, sampled from the engine (dashboard/engine.py).
        """CREATE TABLE dashboard_stats (
            app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
            at REAL NOT NULL,
            dyno TEXT NOT NULL,
            cpu REAL,
            memory INTEGER NOT NULL,
            memory_limit INTEGER NOT NULL
        )""",
        "CREATE INDEX dashboard_stats_app_at ON dashboard_stats (app_id, at)",
        # How far the access log has been read: (inode, offset), written with the data.
        """CREATE TABLE dashboard_log_cursor (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            inode INTEGER NOT NULL,
            offset INTEGER NOT NULL
        )""",
        # The same traffic per ten minutes, for the day-long views (144 rows, not 1,440).
        """CREATE TABLE dashboard_http_10m (
            app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
            minute INTEGER NOT NULL,
            requests INTEGER NOT NULL,
            s1 INTEGER NOT NULL, s2 INTEGER NOT NULL, s3 INTEGER NOT NULL,
            s4 INTEGER NOT NULL, s5 INTEGER NOT NULL,
            latency TEXT NOT NULL,
            PRIMARY KEY (app_id, minute)
        )""",
        "CREATE INDEX dashboard_http_10m_minute ON dashboard_http_10m (minute)",
    ],
)
