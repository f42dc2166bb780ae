"""`ps:*` end to end: scale with the proxy following, report, stop/start/restart, and
settings applied at the next restart."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import DockyardServer
from tests.deploying import busybox_repo, containers, get, ok, push, python_repo, wait_for_body


@pytest.fixture(scope="module")
def srv(shared_server: DockyardServer, docker_engine) -> DockyardServer:  # noqa: ANN001
    return shared_server


def test_scale_up_behind_the_proxy_and_back_down(
    srv: DockyardServer, docker_engine, tmp_path
) -> None:  # noqa: ANN001
    app = "scaled"
    ok(push(srv, python_repo(tmp_path, app, "scaled-one"), app))
    body = json.loads(wait_for_body(srv, app, "scaled-one"))
    assert body["dyno"] == "web.1"
    assert srv.ssh("ps:scale", app).stdout.splitlines() == [
        f"-----> Scaling for {app}", "proctype: qty", "--------: ---", "web:  1", "worker:  0",
    ]  # fmt: skip
    ok(srv.ssh("checks:set", app, "wait-to-retire", "0"))
    ok(srv.ssh("ps:scale", app, "web=2", "worker=1"))
    live = sorted(c.name for c in containers(docker_engine, app))
    assert live == [f"{app}.web.1", f"{app}.web.2", f"{app}.worker.1"]
    hosts = {json.loads(get(srv, app)[1])["host"] for _ in range(8)}
    assert len(hosts) == 2
    report = json.loads(srv.ssh("ps:report", app, "--format", "json").stdout)
    assert report["processes"] == 3 and report["running"] == "true"
    ok(srv.ssh("ps:scale", app, "web=1", "worker=0"))
    deadline = time.monotonic() + 10
    while len(containers(docker_engine, app, live_only=False)) != 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert {json.loads(get(srv, app)[1])["dyno"] for _ in range(4)} == {"web.1"}
    assert srv.ssh("ps:scale", app, "--format", "json").stdout.strip() == json.dumps(
        [{"process_type": "web", "quantity": 1}, {"process_type": "worker", "quantity": 0}]
    )


def test_stop_start_restart_and_limits(
    srv: DockyardServer, docker_engine, tmp_path  # noqa: ANN001
) -> None:
    app = "pss"
    ok(push(srv, busybox_repo(tmp_path, app, "steady"), app))
    wait_for_body(srv, app, "steady")
    ok(srv.ssh("ps:stop", app))
    [web] = containers(docker_engine, app)
    assert web.status == "exited"
    assert get(srv, app)[0] >= 500
    assert srv.ssh("ps:report", app, "--running").stdout.strip() == "false"
    ok(srv.ssh("ps:start", app))
    wait_for_body(srv, app, "steady", timeout=5)
    before = containers(docker_engine, app)[0].id
    ok(srv.ssh("checks:set", app, "wait-to-retire", "0"))
    restarted = srv.ssh("ps:restart", app)
    ok(restarted)
    assert "All checks successful (web.1)" in restarted.stdout
    wait_for_body(srv, app, "steady", timeout=5)
    assert containers(docker_engine, app)[0].id != before
    ok(srv.ssh("resource:limit", app, "--memory", "256m", "--cpu", "0.5"))
    ok(srv.ssh("ps:restart", app))
    host_config = containers(docker_engine, app)[0].attrs["HostConfig"]
    assert host_config["Memory"] == 256 * 1024 * 1024 and host_config["NanoCpus"] == 500_000_000
    bad = srv.ssh("ps:set", app, "restart-policy", "sometimes")
    assert bad.returncode != 0 and "restart-policy" in bad.stderr
