"""The dashboard as an attacker sees it, through the real nginx in front of a real
`dockyard serve`, with links and tokens from `dashboard:*` over real SSH.

Every route in `dashboard.web.ROUTES` is tried with no credentials, with another tenant's
session and token, with a forged or missing CSRF token and from another origin; sign-in links
are reused, expired and forged; nothing secret may reach a log. No app is deployed here (the
browser tests do that): apps, grants and config are enough for every access decision.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import ssl
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dashboard.web import ROUTES
from tests.conftest import (
    DockyardServer,
    _provision,
    make_key,
    remove_server_leftovers,
    start_server,
    stop_server,
)
from tests.deploying import ok

pytestmark = pytest.mark.e2e

HOSTILE_VALUE = '</script><script>alert("x")</script><img src=x onerror=alert(1)>'
SECRETS: list[str] = []  # every link, session and token issued here, for the log check


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: str

    def json(self) -> object:
        return json.loads(self.body)

    def cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []


@dataclass
class Browser:
    """Requests to the dashboard's host through nginx, like a browser on our pages."""

    srv: DockyardServer
    cookie: str = ""
    csrf: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return f"dockyard.localhost:{self.srv.http_port}"

    @property
    def origin(self) -> str:
        return f"http://{self.host}"

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> Answer:  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.http_port, timeout=60)
        sent = {"Host": self.host, **self.extra, **(headers or {})}
        if self.cookie:
            sent["Cookie"] = self.cookie
        body = None
        if form is not None:
            body = "&".join(f"{quote(k)}={quote(v)}" for k, v in form.items())
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
            sent.setdefault("Origin", self.origin)
        try:
            conn.request(method, path, body=body, headers=sent)
            resp = conn.getresponse()
            return Answer(resp.status, resp.headers, resp.read().decode("utf-8", "replace"))
        finally:
            conn.close()

    def get(self, path: str, **kw: object) -> Answer:
        return self.request("GET", path, **kw)  # type: ignore[arg-type]

    def post(self, path: str, form: dict[str, str], **kw: object) -> Answer:
        return self.request("POST", path, form=form, **kw)  # type: ignore[arg-type]


def link_secret(srv: DockyardServer, key: Path | None = None) -> str:
    result = srv.ssh("dashboard:login", key=key)
    ok(result)
    url = next(line for line in result.stdout.splitlines() if line.startswith("http"))
    assert url.startswith(srv.ssh("dashboard:url").stdout.strip() + "/login#"), url
    secret = url.partition("#")[2]
    SECRETS.append(secret)
    return secret


def api_token(srv: DockyardServer, key: Path | None = None) -> str:
    result = srv.ssh("dashboard:token", key=key)
    ok(result)
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("dyt_")
    SECRETS.append(token)
    return token


def signed_in(srv: DockyardServer, key: Path | None = None) -> Browser:
    browser = Browser(srv)
    answer = browser.post("/login", {"token": link_secret(srv, key)})
    assert answer.status == 303, answer.body
    cookie = answer.cookies()[0].split(";")[0]
    SECRETS.append(cookie.partition("=")[2])
    browser.cookie = cookie
    page = browser.get("/")
    assert page.status == 200
    browser.csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.body).group(1)
    return browser


def wait_for_dashboard(srv: DockyardServer) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if Browser(srv).get("/login").status == 200:
            return
        time.sleep(0.1)
    raise AssertionError("the dashboard never answered through nginx")


@pytest.fixture(scope="module")
def srv(shared_server: DockyardServer) -> Iterator[DockyardServer]:
    s = shared_server
    wait_for_dashboard(s)
    ok(s.ssh("apps:create", "secret-app"))
    ok(s.ssh("config:set", "--no-restart", "secret-app", f"SECRET={HOSTILE_VALUE}"))
    ok(s.ssh("apps:create", "alice-app", key=s.user_key))
    ok(s.ssh("apps:create", "shared-app"))
    ok(s.ssh("acl:add", "shared-app", "alice"))
    yield s


def concrete(path: str, app: str = "secret-app") -> str:
    return (path.replace("{app}", app).replace("{build}", "latest").replace("{key}", "SECRET")
            .replace("{file:.+}", "dashboard.js"))  # fmt: skip


# ---------------------------------------------------------------- sign-in


def test_a_link_works_once_and_sets_a_strict_httponly_cookie(srv: DockyardServer) -> None:
    secret = link_secret(srv)
    browser = Browser(srv)
    # From another site: refused, and the link is not spent by it.
    evil = browser.post("/login", {"token": secret}, headers={"Origin": "http://evil.example"})
    assert evil.status == 403 and not evil.cookies()
    first = browser.post("/login", {"token": secret})
    assert first.status == 303 and first.headers["Location"] == "/"
    (cookie,) = first.cookies()
    SECRETS.append(cookie.split(";")[0].partition("=")[2])
    attrs = {a.strip().split("=")[0].lower(): a for a in cookie.split(";")[1:]}
    assert cookie.startswith("dockyard_session=")
    assert {"httponly", "path", "samesite", "max-age"} <= set(attrs)
    assert attrs["samesite"].strip() == "SameSite=Strict" and attrs["path"].strip() == "Path=/"
    assert "secure" not in attrs  # plain HTTP here; see the HTTPS test
    assert 0 < int(attrs["max-age"].split("=")[1]) <= 14400
    again = browser.post("/login", {"token": secret})
    assert again.status == 403 and "expired or was already used" in again.body
    assert not again.cookies()
    for forged in ("", "x" * 43, secret[:-1] + ("A" if secret[-1] != "A" else "B"),
                   "'; DROP TABLE dashboard_sessions; --", "../" * 20):  # fmt: skip
        answer = browser.post("/login", {"token": forged})
        assert answer.status == 403 and not answer.cookies(), forged


def test_an_expired_link_is_refused(srv: DockyardServer) -> None:
    ok(srv.ssh("dashboard:set", "--global", "login-ttl", "2"))
    try:
        secret = link_secret(srv)
        time.sleep(2.5)
        answer = Browser(srv).post("/login", {"token": secret})
        assert answer.status == 403 and not answer.cookies()
    finally:
        ok(srv.ssh("dashboard:set", "--global", "login-ttl"))


def test_links_and_tokens_act_for_an_ssh_key_only(srv: DockyardServer) -> None:
    for command in ("dashboard:login", "dashboard:token"):
        result = srv.cli(command)
        assert result.returncode != 0 and "run it over SSH" in result.stderr


# ---------------------------------------------------------------- every route, attacked


def test_every_route_without_credentials(srv: DockyardServer) -> None:
    anonymous = Browser(srv)
    for method, path, _, needs in ROUTES:
        url = concrete(path)
        if needs in ("nobody", "link"):
            continue
        answer = (anonymous.get(url) if method == "GET"
                  else anonymous.post(url, {"csrf": "0" * 64, "version": "v1"}))  # fmt: skip
        assert answer.status == 401, (method, url, answer.status)
        assert HOSTILE_VALUE not in answer.body
        if url.startswith("/api/"):
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            assert answer.json() == {"error": answer.json()["error"]}


def test_every_route_with_another_tenants_session(srv: DockyardServer) -> None:
    alice = signed_in(srv, srv.user_key)
    for method, path, _, needs in ROUTES:
        url = concrete(path)
        if "app" in needs or "admin" in needs:
            answer = (alice.get(url) if method == "GET"
                      else alice.post(url, {"csrf": alice.csrf, "version": "v1"}))  # fmt: skip
            assert answer.status == 403, (method, url, answer.status, answer.body[:200])
            assert HOSTILE_VALUE not in answer.body and "SECRET" not in answer.body
    listing = alice.get("/api/apps").json()
    assert [a["name"] for a in listing["apps"]] == ["alice-app", "shared-app"]  # type: ignore[index]
    page = alice.get("/")
    assert "secret-app" not in page.body and 'data-app="shared-app"' in page.body
    # Granted with acl:add: the app is hers to see, as over SSH.
    assert alice.get("/apps/shared-app").status == 200
    assert alice.get("/api/apps/shared-app/metrics?range=1d").status == 200
    # A name that is not an app name is refused before it reaches anything.
    assert alice.get("/api/apps/..%2F..%2Fetc").status in (400, 404)
    assert alice.get("/api/apps/NOT_VALID").status == 400


def test_every_write_refuses_a_forged_or_missing_csrf_token_and_other_origins(
    srv: DockyardServer,
) -> None:
    admin = signed_in(srv)
    other = signed_in(srv)
    writes = [(m, concrete(p)) for m, p, _, needs in ROUTES if "csrf" in needs]
    assert writes == [("POST", "/logout"), ("POST", "/apps/secret-app/rollback")]
    for _, url in writes:
        for form in ({"version": "v1"}, {"csrf": "0" * 64, "version": "v1"},
                     {"csrf": other.csrf, "version": "v1"},  # another session's token
                     {"csrf": admin.csrf.upper(), "version": "v1"}):  # fmt: skip
            answer = admin.post(url, form)
            assert answer.status == 403, (url, form, answer.status)
        for origin in ("http://evil.example", "null", f"https://{admin.host}"):
            answer = admin.post(url, {"csrf": admin.csrf, "version": "v1"},
                                headers={"Origin": origin})  # fmt: skip
            assert answer.status == 403, (url, origin)
        answer = admin.post(
            url, {"csrf": admin.csrf}, headers={"Origin": "", "Sec-Fetch-Site": "cross-site"}
        )
        assert answer.status == 403
    # The session survived all of that; a real rollback of a never-deployed app is the
    # command's own refusal, shown as the command shows it.
    answer = admin.post("/apps/secret-app/rollback", {"csrf": admin.csrf, "version": "v1"})
    assert answer.status == 409 and "has not been deployed" in answer.body


def test_tokens_are_read_only_and_follow_the_same_rule(srv: DockyardServer) -> None:
    token = api_token(srv, srv.user_key)
    reader = Browser(srv, extra={"Authorization": f"Bearer {token}"})
    assert reader.get("/api/apps").status == 200
    assert reader.get("/api/apps/alice-app/metrics?range=1h").status == 200
    for method, path, _, needs in ROUTES:
        url = concrete(path)
        if needs in ("nobody", "link", "reader"):
            continue
        answer = reader.get(url) if method == "GET" else reader.post(url, {"version": "v1"})
        if not url.startswith("/api/") or method != "GET":
            assert answer.status == 401, (method, url, answer.status)  # pages want a session
        else:
            assert answer.status == 403, (method, url, answer.status)  # another's, or admin's
    # A token never reveals config values, even for its own key's app.
    ok(srv.ssh("config:set", "--no-restart", "alice-app", "MINE=1", key=srv.user_key))
    assert reader.get("/api/apps/alice-app/config/MINE").status == 403
    for bad in ("Bearer " + token[:-2], "Bearer", "Basic YWRtaW46", token,
                "Bearer dyt_" + "a" * 43):  # fmt: skip
        answer = Browser(srv, extra={"Authorization": bad}).get("/api/apps")
        assert answer.status == 401, bad


def test_hostile_names_in_urls_are_refused_and_echoed_as_text(srv: DockyardServer) -> None:
    """App names and config keys cannot carry markup (their rules refuse it); a URL that
    tries is refused before it reaches anything, and the refusal quotes it escaped."""
    admin = signed_in(srv)
    for path in ("/apps/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
                 "/apps/x%22%3E%3Cimg%20src=x%20onerror=alert(1)%3E",
                 "/api/apps/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
                 "/api/apps/secret-app/config/%3Cscript%3E"):  # fmt: skip
        answer = admin.get(path)
        assert answer.status in (400, 404), (path, answer.status)
        assert "<script>alert" not in answer.body and "<img" not in answer.body, answer.body
    page = admin.get("/apps/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.body
    assert page.headers["Content-Type"].startswith("text/html")


def test_config_values_stay_hidden_unless_asked_and_asking_is_recorded(
    srv: DockyardServer,
) -> None:
    admin = signed_in(srv)
    detail = admin.get("/api/apps/secret-app")
    assert detail.status == 200
    assert detail.json()["config_keys"] == ["SECRET"]  # type: ignore[index]
    page = admin.get("/apps/secret-app")
    assert HOSTILE_VALUE not in detail.body and "alert" not in page.body
    assert 'data-reveal="SECRET"' in page.body
    shown = admin.get("/api/apps/secret-app/config/SECRET")
    assert shown.json() == {"key": "SECRET", "value": HOSTILE_VALUE}
    assert shown.headers["Content-Type"].startswith("application/json")
    assert admin.get("/api/apps/secret-app/config/NOPE").status == 404
    events = json.loads(srv.ssh("events", "secret-app", "--format", "json").stdout)
    reveal = [e for e in events if e["kind"] == "dashboard:config-reveal"]
    assert reveal and reveal[-1]["actor"] == "admin" and reveal[-1]["detail"] == "SECRET"


def test_the_admin_reads_everything_with_security_headers(srv: DockyardServer) -> None:
    admin = signed_in(srv)
    for method, path, _, needs in ROUTES:
        if method != "GET" or needs == "link":
            continue
        answer = admin.get(concrete(path))
        assert answer.status == 200, (path, answer.status, answer.body[:300])
        csp = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["X-Frame-Options"] == "DENY"
    server = admin.get("/api/server").json()
    assert {f["check"] for f in server["doctor"]} >= {"docker", "nginx", "disk"}  # type: ignore[index]
    assert server["nginx"]["pid"] and server["nginx"]["in_sync"]  # type: ignore[index]
    assert admin.get("/static/../dockyard/cli.py").status == 404
    assert admin.get("/static/%2e%2e/web.py").status in (400, 404)
    assert admin.get("/static/vendor/uplot-1.6.32/uPlot.iife.min.js").headers[
        "Content-Type"].startswith("text/javascript")  # fmt: skip


def test_logout_and_logout_all(srv: DockyardServer) -> None:
    admin = signed_in(srv)
    admin2 = signed_in(srv)
    alice = signed_in(srv, srv.user_key)
    token = api_token(srv, srv.user_key)
    out = admin2.post("/logout", {"csrf": admin2.csrf})
    assert out.status == 200 and "Max-Age=0" in out.cookies()[0]
    assert admin2.get("/").status == 401
    result = srv.ssh("dashboard:logout-all", key=srv.user_key)
    ok(result)
    assert "of alice" in result.stdout
    assert alice.get("/").status == 401
    assert Browser(srv, extra={"Authorization": f"Bearer {token}"}).get("/api/apps").status == 401
    assert admin.get("/").status == 200  # a non-admin ends only its own
    ok(srv.ssh("dashboard:logout-all"))
    assert admin.get("/").status == 401


def test_no_app_can_take_the_dashboards_host_name(srv: DockyardServer) -> None:
    result = srv.ssh("domains:add", "alice-app", "dockyard.localhost", key=srv.user_key)
    assert result.returncode != 0 and "Dockyard's own" in result.stderr


def _self_signed(host: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))  # fmt: skip


def test_https_when_a_certificate_exists(srv: DockyardServer) -> None:
    crt, key = _self_signed("dockyard.localhost")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("server.crt", crt), ("server.key", key)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    refused = srv.ssh("dashboard:certs-add", input=buf.getvalue(), key=srv.user_key)
    assert refused.returncode == 13, refused
    ok(srv.ssh("dashboard:certs-add", input=buf.getvalue()))
    try:
        url = srv.ssh("dashboard:url").stdout.strip()
        port = int(re.fullmatch(r"https://dockyard\.localhost:(\d+)", url).group(1))
        # Plain HTTP now redirects.
        answer = Browser(srv).get("/login")
        assert answer.status == 301 and answer.headers["Location"].startswith(url), answer
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        secret = link_secret(srv)
        # SNI must name the dashboard: nginx refuses the handshake for unknown names.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.sock = context.wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=30),
            server_hostname="dockyard.localhost",
        )
        body = f"token={secret}"
        host = f"dockyard.localhost:{port}"
        conn.request("POST", "/login", body=body, headers={
            "Host": host, "Origin": f"https://{host}",
            "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 303, (resp.status, body[:500])
        cookie = resp.headers["Set-Cookie"]
        SECRETS.append(cookie.split(";")[0].partition("=")[2])
        assert cookie.startswith("__Host-dockyard_session=")
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
        conn.close()
    finally:
        ok(srv.ssh("dashboard:certs-remove"))
    assert srv.ssh("dashboard:url").stdout.strip().startswith("http://")


def test_no_secret_reaches_a_log(srv: DockyardServer) -> None:
    """Links, cookies and tokens issued above: not in the server's log, nor nginx's."""
    assert len(SECRETS) >= 10
    logs = {
        "dockyard serve": srv.log(),
        "nginx access": (srv.data_dir / "nginx" / "logs" / "access.log").read_text(),
        "nginx error": (srv.data_dir / "nginx" / "logs" / "error.log").read_text(),
    }
    time.sleep(1.5)  # nginx flushes its access log buffer every second
    logs["nginx access"] = (srv.data_dir / "nginx" / "logs" / "access.log").read_text()
    assert '"uri":"/login"' in logs["nginx access"]  # the log is there, and read
    for secret in SECRETS:
        core = secret.removeprefix("dyt_")
        for name, text in logs.items():
            assert core not in text, f"a secret reached the {name} log"


def test_the_dashboard_can_listen_on_a_loopback_port(tmp_path: Path) -> None:
    """`dashboard:set --global listen 127.0.0.1:0`: a port the kernel picks, recorded and
    routed at start (the default, a unix socket, is what the other tests use)."""
    data_dir, keys_dir, admin_key, user_key = _provision(tmp_path)
    cli = [sys.executable, "-m", "dockyard.cli", "--data-dir", str(data_dir)]
    subprocess.run([*cli, "dashboard:set", "--global", "listen", "127.0.0.1:0"], check=True,
                   capture_output=True)  # fmt: skip
    other = start_server(data_dir, keys_dir, admin_key, user_key)
    try:
        wait_for_dashboard(other)
        conf = (data_dir / "nginx" / "nginx.conf").read_text()
        upstream = re.search(r"upstream dockyard-_dashboard \{\n\s+server (127\.0\.0\.1:\d+) ",
                             conf)  # fmt: skip
        assert upstream and not upstream.group(1).endswith(":0"), conf
        assert not (data_dir / "dashboard" / "http.sock").exists()
        browser = signed_in(other)
        assert browser.get("/api/apps").status == 200
    finally:
        stop_server(other)
        remove_server_leftovers(other)


# ---------------------------------------------------------------- key options, cookies, sizes


def _hand_key(srv: DockyardServer, tmp: Path, name: str, options: str) -> tuple[Path, str]:
    key = make_key(tmp, name)
    path = srv.data_dir / "authorized_keys"
    before = path.read_text()
    line = f'{options},environment="DOCKYARD_KEY={name}" {key.with_suffix(".pub").read_text()}'
    path.write_text(before + line.strip() + "\n")
    return key, before


def test_a_key_limited_by_address_or_time_gets_nothing_that_outlives_it(
    srv: DockyardServer, tmp_path: Path
) -> None:
    key, before = _hand_key(srv, tmp_path, "from-key", 'from="127.0.0.1"')
    try:
        for command in ("dashboard:login", "dashboard:token"):
            result = srv.ssh(command, key=key)
            assert result.returncode != 0 and "from=" in result.stderr, result
    finally:
        (srv.data_dir / "authorized_keys").write_text(before)
    soon = datetime.now(UTC) + timedelta(seconds=6)
    key, before = _hand_key(srv, tmp_path, "brief-key", f'expiry-time="{soon:%Y%m%d%H%M%S}Z"')
    try:
        token = api_token(srv, key)
        browser = signed_in(srv, key)
        assert (
            Browser(srv, extra={"Authorization": f"Bearer {token}"}).get("/api/apps").status == 200
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and datetime.now(UTC) < soon + timedelta(seconds=1):
            time.sleep(0.2)
        assert (
            Browser(srv, extra={"Authorization": f"Bearer {token}"}).get("/api/apps").status == 401
        )
        assert browser.get("/api/apps").status == 401
    finally:
        (srv.data_dir / "authorized_keys").write_text(before)


def test_a_tossed_second_cookie_or_a_cross_site_read_signs_nobody_in(srv: DockyardServer) -> None:
    admin = signed_in(srv)
    assert admin.get("/api/apps").status == 200
    name, _, _ = admin.cookie.partition("=")
    tossed = Browser(srv, cookie=f"{admin.cookie}; {name}={'A' * 43}")
    assert tossed.get("/api/apps").status == 401
    for site in ("cross-site", "same-site"):  # a tenant's app is same-site with us
        answer = admin.get("/api/apps", headers={"Sec-Fetch-Site": site})
        assert answer.status == 401, (site, answer.status)


def test_a_huge_offset_is_a_clear_refusal(srv: DockyardServer) -> None:
    admin = signed_in(srv)
    answer = admin.get("/api/apps/secret-app/builds/latest/log?offset=" + "9" * 30)
    assert answer.status == 400 and "offset" in answer.body, (answer.status, answer.body)
