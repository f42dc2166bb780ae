"""The builder's state: the `builds` table, build logs on disk and the `builder:set` settings."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from builder.detect import BaseImages, check_image_ref
from dockyard.apps import App
from dockyard.errors import NotFound, UsageError
from dockyard.properties import PropertyStore
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
        if not build_id.isdigit():
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


# `builder:set` keys. Base images and keep-releases work per app and globally; build
# args are per app only (they are an app's own build inputs).
BASE_KEYS = {
    "base-python": "python",
    "base-node": "node",
    "base-static": "static",
    "base-procfile": "procfile",
}
KEEP_RELEASES = "keep-releases"
BUILD_ARG = "build-arg"
SETTING_KEYS = (*BASE_KEYS, KEEP_RELEASES, BUILD_ARG)
DEFAULT_KEEP_RELEASES = 5
BUILD_ARG_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
_PROP = "builder."
_BUILD_ARGS_PROP = _PROP + "build-args"  # one JSON object: names are user data, not keys


class BuilderSettings:
    """Reads and writes the builder's properties; an app value beats the global one."""

    def __init__(self, properties: PropertyStore) -> None:
        self.properties = properties

    def base_images(self, app: App | None) -> BaseImages:
        defaults = BaseImages()
        values = {
            attr: self.properties.get(app, _PROP + key) or getattr(defaults, attr)
            for key, attr in BASE_KEYS.items()
        }
        return BaseImages(**values)

    def keep_releases(self, app: App | None) -> int:
        value = self.properties.get(app, _PROP + KEEP_RELEASES)
        return int(value) if value else DEFAULT_KEEP_RELEASES

    def build_args(self, app: App) -> dict[str, str]:
        raw = self.properties.get_local(app, _BUILD_ARGS_PROP)
        return json.loads(raw) if raw else {}

    def set(self, app: App | None, key: str, value: str) -> None:
        """Set (or with an empty value unset) one `builder:set` key, validated."""
        if key in BASE_KEYS:
            if value:
                try:
                    check_image_ref(value)
                except Exception as exc:  # BuildFailed; reported as a usage error here
                    raise UsageError(str(exc)) from None
            self.properties.set(app, _PROP + key, value)
        elif key == KEEP_RELEASES:
            if value and not (value.isdigit() and int(value) >= 1):
                raise UsageError("keep-releases takes a whole number of at least 1")
            self.properties.set(app, _PROP + key, value)
        elif key == BUILD_ARG:
            if app is None:
                raise UsageError("build-arg is set per app: builder:set APP build-arg KEY=VALUE")
            self._set_build_arg(app, value)
        else:
            known = ", ".join(SETTING_KEYS)
            raise UsageError(f"Unknown builder setting {key!r}; use one of {known}")

    def _set_build_arg(self, app: App, assignment: str) -> None:
        name, sep, value = assignment.partition("=")
        if not sep or not BUILD_ARG_NAME_RE.fullmatch(name):
            raise UsageError("build-arg takes KEY=VALUE (KEY= unsets it)")
        args = self.build_args(app)
        if value:
            args[name] = value
        else:
            args.pop(name, None)
        self.properties.set(app, _BUILD_ARGS_PROP, json.dumps(args, sort_keys=True) if args else "")
