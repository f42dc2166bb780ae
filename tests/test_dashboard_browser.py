"""The dashboard in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium), against one real `dockyard serve` with real nginx, Docker and OpenSSH.

One server and one browser for the whole module; the tests run in file order and build on
each other (sign in, deploy, watch a push, load, roll back). Screenshots are kept under
tests/artefacts/ (git-ignored); with DOCKYARD_UPDATE_SCREENSHOTS=1 the app list and an app
page are also copied to docs/ for the README.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.conftest import (
    REPO_ROOT,
    DockyardServer,
    _provision,
    remove_server_leftovers,
    start_server,
    stop_server,
)
from tests.deploying import busybox_repo, commit, get, ok, push, wait_for_body

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTEFACTS = REPO_ROOT / "tests" / "artefacts"
DOCS = REPO_ROOT / "docs"
WIDTH, HEIGHT = 1360, 1000
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--window-size=1360,1000", "--hide-scrollbars", "--force-device-scale-factor=1",
)  # fmt: skip


def wait_until(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except WebDriverException as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class Env:
    def __init__(self, srv: DockyardServer, driver: webdriver.Chrome, tmp: Path) -> None:
        self.srv = srv
        self.driver = driver
        self.tmp = tmp
        self.base = f"http://dockyard.localhost:{srv.http_port}"
        self.used_link = ""

    def link(self, key: Path | None = None) -> str:
        result = self.srv.ssh("dashboard:login", key=key)
        ok(result)
        return next(line for line in result.stdout.splitlines() if line.startswith("http"))

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def sign_in(self, key: Path | None = None) -> str:
        self.driver.delete_all_cookies()
        link = self.link(key)
        self.driver.get(link)
        wait_until(lambda: self.driver.find_elements(By.ID, "apps")
                   or "Apps" in self.driver.title, what="the app list")  # fmt: skip
        return link

    def shot(self, name: str, docs: str | None = None) -> Path:
        """The whole page (the window grows to its height for the picture)."""
        ARTEFACTS.mkdir(exist_ok=True)
        path = ARTEFACTS / f"{name}.png"
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(WIDTH, min(max(int(height), 600), 2600))
        try:
            self.driver.save_screenshot(str(path))
        finally:
            self.driver.set_window_size(WIDTH, HEIGHT)
        if docs and os.environ.get("DOCKYARD_UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(path, DOCS / docs)
        return path

    def status(self, path: str) -> int:
        """The HTTP status of a GET made by the page itself (with the browser's cookie)."""
        return self.driver.execute_async_script(
            "const done = arguments[1];"
            "fetch(arguments[0], {credentials: 'same-origin'}).then(r => done(r.status),"
            " () => done(-1));",
            path,
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, docker_engine) -> Iterator[Env]:
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not os.access(tool, os.X_OK):
            pytest.fail(f"{tool} is missing: run scripts/setup.sh (packages chromium, "
                        "chromium-driver)")  # fmt: skip
    tmp = tmp_path_factory.mktemp("dashboard-browser")
    data_dir, keys_dir, admin_key, user_key = _provision(tmp)
    # CPU and memory every 5 s, so the charts have points within the test.
    subprocess.run(
        [sys.executable, "-m", "dockyard.cli", "--data-dir", str(data_dir),
         "dashboard:set", "--global", "stats-interval", "5"],
        check=True, capture_output=True,
    )  # fmt: skip
    srv = start_server(data_dir, keys_dir, admin_key, user_key)
    profile = tempfile.mkdtemp(prefix="dockyard-chromium-")
    driver = None
    try:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.set_script_timeout(20)
        yield Env(srv, driver, tmp)
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        stop_server(srv)
        remove_server_leftovers(srv)


SLOW_DOCKERFILE = """\
FROM dockyard-base/busybox:latest
RUN for i in 1 2 3 4 5 6 7 8 9 10; do echo "build-line-$i {nonce} <b>bold</b>"; sleep 0.7; done
COPY www /www
CMD ["/bin/sh", "-c", \
     "echo '<img src=x onerror=alert(1)> started'; exec httpd -f -v -p $PORT -h /www"]
"""


def test_sign_in_through_a_link_printed_over_ssh(env: Env) -> None:
    env.used_link = env.sign_in()
    heading = env.driver.find_element(By.TAG_NAME, "h1").text
    assert heading == "Apps"
    assert "admin" in env.driver.find_element(By.CSS_SELECTOR, ".who .key").text
    cookie = env.driver.get_cookie("dockyard_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # The secret left the address bar once it was used.
    assert "#" not in env.driver.current_url


def test_app_list_shows_two_deployed_apps_with_status(env: Env) -> None:
    for name in ("alpha", "beta"):
        ok(push(env.srv, busybox_repo(env.tmp, name, f"hello from {name}"), name))
        wait_for_body(env.srv, name, f"hello from {name}")
    env.open("/")

    def rows() -> dict[str, dict[str, str]]:
        env.driver.refresh()
        found = {}
        for row in env.driver.find_elements(By.CSS_SELECTOR, "#apps tbody tr"):
            found[row.get_attribute("data-app")] = {
                "status": row.get_attribute("data-status"),
                "procs": row.find_element(By.CSS_SELECTOR, "td.procs").text,
                "text": row.text,
            }
        return found if all(r["status"] == "up" for r in found.values()) and found else {}

    found = wait_until(rows, what="both apps up")
    assert set(found) == {"alpha", "beta"}
    for name, row in found.items():
        assert row["procs"].startswith("1/1"), row
        assert "v1" in row["text"] and "by admin" in row["text"]
        assert f"http://{name}.localhost:{env.srv.http_port}" in row["text"]
    env.shot("app-list", docs="dashboard-apps.png")


def test_a_push_in_progress_streams_onto_the_app_page(env: Env) -> None:
    repo = env.tmp / "alpha"
    nonce = uuid.uuid4().hex[:8]
    commit(repo, {"Dockerfile": SLOW_DOCKERFILE.replace("{nonce}", nonce),
                  "www/index.html": "hello again from alpha\n"}, "slow build")  # fmt: skip
    env.open("/apps/alpha")
    wait_until(lambda: env.driver.find_element(By.ID, "charts").get_attribute("data-loaded"),
               what="the app page's script")  # fmt: skip
    pushing = subprocess.Popen(
        ["git", "-C", str(repo), "push", env.srv.remote("alpha"), "main:main"],
        env=env.srv.git_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        log = env.driver.find_element(By.ID, "build-log")
        wait_until(lambda: f"build-line-3 {nonce}" in log.text, timeout=120,
                   what="the build's output on the page")  # fmt: skip
        # Seen while the push was still running: it streamed, it was not loaded afterwards.
        assert pushing.poll() is None, "the push had already finished"
        assert env.driver.find_element(By.ID, "push").is_displayed()
        env.shot("push-in-progress")
        # Build output is text: the markup in it made no element.
        assert "<b>bold</b>" in log.text
        assert not log.find_elements(By.TAG_NAME, "b")
        out, _ = pushing.communicate(timeout=240)
        assert pushing.returncode == 0, out.decode(errors="replace")
    finally:
        if pushing.poll() is None:
            pushing.kill()
            pushing.wait()
    wait_until(lambda: f"build-line-10 {nonce}" in log.text, what="the end of the build")
    wait_for_body(env.srv, "alpha", "hello again from alpha")
    # The new container's first log line is markup; the page shows it as text.
    env.open("/apps/alpha")
    logs = env.driver.find_element(By.ID, "logs")
    assert "<img src=x onerror=alert(1)> started" in logs.text
    assert not logs.find_elements(By.TAG_NAME, "img")


def test_a_load_of_requests_makes_the_plot_rise(env: Env) -> None:
    env.open("/apps/alpha")
    charts = env.driver.find_element(By.ID, "charts")
    wait_until(lambda: charts.get_attribute("data-loaded"), what="the charts")
    def counted() -> int:
        return env.driver.execute_script(
            "return window.dockyardMetrics.requests.reduce((a, b) => a + b, 0)"
        )

    before = counted()
    for _ in range(400):
        status, _ = get(env.srv, "alpha")
        assert status == 200
    # The page fetches the metrics every 5 s: wait until it has drawn all 400 requests.
    wait_until(lambda: counted() >= before + 400, timeout=40, what="the requests plot to rise")
    rendered = env.driver.execute_script(
        "const u = window.dockyardCharts.requests, m = window.dockyardMetrics;"
        "return {drawn: u.data[1], rps: m.rps, ok: u.data[2], series: u.series.map(s => s.label),"
        " p95: window.dockyardCharts.latency.data[2].filter(v => v !== null).length}"
    )
    # What the chart holds is what the API said, and it rose: requests/s above zero.
    assert rendered["drawn"] == rendered["rps"]
    assert max(rendered["drawn"]) > 0 and max(rendered["ok"]) > 0, rendered
    assert rendered["p95"] >= 1, rendered
    assert rendered["series"][1:] == ["all", "2xx", "3xx", "4xx", "5xx"]
    # Memory samples arrive every 5 s; give the chart one.
    wait_until(lambda: env.driver.execute_script(
        "return window.dockyardCharts.memory && window.dockyardCharts.memory.data.length > 1"
        " && window.dockyardCharts.memory.data[1].some(v => v !== null)"), timeout=40,
        what="a memory sample")  # fmt: skip
    env.driver.refresh()
    wait_until(lambda: env.driver.find_element(By.ID, "charts").get_attribute("data-loaded"),
               what="the charts again")  # fmt: skip
    env.shot("app-page", docs="dashboard-app.png")


def test_rollback_button_rolls_back_and_the_event_names_the_key(env: Env) -> None:
    env.open("/apps/alpha")
    button = env.driver.find_element(By.CSS_SELECTOR, 'button[data-rollback="v1"]')
    button.click()
    result = wait_until(lambda: env.driver.find_element(By.ID, "rollback-result"),
                        timeout=120, what="the rollback's result")  # fmt: skip
    assert result.get_attribute("data-ok") == "true", env.driver.page_source
    assert "Rolling back alpha to v1" in env.driver.find_element(By.TAG_NAME, "pre").text
    wait_for_body(env.srv, "alpha", "hello from alpha")
    env.open("/apps/alpha")
    current = env.driver.find_element(By.CSS_SELECTOR, "#releases tr.current")
    assert current.get_attribute("data-version") == "v3"
    assert "Rollback to v1" in current.text and "admin" in current.text
    events = env.srv.ssh("events", "alpha", "--format", "json")
    ok(events)
    import json

    rollbacks = [e for e in json.loads(events.stdout) if e["kind"] == "releases:rollback"]
    assert rollbacks and rollbacks[-1]["actor"] == "admin"
    assert rollbacks[-1]["detail"] == "to v1 as v3"
    env.open("/server")
    kinds = [e.get_attribute("data-kind") for e in
             env.driver.find_elements(By.CSS_SELECTOR, "#events tbody tr")]  # fmt: skip
    assert "releases:rollback" in kinds and "dashboard:sign-in" in kinds
    env.shot("server-page")


def test_a_non_admin_sees_only_its_apps_and_gets_403_on_another(env: Env) -> None:
    ok(env.srv.ssh("apps:create", "alice-app", key=env.srv.user_key))
    env.sign_in(env.srv.user_key)
    names = [r.get_attribute("data-app") for r in
             env.driver.find_elements(By.CSS_SELECTOR, "#apps tbody tr")]  # fmt: skip
    assert names == ["alice-app"]
    assert not env.driver.find_elements(By.LINK_TEXT, "Server")
    env.open("/apps/alpha")
    assert env.driver.find_element(By.TAG_NAME, "h1").text == "Not allowed"
    for path in ("/apps/alpha", "/api/apps/alpha", "/api/apps/alpha/metrics?range=1h",
                 "/api/apps/alpha/builds/latest/log", "/server", "/api/server"):
        assert env.status(path) == 403, path
    assert env.status("/api/apps/alice-app") == 200
    env.shot("non-admin-refused")


def test_reused_and_expired_links_are_refused(env: Env) -> None:
    env.driver.delete_all_cookies()
    env.driver.get(env.used_link)
    wait_until(lambda: env.driver.find_element(By.TAG_NAME, "h1").text == "Link refused",
               what="the reused link refused")  # fmt: skip
    assert env.driver.get_cookie("dockyard_session") is None
    ok(env.srv.ssh("dashboard:set", "--global", "login-ttl", "2"))
    try:
        link = env.link()
        time.sleep(3)
        env.driver.get(link)
        wait_until(lambda: env.driver.find_element(By.TAG_NAME, "h1").text == "Link refused",
                   what="the expired link refused")  # fmt: skip
        assert env.driver.get_cookie("dockyard_session") is None
        env.open("/")
        assert env.driver.find_element(By.TAG_NAME, "h1").text == "Sign in"
    finally:
        ok(env.srv.ssh("dashboard:set", "--global", "login-ttl"))
