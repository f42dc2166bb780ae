"""What the pages and the JSON API show: one set of blocking readers, so both see the same
data. Call them through `dockyard.bridge.run_blocking`.

Invariants:
- Access is `dockyard.access`'s, applied as for an SSH command: a request runs as a
  `Context` with the signed-in key's identity, `Context.app` (name check, existence, the one
  rule) guards every app-scoped read, `can_see` filters the list exactly as `apps:list` does,
  and server-wide reads (`doctor`, engine, nginx, events) need `Access.ADMIN` as their SSH
  commands do.
- Readers return plain JSON-able values (str, int, float, bool, None, lists, dicts) and
  never a config value unless `config_value` is asked for one key.
- Whatever an app's own code controls (log lines, build output, config values, release
  descriptions) is data here; escaping is the templates' job (autoescape) and the script's
  (`textContent`), never this module's.
"""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TypeVar

import docker.errors
import requests

from builder.store import BuildStore, Status, build_log_path
from dashboard import metrics
from dashboard.engine import EngineView, read_view, stats_series
from deployer import containers as docker_ops
from deployer.applogs import ContainerLogs, recent
from deployer.releases import (
    STATUS_PENDING,
    STATUS_SUCCEEDED,
    AppReleases,
    Release,
    ReleaseStore,
    effective_formation,
)
from dockyard.access import Access, Identity, can_see, check_access
from dockyard.apps import App
from dockyard.context import Context
from dockyard.errors import NotFound, UsageError
from dockyard.output import Output
from dockyard.services import Services
from proxy.letsencrypt import LeStore
from proxy.properties import MODE_OWN
from proxy.router import Router
from services.base import ServiceStore

T = TypeVar("T")
RELEASES_SHOWN = 20
BUILDS_SHOWN = 10
EVENTS_SHOWN = 200
LOG_LINES = 100
BUILD_LOG_CHUNK = 256 * 1024


def context_with_output(
    services: Services, identity: Identity
) -> tuple[Context, io.BytesIO, io.BytesIO]:
    """A command context for `identity` whose output is kept in memory."""
    out, err = io.BytesIO(), io.BytesIO()
    ctx = Context(
        services=services, identity=identity, stdin=io.BytesIO(), stdout=out, stderr=err,
        out=Output(out, err),
    )  # fmt: skip
    return ctx, out, err


def context(services: Services, identity: Identity) -> Context:
    return context_with_output(services, identity)[0]


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _release(r: Release | None) -> dict | None:
    if r is None:
        return None
    return {
        "version": r.name, "number": r.version, "description": r.description,
        "status": r.status, "actor": r.actor, "at": r.created_at, "created_at": iso(r.created_at),
        "revision": r.revision, "image": r.image,
    }  # fmt: skip


def visible_apps(services: Services, identity: Identity) -> list[App]:
    """What `apps:list` lists for this key. Grants are read only when the rule's answer
    depends on them (not for an admin or an app's owner)."""
    apps = services.apps
    return [
        a for a in apps.all()
        if can_see(identity, a.owner, ()) or can_see(identity, a.owner, apps.grants(a))
    ]  # fmt: skip


def _status(deployed: bool, running: bool, up: int, expected: int) -> str:
    if not deployed:
        return "not deployed"
    if not running:
        return "stopped"
    if up >= expected:
        return "up" if expected else "scaled to zero"
    return "down" if up == 0 else "degraded"


def app_summary(
    services: Services, app: App, view: EngineView, router: Router, traffic: dict[int, dict],
    releases: AppReleases | None,
) -> dict:  # fmt: skip
    current = releases.current if releases else None
    newest = releases.newest if releases else None
    running = releases.running if releases else True
    formation = releases.formation if releases else {}
    expected = effective_formation(formation, current) if current else {}
    up_by_type: dict[str, int] = {}
    for c in view.live(app.name):
        if c.state == "running":
            up_by_type[c.process] = up_by_type.get(c.process, 0) + 1
    wanted = expected if running else {}
    up, total = sum(up_by_type.values()), sum(wanted.values())
    routed = bool(router.store.upstreams(app))
    return {
        "name": app.name,
        "owner": app.owner,
        "status": _status(current is not None, running, up, total),
        "processes": {
            "up": up,
            "expected": total,
            "types": {
                t: {"up": up_by_type.get(t, 0), "expected": wanted.get(t, 0)}
                for t in sorted(set(wanted) | set(up_by_type))
            },
        },
        "release": _release(current),
        "last_deploy": _release(newest),
        "deploying": newest is not None and newest.status == STATUS_PENDING,
        "urls": router.urls(app) if routed else [],
        "traffic": traffic.get(app.id, {"rps": 0.0, "errors_5xx": 0}),
    }


class ListingRouter(Router):
    """`Router` for one listing of many apps: the global settings every app's URLs need
    (global domain, listen addresses) are read once, not once per app. The URL rule itself
    stays `Router.urls`."""

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self._once: dict[str, object] = {}

    def _memo(self, key: str, read: Callable[[], T]) -> T:
        if key not in self._once:
            self._once[key] = read()
        return self._once[key]  # type: ignore[return-value]

    def global_domain(self) -> str:
        return self._memo("global_domain", super().global_domain)

    def http_listen(self) -> tuple[str, int]:
        return self._memo("http_listen", super().http_listen)

    def https_listen(self) -> tuple[str, int]:
        return self._memo("https_listen", super().https_listen)


def app_list(services: Services, identity: Identity, view: EngineView) -> dict:
    router = ListingRouter(services)
    traffic = metrics.recent_traffic(services.state, time.time())
    overview = ReleaseStore(services.state).overview()
    apps = [
        app_summary(services, a, view, router, traffic, overview.get(a.id))
        for a in visible_apps(services, identity)
    ]
    return {
        "apps": apps,
        "engine": {"at": iso(view.at), "error": view.error},
        "you": {"key": identity.name, "admin": identity.is_admin},
    }


def _checked_app(services: Services, identity: Identity, name: str) -> App:
    """The one access rule, exactly as an SSH command applies it."""
    return context(services, identity).app(name)


def app_detail(services: Services, identity: Identity, name: str) -> dict:
    app = _checked_app(services, identity, name)
    view = read_view(services, app.name)  # this app's containers, now
    router = Router(services)
    traffic = metrics.recent_traffic(services.state, time.time())
    store = ReleaseStore(services.state)
    every = store.all(app)
    current = store.current_version(app)
    overview = AppReleases(
        current=next((r for r in every if r.version == current), None),
        newest=every[-1] if every else None,
        running=store.is_running(app),
        formation=store.formation(app),
    )
    summary = app_summary(services, app, view, router, traffic, overview)
    releases = []
    for r in reversed(every[-RELEASES_SHOWN:]):
        entry = _release(r) or {}
        entry["current"] = r.version == current
        entry["can_roll_back"] = r.status == STATUS_SUCCEEDED and r.version != current
        releases.append(entry)
    builds = BuildStore(services.state).all(app)[:BUILDS_SHOWN]
    active = builds[0].build_id if builds and builds[0].status == Status.RUNNING else None
    cert = router.store.cert(app)
    le = LeStore(services).get(app)
    live = view.live(app.name)
    return {
        **summary,
        "releases": releases,
        "builds": [
            {"id": b.build_id, "status": b.status, "revision": b.revision, "kind": b.kind,
             "started_at": iso(b.started_at), "at": b.started_at,
             "duration": None if b.duration is None else round(b.duration, 1)}
            for b in builds
        ],  # fmt: skip
        "active_build": active,
        "containers": [
            {"dyno": c.dyno, "state": c.state, "status": c.status, "release": f"v{c.release}",
             "id": c.id[:12]}
            for c in live
        ],  # fmt: skip
        "config_keys": sorted(services.config.local(app)),
        "domains": router.server_names(app),
        "certificate": None if cert is None else {
            "subject": cert.subject, "issuer": cert.issuer, "hostnames": cert.hostnames,
            "not_after": cert.not_after, "days_left": _days_left(cert.not_after),
            "self_signed": cert.self_signed,
            "letsencrypt": bool(le and le.enabled),
        },  # fmt: skip
        "letsencrypt": None if le is None else {
            "enabled": le.enabled, "renewals": le.renewals, "failures": le.failures,
            "last_error": le.last_error,
        },  # fmt: skip
        "services": [
            {"kind": link.service.kind, "name": link.service.name, "var": link.var,
             "running": link.service.running}
            for link in ServiceStore(services.state).app_links(app)
        ],  # fmt: skip
        "logs": recent_logs(live),
    }


def _days_left(not_after: str) -> int | None:
    try:
        when = datetime.fromisoformat(not_after)
    except ValueError:
        return None
    return int((when.timestamp() - time.time()) // 86400)


def recent_logs(live: Iterable, lines: int = LOG_LINES) -> list[str]:
    """The last lines of the app's running containers, merged by time (`logs APP`)."""
    found = []
    api = docker_ops.client()
    for c in live:
        if c.state != "running":
            continue
        try:
            found.append(ContainerLogs(api.containers.get(c.id)))
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            continue
    try:
        return recent(found, lines)
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return []


def build_log(
    services: Services, identity: Identity, name: str, build_id: str, offset: int
) -> dict:
    """The bytes of a build's log (`latest`: the newest build) from `offset` (at most
    BUILD_LOG_CHUNK), and whether the build is still running: the page polls this to show
    a push as it happens."""
    app = _checked_app(services, identity, name)
    store = BuildStore(services.state)
    if build_id == "latest" and not store.all(app):
        return {"build": None, "status": "", "running": False, "offset": 0, "text": ""}
    record = store.get(app, None if build_id == "latest" else build_id)
    path = build_log_path(services.settings, app.name, record.build_id)
    data = b""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, offset))
            data = f.read(BUILD_LOG_CHUNK)
    except FileNotFoundError:
        pass
    # Cut at the last whole line (unless the build is over) and at a UTF-8 boundary.
    running = record.status == Status.RUNNING
    if running and b"\n" in data:
        data = data[: data.rfind(b"\n") + 1]
    elif running:
        data = b""
    return {
        "build": record.build_id,
        "status": record.status,
        "running": running,
        "offset": max(0, offset) + len(data),
        "text": data.decode("utf-8", "replace"),
    }


def config_value(services: Services, identity: Identity, name: str, key: str) -> str:
    app = _checked_app(services, identity, name)
    value = services.config.local(app).get(key)
    if value is None:
        raise NotFound(f"{app.name} has no config var {key}")
    services.state.record_event(identity.name, "dashboard:config-reveal", app.name, key)
    return value


def app_metrics(services: Services, identity: Identity, name: str, range_name: str) -> dict:
    if range_name not in metrics.RANGES:
        raise UsageError(f"range is one of: {', '.join(metrics.RANGES)}")
    app = _checked_app(services, identity, name)
    now = time.time()
    series = metrics.http_series(services.state, app.id, range_name, now)
    first, step = series["t"][0], series["step"]
    series["containers"] = stats_series(services, app.id, first, step, len(series["t"]))
    series["deploys"] = [
        {"t": r.created_at, "version": r.name, "actor": r.actor, "status": r.status,
         "description": r.description}
        for r in ReleaseStore(services.state).all(app)
        if r.created_at >= first
    ]  # fmt: skip
    return {"app": app.name, "range": range_name, "now": now, **series}


def server_info(services: Services, identity: Identity, view: EngineView) -> dict:
    check_access(identity, Access.ADMIN, action="see the server page")
    from dockyard.commands.doctor import CHECKS, Finding  # the checks `doctor` runs

    findings: list[Finding] = []
    for check in CHECKS:
        result = check(services)
        findings.extend(result if isinstance(result, list) else [result])
    router = Router(services)
    pid = router.master.pid()
    from proxy.nginx import children

    disk = shutil.disk_usage(services.settings.data_dir)
    rows = services.state.query(
        "SELECT id, at, actor, kind, app, detail FROM events ORDER BY id DESC LIMIT ?",
        (EVENTS_SHOWN,),
    )
    return {
        "doctor": [f.__dict__ for f in findings],
        "healthy": all(f.ok for f in findings),
        "engine": engine_info(view),
        "nginx": {
            "mode": router.mode(),
            "pid": pid,
            "workers": len(children(pid)) if pid else 0,
            "config": str(router.paths.conf),
            # Dockyard's own master only: in mode `system` the files are the system's.
            "in_sync": (router.render() == _read(router.paths.conf)
                        if router.mode() == MODE_OWN else None),
            "error_log": router.master.error_log_tail(5) if pid else "",
        },
        "disk": {"path": str(services.settings.data_dir), "total": disk.total,
                 "used": disk.used, "free": disk.free},  # fmt: skip
        "events": [
            {"id": r["id"], "at": r["at"], "time": iso(r["at"]), "actor": r["actor"],
             "kind": r["kind"], "app": r["app"], "detail": r["detail"]}
            for r in rows
        ],  # fmt: skip
    }


def _read(path: object) -> str:
    try:
        with open(path, encoding="utf-8") as f:  # type: ignore[call-overload]
            return f.read()
    except OSError:
        return ""


def engine_info(view: EngineView) -> dict:
    try:
        info = docker_ops.client().info()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        return {"ok": False, "error": str(exc)}
    return {
        "ok": True,
        "version": info.get("ServerVersion", ""),
        "containers": info.get("Containers", 0),
        "running": info.get("ContainersRunning", 0),
        "images": info.get("Images", 0),
        "cpus": info.get("NCPU", 0),
        "memory": info.get("MemTotal", 0),
        "cgroup": info.get("CgroupVersion", ""),
        "ours": len([c for c in view.containers if c.live]),
        "ours_running": len([c for c in view.containers if c.live and c.state == "running"]),
    }
