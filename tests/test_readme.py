"""The README's quick start runs as written, and every example app deploys.

The quick start's blocks are read from README.md at test time and run by one bash against
a real `dockyard serve` that starts with an empty data dir (no key yet: `dockyard init` in
the first block makes the reader the admin), through the real OpenSSH client, git, Docker
and nginx. tests/quickstart.py says exactly what is substituted (ports, `server`, a DNS
server and pebble standing in for wildcard DNS and Let's Encrypt) and nothing else is.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    REPO_ROOT,
    DockyardServer,
    remove_server_leftovers,
    start_server,
    stop_server,
)
from tests.deploying import git, ok, push, wait_for_body
from tests.quickstart import (
    Reader,
    Target,
    make_reader,
    quickstart_blocks,
    run_quickstart,
    stand_ins,
    substitute,
)


def recorded_https_port(data_dir: Path) -> int:
    """The HTTPS port the server was started with, as the proxy recorded it at start."""
    conn = sqlite3.connect(data_dir / "state.db")
    try:
        row = conn.execute(
            "SELECT value FROM global_settings WHERE key = 'proxy.https-listen'"
        ).fetchone()
    finally:
        conn.close()
    return int(row[0].rpartition(":")[2])


@pytest.fixture
def fresh_server(tmp_path: Path, docker_engine) -> Iterator[tuple[DockyardServer, Reader]]:  # noqa: ANN001
    """A server with an empty data dir, and the reader's home holding the reader's key."""
    reader = make_reader(tmp_path / "home")
    srv = start_server(tmp_path / "data", reader.key.parent, reader.key, reader.key)
    try:
        yield srv, reader
    finally:
        stop_server(srv)
        remove_server_leftovers(srv)


def test_quickstart_blocks_are_found_and_substituted() -> None:
    blocks = quickstart_blocks((REPO_ROOT / "README.md").read_text())
    text = "\n".join(blocks)
    assert blocks[0].strip() == "dockyard init"
    for needed in ("git push dockyard main", "config:set hello GREETING=\"'Good morning'\"",
                   "dockyard init --domain", "letsencrypt:enable hello"):  # fmt: skip
        assert needed in text
    moved = substitute(text, Target(ssh_port=40022, http_port=40080, https_port=40443))
    assert "2222" not in moved and "-p 40022" in moved and "@server:40022/" in moved
    assert "http://hello.localhost:40080/" in moved
    assert "https://hello.apps.example.com:40443/" in moved
    assert substitute(text, Target()) == text  # on the real ports nothing changes


def test_quick_start_as_written(
    fresh_server: tuple[DockyardServer, Reader], tmp_path: Path
) -> None:
    srv, reader = fresh_server
    target = Target(
        ssh_port=srv.port, http_port=srv.http_port,
        https_port=recorded_https_port(srv.data_dir), data_dir=srv.data_dir,
        path_first=(Path(sys.prefix) / "bin",),
    )  # fmt: skip
    with stand_ins(target, tmp_path / "standins") as extras:
        run = run_quickstart(target, reader, extras)
    out = run.output
    assert run.returncode == 0, out[-8000:]
    # 1. init: the reader's key became the admin; the unit went into the stand-in tree.
    assert re.search(r"added key admin, an admin \(SHA256:", out), out
    assert "(an offline tree: nothing was started)" in out
    assert (tmp_path / "standins/systemd-root/etc/systemd/system/dockyard.service").is_file()
    # 2. the push created the app and deployed it; 3. nginx served it by name.
    assert "Application deployed:" in out and "http://hello.localhost" in out
    first = out.index("Hello from Python 3.")
    # 4. quoting: the value with a space arrived whole, and the redeploy serves it.
    second = out.index("Good morning from Python 3.", first)
    # 5. the domain resolved to this machine (through the stand-in DNS), and HTTPS serves
    # the app at its new name with pebble's certificate.
    assert "*.apps.example.com resolves to this machine" in out
    assert out.index("Good morning from Python 3.", second + 1) > second
    # The deploy branch is the first branch deployed.
    report = srv.ssh("git:report", "hello", "--format", "json", key=reader.key)
    assert '"git-deploy-branch": "main"' in report.stdout, report


EXAMPLES = {
    "python": "Hello from Python 3.",
    "node": "Hello from Node.js v",
    "go": "Hello from Go go1.",
    "static": "Hello from a static site",
    "procfile": "Hello from a Procfile (perl v5.",
    "ruby": "Hello from Ruby 3.",
    "php": "Hello from PHP 8.",
    "java": "Hello from Java 17",
}


def test_examples_cover_every_kind_the_builder_detects() -> None:
    from builder.runtimes import OFFICIAL

    shipped = {p.name for p in (REPO_ROOT / "examples").iterdir() if p.is_dir()}
    assert shipped == set(OFFICIAL) == set(EXAMPLES)


@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_example_deploys_and_answers_through_nginx(
    shared_server: DockyardServer, docker_engine, tmp_path: Path, kind: str  # noqa: ANN001
) -> None:
    repo = tmp_path / kind
    shutil.copytree(REPO_ROOT / "examples" / kind, repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "first")
    app = f"example-{kind}"
    result = push(shared_server, repo, app)
    ok(result)
    assert f"Building {app} from detected {kind} app" in result.stderr, result.stderr
    body = wait_for_body(shared_server, app, EXAMPLES[kind], timeout=60)
    assert body.endswith("\n") or kind == "static", body
    ok(shared_server.ssh("apps:destroy", app, "--force"))
