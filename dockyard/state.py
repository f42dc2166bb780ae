"""The state store: one SQLite database in WAL mode, one transaction per changing command.

Each stage owns its tables and registers their migrations here under its own component
name (`register_migrations("deployer", [...])`). Migrations are applied in order on open and
recorded in `schema_migrations`, so an older data dir is brought forward, never guessed at.
Tables that belong to an app reference `apps(id)` with ON DELETE/UPDATE CASCADE, so renaming
or destroying an app is a single row change.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

_MIGRATIONS: dict[str, list[str]] = {}
_MIGRATIONS_LOCK = threading.Lock()


def register_migrations(component: str, statements: Sequence[str]) -> None:
    """Declare the ordered schema steps of `component`. Append only: never edit a step."""
    with _MIGRATIONS_LOCK:
        _MIGRATIONS[component] = list(statements)


register_migrations(
    "core",
    [
        """CREATE TABLE apps (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            owner TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE acl (
            app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
            key_name TEXT NOT NULL,
            PRIMARY KEY (app_id, key_name)
        )""",
        """CREATE TABLE global_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
        """CREATE TABLE app_settings (
            app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (app_id, key)
        )""",
        """CREATE TABLE global_config (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
        """CREATE TABLE app_config (
            app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (app_id, key)
        )""",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            kind TEXT NOT NULL,
            app TEXT,
            detail TEXT NOT NULL DEFAULT ''
        )""",
    ],
)


class StateStore:
    """Thread-safe access to state.db: one connection per thread, explicit transactions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT; a nested call joins the outer transaction."""
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Row | None:
        return self.conn.execute(sql, params).fetchone()

    def _migrate(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Config vars are secrets: the database is readable by its owner only.
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(self.path, 0o600)
        with self.transaction() as conn:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                    component TEXT NOT NULL, step INTEGER NOT NULL, applied_at REAL NOT NULL,
                    PRIMARY KEY (component, step))"""
            )
            with _MIGRATIONS_LOCK:
                pending = {k: list(v) for k, v in _MIGRATIONS.items()}
            # core first: other components' tables reference apps(id).
            for component in sorted(pending, key=lambda c: (c != "core", c)):
                done = conn.execute(
                    "SELECT COALESCE(MAX(step), -1) FROM schema_migrations WHERE component = ?",
                    (component,),
                ).fetchone()[0]
                for step, sql in enumerate(pending[component]):
                    if step <= done:
                        continue
                    conn.execute(sql)
                    conn.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                        (component, step, time.time()),
                    )

    def record_event(self, actor: str, kind: str, app: str | None = None, detail: str = "") -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO events (at, actor, kind, app, detail) VALUES (?, ?, ?, ?, ?)",
                (time.time(), actor, kind, app, detail),
            )
