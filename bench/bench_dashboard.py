"""The dashboard under load: how fast it answers, and what its metrics cost the proxy.

1. Latency. A data dir with 100 apps (a current release each) and a full day of metrics
   (per-minute traffic rows and 30-second CPU/memory samples for every app) is served by a
   real `dockyard serve`; requests go through Dockyard's own nginx to the dashboard with a
   session cookie, one at a time over a keep-alive connection. Reported: p50/p95/max of the
   app list page (`/`), `/api/apps`, and `/api/apps/APP/metrics` for 1 h and 1 day.
   Target: p95 < 50 ms.

2. nginx's own cost of the JSON log, independent of the machine's load: user-space
   instructions per proxied request of a single nginx process under callgrind, with the
   `combined` log (as before the dashboard) and with Dockyard's JSON format.

3. Cost of metric collection on the proxy's throughput. Dockyard's nginx proxies one app to
   a fast upstream (a second nginx answering 1 KiB from memory), loaded by wrk. Three
   configurations alternate round by round in the same run (ABC, CBA, …):
     A  baseline: nginx's access log in the `combined` format, no collector (as before the
        dashboard);
     B  the JSON access log alone, nothing reading it;
     C  the JSON access log and the dashboard's collector running its production loop
        (`dashboard.server.collect_traffic`, every 2 s, through `run_blocking`).
   Measured: requests/s, and the CPU per proxied request of every part of the path
   (Dockyard's nginx workers, user and system; the upstream; wrk; the collector) from /proc
   and getrusage. The cost is the CPU the metrics add per request — the collector's, plus
   part 2's extra instructions applied to nginx's user-space CPU — over the whole path's
   CPU per request: what throughput loses when the path is CPU-bound. That figure is judged
   against the target (< 3 %). Requests/s ratios are printed too, but on a shared 2-core
   machine they swing by tens of percent between rounds, far more than the effect. The run
   also checks that the collector counted every request wrk completed.

    .venv/bin/python bench/bench_dashboard.py [--requests 300] [--rounds 9] [--duration 4]

Needs nginx and wrk (scripts/setup.sh installs both) and valgrind; everything runs on
loopback and stops by itself, and the temporary data dir and every process are removed at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncssh  # noqa: E402

import dashboard  # noqa: E402, F401  (the stage: tables, site, hooks)
import deployer  # noqa: E402, F401
import proxy  # noqa: E402
from dashboard import metrics  # noqa: E402
from dashboard.auth import AuthStore  # noqa: E402
from deployer.releases import NO_RELEASE, ReleaseStore  # noqa: E402
from dockyard.services import Services  # noqa: E402
from dockyard.settings import Settings  # noqa: E402
from proxy.nginx import NginxMaster  # noqa: E402
from proxy.router import Router  # noqa: E402

APPS = 100
DAY = 86400
TARGET_P95_MS = 50.0
TARGET_COST = 0.03


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def admin_session(services: Services) -> str:
    key = asyncssh.generate_private_key("ssh-ed25519")
    services.keys.add("bench", key.export_public_key().decode(), admin=True)
    auth = AuthStore(services)
    session = auth.redeem_login(auth.issue_login("bench")[0])
    assert session is not None
    return session.secret


# ---------------------------------------------------------------- 1. latency


def populate(services: Services, now: float) -> None:
    rng = random.Random(16)
    store = ReleaseStore(services.state)
    routes = Router(services).store
    for i in range(APPS):
        app = services.apps.create(f"app-{i:03d}", "bench")
        for v in (1, 2):
            release = NO_RELEASE.successor(
                f"Deploy {v:07x}", "bench", image=f"dockyard/{app.name}:{v}",
                procfile={"web": "httpd"},
            )  # fmt: skip
            release.created_at = now - DAY + v * 3600
            store.add(app, release)
            store.make_current(app, release)
        store.set_formation(app, {"web": 1})
        # Stopped: no containers to make, and the list's work is the same. Routed, with a
        # domain of its own, so the list computes every app's URLs.
        store.set_running(app, False)
        routes.set_upstreams(app, [f"127.0.0.1:{10000 + i}"])
        routes.set_domains(app, [f"www.{app.name}.example.com"])
        services.config.set(app, {f"VAR_{k}": "x" * 20 for k in range(10)})
    first = int(now - DAY) // 60 * 60
    apps = {a.name: a for a in services.apps.all()}
    for hour in range(24):
        buckets = {}
        for name in apps:
            for m in range(60):
                minute = first + (hour * 60 + m) * 60
                b = metrics.Bucket()
                b.requests = rng.randint(200, 900)
                b.status = [0, b.requests - 12, 5, 5, 2]
                b.latency = Counter({rng.randint(4, 30): b.requests // 4 for _ in range(4)})
                buckets[(name, minute)] = b
        metrics.store_buckets(services.state, buckets, None)
    rows = []
    for app in apps.values():
        for k in range(DAY // 30):
            rows.append((app.id, now - DAY + k * 30, "web.1", rng.random() * 20,
                         rng.randint(20, 60) << 20, 512 << 20))  # fmt: skip
    with services.state.transaction() as conn:
        conn.executemany(
            "INSERT INTO dashboard_stats (app_id, at, dyno, cpu, memory, memory_limit) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )


def start_serve(data_dir: Path, http_port: int) -> tuple[subprocess.Popen, Path]:
    log = data_dir.parent / "serve.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dockyard.cli", "serve", "--data-dir", str(data_dir),
             "--ssh-listen", f"127.0.0.1:{free_port()}", "--http-listen", f"127.0.0.1:{http_port}",
             "--https-listen", f"127.0.0.1:{free_port()}", "--log-format", "json"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
        )  # fmt: skip
    return proc, log


PATHS = {
    "app list page  /": "/",
    "app list  /api/apps": "/api/apps",
    "metrics 1 h  /api/apps/app-042/metrics?range=1h": "/api/apps/app-042/metrics?range=1h",
    "metrics 1 day  /api/apps/app-042/metrics?range=1d": "/api/apps/app-042/metrics?range=1d",
}


def measure_latency(http_port: int, cookie: str, requests: int) -> dict[str, list[float]]:
    """Wall-clock milliseconds per request, all paths interleaved."""
    host = f"dockyard.localhost:{http_port}"
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
    headers = {"Host": host, "Cookie": f"dockyard_session={cookie}"}

    def get(path: str) -> float:
        start = time.perf_counter()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        elapsed = (time.perf_counter() - start) * 1000
        if resp.status != 200:
            raise SystemExit(f"FAIL: {path} answered {resp.status}: {body[:300]!r}")
        return elapsed

    deadline = time.monotonic() + 60
    while True:
        try:
            get("/login")
            break
        except (OSError, SystemExit, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise
            conn.close()
            time.sleep(0.2)
    for path in PATHS.values():  # warm up: imports, templates, SQLite's page cache
        for _ in range(10):
            get(path)
    found: dict[str, list[float]] = {name: [] for name in PATHS}
    for _ in range(requests):  # interleaved, so every path sees the same machine
        for name, path in PATHS.items():
            found[name].append(get(path))
    conn.close()
    return found


def latency_part(tmp: Path, requests: int) -> bool:
    data_dir = tmp / "latency" / "data"
    services = Services(Settings(data_dir=data_dir))
    now = time.time()
    t0 = time.perf_counter()
    populate(services, now)
    cookie = admin_session(services)
    rows = services.state.query_one("SELECT COUNT(*) AS n FROM dashboard_http")["n"]
    samples = services.state.query_one("SELECT COUNT(*) AS n FROM dashboard_stats")["n"]
    print(f"       {APPS} apps, {rows:,} traffic rows, {samples:,} CPU/memory samples "
          f"(made in {time.perf_counter() - t0:.1f} s)")  # fmt: skip
    http_port = free_port()
    proc, log = start_serve(data_dir, http_port)
    try:
        found = measure_latency(http_port, cookie, requests)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        NginxMaster(Router(services).paths).stop()
    ok = True
    print(f"       {requests} requests each, sequential, keep-alive, through nginx:")
    for name, values in found.items():
        p95 = pct(values, 0.95)
        ok = ok and p95 < TARGET_P95_MS
        print(f"       {name:<52} p50 {pct(values, 0.5):6.1f} ms  p95 {p95:6.1f} ms  "
              f"max {max(values):6.1f} ms")  # fmt: skip
    return ok


# ---------------------------------------------------------------- 2. collection cost

UPSTREAM_CONF = """daemon off;
worker_processes 1;
pid {prefix}/upstream.pid;
error_log {prefix}/upstream-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "{body}"; }}
    }}
}}
"""


def start_upstream(prefix: Path, port: int) -> subprocess.Popen:
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "upstream.conf"
    conf.write_text(UPSTREAM_CONF.format(prefix=prefix, port=port, body="x" * 1024))
    proc = subprocess.Popen(["nginx", "-p", f"{prefix}/", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("FAIL: the upstream nginx did not start")


class Collector:
    """The dashboard's own collection loop in a thread with its own event loop."""

    def __init__(self, services: Services) -> None:
        from dashboard.server import collect_traffic

        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.task = asyncio.run_coroutine_threadsafe(
            self._start(collect_traffic(services)), self.loop
        ).result()

    async def _start(self, coro) -> asyncio.Task:  # noqa: ANN001
        return asyncio.ensure_future(coro)

    def stop(self) -> None:
        async def cancel() -> None:
            assert self.task is not None
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


def cpu_seconds(pids: list[int], user_only: bool = False) -> float:
    """User (+ system) CPU of these processes so far (0 for any that is gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + (0 if user_only else int(fields[12]))  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def wrk(port: int, host: str, duration: float, connections: int) -> tuple[float, int]:
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration:.0f}s",
         "-H", f"Host: {host}", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=duration + 30,
    ).stdout  # fmt: skip
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not rate or not total or errors:
        raise SystemExit(f"FAIL: wrk said:\n{out}")
    return float(rate.group(1)), int(total.group(1))


@dataclass
class Usage:
    """CPU of each part of the proxied path, summed over one configuration's rounds."""

    requests: int = 0
    nginx: float = 0.0  # Dockyard's nginx workers, user + system
    nginx_user: float = 0.0  # … in user space alone (what the log format changes)
    upstream: float = 0.0  # the upstream nginx
    wrk: float = 0.0  # the load generator
    collector: float = 0.0  # this process: the collector's loop (idle in A and B)

    @property
    def path(self) -> float:
        return self.nginx + self.upstream + self.wrk + self.collector

    def per_request(self, seconds: float) -> float:
        return seconds / self.requests * 1e6


def cost_part(
    tmp: Path, rounds: int, duration: float, connections: int, format_extra: float
) -> bool:
    """`format_extra`: how much more of nginx's own (user-space) instructions the JSON log
    costs than `combined` (part 2)."""
    from proxy.nginx import children

    data_dir = tmp / "cost" / "data"
    http_port, upstream_port = free_port(), free_port()
    services = Services(Settings(data_dir=data_dir, http_listen=("127.0.0.1", http_port)))
    services.apps.create("web", "bench")
    upstream = start_upstream(tmp / "cost" / "upstream", upstream_port)
    router = Router(services)
    router.record_listen()
    master = NginxMaster(router.paths)
    collector: Collector | None = None
    try:
        proxy.publish(services, "web", [f"127.0.0.1:{upstream_port}"])
        json_conf = router.render()
        access = router.paths.access_log
        combined = json_conf.replace(f"access_log {access} dockyard_json",
                                     f"access_log {access} combined")  # fmt: skip
        assert combined != json_conf

        def use(text: str) -> None:
            tmp_conf = router.paths.conf.with_name("bench.conf")
            tmp_conf.write_text(text)
            master.test(tmp_conf)
            os.replace(tmp_conf, router.paths.conf)
            master.reload()

        rates: dict[str, list[float]] = {"A": [], "B": [], "C": []}
        usage = {k: Usage() for k in rates}
        upstream_pids = [upstream.pid, *children(upstream.pid)]
        wrk(http_port, "web.localhost", 2, connections)  # warm up
        for r in range(rounds):
            order = ["A", "B", "C"] if r % 2 == 0 else ["C", "B", "A"]
            for config in order:
                use(combined if config == "A" else json_conf)
                if config == "C":
                    # Start at the log's end: the other rounds' lines are not this one's.
                    with services.state.transaction() as conn:
                        conn.execute("DELETE FROM dashboard_log_cursor")
                    before = _counted(services)
                    collector = Collector(services)
                time.sleep(0.5)
                workers = sorted(children(master.pid() or 0))
                snap = (cpu_seconds(workers), cpu_seconds(upstream_pids), _children_cpu(),
                        time.process_time(), cpu_seconds(workers, user_only=True))  # fmt: skip
                rate, sent = wrk(http_port, "web.localhost", duration, connections)
                # Every configuration waits alike: nginx flushes within 1 s and the
                # collector reads every 2 s, so C's last lines are read (and paid for).
                time.sleep(3.5)
                u = usage[config]
                u.requests += sent
                u.nginx += cpu_seconds(workers) - snap[0]
                u.nginx_user += cpu_seconds(workers, user_only=True) - snap[4]
                u.upstream += cpu_seconds(upstream_pids) - snap[1]
                u.wrk += _children_cpu() - snap[2]
                u.collector += time.process_time() - snap[3]
                rates[config].append(rate)
                if config == "C":
                    assert collector is not None
                    collector.stop()
                    collector = None
                    counted = _counted(services) - before
                    # wrk counts completed requests; nginx logs the few still in flight too.
                    if not sent <= counted <= sent + connections:
                        raise SystemExit(f"FAIL: wrk completed {sent}, collector counted {counted}")
            print(f"       round {r + 1}: A {rates['A'][-1]:>7,.0f}  B {rates['B'][-1]:>7,.0f}  "
                  f"C {rates['C'][-1]:>7,.0f} req/s", flush=True)  # fmt: skip
        median = {k: statistics.median(v) for k, v in rates.items()}
        paired = {k: statistics.median(c / a for c, a in zip(rates[k], rates["A"], strict=True))
                  for k in ("B", "C")}  # fmt: skip
        print("       CPU per request (µs): Dockyard's nginx, upstream, wrk, collector = path")
        for k, label in (("A", "combined log, no collector"), ("B", "JSON log, nothing reading"),
                         ("C", "JSON log + collector")):  # fmt: skip
            u = usage[k]
            print(f"       {k} {label:<27} {u.per_request(u.nginx):5.2f} "
                  f"{u.per_request(u.upstream):5.2f} {u.per_request(u.wrk):5.2f} "
                  f"{u.per_request(u.collector):5.2f} = {u.per_request(u.path):5.2f}   "
                  f"{median[k]:>7,.0f} req/s (median)")  # fmt: skip
        a, c = usage["A"], usage["C"]
        collector_us = c.per_request(c.collector)
        log_format_us = format_extra * a.per_request(a.nginx_user)
        path_us = a.per_request(a.path)
        cost = (collector_us + log_format_us) / path_us
        print(f"       the collector counted all {c.requests:,} requests of the C rounds")
        print(f"       measured throughput, median of per-round ratios: B/A {paired['B']:.3f}, "
              f"C/A {paired['C']:.3f} (rounds spread {_spread(rates)}; the machine is shared, "
              "so these swing far more than the effect measured)")  # fmt: skip
        print(f"       CPU per proxied request the metrics add: collector {collector_us:.2f} µs + "
              f"JSON log {log_format_us:.2f} µs ({format_extra:+.1%} of nginx's "
              f"{a.per_request(a.nginx_user):.2f} µs in user space) = "
              f"{collector_us + log_format_us:.2f} µs of the {path_us:.2f} µs the whole path "
              "costs")  # fmt: skip
        print(f"       collection cost: {cost:.1%} of the proxied path's CPU, what throughput "
              f"loses when the path is CPU-bound (target < {TARGET_COST:.0%})")  # fmt: skip
        return cost < TARGET_COST
    finally:
        if collector is not None:
            collector.stop()
        master.stop()
        upstream.terminate()
        upstream.wait(timeout=10)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _spread(rates: dict[str, list[float]]) -> str:
    low = min(min(v) for v in rates.values())
    high = max(max(v) for v in rates.values())
    return f"{low:,.0f}–{high:,.0f} req/s"


def _counted(services: Services) -> int:
    row = services.state.query_one("SELECT COALESCE(SUM(requests), 0) AS n FROM dashboard_http")
    return int(row["n"])


def parse_cost() -> None:
    """The collector's own CPU per access-log line, on this machine."""
    line = (b'{"app":"dockyard-web","s":200,"rt":0.002,"t":"2026-12-01T04:27:31+00:00",'
            b'"m":"GET","uri":"/","b":1024,"ip":"127.0.0.1","ref":"","ua":"wrk"}\n')
    chunk = line * 200_000
    start = time.process_time()
    buckets = metrics.aggregate(chunk)
    elapsed = time.process_time() - start
    assert sum(b.requests for b in buckets.values()) == 200_000
    print(f"       parsing: {elapsed / 200_000 * 1e6:.2f} µs of CPU per access-log line "
          f"({len(line)} bytes a line)")  # fmt: skip


# ---------------------------------------------------------------- 3. nginx's own cost


def nginx_instructions(tmp: Path, requests: tuple[int, int] = (300, 1800)) -> dict[str, float]:
    """User-space instructions per proxied request of one nginx process (master_process
    off) under callgrind, with the `combined` log and with Dockyard's JSON log: counts do
    not depend on what else the machine is doing. Per request = the difference between two
    runs of different lengths, so start-up and shutdown cancel out."""
    data_dir = tmp / "instructions" / "data"
    http_port, upstream_port = free_port(), free_port()
    services = Services(Settings(data_dir=data_dir, http_listen=("127.0.0.1", http_port)))
    services.apps.create("web", "bench")
    upstream = start_upstream(tmp / "instructions" / "upstream", upstream_port)
    router = Router(services)
    router.record_listen()
    router.master.prepare_dirs()
    router.store.set_upstreams(services.apps.get("web"), [f"127.0.0.1:{upstream_port}"])
    text = router.render().replace("daemon on;", "daemon off;\nmaster_process off;")
    text = text.replace("worker_processes auto;", "worker_processes 1;")
    access = router.paths.access_log
    configs = {
        "combined": text.replace(f"access_log {access} dockyard_json",
                                 f"access_log {access} combined"),
        "Dockyard's JSON": text,
    }  # fmt: skip

    def run(conf_text: str, count: int) -> int:
        conf = router.paths.prefix / "callgrind.conf"
        conf.write_text(conf_text)
        out = tmp / "instructions" / f"callgrind.{count}.out"
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "nginx",
             "-p", f"{router.paths.prefix}/", "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("FAIL: nginx under callgrind did not start") from None
                    time.sleep(0.2)
            conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
            for _ in range(count):
                conn.request("GET", "/", headers={"Host": "web.localhost", "User-Agent": "bench",
                                                  "Referer": "http://example.com/"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    raise SystemExit(f"FAIL: nginx under callgrind answered {resp.status}")
            conn.close()
            time.sleep(1.5)  # the log buffer is flushed (and counted) before the end
        finally:
            proc.send_signal(signal.SIGQUIT)
            proc.wait(timeout=120)
        found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        if not found:
            raise SystemExit("FAIL: no callgrind totals")
        return int(found.group(1))

    try:
        result = {}
        for name, conf_text in configs.items():
            low, high = (run(conf_text, n) for n in requests)
            result[name] = (high - low) / (requests[1] - requests[0])
        return result
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "valgrind"):
        if shutil.which(tool) is None:
            return print(f"FAIL: {tool} is not installed (apt-get install {tool})") or 1
    print(f"-----> bench_dashboard on {os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="dockyard-bench-dashboard-"))
    try:
        print("-----> 1. latency, 100 apps and a day of metrics")
        latency_ok = latency_part(tmp, args.requests)
        print("-----> 2. nginx's own instructions per proxied request (callgrind, one process, "
              "independent of the machine's load)")  # fmt: skip
        counts = nginx_instructions(tmp)
        base = counts["combined"]
        for name, value in counts.items():
            print(f"       {name:<16} {value:>9,.0f} instructions ({value / base - 1:+.1%})")
        print("-----> 3. cost of metric collection on proxy throughput "
              f"(wrk, {args.connections} connections, {args.rounds} rounds x "
              f"{args.duration:.0f} s per configuration, interleaved)")  # fmt: skip
        cost_ok = cost_part(tmp, args.rounds, args.duration, args.connections,
                            counts["Dockyard's JSON"] / base - 1)  # fmt: skip
        parse_cost()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"-----> latency target {'met' if latency_ok else 'MISSED'}; "
          f"collection cost target {'met' if cost_ok else 'MISSED'}")  # fmt: skip
    return 0 if latency_ok and cost_ok else 1


if __name__ == "__main__":
    sys.exit(main())
