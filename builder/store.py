"""The builder's state: the `builds` table and build logs on disk."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dockyard.apps import App
from dockyard.errors import NotFound, UsageError
from dockyard.names import is_whole_number
from dockyard.settings import Settings
from dockyard.state import StateStore, register_migrations

register_migrations(
    "builder",
    [
        """CREATE TABLE builds (
            id INTEGER PRIMARY KEY,
            app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE ON UPDATE CASCADE,
            number INTEGER NOT NULL,
            revision TEXT NOT NULL,
            status TEXT NOT NULL,
            kind TEXT NOT NULL DEFAULT '',
            image_id TEXT NOT NULL DEFAULT '',
            started_at REAL NOT NULL,
            finished_at REAL,
            UNIQUE (app_id, number)
        )""",
    ],
)


class Status:
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class BuildRecord:
    number: int
    revision: str
    status: str
    kind: str
    image_id: str
    started_at: float
    finished_at: float | None

    @property
    def build_id(self) -> str:
        return str(self.number)

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at


class BuildStore:
    def __init__(self, state: StateStore) -> None:
        self.state = state

    def start(self, app: App, revision: str) -> BuildRecord:
        now = time.time()
        with self.state.transaction() as conn:
            number = conn.execute(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM builds WHERE app_id = ?", (app.id,)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO builds (app_id, number, revision, status, started_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (app.id, number, revision, Status.RUNNING, now),
            )
        return BuildRecord(number, revision, Status.RUNNING, "", "", now, None)

    def finish(self, app: App, number: int, status: str, kind: str, image_id: str) -> None:
        with self.state.transaction() as conn:
            conn.execute(
                "UPDATE builds SET status = ?, kind = ?, image_id = ?, finished_at = ? "
                "WHERE app_id = ? AND number = ?",
                (status, kind, image_id, time.time(), app.id, number),
            )

    def all(self, app: App) -> list[BuildRecord]:
        rows = self.state.query(
            "SELECT * FROM builds WHERE app_id = ? ORDER BY number DESC", (app.id,)
        )
        return [_record(r) for r in rows]

    def get(self, app: App, build_id: str | None) -> BuildRecord:
        """One build by id, or the latest when `build_id` is None."""
        if build_id is None:
            row = self.state.query_one(
                "SELECT * FROM builds WHERE app_id = ? ORDER BY number DESC LIMIT 1", (app.id,)
            )
            if row is None:
                raise NotFound(f"App {app.name} has no builds yet")
            return _record(row)
        if not is_whole_number(build_id):
            raise UsageError(f"Invalid build id {build_id!r}: builds are numbered 1, 2, 3…")
        row = self.state.query_one(
            "SELECT * FROM builds WHERE app_id = ? AND number = ?", (app.id, int(build_id))
        )
        if row is None:
            raise NotFound(f"App {app.name} has no build {build_id}")
        return _record(row)


def _record(row) -> BuildRecord:  # noqa: ANN001 (sqlite3.Row)
    return BuildRecord(
        row["number"], row["revision"], row["status"], row["kind"], row["image_id"],
        row["started_at"], row["finished_at"],
    )  # fmt: skip


def build_logs_dir(settings: Settings, app: str) -> Path:
    return settings.builds_dir / app


def build_log_path(settings: Settings, app: str, build_id: str) -> Path:
    return build_logs_dir(settings, app) / f"{build_id}.log"
