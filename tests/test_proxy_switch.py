"""proxy/: switching an app's containers without reloading nginx, one file per app, the
kernel's rules (proxy.dnat) and coalesced reloads. Unit tests first, then the real nginx and
the real nat table on 127.0.0.1 (in-process, a Services on a tmp data dir)."""

from __future__ import annotations

import http.client
import http.server
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import proxy
from bench.loadgen import BackgroundLoad
from dockyard.errors import DockyardError
from dockyard.services import Services
from dockyard.settings import Settings
from proxy import dnat
from proxy.dnat import SLOTS, AppRules, Dnat, Vip
from proxy.nginx import Coalesced, children
from proxy.render import AppRoute, Listen, render_server_block
from proxy.router import Router
from tests.conftest import free_port

# ---------------------------------------------------------------- unit


def test_reloads_asked_for_together_run_once_and_share_the_outcome() -> None:
    runs: list[float] = []
    gate = threading.Event()

    def action() -> None:
        runs.append(time.monotonic())
        gate.wait(5)

    reload = Coalesced(action)
    first = threading.Thread(target=reload)
    first.start()
    while not runs:
        time.sleep(0.01)
    # Asked for while the first runs: one more run covers all of them, after the first.
    later = [threading.Thread(target=reload) for _ in range(5)]
    for t in later:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in [first, *later]:
        t.join(10)
    assert len(runs) == 2

    def failing() -> None:
        raise DockyardError("refused")

    with pytest.raises(DockyardError, match="refused"):
        Coalesced(failing)()


def test_slots_spread_containers_evenly_and_render_as_upstream_servers() -> None:
    vip = Vip("10.9.0.1", 1201)
    rules = AppRules.spread(vip, ["10.9.0.2:5000", "10.9.0.3:5000", "10.9.0.4:5000"])
    assert len(rules.slots) == SLOTS
    assert {t: rules.slots.count(t) for t in rules.targets} == {
        "10.9.0.2:5000": 4, "10.9.0.3:5000": 4, "10.9.0.4:5000": 4,
    }  # fmt: skip
    text = render_server_block(
        AppRoute("web", ["web.localhost"], vip.slots(), stable=True), Listen(("127.0.0.1", 80))
    )
    for port in range(1201, 1201 + SLOTS):
        assert f"server 10.9.0.1:{port} max_fails=0;" in text
    assert "keepalive_time 200ms;" in text and "keepalive_timeout 100ms;" in text


def test_vip_is_local_and_distinct_per_app() -> None:
    loop_a = dnat.vip_for("/data", 1, ["127.0.0.1:8000"])
    loop_b = dnat.vip_for("/data", 2, ["127.0.0.1:8000"])
    assert loop_a and loop_b and loop_a.address != loop_b.address
    assert loop_a.address.startswith("127.") and loop_a.address != "127.0.0.1"
    assert dnat.vip_for("/data", 1, ["[::1]:80"]) is None  # IPv6: routed the static way
    assert dnat.vip_for("/data", 1, []) is None


# ---------------------------------------------------------------- nginx and the nat table


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    label = "?"

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)  # type: ignore[attr-defined]

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = self.label.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


class Upstream:
    """A keep-alive HTTP server on 127.0.0.1 that can be killed outright: listener and
    every connection closed at once, as when a container is stopped."""

    def __init__(self, label: str) -> None:
        handler = type(f"H_{label}", (_Handler,), {"label": label})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.connections = set()  # type: ignore[attr-defined]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def kill(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for conn in list(self.server.connections):  # type: ignore[attr-defined]
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[Services]:
    services = Services(Settings(
        data_dir=tmp_path / "data", http_listen=("127.0.0.1", free_port()),
        https_listen=("127.0.0.1", free_port()),
    ))  # fmt: skip
    router = Router(services)
    assert router.dnat is not None, "these tests run as root with iptables"
    router.start_or_adopt()
    try:
        yield services
    finally:
        router.master.stop()
        router.dnat.remove_home()


def serving_workers(master: int) -> set[int]:
    """The master's workers that accept connections (not the old ones shutting down)."""
    found = set()
    for pid in children(master):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"shutting down" not in title:
            found.add(pid)
    return found


def _get(port: int, host: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_a_switch_of_containers_reloads_nothing_and_leaves_no_way_to_the_old_ones(
    proxied: Services,
) -> None:
    """Ten switches under GET and POST clients that never retry. Once `publish` returns,
    only the new upstream answers (the old one still runs), then the old one is killed with
    every connection it has. Not one request may fail, and nginx's workers and files stay
    the same."""
    port = proxied.settings.http_listen[1]
    proxied.apps.create("live", "admin")
    router = Router(proxied)
    current = Upstream("v0")
    proxy.publish(proxied, "live", [current.address])
    master = router.master.pid()
    assert master is not None
    workers = serving_workers(master)
    app_file = router.frontend.app_file("live")
    text = app_file.read_text()
    killed = []
    with BackgroundLoad(port, "live.localhost", concurrency=4, duration=60,
                        max_requests=200_000) as load:  # fmt: skip
        time.sleep(0.2)
        for n in range(1, 11):
            new = Upstream(f"v{n}")
            proxy.publish(proxied, "live", [new.address])
            # The old one still answers, yet nothing new reaches it: no connection nginx
            # keeps alive to it is given a request any more.
            answers = {_get(port, "live.localhost") for _ in range(5)}
            assert answers == {(200, f"v{n}")}, answers
            current.kill()
            killed.append(current)
            current = new
            time.sleep(0.1)
    result = load.result
    assert result is not None
    print(result.summary())
    assert result.failed == 0, result.summary()
    assert result.by_method["GET"] > 50 and result.by_method["POST"] > 50
    assert serving_workers(master) == workers  # no reload: the same workers throughout
    assert app_file.read_text() == text
    current.kill()


def test_each_app_has_its_own_file_and_rules_and_a_refusal_touches_no_other(
    proxied: Services,
) -> None:
    port = proxied.settings.http_listen[1]
    router = Router(proxied)
    alpha, beta = Upstream("alpha"), Upstream("beta")
    for name, up in (("alpha", alpha), ("beta", beta)):
        proxied.apps.create(name, "admin")
        proxy.publish(proxied, name, [up.address])
    files = router.frontend.app_files()
    assert set(files) == {"alpha", "beta"}
    assert f"include {router.paths.apps_dir}/*.conf;" in router.paths.conf.read_text()
    alpha_text = files["alpha"].read_text()
    assert "beta" not in alpha_text
    installed, jump = router.dnat.installed()  # type: ignore[union-attr]
    assert jump and len(installed) == 2
    rules = installed[proxied.apps.get("alpha").id]
    assert rules.targets == {alpha.address} and len(rules.slots) == SLOTS

    with pytest.raises(DockyardError, match="host not found"):
        proxy.publish(proxied, "beta", ["no-such-host.invalid:80"])
    assert files["alpha"].read_text() == alpha_text
    assert router.dnat.installed()[0] == installed  # type: ignore[union-attr]
    assert _get(port, "beta.localhost") == (200, "beta")

    proxy.unpublish(proxied, "beta")
    assert set(router.frontend.app_files()) == {"alpha"}
    assert set(router.dnat.installed()[0]) == {proxied.apps.get("alpha").id}  # type: ignore[union-attr]
    assert _get(port, "beta.localhost")[0] == 404
    assert _get(port, "alpha.localhost") == (200, "alpha")
    for up in (alpha, beta):
        up.kill()


def test_the_watchdog_puts_back_rules_the_kernel_lost(proxied: Services) -> None:
    port = proxied.settings.http_listen[1]
    router = Router(proxied)
    up = Upstream("kept")
    proxied.apps.create("kept", "admin")
    proxy.publish(proxied, "kept", [up.address])
    assert router.dnat is not None
    router.dnat.remove_home()  # a flushed table, a reboot's empty one
    assert router.dnat.installed() == ({}, False)
    router.reconcile()
    installed, jump = router.dnat.installed()
    assert jump and installed[proxied.apps.get("kept").id].targets == {up.address}
    assert _get(port, "kept.localhost") == (200, "kept")
    up.kill()


def test_removing_a_home_leaves_nothing_of_it_in_the_kernel(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    table = Dnat(home)
    vip = Vip("127.77.0.9", 1201)
    table.replace_all({7: AppRules.spread(vip, ["127.0.0.1:9"])})
    assert Dnat(home).installed()[0][7].vip == vip
    table.remove_home()
    saved = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    assert table.tag not in saved
