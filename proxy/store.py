"""The proxy's tables: each app's domains, its live upstreams and its certificate.

The config is always rendered from these rows, so `proxy:build-config` (and a restart)
reproduces exactly what was routed before.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from dockyard.apps import App
from dockyard.errors import Conflict
from dockyard.state import StateStore, register_migrations

register_migrations(
    "proxy",
    [
        """CREATE TABLE proxy_domains (
            app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
            domain TEXT NOT NULL UNIQUE,
            position INTEGER NOT NULL,
            PRIMARY KEY (app_id, domain)
        )""",
        """CREATE TABLE proxy_upstreams (
            app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
            address TEXT NOT NULL,
            position INTEGER NOT NULL,
            PRIMARY KEY (app_id, address)
        )""",
        """CREATE TABLE proxy_certs (
            app_id INTEGER PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
            subject TEXT NOT NULL,
            issuer TEXT NOT NULL,
            hostnames TEXT NOT NULL,
            not_before TEXT NOT NULL,
            not_after TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            self_signed INTEGER NOT NULL
        )""",
        # Apps whose names stay routed while no container runs (ps:stop): 502 at once.
        """CREATE TABLE proxy_held (
            app_id INTEGER PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE
        )""",
    ],
)


@dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    hostnames: list[str]
    not_before: str
    not_after: str
    fingerprint: str
    self_signed: bool


class RouteStore:
    def __init__(self, state: StateStore) -> None:
        self.state = state

    # Domains
    def domains(self, app: App) -> list[str]:
        rows = self.state.query(
            "SELECT domain FROM proxy_domains WHERE app_id = ? ORDER BY position, domain",
            (app.id,),
        )
        return [r["domain"] for r in rows]

    def domain_owner(self, domain: str) -> str | None:
        row = self.state.query_one(
            "SELECT apps.name FROM proxy_domains JOIN apps ON apps.id = proxy_domains.app_id "
            "WHERE domain = ?",
            (domain,),
        )
        return row["name"] if row else None

    def set_domains(self, app: App, domains: list[str]) -> None:
        with self.state.transaction() as conn:
            conn.execute("DELETE FROM proxy_domains WHERE app_id = ?", (app.id,))
            for position, domain in enumerate(domains):
                try:
                    conn.execute(
                        "INSERT INTO proxy_domains (app_id, domain, position) VALUES (?, ?, ?)",
                        (app.id, domain, position),
                    )
                except sqlite3.IntegrityError:
                    owner = self.domain_owner(domain)
                    raise Conflict(f"Domain {domain} is already used by app {owner}") from None

    # Upstreams
    def upstreams(self, app: App) -> list[str]:
        rows = self.state.query(
            "SELECT address FROM proxy_upstreams WHERE app_id = ? ORDER BY position", (app.id,)
        )
        return [r["address"] for r in rows]

    def held(self, app: App) -> bool:
        """Routed with no container (published with none): answers 502."""
        return self.state.query_one(
            "SELECT 1 FROM proxy_held WHERE app_id = ?", (app.id,)
        ) is not None

    def set_upstreams(self, app: App, upstreams: list[str], held: bool = False) -> None:
        with self.state.transaction() as conn:
            conn.execute("DELETE FROM proxy_held WHERE app_id = ?", (app.id,))
            if held and not upstreams:
                conn.execute("INSERT INTO proxy_held (app_id) VALUES (?)", (app.id,))
            conn.execute("DELETE FROM proxy_upstreams WHERE app_id = ?", (app.id,))
            conn.executemany(
                "INSERT OR IGNORE INTO proxy_upstreams (app_id, address, position) "
                "VALUES (?, ?, ?)",
                [(app.id, u, i) for i, u in enumerate(upstreams)],
            )

    # Certificates (the files live under nginx_dir/certs/APP/; these are their facts)
    def cert(self, app: App) -> CertInfo | None:
        row = self.state.query_one("SELECT * FROM proxy_certs WHERE app_id = ?", (app.id,))
        if row is None:
            return None
        return CertInfo(
            subject=row["subject"],
            issuer=row["issuer"],
            hostnames=json.loads(row["hostnames"]),
            not_before=row["not_before"],
            not_after=row["not_after"],
            fingerprint=row["fingerprint"],
            self_signed=bool(row["self_signed"]),
        )

    def any_cert(self) -> bool:
        """Does any app have a certificate (then nginx listens for HTTPS)?"""
        return self.state.query_one("SELECT 1 FROM proxy_certs LIMIT 1") is not None

    def set_cert(self, app: App, info: CertInfo | None) -> None:
        with self.state.transaction() as conn:
            conn.execute("DELETE FROM proxy_certs WHERE app_id = ?", (app.id,))
            if info is not None:
                conn.execute(
                    "INSERT INTO proxy_certs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        app.id, info.subject, info.issuer, json.dumps(info.hostnames),
                        info.not_before, info.not_after, info.fingerprint,
                        int(info.self_signed),
                    ),
                )  # fmt: skip

    def forget(self, app: App) -> None:
        with self.state.transaction() as conn:
            for table in ("proxy_domains", "proxy_upstreams", "proxy_certs", "proxy_held"):
                conn.execute(f"DELETE FROM {table} WHERE app_id = ?", (app.id,))  # noqa: S608
