"""`run APP CMD…` end to end: exit codes come back, stdout carries only the command's own
output, stdin reaches it, and `ssh -t` gives it a terminal."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import DockyardServer
from tests.deploying import ok, push, python_repo, wait_for_body

APP = "runner"


@pytest.fixture(scope="module")
def srv(shared_server: DockyardServer, docker_engine, tmp_path_factory) -> DockyardServer:  # noqa: ANN001
    repo = python_repo(tmp_path_factory.mktemp("run"), APP, "run-one")
    ok(push(shared_server, repo, APP))
    wait_for_body(shared_server, APP, "run-one")
    return shared_server


def test_exit_status_comes_back(srv: DockyardServer) -> None:
    assert srv.ssh("run", APP, "sh", "-c", "exit 3").returncode == 3


def test_stdout_and_stderr_stay_apart(srv: DockyardServer) -> None:
    both = srv.ssh("run", APP, "sh", "-c", "echo to-out; echo to-err >&2")
    assert both.returncode == 0 and both.stdout == "to-out\n" and "to-err" in both.stderr


def test_stdin_reaches_the_command(srv: DockyardServer) -> None:
    assert srv.ssh("run", APP, "cat", input="from stdin\n").stdout == "from stdin\n"


def test_a_terminal_with_ssh_t(srv: DockyardServer) -> None:
    interactive = subprocess.run(
        [*srv.ssh_args(srv.admin_key, "-tt"),
         f"run {APP} sh -c 'test -t 0 && test -t 1 && echo is-a-tty; exit 5'"],
        capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert interactive.returncode == 5 and b"is-a-tty" in interactive.stdout, interactive
