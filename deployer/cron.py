"""Scheduled one-off containers from app.json `cron` (Dokku's `cron:*`).

An app's cron entries are those of its current release: `[{"command": "...", "schedule":
"*/5 * * * *"}]`, with the five cron fields or `@hourly`, `@daily`, `@weekly`,
`@monthly`, `@yearly`. Each entry's id is a short hash of its schedule and command, so it
survives redeploys that keep the entry. The server's scheduler looks once a second and
starts, at most once per matching minute, a one-off container of the current release (the
same container `run` gets: the app's config, limits, networks and mounts); a run still
going when the next one is due makes that one skip, not pile up. `cron:suspend` stops an
entry from being scheduled until `cron:resume`; `cron:run` runs one now, attached.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from dockyard import lifecycle
from dockyard.apps import App
from dockyard.bridge import run_blocking
from dockyard.errors import NotFound, UsageError
from dockyard.names import is_whole_number
from dockyard.state import StateStore, register_migrations

if TYPE_CHECKING:
    from deployer.releases import Release
    from dockyard.services import Services

log = structlog.get_logger("dockyard.cron")
TICK = 1.0  # seconds between looks at the schedule

register_migrations(
    "cron",
    [
        """CREATE TABLE cron_state (
            app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE ON UPDATE CASCADE,
            cron_id TEXT NOT NULL,
            suspended INTEGER NOT NULL DEFAULT 0,
            last_minute INTEGER,
            last_started_at REAL,
            last_status TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (app_id, cron_id)
        )""",
    ],
)

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}  # fmt: skip
FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
NAMES = {
    3: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    4: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
}
PART_RE = re.compile(r"^(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?$")
MAX_ENTRIES = 50
MAX_COMMAND = 4096


@dataclass(frozen=True)
class Schedule:
    text: str
    sets: tuple[frozenset[int], ...]
    any_day_of_month: bool
    any_day_of_week: bool

    def matches(self, t: time.struct_time) -> bool:
        minute, hour, dom, month, dow = self.sets
        weekday = (t.tm_wday + 1) % 7  # struct_time: Monday 0; cron: Sunday 0 (and 7)
        if t.tm_min not in minute or t.tm_hour not in hour or t.tm_mon not in month:
            return False
        dom_ok, dow_ok = t.tm_mday in dom, weekday in dow or (weekday == 0 and 7 in dow)
        # cron's rule: with both day fields restricted, either one may match.
        if self.any_day_of_month or self.any_day_of_week:
            return dom_ok and dow_ok
        return dom_ok or dow_ok


def parse_schedule(text: str) -> Schedule:
    spec = MACROS.get(text.strip().lower(), text.strip().lower())
    fields = spec.split()
    if len(fields) != 5:
        raise UsageError(f"Invalid cron schedule {text!r}: five fields or @daily, @hourly…")
    sets = tuple(_field(f, i, text) for i, f in enumerate(fields))
    return Schedule(text, sets, fields[2] == "*", fields[4] == "*")


def _field(field: str, index: int, text: str) -> frozenset[int]:
    low, high = FIELDS[index]
    values: set[int] = set()
    for part in field.split(","):
        match = PART_RE.fullmatch(part)
        if not match:
            raise UsageError(f"Invalid cron schedule {text!r}: {part!r}")
        span, step = match.group(1), int(match.group(2) or 1)
        if span == "*":
            start, end = low, high
        else:
            first, _, last = span.partition("-")
            start = _value(first, index, text)
            end = _value(last, index, text) if last else start
        if not (low <= start <= end <= high) or step < 1:
            raise UsageError(f"Invalid cron schedule {text!r}: {part!r} is out of range")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _value(word: str, index: int, text: str) -> int:
    if is_whole_number(word, 4):
        return int(word)
    names = NAMES.get(index, [])
    if word[:3] in names and len(word) >= 3:
        return names.index(word[:3]) + (1 if index == 3 else 0)
    raise UsageError(f"Invalid cron schedule {text!r}: {word!r}")


@dataclass(frozen=True)
class CronEntry:
    id: str
    schedule: Schedule
    command: str


def entries(app_json: dict) -> list[CronEntry]:
    """The release's cron entries; malformed ones raise UsageError (the build checks them
    first with `check_app_json_cron`, so a deployed release's entries are valid)."""
    declared = app_json.get("cron") if isinstance(app_json, dict) else None
    if declared is None:
        return []
    if not isinstance(declared, list) or len(declared) > MAX_ENTRIES:
        raise UsageError(f"app.json cron must be a list of at most {MAX_ENTRIES} entries")
    found = []
    for i, item in enumerate(declared):
        if not isinstance(item, dict):
            raise UsageError(f"app.json cron[{i}] must be an object")
        command, schedule = item.get("command"), item.get("schedule")
        if not isinstance(command, str) or not command.strip() or len(command) > MAX_COMMAND:
            raise UsageError(f"app.json cron[{i}].command must be a non-empty command")
        if "\x00" in command:
            raise UsageError(f"app.json cron[{i}].command contains a NUL byte")
        if not isinstance(schedule, str):
            raise UsageError(f"app.json cron[{i}].schedule must be a string")
        digest = hashlib.sha1(f"{schedule}\n{command}".encode(), usedforsecurity=False)
        found.append(CronEntry(digest.hexdigest()[:10], parse_schedule(schedule), command))
    return found


def find(app_json: dict, cron_id: str, app: App) -> CronEntry:
    for entry in entries(app_json):
        if entry.id == cron_id:
            return entry
    raise NotFound(f"{app.name} has no cron entry {cron_id} (see cron:list {app.name})")


@dataclass(frozen=True)
class CronState:
    suspended: bool
    last_minute: int | None
    last_started_at: float | None
    last_status: str


class CronStore:
    def __init__(self, state: StateStore) -> None:
        self.state = state

    def get(self, app: App, cron_id: str) -> CronState:
        row = self.state.query_one(
            "SELECT * FROM cron_state WHERE app_id = ? AND cron_id = ?", (app.id, cron_id)
        )
        if row is None:
            return CronState(False, None, None, "")
        return CronState(
            bool(row["suspended"]), row["last_minute"], row["last_started_at"], row["last_status"]
        )

    def _upsert(self, app: App, cron_id: str, column: str, value: object) -> None:
        assert column in ("suspended", "last_status")  # never a name from outside
        with self.state.transaction() as conn:
            conn.execute(
                f"INSERT INTO cron_state (app_id, cron_id, {column}) VALUES (?, ?, ?) "  # noqa: S608
                f"ON CONFLICT(app_id, cron_id) DO UPDATE SET {column} = excluded.{column}",
                (app.id, cron_id, value),
            )

    def set_suspended(self, app: App, cron_id: str, suspended: bool) -> None:
        self._upsert(app, cron_id, "suspended", int(suspended))

    def finished(self, app: App, cron_id: str, status: str) -> None:
        self._upsert(app, cron_id, "last_status", status)

    def claim(self, app: App, cron_id: str, minute: int) -> bool:
        """Take the run for `minute`: False when it was already taken (by this server's
        previous look at the same minute)."""
        with self.state.transaction() as conn:
            row = conn.execute(
                "SELECT last_minute, suspended FROM cron_state WHERE app_id = ? AND cron_id = ?",
                (app.id, cron_id),
            ).fetchone()
            if row is not None and (row["suspended"] or row["last_minute"] == minute):
                return False
            conn.execute(
                "INSERT INTO cron_state (app_id, cron_id, last_minute, last_started_at, "
                "last_status) VALUES (?, ?, ?, ?, 'running') ON CONFLICT(app_id, cron_id) DO "
                "UPDATE SET last_minute = excluded.last_minute, "
                "last_started_at = excluded.last_started_at, last_status = 'running'",
                (app.id, cron_id, minute, time.time()),
            )
        return True


class CronSkipped(Exception):
    """A due run that did not start, for a reason that is not an error (a limit)."""


class Running:
    """Cron runs in flight in this process, so a slow one makes the next one skip."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: set[tuple[int, str]] = set()

    def start(self, app: App, cron_id: str) -> bool:
        with self._lock:
            if (app.id, cron_id) in self._keys:
                return False
            self._keys.add((app.id, cron_id))
            return True

    def done(self, app: App, cron_id: str) -> None:
        with self._lock:
            self._keys.discard((app.id, cron_id))


running = Running()


def start_run(services: Services, app: App, release: Release, entry: CronEntry) -> None:
    """Start a scheduled run in the background; its end is recorded by a waiting thread."""
    from deployer import containers as docker_ops
    from deployer.deploy import ReleaseDeployer, home_of, quiet_output
    from deployer.settings import ONE_OFFS

    limit = ONE_OFFS.get(services.properties, None)
    if docker_ops.one_offs_running(home_of(services), app.name) >= limit:
        raise CronSkipped(f"{app.name} already runs {limit} one-off containers")
    spec = ReleaseDeployer(services, app, quiet_output()).spec(
        release, docker_ops.ONE_OFF_PROCESS, f"cron-{entry.id}"
    )
    spec = dataclasses.replace(spec, command=entry.command)
    spec.environment["DYNO"] = f"cron.{entry.id}"
    name = f"{app.name}.cron.{entry.id}.{int(time.time())}"
    container_id = docker_ops.create(spec, name, restart=False)
    docker_ops.client().api.start(container_id)
    log.info("cron started", app=app.name, cron=entry.id, container=name)

    def wait() -> None:
        status = "failed"
        try:
            code = int(docker_ops.client().api.wait(container_id).get("StatusCode", 1))
            status = "succeeded" if code == 0 else f"exit {code}"
        except Exception as exc:  # the engine went away: the run's end is unknown
            log.warning("cron run lost", app=app.name, cron=entry.id, error=str(exc))
        finally:
            CronStore(services.state).finished(app, entry.id, status)
            running.done(app, entry.id)
            try:
                docker_ops.client().api.remove_container(container_id, force=True)
            except Exception as exc:  # removed with the app meanwhile, or the engine is gone
                log.info("cron container not removed", container=name, error=str(exc))
        log.info("cron finished", app=app.name, cron=entry.id, status=status)

    threading.Thread(target=wait, name=f"cron-{name}", daemon=True).start()


def tick(services: Services, now: float) -> list[str]:
    """Start every entry due this minute that is not suspended, not already started for it
    and not still running; returns `APP:ID` of what was started."""
    from deployer.releases import ReleaseStore

    minute, moment = int(now // 60), time.localtime(now)
    releases, store, started = ReleaseStore(services.state), CronStore(services.state), []
    for app in services.apps.all():
        release = releases.current(app)
        if release is None or not releases.is_running(app):
            continue
        try:
            due = [e for e in entries(release.app_json) if e.schedule.matches(moment)]
        except UsageError:
            continue  # checked at deploy; an old release's entries may predate the check
        for entry in due:
            if not running.start(app, entry.id):
                log.warning("cron run skipped: the previous one still runs", app=app.name,
                            cron=entry.id)  # fmt: skip
                continue
            if not store.claim(app, entry.id, minute):
                running.done(app, entry.id)
                continue
            try:
                start_run(services, app, release, entry)
                started.append(f"{app.name}:{entry.id}")
            except CronSkipped as exc:
                running.done(app, entry.id)
                store.finished(app, entry.id, "skipped")
                log.warning("cron run skipped", app=app.name, cron=entry.id, reason=str(exc))
            except Exception as exc:  # one app's engine error must not stop the others
                running.done(app, entry.id)
                store.finished(app, entry.id, "failed to start")
                log.error("cron run did not start", app=app.name, cron=entry.id, error=str(exc))
    return started


@lifecycle.in_background
async def _scheduler(services: Services) -> None:
    while True:
        await asyncio.sleep(TICK)
        await run_blocking(tick, services, time.time())
