"""`config:*` end to end: values reach the app's containers exactly, exports quote them for
shells, and a change is a new release of the same image."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import DockyardServer
from tests.deploying import get, ok, push, python_repo, wait_for_body

APP = "cfg"
TRICKY = {"SPACED": "a b  c", "QUOTES": "it's \"quoted\"", "DOLLAR": "$HOME and ${PATH}",
          "UNICODE": "héllo ☃ 日本", "EQUALS": "a=b=c"}  # fmt: skip


@pytest.fixture(scope="module")
def srv(shared_server: DockyardServer, docker_engine, tmp_path_factory) -> DockyardServer:  # noqa: ANN001
    repo = python_repo(tmp_path_factory.mktemp("cfg"), APP, "cfg-one")
    ok(push(shared_server, repo, APP))
    wait_for_body(shared_server, APP, "cfg-one")
    result = shared_server.ssh("config:set", APP, *(f"{k}={v}" for k, v in TRICKY.items()))
    ok(result)
    assert f"-----> Restarting app {APP}" in result.stdout
    return shared_server


def test_values_reach_the_container_exactly_with_no_shell_between(srv: DockyardServer) -> None:
    for key, value in TRICKY.items():
        assert get(srv, APP, f"/env/{key}") == (200, value)
        assert srv.ssh("config:get", APP, key).stdout == value + "\n"
    printed = srv.ssh("run", APP, "printenv", "UNICODE")
    assert printed.returncode == 0 and printed.stdout == TRICKY["UNICODE"] + "\n", printed


def test_exports_are_quoted_for_shells_and_json(srv: DockyardServer) -> None:
    exports = srv.ssh("config:export", APP).stdout
    assert "export DOLLAR='$HOME and ${PATH}'" in exports
    shell = subprocess.run(
        ["sh", "-c", exports + '\nprintf %s "$QUOTES"'], capture_output=True, text=True
    )
    assert shell.stdout == TRICKY["QUOTES"]
    values = json.loads(srv.ssh("config:export", "--format", "json", APP).stdout)
    assert values["SPACED"] == "a b  c"


def test_a_change_is_a_release_and_an_empty_one_is_refused(srv: DockyardServer) -> None:
    empty = srv.ssh("config:set", APP)
    assert empty.returncode != 0 and "At least one env pair must be given" in empty.stderr
    releases = json.loads(srv.ssh("releases", APP, "--format", "json").stdout)
    assert releases[0]["description"].startswith("Set ") and releases[0]["current"]


def test_unset(srv: DockyardServer, tmp_path: Path) -> None:
    ok(srv.ssh("config:unset", "--no-restart", APP, "EQUALS"))
    assert srv.ssh("config:get", APP, "EQUALS").returncode == 1
