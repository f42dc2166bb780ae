"""Let's Encrypt end to end against a real ACME server on loopback (Debian's pebble, with
pebble-challtestsrv as its DNS), a real `dockyard serve`, its real nginx, the real OpenSSH
client and real curl; plus unit tests of the parsers, the renewal rule and the rendering.

Every process, container and directory a test starts is removed when it ends.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import io
import json
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import proxy
from dockyard.access import Identity
from dockyard.context import Context
from dockyard.errors import UsageError
from dockyard.output import Output
from dockyard.properties import Level
from dockyard.registry import COMMANDS, dispatch
from dockyard.services import Services
from dockyard.settings import Settings
from proxy import acme_client
from proxy import letsencrypt as le
from proxy.render import AppRoute, CertPaths, Hsts, Listen, render_server_block
from proxy.router import Router
from tests.conftest import (
    DockyardServer,
    _provision,
    free_port,
    remove_leftovers_of,
    require_tool,
    start_server,
    stop_server,
)
from tests.pebble import Pebble, start_pebble, stop_pebble

# ---------------------------------------------------------------- unit: settings parsers


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A temp dir removed when the test ends (pytest's tmp_path keeps the last three runs)."""
    with tempfile.TemporaryDirectory(prefix="dockyard-le-unit-") as directory:
        yield Path(directory)


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("production", "production"),
        ("staging", "staging"),
        ("https://acme.example.com/directory", "https://acme.example.com/directory"),
        ("https://ACME.Example.com:14000/dir", "https://acme.example.com:14000/dir"),
        ("https://127.0.0.1:14000/dir", "https://127.0.0.1:14000/dir"),
        ("https://[::1]:14000/dir", "https://[::1]:14000/dir"),
        ("https://acme.example.com", "https://acme.example.com/"),
    ],
)
def test_server_values_accepted(value: str, stored: str) -> None:
    assert le.parse_server(value) == stored


@pytest.mark.parametrize(
    "value",
    [
        "http://acme.example.com/directory",  # no plain HTTP: the account key signs over it
        "file:///etc/passwd",
        "https://user:pw@acme.example.com/dir",
        "https://acme.example.com/dir?x=1",
        "https://acme.example.com/dir#frag",
        "https://acme.example.com/di r",
        "https://acme.example.com/dir\nHost: evil",
        "https://acme.example.com:99999/dir",
        "https://exa_mple.com/dir",
        "https:///dir",
        "ftp://acme.example.com/",
        "https://acme.example.com/" + "a" * 600,
        "",
        "Production",
    ],
)
def test_server_values_refused(value: str) -> None:
    with pytest.raises(UsageError):
        le.parse_server(value)


def test_email_renew_days_and_bool_parsers() -> None:
    assert le.parse_email("Ops+le@Example.COM") == "Ops+le@example.com"
    for bad in ("ops", "ops@", "@example.com", "ops@localhost", "a b@example.com",
                'x"@example.com', "ops@example.com\n", "ops@exa mple.com", "x" * 65 + "@a.io"):
        with pytest.raises(UsageError):
            le.parse_email(bad)
    assert le.parse_renew_days("30") == "30" and le.parse_renew_days("3650") == "3650"
    for bad in ("0", "3651", "-1", "1.5", "30 ", "", "١٢"):  # the last: Arabic-Indic digits
        with pytest.raises(UsageError):
            le.parse_renew_days(bad)
    assert le.AUTO.checked("true") == "true"
    with pytest.raises(UsageError):
        le.AUTO.checked("yes")


def test_ca_file_parser_reads_only_pem_and_never_echoes(scratch: Path) -> None:
    secret = scratch / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT\n")
    for bad in (str(secret), "relative/path.pem", str(scratch), "/etc/../etc/passwd",
                str(scratch / "missing.pem"), "/etc/ssl/certs/x;rm.pem"):  # fmt: skip
        with pytest.raises(UsageError) as err:
            le.parse_ca_file(bad)
        assert "TOP-SECRET" not in err.value.message
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    assert le.parse_ca_file(str(bundle)) == str(bundle)


def test_settings_table_declares_every_setting_once() -> None:
    table = le.LETSENCRYPT.properties
    assert list(table) == ["email", "server", "server-ca-file", "renew-days", "auto"]
    assert table["server-ca-file"].levels == Level.GLOBAL
    assert table["server-ca-file"].needs_admin("/etc/ssl/certs/ca-certificates.crt")
    assert not table["server"].needs_admin("staging")
    assert table["server"].needs_admin("https://127.0.0.1:2375/")
    assert not any(s.secret for s in table.values())


def test_renewal_window_and_backoff(scratch: Path) -> None:
    services = Services(Settings(data_dir=scratch / "data"))
    app = services.apps.create("w", "admin")
    now = datetime.now(UTC)

    def state(days: float) -> le.LeState:
        return le.LeState(app_id=app.id, not_before=now.isoformat(),
                          not_after=(now + timedelta(days=days)).isoformat())  # fmt: skip

    assert le.renew_window(services, app, state(90)) == timedelta(days=30)
    assert le.renew_window(services, app, state(6)) == timedelta(days=2)  # short-lived: a third
    assert le.renew_window(services, app, state(5 * 365)) == timedelta(days=30)
    services.properties.set(app, "letsencrypt.renew-days", "3650")
    assert le.renew_window(services, app, state(90)) == timedelta(days=3650)
    delays = [le.backoff(n, 10.0) for n in (1, 2, 3, 6, 50)]
    assert 10 <= delays[0] <= 12.5 and 20 <= delays[1] <= 25 and 40 <= delays[2] <= 50
    assert 240 <= delays[3] <= 300 and 240 <= delays[4] <= 300  # capped at 24 intervals


def test_doctor_finds_failing_renewals_and_open_keys(scratch: Path) -> None:
    services = Services(Settings(data_dir=scratch / "data"))
    assert [f.ok for f in le.check_renewals(services)] == [True]
    app = services.apps.create("w", "admin")
    le.LeStore(services).save(le.LeState(app_id=app.id, enabled=True, failures=2,
                                         last_error="Validation failed for w.localhost"))
    key = le.accounts_dir(services) / "abc" / "account.key"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"-")
    key.chmod(0o644)
    messages = [f.message for f in le.check_renewals(services) if not f.ok]
    assert any(m.startswith("w: 2 failed attempt(s)") and "Validation failed" in m
               for m in messages)  # fmt: skip
    assert any(str(key) in m and "open to others" in m for m in messages)


def test_render_answers_challenges_and_redirects_the_rest() -> None:
    root = Path("/d/nginx/acme")
    plain = render_server_block(
        AppRoute("web", ["web.localhost"], ["127.0.0.1:1"], acme_root=root),
        Listen(http=("127.0.0.1", 80)),
    )
    assert "location ^~ /.well-known/acme-challenge/ {" in plain
    assert f"root {root};" in plain and "try_files $uri =404;" in plain
    assert plain.index("acme-challenge") < plain.index("location / {")

    tls = render_server_block(
        AppRoute("web", ["web.localhost"], ["127.0.0.1:1"],
                 cert=CertPaths(Path("/c.crt"), Path("/c.key")), acme_root=root,
                 hsts=Hsts(max_age=300, include_subdomains=False)),
        Listen(http=("127.0.0.1", 80), https=("127.0.0.1", 443)),
    )  # fmt: skip
    http_block = tls[tls.index("listen 127.0.0.1:80;"): tls.index("listen 127.0.0.1:443 ssl;")]
    assert "acme-challenge" in http_block and "return 301 https://$host$request_uri;" in http_block
    # The redirect must sit inside a location, or it would run before the challenge one.
    assert http_block.index("location / {") < http_block.index("return 301")
    assert 'add_header Strict-Transport-Security "max-age=300" always;' in tls
    no_hsts = render_server_block(
        AppRoute("web", ["web.localhost"], ["127.0.0.1:1"],
                 cert=CertPaths(Path("/c.crt"), Path("/c.key"))),
        Listen(http=("127.0.0.1", 80), https=("127.0.0.1", 443)),
    )  # fmt: skip
    assert "Strict-Transport-Security" not in no_hsts


def test_webroot_refuses_tokens_that_are_not_base64url(scratch: Path) -> None:
    webroot = acme_client.Webroot(scratch / "challenges")
    for token in ("../../certs/1/server.key", "a/b" * 8, "x" * 8, "tok en" * 4, ""):
        with pytest.raises(acme_client.AcmeError):
            webroot.publish(token, "value")
    token = "A1b2_C3d4-E5f6G7h8"
    webroot.publish(token, "key-authorization")
    assert (scratch / "challenges" / token).read_text() == "key-authorization"
    webroot.withdraw(token)
    assert not (scratch / "challenges" / token).exists()


def test_acme_errors_never_echo_a_response_body() -> None:
    text = acme_client.clean("line one\nline\x1b[31m two" + "x" * 1000, 50)
    assert "\n" not in text and "\x1b" not in text and len(text) == 50


# ---------------------------------------------------------------- end to end: fixtures


@dataclass
class Upstream:
    """An app stand-in: answers every path with its label, and remembers what it was asked."""

    label: str
    server: http.server.ThreadingHTTPServer
    paths: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"


def make_upstream(label: str) -> Upstream:
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.path)
            body = json.dumps({"app": label, "path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return Upstream(label, srv, seen)


@dataclass
class Env:
    pebble: Pebble
    server: DockyardServer
    upstreams: list[Upstream] = field(default_factory=list)

    def services(self) -> Services:
        return Services(Settings(data_dir=self.server.data_dir,
                                 http_listen=("127.0.0.1", self.server.http_port)))  # fmt: skip

    def deploy(self, app: str, key: Path | None = None) -> Upstream:
        """Create `app` and route it to a fresh upstream, as a deploy's publish does."""
        res = self.server.ssh("apps:create", app, key=key)
        assert res.returncode == 0, res.stderr
        upstream = make_upstream(app)
        self.upstreams.append(upstream)
        proxy.publish(self.services(), app, [upstream.address])
        return upstream

    def https_port(self) -> int:
        # Recorded by the server at its start, as every render reads it.
        return Router(self.services()).https_listen()[1]

    def curl(self, host: str, path: str = "/", scheme: str = "https") -> tuple[int, str, str]:
        """(status, body, stderr) from real curl, verifying the served chain against
        pebble's root only (so the intermediate must come from nginx)."""
        port = self.https_port() if scheme == "https" else self.server.http_port
        proc = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "--resolve", f"{host}:{port}:127.0.0.1",
             "--cacert", str(self.pebble.root_pem), "-o", "-", "-w", "\n%{http_code}",
             f"{scheme}://{host}:{port}{path}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        body, _, status = proc.stdout.rpartition("\n")
        return int(status or 0), body, proc.stderr

    def headers(self, host: str, scheme: str = "https") -> str:
        port = self.https_port() if scheme == "https" else self.server.http_port
        proc = subprocess.run(
            ["curl", "-sS", "-D", "-", "-o", "/dev/null", "--max-time", "10",
             "--resolve", f"{host}:{port}:127.0.0.1", "--cacert", str(self.pebble.root_pem),
             f"{scheme}://{host}:{port}/"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return proc.stdout

    def served_fingerprint(self, host: str) -> str:
        context = ssl.create_default_context(cafile=str(self.pebble.root_pem))
        with socket.create_connection(("127.0.0.1", self.https_port()), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
        return hashlib.sha256(der).hexdigest()

    def listing(self, key: Path | None = None) -> dict[str, dict]:
        res = self.server.ssh("letsencrypt:list", "--format", "json", key=key)
        assert res.returncode == 0, res.stderr
        return {row["app"]: row for row in json.loads(res.stdout)}


def fingerprint_hex(info_fingerprint: str) -> str:
    return info_fingerprint.replace(":", "")


def start_env(tmp: Path, interval: str = "1") -> Env:
    """pebble, then a server whose HTTP port is pebble's validation port, told to use it."""
    for tool in ("pebble", "pebble-challtestsrv", "curl", "ssh"):
        require_tool(tool)
    pebble = start_pebble(tmp / "pebble")
    try:
        data_dir, keys_dir, admin_key, user_key = _provision(tmp)
        srv = start_server(
            data_dir, keys_dir, admin_key, user_key, http_port=pebble.http_port,
            extra_env={le.ENV_CHECK_INTERVAL: interval},
        )  # fmt: skip
    except BaseException:
        stop_pebble(pebble)
        raise
    env = Env(pebble, srv)
    for pair in (("server", pebble.directory_url), ("server-ca-file", str(pebble.api_ca_file)),
                 ("email", "ops@example.com")):  # fmt: skip
        res = srv.ssh("letsencrypt:set", "--global", *pair)
        assert res.returncode == 0, res.stderr
    return env


def stop_env(env: Env) -> None:
    stop_server(env.server)
    remove_leftovers_of(env.server.data_dir)
    for upstream in env.upstreams:
        upstream.server.shutdown()
        upstream.server.server_close()
    stop_pebble(env.pebble)


@contextmanager
def fresh_env(interval: str = "1") -> Iterator[tuple[Env, Path]]:
    tmp = Path(tempfile.mkdtemp(prefix="dockyard-le-"))
    try:
        env = start_env(tmp, interval)
        try:
            yield env, tmp
        finally:
            stop_env(env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    """One pebble and one server for the module; each test uses its own apps."""
    with fresh_env() as (environment, _):
        yield environment


def ok(res) -> str:
    assert res.returncode == 0, f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    return res.stdout


def http_get(port: int, host: str, path: str) -> tuple[int, bytes, dict[str, str]]:
    """A raw request: the path goes out exactly as given (no client-side normalising)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def cert_file(env: Env, app: str) -> Path:
    report = json.loads(ok(env.server.ssh("certs:report", app, "--format", "json")))
    return Path(report["ssl-dir"]) / "server.crt"


class HttpsLoad:
    """A few client threads, each opening a new verified TLS connection per request (so
    every request meets whichever nginx workers accept at that moment), counting answers
    that are not the app's 200 as failures. Bounded: `threads` in flight, a pause between."""

    def __init__(self, env: Env, host: str, app: str, threads: int = 4) -> None:
        self.port = env.https_port()
        self.host, self.app, self.threads = host, app, threads
        self.context = ssl.create_default_context(cafile=str(env.pebble.root_pem))
        self.sent = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def _one(self) -> str | None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
                with self.context.wrap_socket(raw, server_hostname=self.host) as tls:
                    conn = http.client.HTTPConnection(self.host)
                    conn.sock = tls
                    conn.request("GET", "/", headers={"Host": self.host})
                    resp = conn.getresponse()
                    body = resp.read()
            if resp.status != 200 or json.loads(body)["app"] != self.app:
                return f"status {resp.status}"
        except (OSError, ValueError) as exc:
            return repr(exc)
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            failure = self._one()
            with self._lock:
                self.sent += 1
                if failure:
                    self.failures.append(failure)
            time.sleep(0.005)

    def __enter__(self) -> HttpsLoad:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)


# ---------------------------------------------------------------- end to end: tests


def test_challenges_answered_from_the_data_dir_before_any_certificate(env: Env) -> None:
    upstream = env.deploy("plain")
    challenge_dir = env.server.data_dir / "nginx" / "acme" / ".well-known" / "acme-challenge"
    token = "Test_token-0123456789abcdef"
    (challenge_dir / token).write_text("token.thumbprint")
    try:
        status, body, _ = http_get(env.server.http_port, "plain.localhost",
                                   f"/.well-known/acme-challenge/{token}")  # fmt: skip
        assert (status, body) == (200, b"token.thumbprint")
        status, _, _ = http_get(env.server.http_port, "plain.localhost",
                                "/.well-known/acme-challenge/no-such-token-0123456789")  # fmt: skip
        assert status == 404
    finally:
        (challenge_dir / token).unlink()
    assert upstream.paths == []  # never proxied to the app
    assert http_get(env.server.http_port, "plain.localhost", "/x")[0] == 200
    assert upstream.paths == ["/x"]


def test_issue_for_two_domains_serves_the_full_chain(env: Env) -> None:
    srv = env.server
    upstream = env.deploy("shop")
    ok(srv.ssh("domains:add", "shop", "www.shop.test"))
    out = ok(srv.ssh("letsencrypt:enable", "shop"))
    assert "=====> Enabling letsencrypt for shop" in out
    assert "-----> Certificate installed for shop" in out
    for host in ("shop.localhost", "www.shop.test"):
        status, body, err = env.curl(host)
        assert status == 200 and json.loads(body)["app"] == "shop", err

    # The served file is the full chain (leaf, then pebble's intermediate) for both names.
    crt = cert_file(env, "shop")
    chain = x509.load_pem_x509_certificates(crt.read_bytes())
    assert len(chain) == 2
    assert "Pebble Intermediate" in chain[0].issuer.rfc4514_string()
    assert chain[0].issuer == chain[1].subject
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["shop.localhost", "www.shop.test"]
    assert (crt.parent / "server.key").stat().st_mode & 0o777 == 0o600
    account_keys = list((srv.data_dir / "letsencrypt" / "accounts").glob("*/account.key"))
    assert account_keys and all(k.stat().st_mode & 0o777 == 0o600 for k in account_keys)

    # Plain HTTP redirects; challenge paths stay with nginx, also when they try to climb out.
    https_port = env.https_port()
    status, _, headers = http_get(srv.http_port, "shop.localhost", "/a?b=c")
    assert status == 301 and headers["Location"] == f"https://shop.localhost:{https_port}/a?b=c"
    seen = len(upstream.paths)
    for path in ("/.well-known/acme-challenge/unknown-token-0123456789",
                 "/.well-known/acme-challenge/../../certs/1/server.key",
                 "/.well-known/acme-challenge/..%2f..%2fcerts%2f1%2fserver.key",
                 "/.well-known/acme-challenge/%2e%2e/%2e%2e/certs/1/server.key",
                 "/.well-known/acme-challenge/../../../letsencrypt/accounts"):  # fmt: skip
        status, body, _ = http_get(srv.http_port, "shop.localhost", path)
        assert status in (301, 400, 404), (path, status)
        assert b"PRIVATE KEY" not in body
    assert len(upstream.paths) == seen

    row = env.listing()["shop"]
    assert row["domains"] == ["shop.localhost", "www.shop.test"] and row["status"] == "ok"
    assert row["expires_at"] and row["last_renewal"] and row["failures"] == 0
    assert ok(srv.ssh("letsencrypt:active", "shop")).strip() == "true"
    text = ok(srv.ssh("letsencrypt:list"))
    assert "=====> Let's Encrypt certificates" in text and "shop.localhost www.shop.test" in text
    report = json.loads(ok(srv.ssh("letsencrypt:report", "shop", "--format", "json")))
    assert report["letsencrypt-active"] is True
    assert report["letsencrypt-computed-email"] == "ops@example.com"
    assert report["letsencrypt-computed-server"] == env.pebble.directory_url

    # HSTS: on by default once there is a certificate; off; a shorter max-age.
    assert "strict-transport-security: max-age=15724800; includesubdomains" in \
        env.headers("shop.localhost").lower()
    ok(srv.ssh("proxy:set", "shop", "hsts", "false"))
    assert "strict-transport-security" not in env.headers("shop.localhost").lower()
    ok(srv.ssh("proxy:set", "shop", "hsts", "true"))
    ok(srv.ssh("proxy:set", "shop", "hsts-max-age", "300"))
    assert "strict-transport-security: max-age=300;" in env.headers("shop.localhost").lower()
    bad = srv.ssh("proxy:set", "shop", "hsts-max-age", "1e9")
    assert bad.returncode != 0 and bad.stderr.startswith(" !     hsts-max-age takes a whole number")

    # A domain added to an app with Let's Encrypt enabled is covered at once.
    out = ok(srv.ssh("domains:add", "shop", "extra.shop.test"))
    assert "Let's Encrypt is enabled for shop: reissuing (not yet covering extra.shop.test)" in out
    status, body, err = env.curl("extra.shop.test")
    assert status == 200, err
    assert env.listing()["shop"]["renewals"] == 1


def test_renewal_swaps_certificates_with_no_failed_request(env: Env) -> None:
    srv = env.server
    env.deploy("live")
    ok(srv.ssh("letsencrypt:enable", "live"))
    first = env.served_fingerprint("live.localhost")
    with HttpsLoad(env, "live.localhost", "live") as load:
        time.sleep(0.3)
        out = ok(srv.ssh("letsencrypt:auto-renew", "live", "--force"))
        assert "Renewing live: forced" in out
        forced = env.served_fingerprint("live.localhost")
        assert forced != first
        # Not due: nothing happens without --force.
        assert "Nothing to renew" in ok(srv.ssh("letsencrypt:auto-renew", "live"))
        # renew-days beyond pebble's five-year lifetime: due now, by command…
        ok(srv.ssh("letsencrypt:set", "live", "renew-days", "3650"))
        out = ok(srv.ssh("letsencrypt:auto-renew", "live"))
        assert "Renewing live: expires" in out
        by_days = env.served_fingerprint("live.localhost")
        assert by_days != forced
        # …and by the server's background renewal (it checks every second here).
        before = env.listing()["live"]["renewals"]
        wait_for(lambda: env.listing()["live"]["renewals"] > before, 30, "background renewal")
        ok(srv.ssh("letsencrypt:set", "live", "renew-days"))
        time.sleep(0.3)
    assert load.sent >= 50, load.sent
    assert load.failures == [], load.failures[:5]
    events = ok(srv.ssh("events", "--format", "json"))
    renewals = [e for e in json.loads(events) if e["kind"] == "letsencrypt:renew"]
    assert any(e["actor"] == "letsencrypt" and e["app"] == "live" for e in renewals)
    status, _, err = env.curl("live.localhost")
    assert status == 200, err


def test_unroutable_name_fails_validation_and_leaves_plain_http(env: Env) -> None:
    srv = env.server
    env.pebble.add_a("nowhere.lost.test", "127.0.0.2")  # nothing of ours listens there
    env.deploy("lost")
    ok(srv.ssh("domains:add", "lost", "nowhere.lost.test"))
    res = srv.ssh("letsencrypt:enable", "lost")
    assert res.returncode != 0
    assert " !     No certificate for lost: Validation failed for nowhere.lost.test:" in res.stderr
    assert "connection" in res.stderr.lower()  # pebble's word: connection refused
    assert " !     lost keeps serving plain HTTP" in res.stderr
    status, body, _ = http_get(srv.http_port, "lost.localhost", "/")
    assert status == 200 and json.loads(body)["app"] == "lost"
    assert ok(srv.ssh("letsencrypt:active", "lost")).strip() == "false"
    row = env.listing()["lost"]
    assert row["status"] == "failing" and "nowhere.lost.test" in row["last_error"]
    listing = srv.ssh("letsencrypt:list")
    assert " !     lost: Validation failed for nowhere.lost.test" in listing.stderr
    doctor = srv.ssh("doctor")
    assert doctor.returncode != 0
    assert "BAD letsencrypt: lost: " in doctor.stdout and "nowhere.lost.test" in doctor.stdout
    events = json.loads(ok(srv.ssh("events", "--format", "json")))
    assert any(e["kind"] == "letsencrypt:failed" and e["app"] == "lost" for e in events)

    # The name is dropped: the failure is resolved, and the next renewal issues.
    ok(srv.ssh("domains:remove", "lost", "nowhere.lost.test"))
    wait_for(lambda: env.listing()["lost"]["status"] == "ok", 30, "background issuance")
    status, _, err = env.curl("lost.localhost")
    assert status == 200, err


def test_failed_renewal_keeps_the_working_certificate(env: Env) -> None:
    srv = env.server
    env.deploy("steady")
    ok(srv.ssh("letsencrypt:enable", "steady"))
    working = env.served_fingerprint("steady.localhost")
    env.pebble.add_a("broken.steady.test", "127.0.0.2")
    res = srv.ssh("domains:add", "steady", "broken.steady.test")
    assert res.returncode == 0, res.stderr  # the domain was added; the reissue is what failed
    assert " !     No certificate for steady: Validation failed for broken.steady.test" in (
        res.stderr
    )
    assert " !     steady keeps its current certificate (expires " in res.stderr
    # The background keeps trying, backing off, and the working certificate keeps serving.
    wait_for(lambda: env.listing()["steady"]["failures"] >= 3, 40, "background retries")
    row = env.listing()["steady"]
    assert row["status"] == "failing" and row["next_attempt"]
    assert env.served_fingerprint("steady.localhost") == working
    status, _, err = env.curl("steady.localhost")
    assert status == 200, err
    doctor = srv.ssh("doctor", "--format", "json")
    findings = [f for f in json.loads(doctor.stdout) if f["check"] == "letsencrypt"]
    assert any(not f["ok"] and f["message"].startswith("steady: ") for f in findings)
    attempts = [e for e in json.loads(ok(srv.ssh("events", "--format", "json")))
                if e["kind"] == "letsencrypt:failed" and e["app"] == "steady"]  # fmt: skip
    assert len(attempts) >= 3
    # Back-off: the retries spread out (1, 2, 4 … check intervals), not one per second. (The
    # first two may come together: the command's and the background's own first attempt.)
    at = sorted(e["at"] for e in attempts)
    assert at[-1] - at[-2] >= 1.9, at
    ok(srv.ssh("domains:remove", "steady", "broken.steady.test"))
    assert env.listing()["steady"]["status"] == "ok"


def test_revoke_then_enable_then_disable(env: Env) -> None:
    srv = env.server
    env.deploy("gone")
    ok(srv.ssh("letsencrypt:enable", "gone"))
    leaf = x509.load_pem_x509_certificates(cert_file(env, "gone").read_bytes())[0]
    assert env.pebble.cert_status(f"{leaf.serial_number:x}") == "Valid"
    out = ok(srv.ssh("letsencrypt:revoke", "gone"))
    assert "Revoking the certificate of gone" in out
    assert env.pebble.cert_status(f"{leaf.serial_number:x}") == "Revoked"
    status, body, _ = http_get(srv.http_port, "gone.localhost", "/")
    assert status == 200 and json.loads(body)["app"] == "gone"
    assert ok(srv.ssh("letsencrypt:active", "gone")).strip() == "false"
    assert env.listing()["gone"]["status"] == "disabled"
    again = srv.ssh("letsencrypt:revoke", "gone")
    assert again.returncode != 0 and "no Let's Encrypt certificate" in again.stderr

    ok(srv.ssh("letsencrypt:enable", "gone"))
    status, _, err = env.curl("gone.localhost")
    assert status == 200, err
    out = ok(srv.ssh("letsencrypt:disable", "gone"))
    assert "-----> Disabling letsencrypt for gone" in out
    assert http_get(srv.http_port, "gone.localhost", "/")[0] == 200
    report = json.loads(ok(srv.ssh("certs:report", "gone", "--format", "json")))
    assert report["ssl-enabled"] is False
    again = srv.ssh("letsencrypt:disable", "gone")
    assert again.returncode != 0 and "not enabled" in again.stderr
    # Disabled stays disabled: the background renewal leaves it alone.
    time.sleep(2.5)
    assert env.listing()["gone"]["status"] == "disabled"
    ok(srv.ssh("letsencrypt:cleanup", "gone"))
    assert "gone" not in env.listing()


def test_a_non_admin_cannot_reach_files_urls_or_other_apps(env: Env) -> None:
    srv = env.server
    alice = srv.user_key
    env.deploy("theirs")  # the admin's
    env.deploy("mine", key=alice)
    before = ok(srv.ssh("letsencrypt:report", "--global", "--format", "json"))
    refused = [
        # Where the server would connect to, or what it would read: admin only.
        ("letsencrypt:set", "mine", "server", "https://127.0.0.1:2375/containers/json"),
        ("letsencrypt:set", "mine", "server", "https://localhost:22/"),
        ("letsencrypt:set", "mine", "server", "file:///etc/shadow"),
        ("letsencrypt:set", "mine", "server-ca-file", "/etc/shadow"),
        ("letsencrypt:set", "--global", "server-ca-file", "/etc/ssl/certs/ca-certificates.crt"),
        ("letsencrypt:set", "--global", "server", "staging"),
        ("letsencrypt:set", "--global", "auto", "true"),
        ("letsencrypt:report", "--global"),
        ("letsencrypt:enable", "--all"),
        ("letsencrypt:auto-renew",),
        # Another key's app.
        ("letsencrypt:enable", "theirs"),
        ("letsencrypt:disable", "theirs"),
        ("letsencrypt:revoke", "theirs"),
        ("letsencrypt:auto-renew", "theirs", "--force"),
        ("letsencrypt:cleanup", "theirs"),
        ("letsencrypt:active", "theirs"),
        ("letsencrypt:report", "theirs"),
        ("letsencrypt:set", "theirs", "email", "alice@example.com"),
        ("proxy:set", "theirs", "hsts", "false"),
        # Malformed values never reach a file.
        ("letsencrypt:set", "mine", "email", "a@example.com\nserver=https://x"),
        ("letsencrypt:set", "mine", "renew-days", "0"),
        ("letsencrypt:set", "mine", "../../etc/passwd", "x"),
        ("letsencrypt:enable", "../theirs"),
    ]
    for argv in refused:
        res = srv.ssh(*argv, key=alice)
        assert res.returncode != 0, argv
        assert res.stderr.startswith(" !     "), (argv, res.stderr)
        assert "root:" not in res.stderr and "BEGIN" not in res.stderr, argv
        if "theirs" in argv or "--global" in argv or "--all" in argv or len(argv) == 1:
            assert res.returncode == 13, (argv, res.stderr)  # AccessDenied, Dokku-style
            assert "may not manage app theirs" in res.stderr or "Only an admin key" in (
                res.stderr
            ), (argv, res.stderr)
    shadow = srv.ssh("letsencrypt:set", "mine", "server-ca-file", "/etc/shadow", key=alice)
    assert "can only be set with --global" in shadow.stderr  # refused before the path is looked at
    custom = srv.ssh("letsencrypt:set", "mine", "server", "https://127.0.0.1:2375/", key=alice)
    assert "Only an admin key" in custom.stderr
    assert ok(srv.ssh("letsencrypt:report", "--global", "--format", "json")) == before

    # Even an admin cannot make the server show a file's content.
    res = srv.ssh("letsencrypt:set", "--global", "server-ca-file", "/etc/passwd")
    assert res.returncode != 0 and "holds no PEM certificate" in res.stderr
    assert "root:" not in res.stderr

    # What alice may do: named servers and her own app's certificate, from the admin's CA.
    ok(srv.ssh("letsencrypt:set", "mine", "server", "staging", key=alice))
    ok(srv.ssh("letsencrypt:set", "mine", "server", key=alice))
    ok(srv.ssh("letsencrypt:set", "mine", "email", "alice@example.com", key=alice))
    ok(srv.ssh("letsencrypt:enable", "mine", key=alice))
    status, _, err = env.curl("mine.localhost")
    assert status == 200, err
    assert set(env.listing(key=alice)) == {"mine"}
    # Not a loop of forced orders either: they spend the CA's limits for everyone.
    for argv in (("letsencrypt:enable", "mine"), ("letsencrypt:auto-renew", "mine", "--force")):
        again = srv.ssh(*argv, key=alice)
        assert again.returncode != 0 and "CAs limit duplicate certificates" in again.stderr
    report = json.loads(ok(srv.ssh("letsencrypt:report", "mine", "--format", "json", key=alice)))
    assert "letsencrypt-global-server-ca-file" not in report
    assert report["letsencrypt-email"] == "alice@example.com"


def test_backup_and_restore_keep_certificates_and_the_account() -> None:
    with fresh_env() as (env, tmp):
        env.deploy("safe")
        ok(env.server.ssh("letsencrypt:enable", "safe"))
        served = env.served_fingerprint("safe.localhost")
        account = next((env.server.data_dir / "letsencrypt" / "accounts").glob("*/account.json"))
        archive = tmp / "backup.tar.gz"
        ok(env.server.cli("backup", str(archive)))
        with tarfile.open(archive) as tar:
            names = tar.getnames()
        assert any(n.endswith("/account.key") and n.startswith("letsencrypt/accounts/")
                   for n in names)  # fmt: skip
        assert any(n.startswith("nginx/certs/") and n.endswith("/server.key") for n in names)
        assert not any("acme-challenge" in n for n in names)

        # The machine is lost: a new data dir from the archive, a new server on it.
        stop_server(env.server)
        remove_leftovers_of(env.server.data_dir)
        restored = tmp / "restored"
        proc = subprocess.run(
            [sys.executable, "-m", "dockyard.cli", "--data-dir", str(restored), "restore",
             str(archive)], capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        keys = list(restored.glob("letsencrypt/accounts/*/account.key"))
        keys += list(restored.glob("nginx/certs/*/server.key"))
        assert len(keys) == 2 and all(k.stat().st_mode & 0o777 == 0o600 for k in keys)
        for directory in ("letsencrypt", "letsencrypt/accounts", "nginx/certs"):
            assert (restored / directory).stat().st_mode & 0o777 == 0o700
        srv = env.server
        env.server = start_server(
            restored, srv.keys_dir, srv.admin_key, srv.user_key, http_port=env.pebble.http_port,
            extra_env={le.ENV_CHECK_INTERVAL: "1"},
        )  # fmt: skip
        wait_for(lambda: env.curl("safe.localhost")[0] == 200, 20, "restored HTTPS")
        assert env.served_fingerprint("safe.localhost") == served
        ok(env.server.ssh("letsencrypt:auto-renew", "safe", "--force"))
        assert env.served_fingerprint("safe.localhost") != served
        again = restored / "letsencrypt" / "accounts" / account.parent.name / "account.json"
        assert json.loads(again.read_text())["uri"] == json.loads(account.read_text())["uri"]


BUSYBOX_DOCKERFILE = """FROM dockyard-base/busybox:latest
COPY www /www
CMD ["/bin/sh", "-c", "exec httpd -f -p $PORT -h /www"]
"""


def push_app(env: Env, tmp: Path, app: str) -> subprocess.CompletedProcess:
    repo = tmp / f"repo-{app}"
    (repo / "www").mkdir(parents=True)
    (repo / "Dockerfile").write_text(BUSYBOX_DOCKERFILE)
    (repo / "www" / "index.html").write_text(f"hello from {app}\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-m",
                  "first"]):  # fmt: skip
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    return subprocess.run(
        ["git", "-C", str(repo), "push", env.server.remote(app), "main"],
        capture_output=True, text=True, env=env.server.git_env(), timeout=300,
    )  # fmt: skip


def test_auto_on_first_deploy_enable_before_deploy_and_enable_all(docker_engine) -> None:
    with fresh_env() as (env, tmp):
        srv = env.server
        require_tool("git")
        ok(srv.ssh("letsencrypt:set", "--global", "auto", "true"))
        push = push_app(env, tmp, "autoapp")
        assert push.returncode == 0, push.stderr
        assert "Let's Encrypt: auto is on, requesting a certificate for autoapp" in push.stderr
        assert "Certificate installed for autoapp" in push.stderr
        status, body, err = env.curl("autoapp.localhost")
        assert status == 200 and body == "hello from autoapp\n", err
        ok(srv.ssh("letsencrypt:set", "--global", "auto"))

        # Enabled before its first deploy: the deploy brings the certificate.
        ok(srv.ssh("apps:create", "later"))
        out = ok(srv.ssh("letsencrypt:enable", "later"))
        assert "not deployed yet" in out
        push = push_app(env, tmp, "later")
        assert push.returncode == 0, push.stderr
        # The deploy's hook issues it, unless the background renewal got there first.
        assert ("Certificate installed for later" in push.stderr
                or "later already has a current certificate" in push.stderr), push.stderr
        assert env.curl("later.localhost")[0] == 200

        # --all: every app, admins only.
        env.deploy("one")
        env.deploy("two")
        out = ok(srv.ssh("letsencrypt:enable", "--all"))
        for app in ("one", "two"):
            assert f"Certificate installed for {app}" in out
            assert env.curl(f"{app}.localhost")[0] == 200
        assert {r["status"] for r in env.listing().values()} == {"ok"}


# ---------------------------------------------------------------- fuzz: hostile arguments

FUZZ_WORDS = st.one_of(
    st.sampled_from([
        "victim", "mine", "--global", "--all", "--force", "--format", "json", "email", "server",
        "server-ca-file", "renew-days", "auto", "hsts", "hsts-max-age", "hsts-preload",
        "true", "false", "0", "3650", "3651", "-1", "production", "staging",
        "https://127.0.0.1:2375/", "https://[::1]:1/x", "http://x", "file:///etc/shadow",
        "https://a@b/", "https://x/%00", "/etc/shadow", "/etc/passwd", "/etc/ssl/certs",
        "/etc/ssl/certs/ca-certificates.crt", "../../etc/passwd", "a@example.com",
        "a@example.com\nx", "x" * 600, "\x00", "$(id)", "ａｐｐ", "https://[",
    ]),
    st.text(max_size=30),
)  # fmt: skip


@pytest.fixture(scope="module")
def fuzz_services() -> Iterator[Services]:
    with tempfile.TemporaryDirectory(prefix="dockyard-le-fuzz-") as directory:
        # Loopback ports nobody listens on; no app is routed, so no CA is ever contacted.
        services = Services(Settings(data_dir=Path(directory) / "data",
                                     http_listen=("127.0.0.1", free_port()),
                                     https_listen=("127.0.0.1", free_port())))  # fmt: skip
        services.apps.create("victim", "admin")
        services.apps.create("mine", "alice")
        try:
            yield services
        finally:
            remove_leftovers_of(services.settings.data_dir)


def _snapshot(services: Services) -> tuple:
    state = services.state
    return (
        [tuple(r) for r in state.query("SELECT * FROM global_settings ORDER BY key")],
        [tuple(r) for r in state.query(
            "SELECT key, value FROM app_settings JOIN apps ON apps.id = app_id "
            "WHERE apps.name = 'victim' ORDER BY key")],
        [tuple(r) for r in state.query(
            "SELECT letsencrypt.* FROM letsencrypt JOIN apps ON apps.id = app_id "
            "WHERE apps.name = 'victim'")],
    )  # fmt: skip


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(n for n in COMMANDS if n.startswith("letsencrypt:"))
                            + ["proxy:set"]),
       words=st.lists(FUZZ_WORDS, max_size=5), as_admin=st.booleans())  # fmt: skip
def test_letsencrypt_commands_refuse_hostile_arguments_cleanly(
    fuzz_services: Services, name: str, words: list[str], as_admin: bool
) -> None:
    stdout, stderr = io.BytesIO(), io.BytesIO()
    identity = Identity("admin", True) if as_admin else Identity("alice", False)
    ctx = Context(fuzz_services, identity, io.BytesIO(), stdout, stderr, Output(stdout, stderr))
    before = _snapshot(fuzz_services)
    status = dispatch(ctx, [name, *words])
    err = stderr.getvalue().decode(errors="replace")
    assert "internal error" not in err, ([name, *words], err)
    if status != 0 and err:
        assert all(line.startswith(" !     ") for line in err.splitlines()), err
    assert "root:" not in err + stdout.getvalue().decode(errors="replace")
    if not as_admin:
        assert _snapshot(fuzz_services) == before, [name, *words]
