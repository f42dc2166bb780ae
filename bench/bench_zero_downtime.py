"""Zero downtime under load: not one request may fail while an app is changed every way.

A real `dockyard serve` (temp data dir, loopback ports) gets a small Python app (HTTP/1.1
keep-alive, GET and POST; its Dockerfile on the local Python base image) by a real `git
push` over SSH; then a bounded load generator (bench/loadgen.py: keep-alive clients, half
sending GETs and half POSTs, none ever retrying, each request counted once) sends requests
through Dockyard's nginx (Host `APP.localhost`) while the app is redeployed 5 times (each
push serves a new `version-N`), scaled web=3 then web=1, config-changed (`config:set`,
which redeploys), and Dockyard itself is restarted (SIGTERM, then started again on the
same ports and data dir; nginx and the containers keep serving and are adopted). A request
fails on a connection error at any point (a kept-alive connection closed under it too), a
timeout or any status >= 400.

Prints requests sent and failed, p50/p99 latency, the versions that answered and each
phase's duration. Target: 0 failed. tests/test_zero_downtime.py runs the same scenario.

    .venv/bin/python bench/bench_zero_downtime.py [--rounds 2] [--redeploys 5] [--connections 4]

Needs the Docker engine, nginx, OpenSSH and git, and the local base images
(scripts/build-base-images.sh).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import BackgroundLoad, LoadResult  # noqa: E402
from tests.conftest import (  # noqa: E402
    DockyardServer,
    _provision,
    remove_server_leftovers,
    start_server,
    stop_server,
)

APP = "zdt"
HOST = f"{APP}.localhost"
CONFIG_KEY = "ZDT_MARK"
CONFIG_VALUE = "changed"
# GET / and POST / answer the version (so every answer names the release that served it);
# /config.txt proves the config change reached the live container. HTTP/1.1: the app keeps
# nginx's upstream connections alive, as most app servers do.
APP_PY = f"""import http.server, os

VERSION = open("www/index.html").read().strip()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/config.txt":
            mark = os.environ.get("{CONFIG_KEY}", "unset")
            return self.answer(("{CONFIG_KEY}=" + mark + "\\n").encode())
        self.answer((VERSION + "\\n").encode())

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.answer((VERSION + "\\n").encode())

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), Handler)
server.daemon_threads = True
server.serve_forever()
"""
DOCKERFILE = """FROM dockyard-base/python:3
WORKDIR /app
COPY app.py /app/app.py
COPY www /app/www
CMD ["python3", "app.py"]
"""
CONNECTIONS = 4  # two GET clients, two POST clients
LOAD_LIMIT_SECONDS = 300.0
LOAD_LIMIT_REQUESTS = 2_000_000
SETTLE_AFTER_RESTART = 3.0
# Each state is held under load for a moment, so traffic reaches all three containers of
# web=3 and requests are in flight to the old ones when they retire.
HOLD = 0.5
STEP_TIMEOUT = 120


def version_body(n: int) -> str:
    return f"version-{n}"


@dataclass
class Phase:
    name: str
    seconds: float
    sent: int
    failed: int


@dataclass
class ScenarioResult:
    load: LoadResult
    phases: list[Phase] = field(default_factory=list)
    final_body: str = ""
    final_config: str = ""
    nginx_pid_before_restart: int | None = None
    nginx_pid_after_restart: int | None = None
    workers_at_start: set[int] = field(default_factory=set)
    workers_at_end: set[int] = field(default_factory=set)

    def report(self) -> str:
        r = self.load
        lines = [
            f"requests {r.summary()}",
            "clients: keep-alive, GET and POST, no retries; each request counted once",
        ]
        if r.errors:
            lines.append("errors: " + ", ".join(f"{k}: {v}" for k, v in r.errors.most_common()))
        lines.append(
            "versions answered: " + ", ".join(f"{k}={v}" for k, v in sorted(r.bodies.items()))
        )
        lines += [
            f"  {p.name:<22} {p.seconds:6.2f}s  sent={p.sent:<6} failed={p.failed}"
            for p in self.phases
        ]
        lines.append(
            f"nginx master pid before/after Dockyard restart: "
            f"{self.nginx_pid_before_restart}/{self.nginx_pid_after_restart}; workers "
            + ("the same throughout (never reloaded)" if self.workers_at_start
               and self.workers_at_start == self.workers_at_end else
               f"{sorted(self.workers_at_start)} at start, {sorted(self.workers_at_end)} at end")
        )  # fmt: skip
        return "\n".join(lines)


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env,
        timeout=STEP_TIMEOUT,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def write_version(repo: Path, n: int) -> None:
    (repo / "www").mkdir(parents=True, exist_ok=True)
    (repo / "www" / "index.html").write_text(version_body(n) + "\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", version_body(n))


def make_app_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "bench@example.com")
    git(path, "config", "user.name", "bench")
    (path / "Dockerfile").write_text(DOCKERFILE)
    (path / "app.py").write_text(APP_PY)
    write_version(path, 1)
    return path


def http_get(port: int, path: str = "/") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": HOST})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace").strip()
    finally:
        conn.close()


def wait_for(port: int, expected: str, path: str = "/", timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = http_get(port, path)
            if last == (200, expected):
                return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{HOST}{path} never answered {expected!r}; last: {last!r}")


def nginx_pid(server: DockyardServer) -> int | None:
    from proxy.nginx import NginxMaster
    from proxy.render import NginxPaths

    return NginxMaster(NginxPaths(prefix=server.data_dir / "nginx")).pid()


def nginx_workers(server: DockyardServer) -> set[int]:
    from proxy.nginx import children

    pid = nginx_pid(server)
    return children(pid) if pid else set()


class Scenario:
    """One app, changed every way under load. `server` is whichever `dockyard serve` runs
    now (the restart replaces it); the caller stops it and removes the leftovers."""

    def __init__(
        self, server: DockyardServer, workdir: Path, redeploys: int = 5,
        connections: int = CONNECTIONS, log: Callable[[str], None] | None = None,
    ) -> None:  # fmt: skip
        self.server = server
        self.workdir = workdir
        self.redeploys = redeploys
        self.connections = connections
        self.log = log  # progress, one line per phase as it ends (the report has them all)
        self.repo = make_app_repo(workdir / APP)
        self.version = 1

    def ssh(self, *words: str) -> str:
        result = self.server.ssh(*words, timeout=STEP_TIMEOUT)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(words)} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}\n--- server log tail ---\n{self.server.log()[-3000:]}"
            )
        return result.stdout

    def push(self) -> None:
        env = self.server.git_env()
        git(self.repo, "push", "-q", self.server.remote(APP), "main:main", env=env)

    def redeploy(self) -> None:
        self.version += 1
        write_version(self.repo, self.version)
        self.push()

    def stop_dockyard(self, result: ScenarioResult) -> None:
        result.nginx_pid_before_restart = nginx_pid(self.server)
        stop_server(self.server)  # SIGTERM, as systemd does

    def start_dockyard(self, result: ScenarioResult) -> None:
        old = self.server
        self.server = start_server(
            old.data_dir, old.keys_dir, old.admin_key, old.user_key,
            port=old.port, http_port=old.http_port,
        )  # fmt: skip
        result.nginx_pid_after_restart = nginx_pid(self.server)

    def run(self) -> ScenarioResult:
        port = self.server.http_port
        self.push()
        wait_for(port, version_body(1))
        load = BackgroundLoad(
            port, HOST, concurrency=self.connections, duration=LOAD_LIMIT_SECONDS,
            max_requests=LOAD_LIMIT_REQUESTS, count_bodies=True,
        )  # fmt: skip
        result = ScenarioResult(load=load.live)
        result.workers_at_start = nginx_workers(self.server)
        steps: list[tuple[str, Callable[[], None]]] = [
            (f"push {version_body(n + 2)}", self.redeploy) for n in range(self.redeploys)
        ]
        steps += [
            ("ps:scale web=3", lambda: self.ssh("ps:scale", APP, "web=3")),
            ("ps:scale web=1", lambda: self.ssh("ps:scale", APP, "web=1")),
            ("config:set", lambda: self.ssh("config:set", APP, f"{CONFIG_KEY}={CONFIG_VALUE}")),
            ("stop Dockyard", lambda: self.stop_dockyard(result)),
            ("start Dockyard", lambda: self.start_dockyard(result)),
            # The load keeps running while the restarted server reconciles and re-publishes.
            ("after restart", lambda: time.sleep(SETTLE_AFTER_RESTART)),
        ]
        with load:
            time.sleep(HOLD)  # a baseline before the first change
            for name, step in steps:
                with self.phase(result, name):
                    step()
                time.sleep(HOLD)
        result.workers_at_end = nginx_workers(self.server)
        result.final_body = http_get(port)[1]
        result.final_config = http_get(port, "/config.txt")[1]
        return result

    @contextmanager
    def phase(self, result: ScenarioResult, name: str) -> Iterator[None]:
        live = result.load
        sent, failed, t0 = live.sent, live.failed, time.perf_counter()
        yield
        phase = Phase(name, time.perf_counter() - t0, live.sent - sent, live.failed - failed)
        result.phases.append(phase)
        if self.log is not None:
            self.log(f"  {name:<22} {phase.seconds:6.2f}s  sent={phase.sent} failed={phase.failed}")

    def expected_body(self) -> str:
        return version_body(self.version)

    def expected_config(self) -> str:
        return f"{CONFIG_KEY}={CONFIG_VALUE}"


def run_round(base: Path, redeploys: int, connections: int) -> ScenarioResult:
    """A fresh server in `base`, the scenario, then the server and everything it started
    (nginx, containers) removed."""
    data_dir, keys_dir, admin_key, user_key = _provision(base)
    server = start_server(data_dir, keys_dir, admin_key, user_key)
    scenario = Scenario(server, base, redeploys=redeploys, connections=connections)
    try:
        result = scenario.run()
    finally:
        stop_server(scenario.server)
        remove_server_leftovers(scenario.server)
    if result.final_body != scenario.expected_body():
        raise AssertionError(f"last version not served: {result.final_body!r}")
    if result.final_config != scenario.expected_config():
        raise AssertionError(f"config change not served: {result.final_config!r}")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--redeploys", type=int, default=5)
    p.add_argument("--connections", type=int, default=CONNECTIONS)
    a = p.parse_args()
    for tool in ("git", "ssh", "ssh-keygen", "nginx"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            sys.exit(f"FAIL: {tool} is not installed; run make setup")
    total_sent = total_failed = 0
    print(f"conditions: {a.connections} keep-alive clients (half GET, half POST, no retries) "
          f"through Dockyard's nginx to a Python HTTP/1.1 app; {os.cpu_count()} cores, load "
          f"average {os.getloadavg()[0]:.1f} at start")
    for n in range(1, a.rounds + 1):
        print(f"round {n}/{a.rounds}: {a.redeploys} redeploys, scale 1→3→1, config:set, restart")
        with tempfile.TemporaryDirectory(prefix="dockyard-zdt-") as tmp:
            result = run_round(Path(tmp), a.redeploys, a.connections)
        print(result.report())
        total_sent += result.load.sent
        total_failed += result.load.failed
    print(f"TOTAL sent={total_sent} failed={total_failed} (target: 0 failed)")
    return 1 if total_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
