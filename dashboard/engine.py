"""What the Docker engine says about this Dockyard's containers, at a bounded cost.

- `EngineView`: one listing of this home's containers (a single `containers` call with
  label filters, no per-container inspect), shared by every page for `VIEW_MAX_AGE`
  seconds (and refreshed in the background while younger than `VIEW_MAX_STALE`), so the
  app list costs the engine one call every few seconds however many people look and
  however many apps there are, and a page waits for the engine only when nobody has looked
  for a while.
- An app's own page lists that app's containers afresh (one filtered call), so right after
  a deploy it shows the new containers and their logs, not the shared listing's.
- `StatsSampler`: every `stats-interval` seconds, one non-streaming, one-shot stats call per
  running app container (at most `MAX_SAMPLED` per round), stored as rows in
  `dashboard_stats`. CPU is computed from our own consecutive samples (percent of one core),
  so the engine is never asked to wait for a second reading.

Invariant: only containers labelled with this data dir's `dockyard.home` are listed or
sampled; one-off containers (`run`) and retiring ones are not counted as the app's processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import docker.errors
import requests
import structlog

from deployer import containers as docker_ops
from dockyard.services import Services

log = structlog.get_logger("dockyard.dashboard")

VIEW_MAX_AGE = 2.0
VIEW_MAX_STALE = 10.0
MAX_SAMPLED = 200
ENGINE_TIMEOUT = 10


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    app: str
    process: str
    instance: int
    release: int
    state: str  # running, exited, created…
    status: str  # the engine's words: "Up 5 minutes"

    @property
    def dyno(self) -> str:
        return f"{self.process}.{self.instance}"

    @property
    def live(self) -> bool:
        """Holds the app's live name (`APP.TYPE.N`), not a staged or retiring one."""
        return self.name == docker_ops.live_name(self.app, self.process, self.instance)


@dataclass(frozen=True)
class EngineView:
    at: float
    containers: tuple[ContainerInfo, ...] = ()
    error: str = ""

    def live(self, app: str) -> list[ContainerInfo]:
        found = [c for c in self.containers if c.app == app and c.live]
        return sorted(found, key=lambda c: (c.process, c.instance))


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def read_view(services: Services, app: str | None = None) -> EngineView:
    """One listing of this home's app containers, or of one app's (blocking)."""
    home = str(services.settings.data_dir)
    which = f"{docker_ops.LABEL_APP}={app}" if app else docker_ops.LABEL_APP
    try:
        summaries = docker_ops.client().api.containers(
            all=True, filters={"label": [f"{docker_ops.LABEL_HOME}={home}", which]}
        )
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        return EngineView(at=time.time(), error=f"Docker engine not reachable: {exc}")
    found = []
    for s in summaries:
        labels = s.get("Labels") or {}
        if labels.get(docker_ops.LABEL_PROCESS) == docker_ops.ONE_OFF_PROCESS:
            continue
        names = s.get("Names") or ["/"]
        found.append(
            ContainerInfo(
                id=s["Id"], name=names[0].lstrip("/"), app=labels.get(docker_ops.LABEL_APP, ""),
                process=labels.get(docker_ops.LABEL_PROCESS, ""),
                instance=_int(labels.get(docker_ops.LABEL_INSTANCE)),
                release=_int(labels.get(docker_ops.LABEL_RELEASE)),
                state=s.get("State", ""), status=s.get("Status", ""),
            )  # fmt: skip
        )
    return EngineView(at=time.time(), containers=tuple(found))


@dataclass
class _Previous:
    cpu_ns: int
    at: float


@dataclass
class StatsSampler:
    """Samples running live containers' CPU and memory into `dashboard_stats`."""

    services: Services
    previous: dict[str, _Previous] = field(default_factory=dict)

    def sample(self) -> int:
        """One round (blocking); returns how many containers were sampled."""
        view = read_view(self.services)
        if view.error:
            return 0
        running = [c for c in view.containers if c.live and c.state == "running"][:MAX_SAMPLED]
        ids = {r["name"]: r["id"] for r in self.services.state.query("SELECT id, name FROM apps")}
        rows = []
        api = docker_ops.client().api
        for c in running:
            if c.app not in ids:
                continue
            try:
                stats = api.stats(c.id, stream=False, one_shot=True)
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                continue  # gone between the listing and now
            now = time.time()
            cpu_ns = int(((stats.get("cpu_stats") or {}).get("cpu_usage") or {})
                         .get("total_usage") or 0)  # fmt: skip
            memory, limit = memory_of(stats)
            before = self.previous.get(c.id)
            cpu = None
            if before is not None and now > before.at and cpu_ns >= before.cpu_ns:
                cpu = round((cpu_ns - before.cpu_ns) / ((now - before.at) * 1e9) * 100, 2)
            self.previous[c.id] = _Previous(cpu_ns, now)
            rows.append((ids[c.app], now, c.dyno, cpu, memory, limit))
        alive = {c.id for c in running}
        self.previous = {k: v for k, v in self.previous.items() if k in alive}
        if rows:
            with self.services.state.transaction() as conn:
                conn.executemany(
                    "INSERT INTO dashboard_stats (app_id, at, dyno, cpu, memory, memory_limit) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
        return len(rows)


def memory_of(stats: dict) -> tuple[int, int]:
    """Memory in use as `docker stats` counts it: usage less the inactive page cache."""
    mem = stats.get("memory_stats") or {}
    usage = int(mem.get("usage") or 0)
    detail = mem.get("stats") or {}
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0)) or 0
    return max(0, usage - int(cache)), int(mem.get("limit") or 0)


def stats_series(services: Services, app_id: int, first: float, step: int, points: int) -> dict:
    """Per dyno: mean CPU % and memory (bytes) per step, null where nothing was sampled
    (averaged by SQLite: a day of 30-second samples is one query)."""
    rows = services.state.query(
        "SELECT dyno, CAST((at - ?) / ? AS INTEGER) AS i, AVG(cpu) AS cpu, "
        "AVG(memory) AS memory FROM dashboard_stats WHERE app_id = ? AND at >= ? AND at < ? "
        "GROUP BY dyno, i ORDER BY dyno, i",
        (first, step, app_id, first, first + step * points),
    )
    found: dict[str, dict[str, list]] = {}
    for r in rows:
        series = found.setdefault(r["dyno"], {"cpu": [None] * points, "memory": [None] * points})
        series["cpu"][r["i"]] = None if r["cpu"] is None else round(r["cpu"], 2)
        series["memory"][r["i"]] = int(r["memory"])
    return found
