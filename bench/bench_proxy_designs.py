"""The zero-downtime designs for the proxy, measured side by side: throughput against a
hand-tuned nginx, and failed requests of clients that never retry while the upstream is
switched back and forth.

Two keep-alive upstreams (nginx in containers, 1 KB page, on one bridge network) and one
nginx master per design, all running at once on loopback ports:

- reload:    the plain way and Dockyard's before this change: upstream keep-alive straight
             to the container's bridge address; a switch rewrites the upstream and reloads
             (SIGHUP). Its throughput is the hand-tuned baseline.
- dnat:      Dockyard's design (proxy/dnat.py): upstream keep-alive to the stable VIP's 12
             slots, whose DNAT chain a switch replaces with one `iptables-restore`; no
             reload. Upstream connections live at most 200 ms of use or 100 ms idle.
- resolver:  `proxy_pass http://$name` resolved at request time from a DNS responder in
             this process (nginx 1.22 has no `resolve` on upstream servers); a switch
             changes the DNS answer. A variable proxy_pass keeps no upstream connections.
- two-tier:  a front nginx that is never reloaded, keep-alive over a unix socket to a back
             nginx that is reloaded on each switch (front retries a request the back closed
             unanswered: `proxy_next_upstream error non_idempotent`, safe because a closing
             back never processed it).

Throughput: wrk -t1 -c16, rounds with the designs in random order, median of per-round
ratios to `reload`. Switches: bench/loadgen.py, 4 keep-alive clients (2 GET, 2 POST, no
retries, each request counted once) through `--switches` switches 0.2 s apart.

    .venv/bin/python bench/bench_proxy_designs.py [--rounds 7] [--duration 2] [--switches 40]

Needs root (iptables), the Docker engine, nginx, wrk and the image that
bench_proxy_overhead.py builds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_proxy_overhead import (  # noqa: E402
    NETWORK,
    UPSTREAM_IMAGE,
    docker,
    ensure_upstream_image,
    free_port,
    start,
    wait_ok,
)
from loadgen import BackgroundLoad  # noqa: E402

from proxy.dnat import AppRules, Dnat, Vip  # noqa: E402

WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
DNS_NAME = "app.dockyard.internal"
SWITCH_INTERVAL = 0.2
COMMON = """user root;
worker_processes auto;
worker_rlimit_nofile 16384;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {prefix}/access.log combined buffer=64k flush=1s;
    server_tokens off;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 10000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
{body}
}}
"""
LOCATION = """        proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffer_size 16k;
            proxy_buffers 16 16k;"""


def server(port: int, target: str, extra: str = "") -> str:
    listen = port if isinstance(port, str) else f"127.0.0.1:{port}"
    return f"""    server {{
        listen {listen};
        {extra}
        location / {{
            proxy_pass {target};
    {LOCATION}
        }}
    }}
"""


class Master:
    def __init__(self, root: Path, name: str) -> None:
        self.prefix = root / name
        self.prefix.mkdir()
        self.conf = self.prefix / "nginx.conf"

    def write(self, body: str) -> None:
        self.conf.write_text(COMMON.format(prefix=self.prefix, body=body))

    def args(self) -> list[str]:
        return ["nginx", "-p", f"{self.prefix}/", "-c", str(self.conf),
                "-e", str(self.prefix / "error.log")]  # fmt: skip

    def start(self) -> None:
        subprocess.run(self.args(), check=True)

    def reload(self) -> None:
        subprocess.run([*self.args(), "-s", "reload"], check=True)

    def stop(self) -> None:
        subprocess.run([*self.args(), "-s", "quit"], capture_output=True)


class Dns(asyncio.DatagramProtocol):
    """Answers A queries for DNS_NAME with `address` (TTL 0); anything else: NXDOMAIN."""

    address = "127.0.0.1"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12:
            return
        qid = data[:2]
        end = 12
        labels = []
        while end < len(data) and data[end]:
            labels.append(data[end + 1 : end + 1 + data[end]].decode(errors="replace"))
            end += 1 + data[end]
        question = data[12 : end + 5]
        qtype = data[end + 1 : end + 3]
        name = ".".join(labels).lower()
        if name == DNS_NAME and qtype == b"\x00\x01":
            answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 0, 4)
            answer += socket.inet_aton(self.address)
            head = qid + b"\x81\x80" + struct.pack(">HHHH", 1, 1, 0, 0)
            self.transport.sendto(head + question + answer, addr)  # type: ignore[attr-defined]
        else:  # the name has no other records (NOERROR, no answer); other names: NXDOMAIN
            flags = b"\x81\x80" if name == DNS_NAME else b"\x81\x83"
            head = qid + flags + struct.pack(">HHHH", 1, 0, 0, 0)
            self.transport.sendto(head + question, addr)  # type: ignore[attr-defined]


def run_dns(port: int) -> type[Dns]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(loop.create_datagram_endpoint(Dns, local_addr=("127.0.0.1",
                                                                              port)))  # fmt: skip
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    ready.wait(5)
    return Dns


def wrk(port: int, duration: float) -> float:
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", "16", "-d", f"{duration:.0f}s", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=duration + 30,
    ).stdout  # fmt: skip
    found = WRK_RPS.search(out)
    if not found:
        sys.exit(f"FAIL: wrk printed no rate on port {port}:\n{out}")
    return float(found.group(1))


def main() -> int:  # noqa: C901 (one scenario, read top to bottom)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--switches", type=int, default=40)
    a = p.parse_args()
    ensure_upstream_image()
    root = Path(tempfile.mkdtemp(prefix="dockyard-bench-designs-"))
    home = str(root)
    dnat = Dnat(home)
    masters: list[Master] = []
    containers: list[str] = []
    docker("network", "rm", NETWORK, check=False)
    docker("network", "create", "--label", "dockyard.bench=proxy-designs", NETWORK)
    try:
        tag = str(os.getpid())
        ups = [start(UPSTREAM_IMAGE, f"bench-design-{tag}-{i}", []) for i in range(2)]
        containers += [u[0] for u in ups]
        addresses = [f"{u[1]}:80" for u in ups]
        gateway = docker("network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
                         NETWORK)  # fmt: skip
        vip = Vip(gateway, 1201)
        dnat.replace_all({1: AppRules.spread(vip, [addresses[0]])})
        dns_port = free_port()
        dns = run_dns(dns_port)
        dns.address = ups[0][1]
        ports = {name: free_port() for name in ("reload", "dnat", "resolver", "two-tier")}
        back_sock = root / "back.sock"

        reload_m, dnat_m, resolver_m, front_m, back_m = (
            Master(root, n) for n in ("reload", "dnat", "resolver", "front", "back")
        )
        masters += [reload_m, dnat_m, resolver_m, front_m, back_m]

        def upstream_block(name: str, address: str, extra: str = "") -> str:
            return f"    upstream {name} {{\n        server {address};\n        keepalive 64;\n" \
                   f"{extra}    }}\n"  # fmt: skip

        def write_reload(i: int) -> None:
            reload_m.write(upstream_block("u", addresses[i])
                           + server(ports["reload"], "http://u"))  # fmt: skip

        def write_back(i: int) -> None:
            back_m.write(upstream_block("u", addresses[i])
                         + server(f"unix:{back_sock}", "http://u"))  # fmt: skip

        write_reload(0)
        write_back(0)
        dnat_m.write(
            "    upstream u {\n"
            + "".join(f"        server {slot} max_fails=0;\n" for slot in vip.slots())
            + "        keepalive 64;\n        keepalive_time 200ms;\n"
            + "        keepalive_timeout 100ms;\n    }\n" + server(ports["dnat"], "http://u")
        )
        resolver_m.write(server(ports["resolver"], "http://$backend:80",
                                f"resolver 127.0.0.1:{dns_port} valid=1s ipv6=off; "
                                f"set $backend {DNS_NAME};"))  # fmt: skip
        front_m.write(
            upstream_block("back", f"unix:{back_sock}")
            + server(ports["two-tier"], "http://back",
                     "proxy_next_upstream error timeout non_idempotent;")
        )  # fmt: skip
        for m in masters:
            m.start()
        logs = {"reload": reload_m, "dnat": dnat_m, "resolver": resolver_m, "two-tier": front_m}
        for name, port in ports.items():
            try:
                wait_ok(port, "localhost")
            except SystemExit:
                for m in (logs[name], back_m):
                    print(f"{name}: {m.prefix}/error.log:\n" + (m.prefix / "error.log").read_text()
                          [-1500:])  # fmt: skip
                raise

        print(f"conditions: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
              "upstreams: nginx in containers, 1 KB page, keep-alive")
        rps: dict[str, list[float]] = {n: [] for n in ports}
        for r in range(a.rounds):
            order = list(ports)
            random.shuffle(order)
            for name in order:
                rps[name].append(wrk(ports[name], a.duration))
            print(f"  round {r + 1}: " + " ".join(f"{n}={rps[n][-1]:.0f}" for n in ports))
        print(f"throughput, wrk -t1 -c16 -d{a.duration:.0f}s, {a.rounds} rounds "
              "(median req/s; median of per-round ratios to reload):")
        for name in ports:
            ratio = statistics.median(x / y for x, y in zip(rps[name], rps["reload"],
                                                             strict=True))  # fmt: skip
            print(f"  {name:<9} {statistics.median(rps[name]):8.0f}  {ratio:.2f}")

        def switch(name: str, i: int) -> None:
            if name == "reload":
                write_reload(i)
                reload_m.reload()
            elif name == "dnat":
                dnat.switch(1, AppRules.spread(vip, [addresses[i]]),
                            AppRules.spread(vip, [addresses[1 - i]]))
            elif name == "resolver":
                dns.address = ups[i][1]
            else:
                write_back(i)
                back_m.reload()

        print(f"switches: {a.switches} per design, {SWITCH_INTERVAL}s apart, 4 keep-alive "
              "clients (2 GET, 2 POST), no retries, each request counted once:")
        for name in ports:
            with BackgroundLoad(ports[name], "localhost", concurrency=4) as load:
                time.sleep(SWITCH_INTERVAL)
                for n in range(a.switches):
                    switch(name, (n + 1) % 2)
                    time.sleep(SWITCH_INTERVAL)
            result = load.result
            assert result is not None
            print(f"  {name:<9} {result.summary()}")
        return 0
    finally:
        for m in masters:
            m.stop()
        dnat.remove_home()
        for cid in containers:
            docker("rm", "-f", cid, check=False)
        docker("network", "rm", NETWORK, check=False)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
