"""git push and clone over Dockyard's SSH server, end to end with the real git and ssh.

The server runs `tests.gitrecv_pipeline` (Dockyard with a deploy pipeline scripted by a
`.pipeline` file in the pushed tree), so these tests exercise the push, not image builds.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import gitrecv  # noqa: F401  (registers the deploy branch as the rebuild source)
from dockyard.pipeline import current_source
from dockyard.services import Services
from dockyard.settings import Settings
from tests.conftest import (
    DockyardServer,
    remove_server_leftovers,
    require_tool,
    start_harness_server,
    stop_server,
)

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}
TEMP_PACK_GLOBS = ("objects/tmp_pack_*", "objects/pack/tmp*", "**/*.lock")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockyardServer]:
    require_tool("git")
    server = start_harness_server(tmp_path_factory.mktemp("gitrecv"))
    try:
        yield server
    finally:
        stop_server(server)
        remove_server_leftovers(server)


class Work:
    """A client working copy."""

    def __init__(self, path: Path, server: DockyardServer, key: Path | None = None) -> None:
        self.path = path
        self.server = server
        self.env = {**server.git_env(key), **GIT_IDENTITY}

    def git(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["git", *args], cwd=self.path, env=self.env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def commit(self, message: str, files: dict[str, str | bytes]) -> str:
        for name, content in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.rev("HEAD")

    def rev(self, ref: str) -> str:
        return self.git("rev-parse", ref).stdout.strip()

    def push(self, app: str, *refspecs: str, check: bool = False) -> subprocess.CompletedProcess:
        return self.git("push", self.server.remote(app), *refspecs, check=check)


def new_work(
    tmp_path: Path, server: DockyardServer, name: str = "w", key: Path | None = None
) -> Work:
    path = tmp_path / name
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    return Work(path, server, key)


def bare(server: DockyardServer, app: str) -> Path:
    return server.data_dir / "repos" / f"{app}.git"


def server_ref(server: DockyardServer, app: str, ref: str) -> str | None:
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "-q", ref], cwd=bare(server, app),
        capture_output=True, text=True,
    )  # fmt: skip
    return proc.stdout.strip() or None


def assert_repo_clean(server: DockyardServer, app: str) -> None:
    repo = bare(server, app)
    fsck = subprocess.run(["git", "fsck", "--strict"], cwd=repo, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr + fsck.stdout
    leftovers = [p for pattern in TEMP_PACK_GLOBS for p in repo.glob(pattern)]
    assert leftovers == []


def git_rev_var(server: DockyardServer, app: str) -> str | None:
    with sqlite3.connect(server.data_dir / "state.db") as conn:
        row = conn.execute(
            "SELECT c.value FROM app_config c JOIN apps a ON a.id = c.app_id "
            "WHERE a.name = ? AND c.key = 'GIT_REV'",
            (app,),
        ).fetchone()
    return row[0] if row else None


def report(server: DockyardServer, app: str) -> dict[str, str]:
    result = server.ssh("git:report", app, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_first_and_second_push_deploy_and_record(srv: DockyardServer, tmp_path: Path) -> None:
    work = new_work(tmp_path, srv)
    first = work.commit("one", {"app.txt": "v1\n", ".pipeline": "print building v1\n"})
    result = work.push("first", "main")
    assert result.returncode == 0, result.stderr
    assert "remote: -----> building v1" in result.stderr
    assert "* [new branch]      main -> main" in result.stderr
    assert server_ref(srv, "first", "refs/heads/main") == first
    assert git_rev_var(srv, "first") == first

    second = work.commit("two", {"app.txt": "v2\n"})
    result = work.push("first", "main")
    assert result.returncode == 0, result.stderr
    assert server_ref(srv, "first", "refs/heads/main") == second
    assert git_rev_var(srv, "first") == second
    info = report(srv, "first")
    assert info["git-deploy-branch"] == "main"
    assert info["git-last-deployed-rev"] == second
    assert_repo_clean(srv, "first")

    # What a rebuild without a push (`ps:rebuild`) deploys: the deploy branch's tip.
    services = Services(Settings(data_dir=srv.data_dir))
    source = current_source(services, services.apps.get("first"))
    assert source is not None and source.revision == second
    assert source.read_file("app.txt") == b"v2\n"
    source.close()
    events = json.loads(srv.ssh("events", "first", "--format", "json").stdout)
    pushes = [e for e in events if e["kind"] == "git:push"]
    assert [e["detail"] for e in pushes] == [f"main:{first[:12]}", f"main:{second[:12]}"]
    assert {e["actor"] for e in pushes} == {"admin"}


def test_push_url_forms(srv: DockyardServer, tmp_path: Path) -> None:
    work = new_work(tmp_path, srv)
    rev = work.commit("one", {"a": "1"})
    for url in (f"{srv.remote('forms')}.git", f"ssh://dockyard@127.0.0.1:{srv.port}/~/forms.git"):
        work.commit("more", {"a": url})
        assert work.git("push", url, "main", check=False).returncode == 0
    assert server_ref(srv, "forms", "main") == work.rev("main") != rev
    bad = work.git("push", f"ssh://dockyard@127.0.0.1:{srv.port}/../etc", "main", check=False)
    assert bad.returncode != 0
    assert "Invalid app name" in bad.stderr


def test_scp_form_remote_with_the_port_in_ssh_config(srv: DockyardServer, tmp_path: Path) -> None:
    """`git remote add dockyard dockyard-host:APP`, the port and key coming from ssh_config."""
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host dockyard-host\n"
        "  HostName 127.0.0.1\n"
        f"  Port {srv.port}\n"
        "  User dockyard\n"
        f"  IdentityFile {srv.admin_key}\n"
        "  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n"
        "  LogLevel ERROR\n"
        "  BatchMode yes\n"
    )
    work = new_work(tmp_path, srv)
    work.env["GIT_SSH_COMMAND"] = f"ssh -F {config}"
    work.commit("one", {"a": "1"})
    work.git("remote", "add", "dockyard", "dockyard-host:scpform")
    pushed = work.git("push", "dockyard", "main", check=False)
    assert pushed.returncode == 0, pushed.stderr
    assert server_ref(srv, "scpform", "main") == work.rev("main")
    clone = tmp_path / "clone"
    cloned = subprocess.run(
        ["git", "clone", "-q", "dockyard-host:scpform.git", str(clone)],
        env=work.env, capture_output=True, text=True,
    )  # fmt: skip
    assert cloned.returncode == 0, cloned.stderr
    assert (clone / "a").read_text() == "1"


def test_force_push(srv: DockyardServer, tmp_path: Path) -> None:
    work = new_work(tmp_path, srv)
    work.commit("one", {"a": "1"})
    work.commit("two", {"a": "2"})
    assert work.push("forced", "main").returncode == 0
    work.git("reset", "-q", "--hard", "HEAD~1")
    rewritten = work.commit("rewritten", {"a": "3"})
    refused = work.push("forced", "main")
    assert refused.returncode != 0
    assert "[rejected]" in refused.stderr and "unexpected disconnect" not in refused.stderr
    forced = work.push("forced", "--force", "main")
    assert forced.returncode == 0, forced.stderr
    assert server_ref(srv, "forced", "main") == rewritten
    assert git_rev_var(srv, "forced") == rewritten
    assert_repo_clean(srv, "forced")


def test_tags_branches_and_deletes(srv: DockyardServer, tmp_path: Path) -> None:
    work = new_work(tmp_path, srv)
    main = work.commit("one", {"a": "1"})
    assert work.push("tags", "main").returncode == 0
    work.git("tag", "light")
    work.git("tag", "-a", "-m", "release one", "v1")
    annotated = work.rev("v1")
    result = work.push("tags", "--tags")
    assert result.returncode == 0, result.stderr
    assert "deploy did not complete, you must push to main" in result.stderr
    assert server_ref(srv, "tags", "refs/tags/light") == main
    assert server_ref(srv, "tags", "refs/tags/v1") == annotated != main
    assert server_ref(srv, "tags", "refs/tags/v1^{commit}") == main

    work.git("checkout", "-q", "-b", "feature")
    work.commit("feature", {"b": "2"})
    assert work.push("tags", "feature").returncode == 0
    assert work.push("tags", ":feature", ":light", ":v1").returncode == 0
    for ref in ("refs/heads/feature", "refs/tags/light", "refs/tags/v1"):
        assert server_ref(srv, "tags", ref) is None
    refused = work.push("tags", ":main")
    assert refused.returncode != 0
    assert "(the deploy branch cannot be deleted)" in refused.stderr
    assert server_ref(srv, "tags", "main") == main
    assert_repo_clean(srv, "tags")


def test_non_deploy_branch_is_stored_not_deployed(srv: DockyardServer, tmp_path: Path) -> None:
    work = new_work(tmp_path, srv)
    work.git("checkout", "-q", "-b", "feature")
    rev = work.commit("one", {"a": "1", ".pipeline": "print SHOULD NOT RUN\n"})
    result = work.push("nodeploy", "feature")
    assert result.returncode == 0, result.stderr
    assert (
        "remote: -----> WARNING: deploy did not complete, you must push to main or master."
        in result.stderr
    )
    assert "SHOULD NOT RUN" not in result.stderr
    assert server_ref(srv, "nodeploy", "feature") == rev
    assert git_rev_var(srv, "nodeploy") is None
    assert report(srv, "nodeploy")["git-last-deployed-rev"] == ""


def test_configured_deploy_branch(srv: DockyardServer, tmp_path: Path) -> None:
    work = new_work(tmp_path, srv)
    rev = work.commit("one", {"a": "1"})
    assert srv.ssh("apps:create", "branchy").returncode == 0
    assert srv.ssh("git:set", "branchy", "deploy-branch", "prod").returncode == 0
    result = work.push("branchy", "main")
    assert "you must push to prod" in result.stderr
    assert git_rev_var(srv, "branchy") is None
    assert work.push("branchy", "main:prod").returncode == 0
    assert git_rev_var(srv, "branchy") == rev
    assert report(srv, "branchy")["git-deploy-branch"] == "prod"


def test_global_deploy_branch_applies_to_apps_without_their_own(
    srv: DockyardServer, tmp_path: Path
) -> None:
    work = new_work(tmp_path, srv)
    rev = work.commit("one", {"a": "1", ".pipeline": "print DEPLOYED\n"})
    assert srv.ssh("git:set", "--global", "deploy-branch", "release").returncode == 0
    try:
        result = work.push("globally", "main")
        assert "you must push to release" in result.stderr and "DEPLOYED" not in result.stderr
        assert git_rev_var(srv, "globally") is None
        result = work.push("globally", "main:release")
        assert result.returncode == 0 and "DEPLOYED" in result.stderr, result.stderr
        assert git_rev_var(srv, "globally") == rev
    finally:
        assert srv.ssh("git:set", "--global", "deploy-branch").returncode == 0


def test_clone_and_fetch_give_back_every_ref(srv: DockyardServer, tmp_path: Path) -> None:
    work = new_work(tmp_path, srv)
    work.commit("one", {"a": "1", "bin/run": "#!/bin/sh\n", "dir/deep/file": "x" * 5000})
    os.chmod(work.path / "bin/run", 0o755)
    os.symlink("dir/deep/file", work.path / "link")
    work.commit("two", {"a": "2", "dir/deep/file": "x" * 5000 + "y"})
    work.git("tag", "-a", "-m", "annotated", "v1")
    work.git("branch", "other", "HEAD~1")
    assert work.push("cloneme", "main", "other", "--tags").returncode == 0

    clone = Work(tmp_path / "clone", srv)
    result = subprocess.run(
        ["git", "clone", srv.remote("cloneme"), str(clone.path)], env=clone.env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for ref in ("main", "other", "v1"):
        assert clone.rev(f"origin/{ref}" if ref != "v1" else ref) == work.rev(ref)
    assert clone.rev("HEAD") == work.rev("main")
    assert (clone.path / "link").is_symlink() and os.access(clone.path / "bin/run", os.X_OK)
    fsck = clone.git("fsck", "--strict", check=False)
    assert fsck.returncode == 0, fsck.stderr

    # An incremental fetch: the server sends only what the clone lacks, deltas against it.
    newest = work.commit("three", {"dir/deep/file": "x" * 5000 + "yz"})
    assert work.push("cloneme", "main").returncode == 0
    clone.git("fetch", "-q")
    assert clone.rev("origin/main") == newest
    assert clone.git("fsck", "--strict", check=False).returncode == 0


def test_push_from_shallow_clones(srv: DockyardServer, tmp_path: Path) -> None:
    work = new_work(tmp_path, srv)
    for i in range(3):
        work.commit(f"c{i}", {"a": str(i)})
    assert work.push("shallow", "main").returncode == 0

    # A shallow clone of the app itself, pushed back.
    shallow = Work(tmp_path / "shallow", srv)
    subprocess.run(["git", "clone", "-q", "--depth", "1", srv.remote("shallow"), str(shallow.path)],
                   env=shallow.env, check=True, timeout=120)  # fmt: skip
    assert shallow.git("rev-list", "--count", "HEAD").stdout.strip() == "1"
    tip = shallow.commit("on shallow", {"b": "1"})
    result = shallow.push("shallow", "main")
    assert result.returncode == 0, result.stderr
    assert server_ref(srv, "shallow", "main") == tip
    assert_repo_clean(srv, "shallow")

    # A shallow clone of some other history: refused clearly, accepted once unshallowed.
    other = Work(tmp_path / "other", srv)
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{work.path}", str(other.path)],
                   check=True)  # fmt: skip
    tip = other.commit("elsewhere", {"c": "1"})
    result = other.push("shallow2", "main")
    assert result.returncode != 0
    assert "main -> main (shallow update not allowed)" in result.stderr
    assert "git fetch --unshallow" in result.stderr
    assert server_ref(srv, "shallow2", "main") is None
    other.git("fetch", "-q", "--unshallow")
    assert other.push("shallow2", "main").returncode == 0
    assert server_ref(srv, "shallow2", "main") == tip
    assert_repo_clean(srv, "shallow2")
    clone = subprocess.run(["git", "clone", "-q", srv.remote("shallow2"), str(tmp_path / "c")],
                           env=other.env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert clone.returncode == 0, clone.stderr


def test_atomic_push_and_push_options(srv: DockyardServer, tmp_path: Path) -> None:
    work = new_work(tmp_path, srv)
    rev = work.commit("one", {"a": "1"})
    work.git("branch", "side")
    result = work.push("atomic", "--atomic", "main", "side")
    assert result.returncode == 0, result.stderr
    assert server_ref(srv, "atomic", "side") == rev == git_rev_var(srv, "atomic")

    # A failing deploy fails the whole atomic push: neither ref moves.
    work.commit("breaks", {".pipeline": "fail nope\n"})
    work.git("branch", "-f", "side", "HEAD")
    result = work.push("atomic", "--atomic", "main", "side")
    assert result.returncode != 0
    assert "main -> main (deploy failed)" in result.stderr
    assert "side -> side (atomic push failed)" in result.stderr
    assert server_ref(srv, "atomic", "main") == server_ref(srv, "atomic", "side") == rev

    options = work.push("atomic", "-o", "ci.skip", "main")
    assert options.returncode != 0
    assert "the receiving end does not support push options" in options.stderr


def test_failing_pipeline_rejects_push_and_streams_its_output(
    srv: DockyardServer, tmp_path: Path
) -> None:
    work = new_work(tmp_path, srv)
    good = work.commit("good", {"a": "1"})
    assert work.push("failing", "main").returncode == 0
    bad = work.commit("bad", {".pipeline": "print compiling\nprint step two\nfail tests failed\n"})
    result = work.push("failing", "main")
    assert result.returncode != 0
    assert "remote: -----> compiling" in result.stderr
    assert "remote: -----> step two" in result.stderr
    assert "tests failed" in result.stderr
    assert "! [remote rejected] main -> main (deploy failed)" in result.stderr
    assert server_ref(srv, "failing", "main") == good != bad
    assert git_rev_var(srv, "failing") == good
    assert_repo_clean(srv, "failing")


def test_concurrent_pushes_to_one_app_never_lose_an_update(
    srv: DockyardServer, tmp_path: Path
) -> None:
    base = new_work(tmp_path, srv, "base")
    base.commit("base", {"a": "0", ".pipeline": "sleep 0.5\n"})
    assert base.push("racy", "main").returncode == 0
    tips, results = {}, {}
    workers = []
    for name in ("left", "right"):
        clone = Work(tmp_path / name, srv)
        subprocess.run(["git", "clone", "-q", srv.remote("racy"), str(clone.path)],
                       env=clone.env, check=True, timeout=120)  # fmt: skip
        tips[name] = clone.commit(name, {f"{name}.txt": name})
        workers.append(threading.Thread(
            target=lambda c=clone, n=name: results.__setitem__(n, c.push("racy", "main"))
        ))  # fmt: skip
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    winners = [n for n, r in results.items() if r.returncode == 0]
    assert len(winners) == 1, {n: r.stderr for n, r in results.items()}
    loser = ({"left", "right"} - set(winners)).pop()
    assert "[rejected]" in results[loser].stderr
    assert "unexpected disconnect" not in results[loser].stderr
    assert server_ref(srv, "racy", "main") == tips[winners[0]] == git_rev_var(srv, "racy")


def test_five_apps_push_in_parallel(srv: DockyardServer, tmp_path: Path) -> None:
    works = []
    for i in range(5):
        work = new_work(tmp_path, srv, f"w{i}")
        work.commit("one", {"a": str(i), ".pipeline": "sleep 1\n"})
        works.append(work)
    results: dict[int, subprocess.CompletedProcess] = {}
    threads = [
        threading.Thread(target=lambda i=i, w=w: results.__setitem__(i, w.push(f"par{i}", "main")))
        for i, w in enumerate(works)
    ]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    elapsed = time.monotonic() - start
    assert all(r.returncode == 0 for r in results.values()), [r.stderr for r in results.values()]
    for i, work in enumerate(works):
        assert server_ref(srv, f"par{i}", "main") == work.rev("main")
    assert elapsed < 4.0  # five 1-second deploys, run side by side


def test_killed_push_leaves_no_trace(srv: DockyardServer, tmp_path: Path) -> None:
    work = new_work(tmp_path, srv)
    work.commit("big", {"blob.bin": os.urandom(48 * 1024 * 1024)})
    repo = bare(srv, "killed")
    proc = subprocess.Popen(
        ["git", "push", srv.remote("killed"), "main"], cwd=work.path, env=work.env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not list(repo.glob("objects/tmp_pack_*")) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert list(repo.glob("objects/tmp_pack_*")), "the pack never started streaming"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while list(repo.glob("objects/tmp_pack_*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server_ref(srv, "killed", "main") is None
    assert_repo_clean(srv, "killed")
    # The app is not wedged: its lock was released and the next push goes through.
    work.commit("small", {"blob.bin": "small now"})
    assert work.push("killed", "main").returncode == 0
    assert_repo_clean(srv, "killed")


def test_push_size_limit(srv: DockyardServer, tmp_path: Path) -> None:
    work = new_work(tmp_path, srv)
    work.commit("big", {"blob.bin": os.urandom(256 * 1024)})
    assert srv.cli("git:set", "--global", "max-push-size", "64K").returncode == 0
    try:
        result = work.push("sizey", "main")
    finally:
        srv.cli("git:set", "--global", "max-push-size")
    assert result.returncode != 0
    assert "maximum push size" in result.stderr
    assert "unexpected disconnect" not in result.stderr
    assert server_ref(srv, "sizey", "main") is None
    assert_repo_clean(srv, "sizey")
    assert work.push("sizey", "main").returncode == 0


def test_autocreation_disabled_refuses_unknown_app(srv: DockyardServer, tmp_path: Path) -> None:
    work = new_work(tmp_path, srv)
    work.commit("one", {"a": "1"})
    assert srv.ssh("apps:set", "--global", "disable-autocreation", "true").returncode == 0
    try:
        result = work.push("nocreate", "main")
    finally:
        srv.ssh("apps:set", "--global", "disable-autocreation")
    assert result.returncode != 0
    assert "App nocreate does not exist" in result.stderr
    assert srv.ssh("apps:exists", "nocreate").returncode != 0
    assert not bare(srv, "nocreate").exists()


def test_access_rules_for_push_and_clone(srv: DockyardServer, tmp_path: Path) -> None:
    admin = new_work(tmp_path, srv, "admin")
    admin.commit("one", {"a": "1"})
    assert admin.push("adminapp", "main").returncode == 0
    alice = new_work(tmp_path, srv, "alice", key=srv.user_key)
    alice.commit("mine", {"b": "1"})
    refused = alice.push("adminapp", "main")
    assert refused.returncode != 0
    assert "may not manage app adminapp" in refused.stderr
    clone = subprocess.run(["git", "clone", srv.remote("adminapp"), str(tmp_path / "c")],
                           env=alice.env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert clone.returncode != 0 and "may not manage app adminapp" in clone.stderr
    # Her own push creates an app she owns.
    assert alice.push("aliceapp", "main").returncode == 0
    owner = json.loads(srv.ssh("apps:report", "aliceapp", "--format", "json").stdout)
    assert owner["app-owner"] == "alice"


def test_report_gc_rename_destroy(srv: DockyardServer, tmp_path: Path) -> None:
    work = new_work(tmp_path, srv)
    for i in range(3):
        work.commit(f"c{i}", {"a": str(i) * 1000})
        assert work.push("gcme", "main").returncode == 0
    packs = list(bare(srv, "gcme").glob("objects/pack/*.pack"))
    assert len(packs) == 3
    result = srv.ssh("repo:gc", "gcme")
    assert result.returncode == 0, result.stderr
    assert len(list(bare(srv, "gcme").glob("objects/pack/*.pack"))) == 1
    assert_repo_clean(srv, "gcme")
    text = srv.ssh("git:report", "gcme").stdout
    assert "Git deploy branch:" in text and work.rev("main") in text

    assert srv.ssh("apps:rename", "gcme", "gcmoved").returncode == 0
    assert not bare(srv, "gcme").exists()
    assert server_ref(srv, "gcmoved", "main") == work.rev("main")
    assert srv.ssh("apps:destroy", "gcmoved", "--force").returncode == 0
    assert not bare(srv, "gcmoved").exists()


def test_pipeline_output_reaches_the_client_as_it_is_produced(
    srv: DockyardServer, tmp_path: Path
) -> None:
    work = new_work(tmp_path, srv)
    work.commit("slow", {".pipeline": "print first line\nsleep 1.5\nprint second line\n"})
    proc = subprocess.Popen(
        ["git", "push", "--progress", srv.remote("streamy"), "main"], cwd=work.path,
        env=work.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    seen: dict[str, float] = {}
    buffer = b""
    while chunk := os.read(proc.stderr.fileno(), 4096):
        buffer += chunk
        for text in ("first line", "second line"):
            if text.encode() in buffer and text not in seen:
                seen[text] = time.monotonic()
    assert proc.wait(timeout=60) == 0
    assert seen["second line"] - seen["first line"] >= 1.0
