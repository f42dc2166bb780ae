"""proxy/: validation and rendering (unit), then the real nginx on 127.0.0.1 (in-process
with a Services on a tmp data dir, and end-to-end through `dockyard serve` over SSH)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import io
import json
import os
import signal
import socket
import ssl
import tarfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import proxy
from dockyard.errors import DockyardError, UsageError
from dockyard.services import Services
from dockyard.settings import Settings
from proxy.nginx import NginxMaster
from proxy.properties import SYSTEM_CONF_DIR
from proxy.render import AppRoute, CertPaths, Listen, render_server_block
from proxy.router import Router, system_conf_path
from proxy.validate import check_body_size, check_domain, check_upstream
from tests.conftest import DockyardServer, free_port, start_server, stop_server

# ---------------------------------------------------------------- unit: validation, render


@pytest.mark.parametrize(
    "domain", ["example.com", "A.Example.COM", "*.apps.example.com", "x-1.io", "localhost"]
)
def test_valid_domains_are_accepted_lowercased(domain: str) -> None:
    assert check_domain(domain) == domain.lower()


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        ("http://example.com", "scheme"),
        ("example.com/path", "path"),
        ("example.com:8080", "port"),
        ("exa mple.com", "whitespace"),
        ("example.com;", "label"),
        ("ex{ample}.com", "label"),
        ('"example.com"', "label"),
        ("example.com\nserver_name x", "whitespace"),
        ("-bad.example.com", "label"),
        ("*.com", "wildcard"),
        ("a." * 130 + "com", "longer"),
        ("", "empty"),
    ],
)
def test_invalid_domains_are_refused_with_a_reason(domain: str, reason: str) -> None:
    with pytest.raises(UsageError) as err:
        check_domain(domain)
    assert reason in err.value.message


def test_upstream_and_body_size_validation() -> None:
    assert check_upstream("127.0.0.1:8080") == "127.0.0.1:8080"
    assert check_upstream("[::1]:80") == "[::1]:80"
    for bad in ("127.0.0.1", "127.0.0.1:0", "h;x:80", "a b:80", "1.2.3.4:99999"):
        with pytest.raises(UsageError):
            check_upstream(bad)
    assert check_body_size("10M") == "10m"
    assert check_body_size("0") == "0"
    for bad in ("10 m", "10mb", "-1", "1m;", ""):
        with pytest.raises(UsageError):
            check_body_size(bad)


def test_render_server_block_plain_and_tls() -> None:
    route = AppRoute("web", ["web.localhost", "example.com"], ["127.0.0.1:1", "127.0.0.1:2"], "5m")
    text = render_server_block(route, Listen(http=("0.0.0.0", 80)))
    assert "upstream dockyard-web {" in text
    assert "server 127.0.0.1:1 " in text and "server 127.0.0.1:2 " in text
    assert "keepalive " in text
    assert "server_name web.localhost example.com;" in text
    assert "client_max_body_size 5m;" in text
    assert "listen 0.0.0.0:80;" in text
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Upgrade"):
        assert f"proxy_set_header {header}" in text
    assert "proxy_next_upstream error timeout" in text
    assert "ssl" not in text

    cert = CertPaths(Path("/c/server.crt"), Path("/c/server.key"))
    tls = render_server_block(
        AppRoute("web", ["web.localhost"], ["127.0.0.1:1"], "1m", cert),
        Listen(http=("0.0.0.0", 80), https=("0.0.0.0", 8443)),
    )
    assert "return 301 https://$host:8443$request_uri;" in tls
    assert "listen 0.0.0.0:8443 ssl;" in tls
    assert "ssl_certificate /c/server.crt;" in tls


def test_system_mode_path_selection(tmp_path: Path) -> None:
    assert system_conf_path(Path("/etc/nginx/conf.d"), "web") == Path(
        "/etc/nginx/conf.d/dockyard-web.conf"
    )
    services = Services(Settings(data_dir=tmp_path / "data"))
    router = Router(services)
    assert router.system_conf_dir() == Path(SYSTEM_CONF_DIR.default)
    SYSTEM_CONF_DIR.set(services.properties, None, "/srv/nginx/sites")
    assert router.system_conf_dir() == Path("/srv/nginx/sites")


# ---------------------------------------------------------------- helpers: upstreams, HTTP


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle plus delayed ACKs add 40ms.
    disable_nagle_algorithm = True
    label = "?"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.dumps(
            {"app": self.label, "path": self.path, "headers": dict(self.headers.items())}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        size = len(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        body = json.dumps({"app": self.label, "received": size}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream_factory() -> Iterator:
    servers: list[http.server.ThreadingHTTPServer] = []

    def make(label: str) -> str:
        handler = type(f"Echo_{label}", (_EchoHandler,), {"label": label})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"127.0.0.1:{srv.server_address[1]}"

    yield make
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def get(port: int, host: str, path: str = "/") -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def app_of(port: int, host: str) -> str:
    status, body, _ = get(port, host)
    assert status == 200, (status, body)
    return json.loads(body)["app"]


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[Services]:
    """Dockyard's own nginx for a tmp data dir, on a free loopback port, stopped after."""
    settings = Settings(
        data_dir=tmp_path / "data",
        http_listen=("127.0.0.1", free_port()),
        https_listen=("127.0.0.1", free_port()),
    )
    services = Services(settings)
    router = Router(services)
    router.start_or_adopt()
    try:
        yield services
    finally:
        router.master.stop()
        if router.dnat is not None:
            router.dnat.remove_home()


# ---------------------------------------------------------------- nginx, in-process


def test_routes_by_host_and_unknown_hosts_get_404(proxied: Services, upstream_factory) -> None:
    port = proxied.settings.http_listen[1]
    for name in ("alpha", "beta"):
        proxied.apps.create(name, "admin")
    urls = proxy.publish(proxied, "alpha", [upstream_factory("alpha")])
    proxy.publish(proxied, "beta", [upstream_factory("beta")])
    assert urls == [f"http://alpha.localhost:{port}"]
    assert proxy.app_urls(proxied, "beta") == [f"http://beta.localhost:{port}"]
    assert app_of(port, "alpha.localhost") == "alpha"
    assert app_of(port, "beta.localhost") == "beta"

    status, body, _ = get(port, "other.localhost")
    assert status == 404 and b"no app is configured" in body
    status, _, _ = get(port, "127.0.0.1")
    assert status == 404

    # Headers a real app relies on.
    _, body, _ = get(port, "alpha.localhost", "/x?y=1")
    seen = json.loads(body)
    assert seen["path"] == "/x?y=1"
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["host"] == "alpha.localhost"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-port"] == str(port)

    # An app with no live containers falls to the 404 server, never to another app.
    proxy.unpublish(proxied, "alpha")
    assert get(port, "alpha.localhost")[0] == 404
    assert app_of(port, "beta.localhost") == "beta"


def test_round_robin_over_scaled_upstreams(proxied: Services, upstream_factory) -> None:
    port = proxied.settings.http_listen[1]
    proxied.apps.create("web", "admin")
    proxy.publish(proxied, "web", [upstream_factory("one"), upstream_factory("two")])
    seen = {app_of(port, "web.localhost") for _ in range(10)}
    assert seen == {"one", "two"}


def test_broken_config_is_refused_while_traffic_flows(proxied: Services, upstream_factory) -> None:
    port = proxied.settings.http_listen[1]
    proxied.apps.create("web", "admin")
    good = upstream_factory("web")
    proxy.publish(proxied, "web", [good])
    conf = Router(proxied).paths.conf
    before = conf.read_text()

    failures: list[object] = []
    done = threading.Event()
    count = 0

    def load() -> None:
        nonlocal count
        while not done.is_set():
            try:
                status, _, _ = get(port, "web.localhost")
                if status != 200:
                    failures.append(status)
            except OSError as exc:
                failures.append(exc)
            count += 1

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(0.2)
        # A syntactically valid host name that nginx refuses: it does not resolve.
        with pytest.raises(DockyardError) as err:
            proxy.publish(proxied, "web", ["no-such-host.invalid:80"])
        assert "host not found" in err.value.message
        time.sleep(0.2)
    finally:
        done.set()
        worker.join()
    assert failures == [] and count > 10
    assert conf.read_text() == before
    # The refused change was rolled back in state too, so the next render is the good one.
    assert Router(proxied).store.upstreams(proxied.apps.get("web")) == [good]
    assert app_of(port, "web.localhost") == "web"


def test_switching_upstreams_under_load_drops_nothing(proxied: Services) -> None:
    """What a deploy does to the proxy, ten times over: publish the new container, then
    retire the old one at once. Not one request may fail."""
    from bench.loadgen import BackgroundLoad

    port = proxied.settings.http_listen[1]
    proxied.apps.create("live", "admin")

    def upstream(label: str) -> http.server.ThreadingHTTPServer:
        handler = type(f"Echo_{label}", (_EchoHandler,), {"label": label})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return srv

    current = upstream("v0")
    proxy.publish(proxied, "live", [f"127.0.0.1:{current.server_address[1]}"])
    with BackgroundLoad(port, "live.localhost", concurrency=4) as load:
        for release in range(1, 11):
            new = upstream(f"v{release}")
            proxy.publish(proxied, "live", [f"127.0.0.1:{new.server_address[1]}"])
            current.shutdown()
            current.server_close()
            current = new
            time.sleep(0.05)
    result = load.result
    assert result is not None and result.sent > 100
    assert result.failed == 0, result.summary()
    print(result.summary())
    assert app_of(port, "live.localhost") == "v10"
    current.shutdown()
    current.server_close()


def _ws_accept(key: str) -> str:
    magic = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    return base64.b64encode(hashlib.sha1((key + magic).encode()).digest()).decode()  # noqa: S324


def _read_headers(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _ws_echo_upstream() -> tuple[str, socket.socket]:
    """A one-connection WebSocket echo server on a raw socket."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            request = _read_headers(conn).decode()
            key = next(
                ln.split(":", 1)[1].strip()
                for ln in request.split("\r\n")
                if ln.lower().startswith("sec-websocket-key:")
            )
            conn.sendall(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Accept: {_ws_accept(key)}\r\n\r\n"
                ).encode()
            )
            header = conn.recv(2)
            length = header[1] & 0x7F
            mask = conn.recv(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(conn.recv(length)))
            conn.sendall(bytes([0x81, len(payload)]) + payload)

    threading.Thread(target=serve, daemon=True).start()
    return f"127.0.0.1:{listener.getsockname()[1]}", listener


def test_websocket_upgrade_through_the_proxy(proxied: Services) -> None:
    port = proxied.settings.http_listen[1]
    proxied.apps.create("ws", "admin")
    address, listener = _ws_echo_upstream()
    proxy.publish(proxied, "ws", [address])
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, listener:
        sock.sendall(
            (
                "GET /chat HTTP/1.1\r\nHost: ws.localhost\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = _read_headers(sock).decode()
        assert response.startswith("HTTP/1.1 101")
        assert _ws_accept(key) in response
        mask = os.urandom(4)
        payload = b"hello through nginx"
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        frame = sock.recv(2 + len(payload))
        assert frame[0] == 0x81 and frame[2:] == payload


def test_body_size_limit_and_validation(proxied: Services, upstream_factory) -> None:
    from dockyard.access import LOCAL_ADMIN
    from dockyard.context import Context
    from dockyard.output import Output
    from dockyard.registry import dispatch

    port = proxied.settings.http_listen[1]
    proxied.apps.create("up", "admin")
    proxy.publish(proxied, "up", [upstream_factory("up")])
    out, err = io.BytesIO(), io.BytesIO()
    ctx = Context(proxied, LOCAL_ADMIN, io.BytesIO(), out, err, Output(out, err), local=True)
    assert dispatch(ctx, ["proxy:set", "up", "client-max-body-size", "1k;"]) == 1
    assert b"Invalid client-max-body-size" in err.getvalue()
    assert dispatch(ctx, ["proxy:set", "up", "client-max-body-size", "1k"]) == 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/", body=b"x" * 4096, headers={"Host": "up.localhost"})
    assert conn.getresponse().status == 413
    conn.close()
    # Within the limit, a body larger than nginx's memory buffer goes through its temp dir.
    assert dispatch(ctx, ["proxy:set", "up", "client-max-body-size", "2m"]) == 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/", body=b"x" * 500_000, headers={"Host": "up.localhost"})
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["received"] == 500_000
    conn.close()


# ---------------------------------------------------------------- end to end: dockyard serve


def _services_for(server) -> Services:
    """The server's data dir, as the deployer inside it sees it."""
    return Services(Settings(data_dir=server.data_dir, http_listen=("127.0.0.1", server.http_port)))


@pytest.fixture
def served(server) -> Iterator:
    """`server`, plus stopping the nginx it started (nginx outlives Dockyard by design)."""
    try:
        yield server
    finally:
        stop_server(server)
        NginxMaster(Router(_services_for(server)).paths).stop()


def _wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_domains_commands_over_ssh(served, upstream_factory) -> None:
    srv = served
    for app in ("shop", "blog"):
        assert srv.ssh("apps:create", app).returncode == 0
    services = _services_for(srv)
    proxy.publish(services, "shop", [upstream_factory("shop")])
    proxy.publish(services, "blog", [upstream_factory("blog")])
    port = srv.http_port

    res = srv.ssh("domains:add", "shop", "shop.example.test", "www.shop.example.test")
    assert res.returncode == 0, res.stderr
    assert "-----> Added shop.example.test to shop" in res.stdout
    assert app_of(port, "shop.example.test") == "shop"
    assert app_of(port, "www.shop.example.test") == "shop"

    res = srv.ssh("domains:add", "blog", "shop.example.test")
    assert res.returncode != 0 and "already used by app shop" in res.stderr
    for bad in ("http://x.example.test", "x.example.test/path", "two words"):
        res = srv.ssh("domains:add", "blog", bad)
        assert res.returncode != 0 and " !     Invalid domain" in res.stderr

    report = json.loads(srv.ssh("domains:report", "shop", "--format", "json").stdout)
    assert report["domains-app-vhosts"] == ["shop.example.test", "www.shop.example.test"]
    assert srv.ssh("urls", "shop").stdout.split() == [
        f"http://shop.localhost:{port}",
        f"http://shop.example.test:{port}",
        f"http://www.shop.example.test:{port}",
    ]

    assert srv.ssh("domains:remove", "shop", "shop.example.test").returncode == 0
    assert get(port, "shop.example.test")[0] == 404
    assert app_of(port, "www.shop.example.test") == "shop"
    assert srv.ssh("domains:clear", "shop").returncode == 0
    assert get(port, "www.shop.example.test")[0] == 404

    # Non-admins may not change the global domain.
    res = srv.ssh("domains:set-global", "apps.test", key=srv.user_key)
    assert res.returncode != 0
    assert srv.ssh("domains:set-global", "apps.test").returncode == 0
    assert app_of(port, "blog.apps.test") == "blog"
    assert get(port, "blog.localhost")[0] == 404

    # A renamed app answers at its new name only (re-rendered once the rename commits).
    assert srv.ssh("apps:rename", "shop", "store").returncode == 0
    _wait_for(lambda: get(port, "store.apps.test")[0] == 200, 10, "renamed route")
    assert app_of(port, "store.apps.test") == "shop"
    assert get(port, "shop.apps.test")[0] == 404

    # Destroying an app takes its routes away.
    assert srv.ssh("apps:destroy", "blog", "--force").returncode == 0
    assert get(port, "blog.apps.test")[0] == 404


def _self_signed(hostname: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_certs_https_with_sni_and_redirect(served, upstream_factory) -> None:
    srv = served
    assert srv.ssh("apps:create", "secure").returncode == 0
    services = _services_for(srv)
    proxy.publish(services, "secure", [upstream_factory("secure")])
    crt, key = _self_signed("secure.localhost")
    _, other_key = _self_signed("secure.localhost")

    res = srv.ssh("certs:add", "secure", input=_tar({"server.crt": crt, "server.key": other_key}))
    assert res.returncode != 0 and "does not match" in res.stderr
    res = srv.ssh("certs:add", "secure", "/etc/passwd", "/etc/shadow")
    assert res.returncode != 0 and "tar on stdin" in res.stderr

    res = srv.ssh("certs:add", "secure", input=_tar({"server.crt": crt, "server.key": key}))
    assert res.returncode == 0, res.stderr
    report = json.loads(srv.ssh("certs:report", "secure", "--format", "json").stdout)
    assert report["ssl-enabled"] is True and report["ssl-hostnames"] == ["secure.localhost"]
    cert_dir = Path(report["ssl-dir"])
    assert (cert_dir / "server.key").stat().st_mode & 0o777 == 0o600

    proxy_report = json.loads(srv.ssh("proxy:report", "secure", "--format", "json").stdout)
    https_port = int(proxy_report["proxy-https-listen"].rsplit(":", 1)[1])
    assert proxy_report["proxy-urls"] == [f"https://secure.localhost:{https_port}"]

    status, _, headers = get(srv.http_port, "secure.localhost", "/a?b=c")
    assert status == 301
    assert headers["Location"] == f"https://secure.localhost:{https_port}/a?b=c"

    context = ssl.create_default_context(cadata=crt.decode())
    raw = socket.create_connection(("127.0.0.1", https_port), timeout=10)
    with context.wrap_socket(raw, server_hostname="secure.localhost") as tls:
        conn = http.client.HTTPConnection("secure.localhost")
        conn.sock = tls
        conn.request("GET", "/", headers={"Host": "secure.localhost"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
    assert resp.status == 200 and body["app"] == "secure"
    assert body["headers"]["X-Forwarded-Proto"] == "https"

    # An unknown name gets no certificate at all.
    raw = socket.create_connection(("127.0.0.1", https_port), timeout=10)
    with pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname="other.localhost").close()
    raw.close()

    assert srv.ssh("certs:remove", "secure").returncode == 0
    assert not (cert_dir / "server.key").exists()
    assert app_of(srv.http_port, "secure.localhost") == "secure"


def test_nginx_is_adopted_across_restart_and_restarted_when_killed(
    served, upstream_factory
) -> None:
    srv = served
    assert srv.ssh("apps:create", "keep").returncode == 0
    services = _services_for(srv)
    proxy.publish(services, "keep", [upstream_factory("keep")])
    master = NginxMaster(Router(services).paths)
    pid = master.pid()
    assert pid is not None

    stop_server(srv)
    # Dockyard is down; traffic is not.
    assert app_of(srv.http_port, "keep.localhost") == "keep"
    again = start_server(
        srv.data_dir, srv.keys_dir, srv.admin_key, srv.user_key, http_port=srv.http_port
    )
    srv.process = again.process
    srv.port = again.port
    assert srv.ssh("apps:list").returncode == 0
    assert master.pid() == pid
    assert app_of(srv.http_port, "keep.localhost") == "keep"

    os.kill(pid, signal.SIGKILL)
    new_pid = _wait_for(lambda: master.pid() not in (None, pid) and master.pid(), 20, "restart")
    assert new_pid != pid
    assert app_of(srv.http_port, "keep.localhost") == "keep"


def test_real_container_through_the_proxy(served, docker_engine) -> None:
    srv = served
    assert srv.ssh("apps:create", "box").returncode == 0
    container = docker_engine.containers.run(
        "dockyard-base/busybox:latest",
        ["sh", "-c", "mkdir -p /www && echo busybox-ok > /www/index.html && "
                     "exec httpd -f -p 8080 -h /www"],
        detach=True, ports={"8080/tcp": ("127.0.0.1", None)}, labels={"dockyard.test": "proxy"},
    )  # fmt: skip
    try:
        container.reload()
        host_port = container.ports["8080/tcp"][0]["HostPort"]
        proxy.publish(_services_for(srv), "box", [f"127.0.0.1:{host_port}"])

        def answered() -> bytes | None:
            status, body, _ = get(srv.http_port, "box.localhost")
            return body if status == 200 else None

        assert _wait_for(answered, 10, "busybox httpd") == b"busybox-ok\n"
    finally:
        container.remove(force=True)


def test_local_cli_certs_add_from_files(served, upstream_factory, tmp_path: Path) -> None:
    srv = served
    assert srv.ssh("apps:create", "files").returncode == 0
    proxy.publish(_services_for(srv), "files", [upstream_factory("files")])
    crt, key = _self_signed("files.localhost")
    (tmp_path / "c.crt").write_bytes(crt)
    (tmp_path / "c.key").write_bytes(key)
    res = srv.cli("certs:add", "files", str(tmp_path / "c.crt"), str(tmp_path / "c.key"))
    assert res.returncode == 0, res.stderr
    assert get(srv.http_port, "files.localhost")[0] == 301
    res = srv.cli("proxy:build-config", "--all")
    assert res.returncode == 0, res.stderr
    assert get(srv.http_port, "files.localhost")[0] == 301


def test_proxy_set_global_takes_the_place_of_the_app(shared_server: DockyardServer) -> None:
    srv = shared_server
    refused = srv.ssh("proxy:set", "--global", "mode", "system", key=srv.user_key)
    assert refused.returncode != 0 and "Only an admin key" in refused.stderr
    bad = srv.ssh("proxy:set", "--global", "mode", "sideways")
    assert bad.returncode != 0 and "mode is one of" in bad.stderr
    unset = srv.ssh("proxy:set", "--global", "mode")
    assert unset.returncode == 0, unset.stderr
