"""HTTPS by itself: time from `letsencrypt:enable APP` to a verified HTTPS answer.

A real `dockyard serve` (temp data dir, loopback ports) and Let's Encrypt's test server
(Debian's `pebble`, with `pebble-challtestsrv` as its DNS; tests/pebble.py) on loopback.
Each round routes a new app with two names (`APP.localhost` and `www.APP.test`) to a small
in-process HTTP server, then starts the clock, runs `letsencrypt:enable APP` through the
real OpenSSH client and polls `https://APP.localhost` (SNI, verified against pebble's
freshly made root only, so the served chain must carry the intermediate) until it answers
200 from the app; the clock stops there. The command covers the whole order: account (new
in round 1, reused after), order, two HTTP-01 validations through Dockyard's nginx,
finalization, download, `nginx -t` and a graceful reload.

Prints each round, the median and the conditions. Target: median <= 3 s.

    .venv/bin/python bench/bench_letsencrypt.py [--rounds 5]

Needs pebble (apt-get install pebble), nginx and OpenSSH; not Docker.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import os
import platform
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import proxy  # noqa: E402
from dockyard.services import Services  # noqa: E402
from dockyard.settings import Settings  # noqa: E402
from proxy.router import Router  # noqa: E402
from tests.conftest import (  # noqa: E402
    _provision,
    remove_server_leftovers,
    start_server,
    stop_server,
)
from tests.pebble import start_pebble, stop_pebble  # noqa: E402

TARGET_SECONDS = 3.0
ANSWER_TIMEOUT = 30.0


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def verified_answer(port: int, host: str, context: ssl.SSLContext) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                conn = http.client.HTTPConnection(host)
                conn.sock = tls
                conn.request("GET", "/", headers={"Host": host})
                resp = conn.getresponse()
                return resp.status == 200 and resp.read() == b"hello"
    except (OSError, ssl.SSLError):
        return False


def version(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for tool in ("pebble", "pebble-challtestsrv", "ssh", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f" !     {tool} is not installed (scripts/setup.sh installs it)", file=sys.stderr)
            return 1
    tmp = Path(tempfile.mkdtemp(prefix="dockyard-bench-le-"))
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    pebble = start_pebble(tmp / "pebble")
    server = None
    times: list[float] = []
    try:
        server = start_server(*_provision(tmp), http_port=pebble.http_port)
        for pair in (("server", pebble.directory_url), ("server-ca-file", str(pebble.api_ca_file)),
                     ("email", "bench@example.com")):  # fmt: skip
            res = server.ssh("letsencrypt:set", "--global", *pair)
            assert res.returncode == 0, res.stderr
        services = Services(Settings(data_dir=server.data_dir,
                                     http_listen=("127.0.0.1", server.http_port)))  # fmt: skip
        https_port = Router(services).https_listen()[1]
        context = ssl.create_default_context(cafile=str(pebble.root_pem))
        address = f"127.0.0.1:{upstream.server_address[1]}"
        for n in range(1, args.rounds + 1):
            app = f"bench{n}"
            assert server.ssh("apps:create", app).returncode == 0
            assert server.ssh("domains:add", app, f"www.{app}.test").returncode == 0
            proxy.publish(services, app, [address])
            start = time.perf_counter()
            res = server.ssh("letsencrypt:enable", app)
            if res.returncode != 0:
                print(res.stderr, file=sys.stderr)
                return 1
            deadline = time.monotonic() + ANSWER_TIMEOUT
            while not verified_answer(https_port, f"{app}.localhost", context):
                if time.monotonic() > deadline:
                    print(f" !     no verified HTTPS answer for {app}", file=sys.stderr)
                    return 1
                time.sleep(0.01)
            elapsed = time.perf_counter() - start
            times.append(elapsed)
            print(f"       round {n}: {elapsed:.2f} s{' (new ACME account)' if n == 1 else ''}")
    finally:
        if server is not None:
            stop_server(server)
            remove_server_leftovers(server)
        stop_pebble(pebble)
        upstream.shutdown()
        upstream.server_close()
        shutil.rmtree(tmp, ignore_errors=True)
    median = statistics.median(times)
    print("=====> letsencrypt:enable to a verified HTTPS answer")
    print(f"       median of {len(times)}: {median:.2f} s (min {min(times):.2f}, "
          f"max {max(times):.2f}); target <= {TARGET_SECONDS:.0f} s")  # fmt: skip
    print("=====> Conditions")
    print(f"       ACME server: {version(['dpkg-query', '-W', '-f', '${Version}', 'pebble'])} "
          "pebble on loopback, PEBBLE_VA_NOSLEEP=1, PEBBLE_AUTHZREUSE=0 (every name validated)")
    print("       names per certificate: 2 (HTTP-01 each, through Dockyard's nginx); "
          "key: ECDSA P-256; client: OpenSSH over loopback")
    print(f"       {version(['nginx', '-v'])}; Python {platform.python_version()}; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at the end")
    return 0 if median <= TARGET_SECONDS else 2


if __name__ == "__main__":
    sys.exit(main())
