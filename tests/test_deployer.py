"""Deploys end to end: real `git push` over our SSH server, real Docker builds from the local
base images, real containers, traffic through the real nginx (Host `APP.localhost`): the
zero-downtime switch, failing checks and builds, reconcile after a restart, rebuilds.
(Per feature: tests/test_config.py, test_ps.py, test_run.py, test_logs.py,
test_releases.py, test_apps.py.)

Also a few unit tests of pure helpers (health check parsing, restart policies, log lines).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.applogs import format_line
from deployer.commands.releases import _rollback_target
from deployer.containers import list_containers, parse_restart_policy
from deployer.deploy import container_port
from deployer.healthchecks import DEFAULT_CHECK, checks_for
from deployer.releases import Release, ReleaseStore, effective_formation
from dockyard.apps import AppStore
from dockyard.errors import DockyardError
from dockyard.state import StateStore
from tests.conftest import DockyardServer, remove_server_leftovers, start_server, stop_server
from tests.deploying import (
    BUSYBOX_DOCKERFILE,
    busybox_repo,
    commit,
    containers,
    get,
    head,
    ok,
    push,
    wait_for_body,
)  # fmt: skip


@pytest.fixture(scope="module")
def srv(shared_server: DockyardServer, docker_engine) -> DockyardServer:
    ok(shared_server.ssh("builder:set", "--global", "base-python", "dockyard-base/python:3"))
    ok(shared_server.ssh("builder:set", "--global", "base-procfile", "dockyard-base/python:3"))
    return shared_server


# ---------------------------------------------------------------- unit
def test_healthcheck_declarations_accept_dokku_list_and_single_object() -> None:
    listed = checks_for(
        {"healthchecks": {"web": [{"type": "startup", "name": "up", "path": "/health",
                                   "attempts": 3, "wait": 0.5, "content": "ok"}]}}, "web"
    )  # fmt: skip
    assert [(c.name, c.path, c.attempts, c.wait, c.content) for c in listed] == [
        ("up", "/health", 3, 0.5, "ok")
    ]
    single = checks_for({"healthchecks": {"web": {"path": "/x"}}}, "web")
    assert single[0].path == "/x"
    assert checks_for({}, "web") == [DEFAULT_CHECK]
    assert checks_for({}, "worker") == []
    liveness_only = checks_for({"healthchecks": {"web": [{"type": "liveness"}]}}, "web")
    assert liveness_only == [DEFAULT_CHECK]


def test_restart_policies_are_validated() -> None:
    assert parse_restart_policy("on-failure:10") == {"Name": "on-failure", "MaximumRetryCount": 10}
    assert parse_restart_policy("unless-stopped") == {"Name": "unless-stopped"}
    for bad in ("sometimes", "on-failure:x", "always:3", ""):
        with pytest.raises(ValueError):
            parse_restart_policy(bad)


def test_log_lines_are_prefixed_like_heroku() -> None:
    key, line = format_line(b"2026-11-22T22:50:16.123456789Z hello world\n", "web.1")
    assert line == "2026-11-22T22:50:16.123456+00:00 app[web.1]: hello world"
    assert key.startswith("2026-11-22T22:50:16")


def _release(version: int, **kwargs) -> Release:
    fields = {
        "image": f"dockyard/u:{version}", "image_id": "", "revision": "r" * 40,
        "description": "d", "config": {}, "formation": {}, "procfile": {}, "app_json": {},
        "ports": [],
    }  # fmt: skip
    fields.update(kwargs)
    return Release(version=version, **fields)


def test_release_store_numbers_releases_and_picks_rollback_targets(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state.db")
    app = AppStore(state).create("unit", owner="admin")
    store = ReleaseStore(state)
    first = store.add(app, _release(0, formation={"web": 2}))
    store.make_current(app, first)
    failed = store.add(app, _release(0))
    store.mark_failed(app, failed)
    third = store.add(app, _release(0, config={"K": "v"}))
    store.make_current(app, third)
    assert [r.version for r in store.all(app)] == [1, 2, 3]
    assert store.current(app).config == {"K": "v"} and store.current_version(app) == 3
    # The default rollback target skips releases that never went live.
    assert _rollback_target(store, app, third, None).version == 1
    assert _rollback_target(store, app, third, "v1").formation == {"web": 2}
    with pytest.raises(DockyardError, match="never deployed"):
        _rollback_target(store, app, third, "v2")
    with pytest.raises(DockyardError, match="does not exist"):
        _rollback_target(store, app, third, "v9")


def test_formation_and_port_defaults() -> None:
    procfile_app = _release(1, procfile={"web": "serve", "worker": "work", "release": "mig"})
    assert procfile_app.process_types() == ["web", "worker"]
    assert effective_formation({}, procfile_app) == {"web": 1, "worker": 0}
    assert effective_formation({"worker": 3, "gone": 1}, procfile_app) == {"web": 1, "worker": 3}
    assert effective_formation({}, _release(1)) == {"web": 1}
    assert container_port(_release(1), {}) == 5000
    assert container_port(_release(1, ports=[8080]), {}) == 8080
    assert container_port(_release(1, ports=[8080, 9090]), {}) == 5000
    assert container_port(_release(1, ports=[8080]), {"PORT": "7000"}) == 7000


# ---------------------------------------------------------------- end to end
def test_dockerfile_app_deploys_and_redeploys_without_downtime(
    srv: DockyardServer, docker_engine, tmp_path: Path
) -> None:
    app = "bb"
    repo = busybox_repo(tmp_path, app, "version-one")
    first = push(srv, repo, app)
    ok(first)
    for expected in (
        f"-----> Releasing {app}...", "=====> Processing deployment checks",
        "Attempting pre-flight checks (web.1)", "All checks successful (web.1)",
        "=====> Application deployed:", f"http://{app}.localhost",
    ):  # fmt: skip
        assert expected in first.stderr, first.stderr
    assert wait_for_body(srv, app, "version-one")
    [web] = containers(docker_engine, app)
    assert web.name == f"{app}.web.1"
    assert web.labels["dockyard.process"] == "web" and web.labels["dockyard.release"] == "1"
    env = dict(e.split("=", 1) for e in web.attrs["Config"]["Env"])
    assert env["DYNO"] == "web.1" and env["PORT"] == "5000" and env["GIT_REV"] == head(repo)
    bindings = web.attrs["HostConfig"]["PortBindings"]["5000/tcp"]
    assert bindings[0]["HostIp"] == "127.0.0.1"
    assert web.attrs["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"

    # A second push while a client keeps asking: every answer is a 200.
    ok(srv.ssh("checks:set", app, "wait-to-retire", "1"))
    statuses: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                statuses.append(get(srv, app)[0])
            except OSError:
                statuses.append(0)
            time.sleep(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    commit(repo, {"www/index.html": "version-two\n"}, "two")
    try:
        ok(push(srv, repo, app))
        wait_for_body(srv, app, "version-two", timeout=5)
        # Keep asking until the old container is retired (wait-to-retire is 1 s).
        deadline = time.monotonic() + 10
        while len(containers(docker_engine, app, live_only=False)) > 1:
            assert time.monotonic() < deadline, "the old container was not retired"
            time.sleep(0.1)
    finally:
        stop.set()
        poller.join()
    assert statuses and set(statuses) == {200}, statuses
    live = containers(docker_engine, app)
    assert [c.name for c in live] == [f"{app}.web.1"] and live[0].labels["dockyard.release"] == "2"


def test_failing_health_check_keeps_old_release_serving(
    srv: DockyardServer, docker_engine, tmp_path: Path
) -> None:
    app = "hc"
    repo = busybox_repo(tmp_path, app, "healthy")
    ok(push(srv, repo, app))
    wait_for_body(srv, app, "healthy")
    good_rev = head(repo)
    broken = (
        'FROM dockyard-base/busybox:latest\nCMD ["/bin/sh", "-c", "echo broken-marker; exit 4"]\n'
    )
    commit(repo, {"Dockerfile": broken}, "broken")
    result = push(srv, repo, app)
    assert result.returncode != 0
    assert "broken-marker" in result.stderr, result.stderr
    assert "previous release keeps serving" in result.stderr
    assert "[remote rejected]" in result.stderr
    assert get(srv, app) == (200, "healthy\n")
    assert [c.name for c in containers(docker_engine, app, live_only=False)] == [f"{app}.web.1"]
    assert srv.ssh("config:get", app, "GIT_REV").stdout.strip() == good_rev

    # A declared check that never sees its content fails the same way.
    app_json = {"healthchecks": {"web": [
        {"type": "startup", "path": "/", "content": "never-there", "attempts": 2, "wait": 0.1}
    ]}}  # fmt: skip
    commit(repo, {"Dockerfile": BUSYBOX_DOCKERFILE, "app.json": json.dumps(app_json)}, "c")
    result = push(srv, repo, app)
    assert result.returncode != 0 and "never-there" in result.stderr, result.stderr
    assert get(srv, app) == (200, "healthy\n")
    ok(srv.ssh("checks:disable", app))
    ok(push(srv, repo, app))
    assert "checks:" not in srv.ssh("checks:report", app).stderr
    assert (
        json.loads(srv.ssh("checks:report", app, "--format", "json").stdout)["checks-enabled"]
        is False
    )


def test_failing_build_and_failing_release_phase_reject_the_push(
    srv: DockyardServer, docker_engine, tmp_path: Path
) -> None:
    app = "rel"
    repo = busybox_repo(tmp_path, app, "first")
    ok(push(srv, repo, app))
    wait_for_body(srv, app, "first")
    commit(repo, {"Dockerfile": "FROM dockyard-base/busybox:latest\nRUN exit 7\n"}, "bad build")
    result = push(srv, repo, app)
    assert result.returncode != 0 and "[remote rejected]" in result.stderr

    procfile = "release: sh -c 'echo release-marker; exit 2'\nweb: httpd -f -p $PORT -h /www\n"
    commit(repo, {"Dockerfile": BUSYBOX_DOCKERFILE, "Procfile": procfile,
                  "www/index.html": "second\n"}, "release fails")  # fmt: skip
    result = push(srv, repo, app)
    assert result.returncode != 0
    assert "release-marker" in result.stderr and "exit status 2" in result.stderr, result.stderr
    assert get(srv, app) == (200, "first\n")
    releases = json.loads(srv.ssh("releases", app, "--format", "json").stdout)
    assert [r["status"] for r in releases] == ["failed", "succeeded"]

    commit(repo, {"Procfile": procfile.replace("exit 2", "exit 0")}, "release passes")
    result = push(srv, repo, app)
    ok(result)
    assert "release-marker" in result.stderr
    wait_for_body(srv, app, "second", timeout=5)


def test_reconcile_after_server_restart(server: DockyardServer, docker_engine, tmp_path: Path):
    app = "rc"
    repo = busybox_repo(tmp_path, app, "survives")
    ok(push(server, repo, app))
    wait_for_body(server, app, "survives")
    [web] = containers(docker_engine, app)
    stray = docker_engine.containers.run(
        "dockyard-base/busybox:latest", ["sleep", "300"], detach=True, name="ghost.web.1",
        labels={"dockyard.home": str(server.data_dir), "dockyard.app": "ghost",
                "dockyard.release": "1", "dockyard.process": "web", "dockyard.instance": "1"},
    )  # fmt: skip
    try:
        stop_server(server)
        web.reload()
        assert web.status == "running"  # stopping Dockyard never stops an app
        assert get(server, app) == (200, "survives\n")
        web.stop(timeout=1)
        restarted = start_server(
            server.data_dir, server.keys_dir, server.admin_key, server.user_key,
            port=server.port, http_port=server.http_port,
        )  # fmt: skip
        try:
            wait_for_body(restarted, app, "survives", timeout=20)
            web.reload()
            assert web.status == "running"
            deadline = time.monotonic() + 10
            while any(c.id == stray.id for c in list_containers({})):
                assert time.monotonic() < deadline, "the stray container was not removed"
                time.sleep(0.2)
        finally:
            stop_server(restarted)
    finally:
        remove_server_leftovers(server)


def test_ps_rebuild_deploys_the_deploy_branch_tip_again(
    srv: DockyardServer, docker_engine, tmp_path: Path
) -> None:
    app = "rb"
    repo = busybox_repo(tmp_path, app, "rebuilt")
    ok(push(srv, repo, app))
    wait_for_body(srv, app, "rebuilt")
    result = srv.ssh("ps:rebuild", app)
    ok(result)
    assert f"-----> Building {app} from" in result.stdout
    releases = json.loads(srv.ssh("releases", app, "--format", "json").stdout)
    assert [r["version"] for r in releases] == ["v2", "v1"]
    assert releases[0]["revision"] == head(repo) and releases[0]["current"]
    assert get(srv, app) == (200, "rebuilt\n")
    nothing = srv.ssh("ps:rebuild", "never-pushed-app")
    assert nothing.returncode != 0


def test_an_engine_restart_quicker_than_a_ping_is_still_noticed() -> None:
    """The events stream to the engine ends when the engine stops; EngineSessions reports
    that once, however short the outage. A stream the engine never accepted (down, or its
    events refused) is no restart. Fake streams here: two refusals, one that ends, then one
    that stays open like an idle engine's."""
    from deployer.hooks import EngineSessions

    opened = threading.Semaphore(0)
    streams = iter([None, None, ["an event", "then the engine stops"]])

    def open_stream() -> Iterator[str]:
        opened.release()
        stream = next(streams, "idle")
        if stream is None:
            raise ConnectionRefusedError("the engine is not there")
        if stream == "idle":
            threading.Event().wait()  # the (daemon) thread parks
        return iter(stream)

    sessions = EngineSessions(open_stream)
    assert opened.acquire(timeout=5) and opened.acquire(timeout=5)
    assert not sessions.went_away()  # refusals are not a restart
    assert opened.acquire(timeout=5) and opened.acquire(timeout=5)
    assert sessions.went_away()
    assert not sessions.went_away()  # reported once; the new stream stays open
