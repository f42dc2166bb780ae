"""dashboard/ without a server: metrics from access-log lines, the collector's exactly-once
reading across restarts and rotations, quantiles, the auth store's one-time links and
digests, escaping in every template, the vendored chart library, and the proxy's site."""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncssh
import pytest

import dashboard  # noqa: F401  (registers the stage's tables, commands and site)
import deployer  # noqa: F401
import services as services_stage  # noqa: F401
from dashboard import metrics
from dashboard.auth import AuthStore, csrf_ok, digest
from dashboard.engine import memory_of, stats_series
from dashboard.properties import LOGIN_TTL, parse_listen_value
from dashboard.site import UPSTREAM_KEY
from dashboard.web import UPLOT_DIR, Dashboard, Who
from dockyard.access import Identity
from dockyard.errors import UsageError
from dockyard.properties import BadValue
from dockyard.services import Services
from dockyard.settings import Settings
from proxy.render import NginxPaths
from proxy.router import Router

NOW = 1_800_000_000.0


def line(t: float, app: str, status: int, rt: float, uri: str = "/") -> bytes:
    """One access-log line as nginx writes it (proxy.render.ACCESS_LOG_FORMAT)."""
    when = datetime.fromtimestamp(int(t), UTC).astimezone(timezone(timedelta(hours=2)))
    entry = {"app": app, "s": status, "rt": 0, "t": when.isoformat(), "m": "GET", "uri": uri,
             "b": 2, "ip": "127.0.0.1", "ref": "", "ua": "x"}  # fmt: skip
    text = json.dumps(entry, separators=(",", ":"))
    # $request_time exactly as nginx prints it (milliseconds).
    text = text.replace('"rt":0', f'"rt":{rt:.3f}', 1)
    return text.encode() + b"\n"


@pytest.fixture
def svc(tmp_path: Path) -> Services:
    return Services(Settings(data_dir=tmp_path / "data"))


def add_key(svc: Services, name: str, admin: bool = False) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    svc.keys.add(name, key.export_public_key().decode(), admin=admin)


# ---------------------------------------------------------------- metrics


def test_latency_bins_and_quantiles_are_within_one_bin() -> None:
    assert metrics.latency_bin(0.0) == 0
    assert metrics.latency_bin(0.001) == 0
    assert metrics.latency_bin(0.00125) == 1
    assert metrics.latency_bin(3600.0) == metrics.BIN_COUNT - 1
    rng = random.Random(7)
    samples = [rng.lognormvariate(-4, 1.2) for _ in range(20000)]  # seconds, median ~18 ms
    hist = Counter(metrics.latency_bin(s) for s in samples)
    ordered = sorted(samples)
    for q in (0.5, 0.95):
        exact = ordered[int(q * len(ordered))] * 1000
        estimate = metrics.quantile_ms(hist, q)
        assert estimate is not None and abs(estimate - exact) / exact < 0.125, (q, exact, estimate)
    assert metrics.quantile_ms(Counter(), 0.5) is None


def test_aggregate_counts_apps_by_minute_status_and_latency() -> None:
    chunk = b"".join([
        line(NOW + 1, "dockyard-web", 200, 0.004),
        line(NOW + 2, "dockyard-web", 200, 0.004),
        line(NOW + 3, "dockyard-web", 503, 0.120),
        line(NOW + 61, "dockyard-web", 404, 0.001),
        line(NOW + 5, "dockyard-api", 302, 0.010),
        line(NOW + 5, "dockyard-_dashboard", 200, 0.002),  # Dockyard's own site: not an app
        line(NOW + 5, "", 404, 0.0),  # the default server: nobody's
    ])  # fmt: skip
    buckets = metrics.aggregate(chunk)
    minute = int(NOW) // 60 * 60
    web = buckets[("web", minute)]
    assert web.requests == 3 and web.status == [0, 2, 0, 0, 1]
    assert sum(web.latency.values()) == 3
    assert buckets[("web", minute + 60)].status == [0, 0, 0, 1, 0]
    assert buckets[("api", minute)].status == [0, 0, 1, 0, 0]
    assert set(buckets) == {("web", minute), ("web", minute + 60), ("api", minute)}


def test_a_hostile_request_cannot_forge_a_log_line() -> None:
    """nginx escapes the URI (escape=json): a newline in it cannot start a fake line."""
    forged = line(NOW, "dockyard-web", 200, 0.001).decode().strip()
    hostile = line(NOW, "", 404, 0.0, uri="/x\n" + forged)
    assert b"\\n" in hostile and hostile.count(b"\n") == 1
    assert metrics.aggregate(hostile) == {}


def test_collector_reads_once_across_partial_lines_restarts_and_rotations(svc: Services) -> None:
    web = svc.apps.create("web", "admin")
    log = svc.settings.data_dir / "access.log"
    log.write_bytes(line(NOW, "dockyard-web", 200, 0.002))  # before the first start: history

    def total() -> int:
        row = svc.state.query_one(
            "SELECT COALESCE(SUM(requests), 0) AS n FROM dashboard_http WHERE app_id = ?",
            (web.id,),
        )
        return row["n"]

    collector = metrics.LogCollector(svc.state, log)
    collector.step()
    assert total() == 0  # a first start does not import what was logged before it
    whole = line(NOW + 1, "dockyard-web", 200, 0.002)
    with open(log, "ab") as f:
        f.write(whole + whole[:20])  # one line and the start of the next
    collector.step()
    assert total() == 1
    with open(log, "ab") as f:
        f.write(whole[20:])
    collector.step()
    assert total() == 2
    collector.close()

    # A restart resumes at the stored position: nothing lost, nothing counted twice.
    with open(log, "ab") as f:
        f.write(whole)
    again = metrics.LogCollector(svc.state, log)
    again.step()
    assert total() == 3

    # Someone else rotates: the old file's late lines are still read, the new one from 0.
    log.rename(log.with_name("access.log.old"))
    log.write_bytes(whole)
    with open(log.with_name("access.log.old"), "ab") as f:
        f.write(whole)  # nginx flushing its buffer to the old file after the rename
    again.step()
    again.step()
    assert total() == 5
    again.close()

    # We rotate: past the size limit the log moves to access.log.1 and nginx reopens.
    reopened: list[bool] = []

    def reopen() -> bool:
        log.write_bytes(b"")
        reopened.append(True)
        return True

    rotating = metrics.LogCollector(svc.state, log, reopen_logs=reopen, rotate_bytes=len(whole))
    with open(log, "ab") as f:
        f.write(whole)
    rotating.step()
    assert reopened and log.with_name("access.log.1").exists()
    with open(log, "ab") as f:
        f.write(whole)
    rotating.step()
    rotating.close()
    assert total() == 7


def test_series_rates_quantiles_and_pruning(svc: Services) -> None:
    web = svc.apps.create("web", "admin")
    now = NOW + 30
    lines = [line(now - 120 + i * 0.1, "dockyard-web", 200, 0.010) for i in range(600)]
    lines += [line(now - 5, "dockyard-web", 500, 0.500) for _ in range(30)]
    metrics.store_buckets(svc.state, metrics.aggregate(b"".join(lines)), None)
    series = metrics.http_series(svc.state, web.id, "1h", now)
    assert len(series["t"]) == 60 and series["step"] == 60
    assert series["t"][-1] == int(now) // 60 * 60
    assert sum(series["requests"]) == 630
    # Two full minutes of 5 req/s (600 over 120 s), give or take how they fall in minutes.
    full = [r for r, n in zip(series["rps"], series["requests"], strict=True) if n][:2]
    assert all(r > 0 for r in full)
    assert series["status"]["5xx"][-1] > 0
    assert series["p50"][-3] is not None and 8 <= series["p50"][-3] <= 12.5
    assert series["p95"][-1] is not None and series["p95"][-1] > 400
    day = metrics.http_series(svc.state, web.id, "1d", now)
    assert len(day["t"]) == 144 and sum(day["requests"]) == 630
    with pytest.raises(KeyError):
        metrics.http_series(svc.state, web.id, "7d", now)
    metrics.prune(svc.state, now=now + metrics.RETAIN_SECONDS + 3600)
    assert svc.state.query_one("SELECT COUNT(*) AS n FROM dashboard_http")["n"] == 0


def test_container_stats_series_and_memory_rule(svc: Services) -> None:
    web = svc.apps.create("web", "admin")
    assert memory_of({"memory_stats": {"usage": 500, "limit": 1000,
                                       "stats": {"total_inactive_file": 100}}}) == (400, 1000)
    assert memory_of({}) == (0, 0)
    with svc.state.transaction() as conn:
        conn.executemany(
            "INSERT INTO dashboard_stats (app_id, at, dyno, cpu, memory, memory_limit) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(web.id, NOW + 5, "web.1", None, 100, 0), (web.id, NOW + 35, "web.1", 4.0, 300, 0)],
        )
    series = stats_series(svc, web.id, NOW, 60, 2)
    assert series == {"web.1": {"cpu": [4.0, None], "memory": [200, None]}}


# ---------------------------------------------------------------- auth


def test_links_work_once_before_they_expire_and_only_digests_are_stored(svc: Services) -> None:
    add_key(svc, "admin", admin=True)
    auth = AuthStore(svc)
    secret, _ = auth.issue_login("admin")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)
    session = auth.redeem_login(secret)
    assert session is not None and session.identity == Identity("admin", True)
    assert auth.redeem_login(secret) is None  # used
    assert auth.session(session.secret).identity.name == "admin"
    assert auth.session("x" * 43) is None and auth.session("<script>") is None
    # Expired.
    LOGIN_TTL.set(svc.properties, None, "2")
    old, _ = auth.issue_login("admin")
    with svc.state.transaction() as conn:
        conn.execute("UPDATE dashboard_logins SET expires_at = 0 WHERE hash = ?", (digest(old),))
    assert auth.redeem_login(old) is None
    # Nothing but digests reached the database.
    token, _ = auth.issue_token("admin")
    dump = "\n".join(svc.state.conn.iterdump())
    for raw in (secret, old, session.secret, token, token.removeprefix("dyt_")):
        assert raw not in dump
    assert digest(session.secret) in dump
    # CSRF tokens belong to one session.
    assert csrf_ok(session.secret, session.csrf)
    assert not csrf_ok(session.secret, "0" * 64)
    other = auth.redeem_login(auth.issue_login("admin")[0])
    assert other is not None and not csrf_ok(session.secret, other.csrf)


def test_two_redemptions_of_one_link_cannot_both_win(svc: Services) -> None:
    add_key(svc, "admin", admin=True)
    auth = AuthStore(svc)
    for _ in range(5):
        secret, _ = auth.issue_login("admin")
        results: list[object] = []
        barrier = threading.Barrier(4)

        def redeem(
            secret: str = secret, barrier: threading.Barrier = barrier,
            results: list[object] = results,
        ) -> None:  # fmt: skip
            barrier.wait()
            results.append(auth.redeem_login(secret))

        threads = [threading.Thread(target=redeem) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r is not None for r in results) == 1


def test_identity_follows_the_key_and_revocation_scopes(svc: Services) -> None:
    add_key(svc, "admin", admin=True)
    add_key(svc, "alice")
    auth = AuthStore(svc)
    alice = auth.redeem_login(auth.issue_login("alice")[0])
    admin = auth.redeem_login(auth.issue_login("admin")[0])
    token, _ = auth.issue_token("alice")
    assert alice is not None and admin is not None
    assert auth.token(token) == Identity("alice", False)
    assert auth.token(token.removeprefix("dyt_")) is None  # the prefix is part of it
    assert auth.revoke_all("alice") == {"sessions": 1, "logins": 0, "tokens": 1}
    assert auth.session(alice.secret) is None and auth.token(token) is None
    assert auth.session(admin.secret) is not None
    # A removed key's sessions end at once, and a new key of that name inherits none.
    bob = auth.redeem_login(auth.issue_login("admin")[0])
    svc.keys.remove("admin")
    assert auth.session(bob.secret) is None
    svc.forget_key("admin")
    add_key(svc, "admin", admin=True)
    assert auth.session(bob.secret) is None
    assert svc.state.query_one("SELECT COUNT(*) AS n FROM dashboard_sessions")["n"] == 0


# ---------------------------------------------------------------- settings, site, proxy


def test_listen_setting_takes_loopback_only() -> None:
    assert parse_listen_value("127.0.0.1:8090") == "127.0.0.1:8090"
    assert parse_listen_value("[::1]:0") == "[::1]:0"
    for bad in ("0.0.0.0:8090", "192.168.1.2:80", "example.com:80", "8090", "[::]:80"):
        with pytest.raises(BadValue):
            parse_listen_value(bad)


def test_the_dashboard_site_renders_first_and_nginx_accepts_it(svc: Services) -> None:
    router = Router(svc)
    assert "dockyard.localhost" not in router.render()  # no server started: no route
    sock = svc.settings.data_dir / "dashboard" / "http.sock"
    svc.properties.set(None, UPSTREAM_KEY, f"unix:{sock}")
    web = svc.apps.create("web", "admin")
    router.store.set_upstreams(web, ["127.0.0.1:9"])
    text = router.render()  # the shared part; every app's file is included after the site
    paths: NginxPaths = router.paths
    include = f"include {paths.apps_dir}/*.conf;"
    assert text.index("server_name dockyard.localhost;") < text.index(include)
    assert f"server unix:{sock} " in text
    assert "log_format dockyard_json escape=json" in text
    router.master.prepare_dirs()
    paths.apps_dir.mkdir(exist_ok=True)
    web_file = router.plan(web).text
    assert web_file is not None and "server_name web.localhost" in web_file
    (paths.apps_dir / "web.conf").write_text(web_file)
    conf = paths.prefix / "test.conf"
    conf.write_text(text)
    subprocess.run(
        ["nginx", "-p", f"{paths.prefix}/", "-c", str(conf), "-e", str(paths.error_log), "-t",
         "-q"], check=True, capture_output=True,
    )  # fmt: skip


def test_vendored_uplot_is_the_pinned_release() -> None:
    folder = Path(dashboard.__file__).parent / "static" / UPLOT_DIR
    assert (folder / "uPlot.iife.min.js").read_text().startswith(
        "/*! https://github.com/leeoniya/uPlot (v1.6.32) */"
    )
    expected = {
        "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
        "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
        "LICENSE": "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
    }
    for name, sha in expected.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == sha, name


# ---------------------------------------------------------------- escaping


HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def _hostile_app() -> dict:
    release = {"version": "v1", "number": 1, "description": HOSTILE, "status": "succeeded",
               "actor": HOSTILE, "at": NOW, "created_at": HOSTILE, "revision": HOSTILE,
               "image": HOSTILE, "current": True, "can_roll_back": True}  # fmt: skip
    return {
        "name": "web", "owner": HOSTILE, "status": "up",
        "processes": {"up": 1, "expected": 1, "types": {"web": {"up": 1, "expected": 1}}},
        "release": release, "last_deploy": release, "deploying": False,
        "urls": ["http://web.localhost"], "traffic": {"rps": 1.0, "errors_5xx": 1},
        "releases": [release],
        "builds": [{"id": "1", "status": HOSTILE, "revision": HOSTILE, "kind": HOSTILE,
                    "started_at": HOSTILE, "at": NOW, "duration": 1.0}],
        "active_build": None,
        "containers": [{"dyno": HOSTILE, "state": HOSTILE, "status": HOSTILE,
                        "release": HOSTILE, "id": HOSTILE}],
        "config_keys": [HOSTILE], "domains": [HOSTILE],
        "certificate": {"subject": HOSTILE, "issuer": HOSTILE, "hostnames": [HOSTILE],
                        "not_after": HOSTILE, "days_left": 3, "self_signed": True,
                        "letsencrypt": True},
        "letsencrypt": {"enabled": True, "renewals": 1, "failures": 2, "last_error": HOSTILE},
        "services": [{"kind": HOSTILE, "name": HOSTILE, "var": HOSTILE, "running": False}],
        "logs": [HOSTILE, HOSTILE],
    }  # fmt: skip


def test_every_template_escapes_what_apps_and_users_control(svc: Services) -> None:
    """Values no name rule limits (log lines, build output, config values, descriptions,
    certificate fields) — and, for good measure, fields that rules do limit — rendered with
    markup in them: no element or attribute comes out of a value."""
    d = Dashboard(svc)
    me = Who(Identity(HOSTILE, True), None)
    server = {
        "doctor": [{"check": HOSTILE, "ok": False, "message": HOSTILE, "fix": HOSTILE}],
        "healthy": False,
        "engine": {"ok": True, "version": HOSTILE, "containers": 1, "running": 1, "images": 1,
                   "cpus": 2, "memory": 1, "cgroup": HOSTILE, "ours": 1, "ours_running": 1},
        "nginx": {"mode": HOSTILE, "pid": 1, "workers": 1, "config": HOSTILE, "in_sync": False,
                  "error_log": HOSTILE},
        "disk": {"path": HOSTILE, "total": 1, "used": 1, "free": 1},
        "events": [{"id": 1, "at": NOW, "time": HOSTILE, "actor": HOSTILE, "kind": HOSTILE,
                    "app": HOSTILE, "detail": HOSTILE}],
    }  # fmt: skip
    pages = {
        "apps.html": {"me": me, "apps": [_hostile_app()],
                      "engine": {"at": "", "error": HOSTILE}, "you": {}},
        "app.html": {"me": me, "app": _hostile_app()},
        "server.html": {"me": me, "server": server},
        "message.html": {"me": None, "title": HOSTILE, "message": HOSTILE},
        "rollback.html": {"me": me, "app_name": HOSTILE, "version": HOSTILE, "ok": False,
                          "output": HOSTILE},
        "login.html": {"me": None},
    }  # fmt: skip
    for name, values in pages.items():
        html = d.templates.get_template(name).render(**values)
        assert "<script>alert" not in html, name
        assert "<img" not in html, name
        if name != "login.html":  # the one page that shows no value
            assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img" in html, name
        # Only our own script tags exist, and none is inline.
        for tag in re.findall(r"<script[^>]*>", html):
            assert re.fullmatch(r'<script src="/static/[^"]+" defer>', tag), (name, tag)


def test_bad_ranges_and_names_are_usage_errors(svc: Services) -> None:
    from dashboard import data

    add_key(svc, "admin", admin=True)
    svc.apps.create("web", "admin")
    admin = Identity("admin", True)
    with pytest.raises(UsageError):
        data.app_metrics(svc, admin, "web", "1y")
    with pytest.raises(UsageError):
        data.app_metrics(svc, admin, "../etc", "1h")


def test_a_site_must_have_a_name_no_app_can_have(svc: Services) -> None:
    from proxy import sites
    from proxy.render import AppRoute

    def bad(services: Services) -> AppRoute:
        return AppRoute(app="web", server_names=["x.localhost"], upstreams=["127.0.0.1:9"])

    sites.register_site(bad)
    try:
        with pytest.raises(ValueError, match="site name"):
            sites.site_routes(svc)
    finally:
        sites._providers.remove(bad)  # noqa: SLF001
    assert [r.app for r in sites.site_routes(svc)] == []  # nothing recorded: no dashboard yet


def test_metrics_follow_a_rename_and_go_with_a_destroyed_app(svc: Services) -> None:
    web = svc.apps.create("web", "admin")
    metrics.store_buckets(svc.state, metrics.aggregate(line(NOW, "dockyard-web", 200, 0.01)),
                          None)  # fmt: skip
    svc.apps.rename("web", "site")
    series = metrics.http_series(svc.state, web.id, "1h", NOW + 30)
    assert sum(series["requests"]) == 1  # keyed by the app's id: the rename kept them
    svc.apps.delete(svc.apps.get("site"))
    for table, _ in metrics.TABLES:
        assert svc.state.query_one(f"SELECT COUNT(*) AS n FROM {table}")["n"] == 0  # noqa: S608
