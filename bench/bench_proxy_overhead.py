"""Proxy overhead: requests/s and p50 latency through Dockyard's nginx vs. straight to the
container, with the same load generator, same concurrency and same duration.

The upstream is a real container (`dockyard-base/busybox` running `httpd -f -p 8080`, serving a
small static file) published on 127.0.0.1. nginx is Dockyard's own master, configured by
`proxy.publish` exactly as a deploy does, on a free loopback port. Each round measures
direct and proxied back to back; medians are printed with the ratio proxy/direct (the
median of per-round ratios; target: >= 0.8). Both the baseline and nginx's upstream use the
container's published loopback port (through docker-proxy), as deploys do; an extra,
informational line shows nginx reaching the same container on its bridge address.

    .venv/bin/python bench/bench_proxy_overhead.py [--duration 2] [--rounds 5] [--connections 16]

Uses `wrk` when installed (apt-get install wrk), else bench/loadgen.py. Needs the Docker
engine and the local base images (scripts/build-base-images.sh); fails clearly otherwise.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402

import proxy  # noqa: E402
from dockyard.services import Services  # noqa: E402
from dockyard.settings import Settings  # noqa: E402
from proxy.router import Router  # noqa: E402

IMAGE = "dockyard-base/busybox:latest"
APP = "bench"
HOST = f"{APP}.localhost"
BRIDGE_APP = "bench-bridge"
BRIDGE_HOST = f"{BRIDGE_APP}.localhost"
TARGET_RATIO = 0.8
BODY = "x" * 1024  # a small static file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_container():
    try:
        import docker

        client = docker.from_env()
        client.ping()
        client.images.get(IMAGE)
    except Exception as exc:  # the SDK raises several unrelated types
        sys.exit(f"FAIL: Docker engine or {IMAGE} unavailable ({exc}); run make setup")
    script = f"mkdir -p /www && printf %s {BODY} > /www/index.html && exec httpd -f -p 8080 -h /www"
    container = client.containers.run(
        IMAGE, ["sh", "-c", script], detach=True, ports={"8080/tcp": ("127.0.0.1", None)},
        labels={"dockyard.bench": "proxy-overhead"},
    )  # fmt: skip
    container.reload()
    return container, int(container.ports["8080/tcp"][0]["HostPort"])


def wait_ok(port: int, host: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = loadgen.run_load(port, host, concurrency=1, max_requests=1, duration=2)
        if r.failed == 0 and r.sent == 1:
            return
        time.sleep(0.1)
    sys.exit(f"FAIL: nothing answers on 127.0.0.1:{port} for Host {host}")


WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_P50 = re.compile(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", re.M)
UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def measure(port: int, host: str, duration: float, connections: int) -> tuple[float, float]:
    """(requests/s, p50 ms)."""
    wrk = shutil.which("wrk")
    if wrk:
        out = subprocess.run(
            [wrk, "-t", "1", "-c", str(connections), "-d", f"{duration:.0f}s", "--latency",
             "-H", f"Host: {host}", f"http://127.0.0.1:{port}/index.html"],
            capture_output=True, text=True, check=True, timeout=duration + 30,
        ).stdout  # fmt: skip
        for line in out.splitlines():
            if "Non-2xx" in line or "Socket errors" in line:
                print(f"  note ({host}): {line.strip()}")
        rps = float(WRK_RPS.search(out).group(1))  # type: ignore[union-attr]
        m = WRK_P50.search(out)
        return rps, float(m.group(1)) * UNIT[m.group(2)]  # type: ignore[union-attr]
    r = loadgen.run_load(
        port, host, path="/index.html", concurrency=connections, max_requests=10**6,
        duration=duration,
    )  # fmt: skip
    if r.failed:
        print("  warning:", r.summary())
    return r.rps, r.p50_ms


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--connections", type=int, default=16)
    a = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dockyard-bench-proxy-"))
    http_port = free_port()
    services = Services(
        Settings(data_dir=tmp, http_listen=("127.0.0.1", http_port),
                 https_listen=("127.0.0.1", free_port()))
    )  # fmt: skip
    router = Router(services)
    containers = []
    try:
        router.start_or_adopt()
        services.apps.create(APP, "bench")
        services.apps.create(BRIDGE_APP, "bench")
        tool = "wrk" if shutil.which("wrk") else "bench/loadgen.py"
        print(f"load: {tool}, {a.connections} keep-alive connections, {a.duration:.0f}s per "
              f"measurement, {a.rounds} rounds; upstream: busybox httpd container")  # fmt: skip
        direct, proxied, bridged = [], [], []
        for i in range(a.rounds):
            # busybox httpd closes every connection, and each one leaves a TIME_WAIT entry
            # toward the container for 60 s; fresh containers (fresh addresses) per round
            # keep the kernel's port space from becoming what is measured.
            container, direct_port = start_container()
            bridge_box, _ = start_container()
            containers += [container, bridge_box]
            proxy.publish(services, APP, [f"127.0.0.1:{direct_port}"])
            bridge_ip = bridge_box.attrs["NetworkSettings"]["IPAddress"]
            if bridge_ip:
                proxy.publish(services, BRIDGE_APP, [f"{bridge_ip}:8080"])
            wait_ok(direct_port, "127.0.0.1")
            wait_ok(http_port, HOST)
            direct.append(measure(direct_port, "127.0.0.1", a.duration, a.connections))
            proxied.append(measure(http_port, HOST, a.duration, a.connections))
            line = (f"  round {i + 1}: direct {direct[-1][0]:.0f} req/s p50 {direct[-1][1]:.2f}ms"
                    f" | nginx {proxied[-1][0]:.0f} req/s p50 {proxied[-1][1]:.2f}ms")  # fmt: skip
            if bridge_ip:
                wait_ok(http_port, BRIDGE_HOST)
                bridged.append(measure(http_port, BRIDGE_HOST, a.duration, a.connections))
                line += f" | nginx->bridge {bridged[-1][0]:.0f} req/s p50 {bridged[-1][1]:.2f}ms"
            print(line)
            for c in (container, bridge_box):
                c.remove(force=True)
                containers.remove(c)
        d_rps = statistics.median(r for r, _ in direct)
        d_p50 = statistics.median(ms for _, ms in direct)
        p_rps = statistics.median(r for r, _ in proxied)
        p_p50 = statistics.median(ms for _, ms in proxied)
        # Each round measures both back to back, so a noisy moment hits both: the ratio is
        # the median of per-round ratios, not a ratio of medians.
        ratio = statistics.median(p[0] / d[0] for p, d in zip(proxied, direct, strict=True))
        print(f"direct to container: {d_rps:.0f} req/s, p50 {d_p50:.2f} ms")
        print(f"through nginx:       {p_rps:.0f} req/s, p50 {p_p50:.2f} ms")
        if bridged:
            b_rps = statistics.median(r for r, _ in bridged)
            b_p50 = statistics.median(ms for _, ms in bridged)
            b_ratio = statistics.median(b[0] / d[0] for b, d in zip(bridged, direct, strict=True))
            print(f"through nginx, upstream on the bridge IP: {b_rps:.0f} req/s, p50 "
                  f"{b_p50:.2f} ms (ratio {b_ratio:.2f}; informational)")  # fmt: skip
        verdict = "OK" if ratio >= TARGET_RATIO else "BELOW TARGET"
        print(f"ratio (nginx/direct req/s): {ratio:.2f} (target >= {TARGET_RATIO}) {verdict}")
        return 0 if ratio >= TARGET_RATIO else 1
    finally:
        router.master.stop()
        for c in containers:
            c.remove(force=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
