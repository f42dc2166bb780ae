"""`releases` and `releases:rollback` end to end: the history of a pushed app, and going
back to any good release without building."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DockyardServer
from tests.deploying import busybox_repo, commit, head, ok, push, wait_for_body

APP = "hist"


@pytest.fixture(scope="module")
def srv(shared_server: DockyardServer, docker_engine, tmp_path_factory) -> DockyardServer:  # noqa: ANN001
    repo = busybox_repo(tmp_path_factory.mktemp("hist"), APP, "version-one")
    ok(push(shared_server, repo, APP))
    ok(push(shared_server, commit(repo, {"www/index.html": "version-two\n"}, "two"), APP))
    wait_for_body(shared_server, APP, "version-two")
    shared_server.last_revision = head(repo)  # type: ignore[attr-defined]
    return shared_server


def test_history_newest_first(srv: DockyardServer) -> None:
    releases = json.loads(srv.ssh("releases", APP, "--format", "json").stdout)
    assert [r["version"] for r in releases] == ["v2", "v1"]
    revision = srv.last_revision  # type: ignore[attr-defined]
    assert releases[0]["current"] and releases[0]["description"] == f"Deploy {revision[:7]}"


def test_rollback_to_the_previous_then_to_a_named_release(srv: DockyardServer) -> None:
    ok(srv.ssh("releases:rollback", APP))
    wait_for_body(srv, APP, "version-one", timeout=5)
    releases = json.loads(srv.ssh("releases", APP, "--format", "json").stdout)
    assert releases[0]["version"] == "v3" and releases[0]["description"] == "Rollback to v1"
    assert releases[0]["current"]
    text = srv.ssh("releases", APP).stdout
    assert "Rollback to v1" in text and "(current)" in text
    ok(srv.ssh("releases:rollback", APP, "v2"))
    wait_for_body(srv, APP, "version-two", timeout=5)
