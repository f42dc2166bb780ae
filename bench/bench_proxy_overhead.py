"""Proxy throughput: Dockyard's nginx against a hand-tuned nginx and against no proxy at all,
for a keep-alive upstream and for one that closes every connection.

Upstreams (real containers on one bridge network, like an app's):
- keep-alive: nginx from Debian in a container serving a 1 KB page, to GETs and POSTs
  (image `dockyard-bench/nginx-upstream:2`, built here from `dockyard-base/debian:bookworm`
  when missing);
- closing: busybox httpd serving the same 1 KB page (it closes every connection).

Paths measured for each, with wrk (1 thread, `--connections` keep-alive connections,
`--duration` s), interleaved in a random order within each round:
- direct: wrk inside the container's network namespace, to the server on 127.0.0.1 there
  (no proxy, no bridge, no port forwarder);
- hand-tuned: a separate nginx master written by hand for this one upstream: upstream
  keep-alive straight to the container's bridge address, the same worker, buffer, header
  and access-log settings as Dockyard's (the same work, routed the plain way);
- dockyard: Dockyard's own nginx configured by `proxy.publish`, exactly as a deploy does
  (its stable VIP, forwarded by the kernel to the container).

Each ratio is the median over rounds of that round's ratio (both sides measured seconds
apart, so a noisy moment hits both). Target: dockyard / hand-tuned >= 0.95 with the
keep-alive upstream.

    .venv/bin/python bench/bench_proxy_overhead.py [--duration 3] [--rounds 7] [--connections 16]

Needs root (nsenter, iptables), the Docker engine, nginx, wrk and the local base images.
"""

from __future__ import annotations

import argparse
import os
import random
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

import proxy  # noqa: E402
from dockyard.services import Services  # noqa: E402
from dockyard.settings import Settings  # noqa: E402
from proxy.router import Router  # noqa: E402

UPSTREAM_IMAGE = "dockyard-bench/nginx-upstream:2"
BASE_IMAGE = "dockyard-base/debian:bookworm"
BUSYBOX = "dockyard-base/busybox:latest"
NETWORK = "dockyard-bench-proxy"
LABEL = {"dockyard.bench": "proxy-overhead"}
TARGET = 0.95
PAGE = "x" * 1024
UPSTREAM_DOCKERFILE = f"""FROM {BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends nginx-light \\
 && rm -rf /var/lib/apt/lists/*
RUN printf '%s' '{PAGE}' > /var/www/html/index.html \\
 && printf 'worker_processes 1;\\nevents {{ worker_connections 1024; }}\\n\
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 75s; \
server {{ listen 80; root /var/www/html; error_page 405 =200 $uri; }} }}\\n' \
 > /etc/nginx/nginx.conf
CMD ["nginx", "-g", "daemon off;"]
"""
HAND_TUNED = """worker_processes auto;
worker_rlimit_nofile 16384;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {prefix}/access.log combined buffer=64k flush=1s;
    server_tokens off;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 10000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
{servers}
}}
"""
HAND_TUNED_SERVER = """    upstream {name} {{
        server {address};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{name};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header X-Request-Start t=${{msec}};
            proxy_buffer_size 16k;
            proxy_buffers 16 16k;
        }}
    }}
"""
WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        sys.exit(f"FAIL: docker {' '.join(args[:3])}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def ensure_upstream_image() -> None:
    found = subprocess.run(["docker", "image", "inspect", UPSTREAM_IMAGE], capture_output=True)
    if found.returncode == 0:
        return
    print(f"building {UPSTREAM_IMAGE} (nginx from Debian, once)")
    with tempfile.TemporaryDirectory() as ctx:
        Path(ctx, "Dockerfile").write_text(UPSTREAM_DOCKERFILE)
        docker("build", "-q", "-t", UPSTREAM_IMAGE, ctx)


def start(image: str, name: str, command: list[str]) -> tuple[str, str, int]:
    """(container id, bridge address, pid of its init) of a fresh container."""
    labels = [a for k, v in LABEL.items() for a in ("--label", f"{k}={v}")]
    cid = docker("run", "-d", "--name", name, "--network", NETWORK, *labels, image, *command)
    for _ in range(100):
        address = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}"
                         "{{.IPAddress}}{{end}}", cid)  # fmt: skip
        pid = int(docker("inspect", "-f", "{{.State.Pid}}", cid) or 0)
        if address and pid:
            return cid, address, pid
        time.sleep(0.05)
    sys.exit(f"FAIL: container {name} has no address")


def wrk(url: str, host: str, duration: float, connections: int, netns_pid: int | None) -> float:
    argv = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration:.0f}s",
            "-H", f"Host: {host}", url]  # fmt: skip
    if netns_pid is not None:
        argv = ["nsenter", "-t", str(netns_pid), "-n", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30).stdout
    errors = [ln.strip() for ln in out.splitlines() if "Non-2xx" in ln or "Socket errors" in ln]
    if errors:
        print(f"    note ({url}): {'; '.join(errors)}")
    found = WRK_RPS.search(out)
    if not found:
        sys.exit(f"FAIL: wrk printed no rate for {url}:\n{out}")
    return float(found.group(1))


def wait_ok(port: int, host: str) -> None:
    import http.client

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/", headers={"Host": host})
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"FAIL: nothing answers on 127.0.0.1:{port} for {host}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--connections", type=int, default=16)
    a = p.parse_args()
    for tool in ("wrk", "nsenter", "nginx", "docker"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            sys.exit(f"FAIL: {tool} is not installed")
    ensure_upstream_image()
    tmp = Path(tempfile.mkdtemp(prefix="dockyard-bench-proxy-"))
    http_port = free_port()
    services = Services(
        Settings(data_dir=tmp / "data", http_listen=("127.0.0.1", http_port),
                 https_listen=("127.0.0.1", free_port()))
    )  # fmt: skip
    router = Router(services)
    hand_prefix = tmp / "hand"
    hand_prefix.mkdir()
    hand_ports = {"keep-alive": free_port(), "closing": free_port()}
    containers: list[str] = []
    docker("network", "rm", NETWORK, check=False)
    docker("network", "create", "--label", "dockyard.bench=proxy-overhead", NETWORK)
    try:
        tag = f"{os.getpid()}"
        ka = start(UPSTREAM_IMAGE, f"bench-ka-{tag}", [])
        nka = start(BUSYBOX, f"bench-nka-{tag}", [
            "sh", "-c", f"mkdir -p /www && printf %s {PAGE} > /www/index.html && "
                        "exec httpd -f -p 80 -h /www"])  # fmt: skip
        containers += [ka[0], nka[0]]
        upstreams = {"keep-alive": ka, "closing": nka}
        router.start_or_adopt()
        for kind, (_, address, _) in upstreams.items():
            app = "ka" if kind == "keep-alive" else "nka"
            services.apps.create(app, "bench")
            proxy.publish(services, app, [f"{address}:80"])
        servers = "".join(
            HAND_TUNED_SERVER.format(name=f"u{i}", address=f"{upstreams[k][1]}:80",
                                     port=hand_ports[k])
            for i, k in enumerate(upstreams)
        )  # fmt: skip
        (hand_prefix / "nginx.conf").write_text(HAND_TUNED.format(prefix=hand_prefix,
                                                                  servers=servers))
        subprocess.run(["nginx", "-p", f"{hand_prefix}/", "-c", str(hand_prefix / "nginx.conf"),
                        "-e", str(hand_prefix / "error.log")], check=True)  # fmt: skip
        for kind in upstreams:
            wait_ok(hand_ports[kind], "localhost")
            wait_ok(http_port, f"{'ka' if kind == 'keep-alive' else 'nka'}.localhost")
        print(f"conditions: wrk -t1 -c{a.connections} -d{a.duration:.0f}s, keep-alive clients; "
              f"{a.rounds} rounds, paths in random order within a round; "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
        print("upstreams: keep-alive = nginx in a container, 1 KB page; closing = busybox "
              "httpd, same page, closes every connection")
        results: dict[tuple[str, str], list[float]] = {}
        for r in range(a.rounds):
            line = [f"round {r + 1}:"]
            jobs = [(k, path) for k in upstreams for path in ("direct", "hand-tuned", "dockyard")]
            random.shuffle(jobs)
            for kind, path in jobs:
                _, _, pid = upstreams[kind]
                app = "ka" if kind == "keep-alive" else "nka"
                if path == "direct":
                    rps = wrk("http://127.0.0.1:80/", "localhost", a.duration, a.connections, pid)
                elif path == "hand-tuned":
                    rps = wrk(f"http://127.0.0.1:{hand_ports[kind]}/", "localhost",
                              a.duration, a.connections, None)  # fmt: skip
                else:
                    rps = wrk(f"http://127.0.0.1:{http_port}/", f"{app}.localhost",
                              a.duration, a.connections, None)  # fmt: skip
                results.setdefault((kind, path), []).append(rps)
            for kind in upstreams:
                line.append(kind + " " + " ".join(
                    f"{path}={results[(kind, path)][-1]:.0f}"
                    for path in ("direct", "hand-tuned", "dockyard")))  # fmt: skip
            print("  " + " | ".join(line))
        ok = True
        for kind in upstreams:
            def ratio(x: str, y: str, kind: str = kind) -> float:
                return statistics.median(
                    a_ / b_ for a_, b_ in zip(results[(kind, x)], results[(kind, y)], strict=True)
                )

            med = {path: statistics.median(results[(kind, path)])
                   for path in ("direct", "hand-tuned", "dockyard")}  # fmt: skip
            print(f"{kind} upstream: direct {med['direct']:.0f} req/s, hand-tuned nginx "
                  f"{med['hand-tuned']:.0f}, dockyard {med['dockyard']:.0f} (medians)")
            dh = ratio("dockyard", "hand-tuned")
            print(f"  dockyard / hand-tuned: {dh:.2f}   dockyard / direct: "
                  f"{ratio('dockyard', 'direct'):.2f}   hand-tuned / direct: "
                  f"{ratio('hand-tuned', 'direct'):.2f}")
            if kind == "keep-alive":
                ok = dh >= TARGET
                print(f"  target dockyard / hand-tuned >= {TARGET}: {'met' if ok else 'MISSED'}")
        return 0 if ok else 1
    finally:
        router.master.stop()
        if router.dnat is not None:
            router.dnat.remove_home()
        subprocess.run(["nginx", "-p", f"{hand_prefix}/", "-c", str(hand_prefix / "nginx.conf"),
                        "-s", "quit"], capture_output=True)  # fmt: skip
        for cid in containers:
            docker("rm", "-f", cid, check=False)
        docker("network", "rm", NETWORK, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
