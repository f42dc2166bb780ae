"""`logs` end to end: recent lines by process type, and `-t` following until the client
goes (and the server stops following too)."""

from __future__ import annotations

import select
import subprocess
import time

import pytest

from tests.conftest import DockyardServer
from tests.deploying import get, ok, push, python_repo, wait_for_body

APP = "logged"


@pytest.fixture(scope="module")
def srv(shared_server: DockyardServer, docker_engine, tmp_path_factory) -> DockyardServer:  # noqa: ANN001
    repo = python_repo(tmp_path_factory.mktemp("logs"), APP, "logs-one")
    ok(push(shared_server, repo, APP))
    wait_for_body(shared_server, APP, "logs-one")
    return shared_server


def test_follow_until_the_client_goes(srv: DockyardServer) -> None:
    follower = subprocess.Popen(
        [*srv.ssh_args(srv.admin_key), f"logs {APP} -t -n 0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # Requests until one of them shows up: the follower attaches when it attaches.
        seen, deadline, n = b"", time.monotonic() + 20, 0
        while b"followed-request" not in seen and time.monotonic() < deadline:
            n += 1
            get(srv, APP, f"/followed-request-{n}")
            if select.select([follower.stdout], [], [], 0.5)[0]:
                seen = follower.stdout.readline()
        assert b"followed-request" in seen and b"app[web.1]: " in seen, seen
    finally:
        follower.terminate()
        follower.wait(timeout=10)
    # The server side stops following too: the session ends only once the command returned.
    deadline = time.monotonic() + 10
    while not any(
        '"client disconnected"' in entry and '"logs"' in entry for entry in srv.log().splitlines()
    ):
        assert time.monotonic() < deadline, "logs -t kept running after the client left"
        time.sleep(0.2)


def test_recent_lines_of_one_process_type(srv: DockyardServer) -> None:
    get(srv, APP, "/a-recent-request")
    deadline = time.monotonic() + 10
    while (
        "a-recent-request" not in (recent := srv.ssh("logs", APP, "-n", "50", "-p", "web")).stdout
    ):
        assert time.monotonic() < deadline, recent
        time.sleep(0.2)
