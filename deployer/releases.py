"""Releases, formation and per-app deploy state, kept in state.db.

A release is everything needed to run an app again without building: the image, the app's
own config vars at that moment, the Procfile, app.json and the process formation. Releases
are numbered per app (v1, v2…); `current` names the one whose containers serve traffic.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

from dockyard.apps import App
from dockyard.state import StateStore, register_migrations

register_migrations(
    "deployer",
    [
        """CREATE TABLE releases (
            app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE ON UPDATE CASCADE,
            version INTEGER NOT NULL,
            image TEXT NOT NULL,
            image_id TEXT NOT NULL DEFAULT '',
            revision TEXT NOT NULL DEFAULT '',
            description TEXT NOT NULL,
            config TEXT NOT NULL,
            formation TEXT NOT NULL,
            procfile TEXT NOT NULL,
            app_json TEXT NOT NULL,
            ports TEXT NOT NULL,
            status TEXT NOT NULL,
            actor TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            PRIMARY KEY (app_id, version)
        )""",
        """CREATE TABLE deploy_state (
            app_id INTEGER PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE ON UPDATE CASCADE,
            current_version INTEGER,
            running INTEGER NOT NULL DEFAULT 1
        )""",
        """CREATE TABLE formation (
            app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE ON UPDATE CASCADE,
            process_type TEXT NOT NULL,
            quantity INTEGER NOT NULL,
            PRIMARY KEY (app_id, process_type)
        )""",
        # The build's image, when predeploy's commit of it is what the release runs.
        "ALTER TABLE releases ADD COLUMN built_image TEXT NOT NULL DEFAULT ''",
    ],
)

STATUS_PENDING = "pending"
STATUS_SUCCEEDED = "succeeded"
STATUS_FAILED = "failed"


@dataclass
class Release:
    version: int
    image: str
    image_id: str
    revision: str
    description: str
    config: dict[str, str]
    formation: dict[str, int]
    procfile: dict[str, str]
    app_json: dict
    ports: list[int]
    status: str = STATUS_PENDING
    actor: str = ""
    created_at: float = field(default_factory=time.time)
    built_image: str = ""  # what the build made; `image` may be predeploy's commit of it

    @property
    def name(self) -> str:
        return f"v{self.version}"

    def successor(self, description: str, actor: str, **changes: Any) -> Release:
        """The next release: this one's image and declarations unless `changes` replace
        them. Its number, config snapshot and formation are given when it is recorded."""
        return dataclasses.replace(
            self, version=0, status=STATUS_PENDING, config={}, formation={},
            description=description, actor=actor, created_at=time.time(), **changes,
        )  # fmt: skip

    def process_types(self) -> list[str]:
        """Types this image can run: the Procfile's (minus `release`), else just `web`."""
        types = [t for t in self.procfile if t != "release"]
        return types or ["web"]

    def command_for(self, process_type: str) -> str | None:
        """The Procfile command, or None to run the image's own CMD."""
        return self.procfile.get(process_type)


@dataclass(frozen=True)
class AppReleases:
    """One app's releases at a glance (`ReleaseStore.overview`)."""

    current: Release | None
    newest: Release | None
    running: bool
    formation: dict[str, int]


def _row_to_release(row) -> Release:
    return Release(
        version=row["version"],
        image=row["image"],
        image_id=row["image_id"],
        revision=row["revision"],
        description=row["description"],
        config=json.loads(row["config"]),
        formation={k: int(v) for k, v in json.loads(row["formation"]).items()},
        procfile=json.loads(row["procfile"]),
        app_json=json.loads(row["app_json"]),
        ports=list(json.loads(row["ports"])),
        status=row["status"],
        actor=row["actor"],
        created_at=row["created_at"],
        built_image=row["built_image"],
    )


class ReleaseStore:
    def __init__(self, state: StateStore) -> None:
        self.state = state

    def all(self, app: App) -> list[Release]:
        rows = self.state.query(
            "SELECT * FROM releases WHERE app_id = ? ORDER BY version", (app.id,)
        )
        return [_row_to_release(r) for r in rows]

    def get(self, app: App, version: int) -> Release | None:
        row = self.state.query_one(
            "SELECT * FROM releases WHERE app_id = ? AND version = ?", (app.id, version)
        )
        return _row_to_release(row) if row else None

    def current_version(self, app: App) -> int | None:
        row = self.state.query_one(
            "SELECT current_version FROM deploy_state WHERE app_id = ?", (app.id,)
        )
        return row["current_version"] if row else None

    def current(self, app: App) -> Release | None:
        version = self.current_version(app)
        return self.get(app, version) if version else None

    def is_running(self, app: App) -> bool:
        """False after `ps:stop` until `ps:start` or the next deploy."""
        row = self.state.query_one("SELECT running FROM deploy_state WHERE app_id = ?", (app.id,))
        return bool(row["running"]) if row else True

    def set_running(self, app: App, running: bool) -> None:
        with self.state.transaction() as conn:
            conn.execute(
                "INSERT INTO deploy_state (app_id, running) VALUES (?, ?) "
                "ON CONFLICT(app_id) DO UPDATE SET running = excluded.running",
                (app.id, int(running)),
            )

    def add(self, app: App, release: Release) -> Release:
        """Store a pending release under the next free number."""
        with self.state.transaction() as conn:
            top = conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM releases WHERE app_id = ?", (app.id,)
            ).fetchone()[0]
            release.version = top + 1
            conn.execute(
                "INSERT INTO releases (app_id, version, image, image_id, revision, description,"
                " config, formation, procfile, app_json, ports, status, actor, created_at,"
                " built_image) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    app.id, release.version, release.image, release.image_id,
                    release.revision, release.description, json.dumps(release.config),
                    json.dumps(release.formation), json.dumps(release.procfile),
                    json.dumps(release.app_json), json.dumps(release.ports), release.status,
                    release.actor, release.created_at, release.built_image,
                ),
            )  # fmt: skip
        return release

    def set_image(self, app: App, release: Release) -> None:
        """The image a release runs changed before it went live (predeploy's commit)."""
        with self.state.transaction() as conn:
            conn.execute(
                "UPDATE releases SET image = ? WHERE app_id = ? AND version = ?",
                (release.image, app.id, release.version),
            )

    def mark_failed(self, app: App, release: Release) -> None:
        release.status = STATUS_FAILED
        with self.state.transaction() as conn:
            conn.execute(
                "UPDATE releases SET status = ? WHERE app_id = ? AND version = ?",
                (STATUS_FAILED, app.id, release.version),
            )

    def fail_interrupted(self, app: App) -> list[int]:
        """Mark releases left pending by a server that died mid-deploy as failed; returns
        their versions. Only safe while no deploy of `app` runs (its lock held)."""
        with self.state.transaction() as conn:
            rows = conn.execute(
                "UPDATE releases SET status = ? WHERE app_id = ? AND status = ? RETURNING version",
                (STATUS_FAILED, app.id, STATUS_PENDING),
            ).fetchall()
        return sorted(r[0] for r in rows)

    def make_current(self, app: App, release: Release) -> None:
        release.status = STATUS_SUCCEEDED
        with self.state.transaction() as conn:
            conn.execute(
                "UPDATE releases SET status = ? WHERE app_id = ? AND version = ?",
                (STATUS_SUCCEEDED, app.id, release.version),
            )
            conn.execute(
                "INSERT INTO deploy_state (app_id, current_version, running) VALUES (?, ?, 1) "
                "ON CONFLICT(app_id) DO UPDATE SET current_version = excluded.current_version,"
                " running = 1",
                (app.id, release.version),
            )

    def rename_images(self, app: App, old_repo: str, new_repo: str) -> None:
        def renamed(image: str) -> str:
            repo, _, tag = image.rpartition(":")
            return f"{new_repo}:{tag}" if repo == old_repo else image

        with self.state.transaction() as conn:
            for row in conn.execute(
                "SELECT version, image, built_image FROM releases WHERE app_id = ?", (app.id,)
            ).fetchall():
                conn.execute(
                    "UPDATE releases SET image = ?, built_image = ? "
                    "WHERE app_id = ? AND version = ?",
                    (renamed(row["image"]), renamed(row["built_image"]), app.id, row["version"]),
                )

    def overview(self) -> dict[int, AppReleases]:
        """Every app's current and newest release, run state and formation in four queries
        (by app id), for listings of many apps (the dashboard's app list)."""
        state = {r["app_id"]: (r["current_version"], bool(r["running"]))
                 for r in self.state.query("SELECT * FROM deploy_state")}  # fmt: skip
        releases: dict[tuple[int, int], Release] = {}
        newest: dict[int, int] = {}
        for row in self.state.query(
            "SELECT * FROM releases WHERE (app_id, version) IN ("
            " SELECT app_id, MAX(version) FROM releases GROUP BY app_id"
            " UNION SELECT app_id, current_version FROM deploy_state"
            " WHERE current_version IS NOT NULL)"
        ):
            releases[(row["app_id"], row["version"])] = _row_to_release(row)
            newest[row["app_id"]] = max(newest.get(row["app_id"], 0), row["version"])
        formations: dict[int, dict[str, int]] = {}
        for row in self.state.query(
            "SELECT app_id, process_type, quantity FROM formation ORDER BY process_type"
        ):
            formations.setdefault(row["app_id"], {})[row["process_type"]] = row["quantity"]
        found = {}
        for app_id in set(state) | set(newest) | set(formations):
            current, running = state.get(app_id, (None, True))
            found[app_id] = AppReleases(
                current=releases.get((app_id, current)) if current else None,
                newest=releases.get((app_id, newest[app_id])) if app_id in newest else None,
                running=running,
                formation=formations.get(app_id, {}),
            )
        return found

    # Formation: the wanted number of containers per process type.
    def formation(self, app: App) -> dict[str, int]:
        rows = self.state.query(
            "SELECT process_type, quantity FROM formation WHERE app_id = ? ORDER BY process_type",
            (app.id,),
        )
        return {r["process_type"]: r["quantity"] for r in rows}

    def set_formation(self, app: App, quantities: dict[str, int]) -> None:
        with self.state.transaction() as conn:
            for process_type, quantity in quantities.items():
                conn.execute(
                    "INSERT OR REPLACE INTO formation (app_id, process_type, quantity)"
                    " VALUES (?, ?, ?)",
                    (app.id, process_type, quantity),
                )


# What an app has before its first release: nothing, from which every release descends.
NO_RELEASE = Release(
    version=0, image="", image_id="", revision="", description="", config={}, formation={},
    procfile={}, app_json={}, ports=[],
)  # fmt: skip


def effective_formation(wanted: dict[str, int], release: Release) -> dict[str, int]:
    """Every process type the release can run, with its quantity: what was scaled, else
    app.json's `formation` (first deploy), else `web` 1 and the other types 0, as on Dokku;
    types the image does not have are dropped."""
    declared = declared_formation(release.app_json)
    return {
        t: wanted.get(t, declared.get(t, 1 if t == "web" else 0)) for t in release.process_types()
    }


MAX_DECLARED_QUANTITY = 100


def declared_formation(app_json: dict) -> dict[str, int]:
    """app.json `formation`: `{"web": {"quantity": 2}, "worker": {"quantity": 1}}`; entries
    that are not whole numbers from 0 to 100 are ignored (the build already refused them)."""
    formation = app_json.get("formation") if isinstance(app_json, dict) else None
    found = {}
    for process_type, entry in (formation or {}).items():
        quantity = entry.get("quantity", 1) if isinstance(entry, dict) else None
        if type(quantity) is int and 0 <= quantity <= MAX_DECLARED_QUANTITY:
            found[process_type] = quantity
    return found
