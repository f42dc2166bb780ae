"""Clone and fetch with the options real clients send, end to end: the real git CLI over
the real OpenSSH client against a Dockyard server (tests/gitrecv_pipeline.py harness).

Protocol v0, v1 and v2; partial clones (`blob:none`, `blob:limit`, `tree:0`) and the lazy
fetches that follow them (`git checkout` of another revision, `git log -p`, a later
`git fetch`); shallow clones (`--depth`, `--shallow-since`, `--shallow-exclude`,
`--deepen`, `--unshallow`); and clear errors for requests the server refuses.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import (
    DockyardServer,
    remove_server_leftovers,
    require_tool,
    start_harness_server,
    stop_server,
)
from tests.test_git import GIT_IDENTITY, Work, new_work

APP = "fetchy"
BASE_TIME = 1_700_000_000
BIG_BLOB = 64 * 1024  # one file well over the blob:limit used below


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockyardServer]:
    require_tool("git")
    server = start_harness_server(tmp_path_factory.mktemp("gitfetch"))
    try:
        yield server
    finally:
        stop_server(server)
        remove_server_leftovers(server)


@dataclass
class History:
    work: Work
    commits: list[str]  # oldest first; commit i made at BASE_TIME + i * 1000


@pytest.fixture(scope="module")
def history(srv: DockyardServer, tmp_path_factory: pytest.TempPathFactory) -> History:
    """Eight commits on main (nested directories, a big binary, a file changed every time),
    an annotated tag v1 at the fourth, a lightweight tag and a side branch."""
    work = new_work(tmp_path_factory.mktemp("history"), srv)
    commits = []
    for i in range(8):
        os.environ.pop("GIT_COMMITTER_DATE", None)
        work.env["GIT_COMMITTER_DATE"] = f"{BASE_TIME + i * 1000} +0000"
        work.env["GIT_AUTHOR_DATE"] = f"{BASE_TIME + i * 1000} +0000"
        files: dict[str, str | bytes] = {
            "app.txt": f"version {i}\n",
            f"src/deep/er/module{i}.py": f"print({i})\n" * 50,
        }
        if i == 2:
            files["assets/big.bin"] = os.urandom(BIG_BLOB)
        commits.append(work.commit(f"commit {i}", files))
        if i == 3:
            work.git("tag", "-a", "-m", "release one", "v1")
    work.git("tag", "light", commits[5])
    work.git("branch", "side", commits[6])
    result = work.push(APP, "main", "side", "--tags")
    assert result.returncode == 0, result.stderr
    return History(work, commits)


def git_env(srv: DockyardServer, protocol: int | None = None) -> dict[str, str]:
    env = {**srv.git_env(), **GIT_IDENTITY}
    if protocol is not None:
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="protocol.version",
                   GIT_CONFIG_VALUE_0=str(protocol))  # fmt: skip
    return env


def run_git(
    env: dict[str, str], *args: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    if check:
        assert proc.returncode == 0, f"git {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def clone(
    srv: DockyardServer, dest: Path, *options: str, protocol: int | None = 2
) -> subprocess.CompletedProcess:
    return run_git(git_env(srv, protocol), "clone", "-q", *options, srv.remote(APP), str(dest))


def missing_objects(repo: Path, env: dict[str, str], rev: str = "--all") -> set[str]:
    out = run_git(env, "rev-list", "--objects", "--missing=print", rev, cwd=repo).stdout
    return {line[1:].split()[0] for line in out.splitlines() if line.startswith("?")}


def object_type(srv: DockyardServer, oid: str) -> str:
    """The type of an object, asked of the server's own repository."""
    return subprocess.run(["git", "cat-file", "-t", oid], cwd=srv.data_dir / "repos" / f"{APP}.git",
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip


def fsck(repo: Path, env: dict[str, str]) -> None:
    proc = run_git(env, "fsck", "--connectivity-only", cwd=repo, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_every_protocol_version_clones_and_fetches(
    srv: DockyardServer, history: History, tmp_path: Path, protocol: int
) -> None:
    env = {**git_env(srv, protocol), "GIT_TRACE_PACKET": "1"}
    dest = tmp_path / "c"
    result = run_git(env, "clone", srv.remote(APP), str(dest))
    spoke_v2 = "< version 2" in result.stderr
    spoke_v1 = "< version 1" in result.stderr
    assert (spoke_v2, spoke_v1) == (protocol == 2, protocol == 1)
    plain = git_env(srv, protocol)

    def rev(name: str) -> str:
        return run_git(plain, "rev-parse", name, cwd=dest).stdout.strip()

    assert rev("origin/main") == history.commits[-1]
    assert rev("origin/side") == history.commits[6]
    assert rev("v1^{commit}") == history.commits[3]
    assert rev("light") == history.commits[5]
    fsck(dest, plain)
    # ls-remote with a pattern (v2 sends it as ref-prefix) and peeled tags.
    listed = run_git(plain, "ls-remote", srv.remote(APP), "refs/tags/*").stdout
    assert f"{history.commits[3]}\trefs/tags/v1^{{}}" in listed
    assert "refs/heads/" not in listed
    # An incremental fetch after a new push: only what is new, deltas against what it has.
    new_env = {**plain, "GIT_TRACE_PACKET": "1"}
    run_git(plain, "fetch", "-q", cwd=dest)
    extra = Work(tmp_path / "pusher", srv)
    run_git(plain, "clone", "-q", srv.remote(APP), str(extra.path))
    extra.env.update(plain)
    tip = extra.commit(f"more for v{protocol}", {f"v{protocol}.txt": "new\n" * 100})
    assert extra.push(APP, f"HEAD:refs/heads/p{protocol}").returncode == 0
    fetched = run_git(new_env, "fetch", "origin", cwd=dest)
    assert ("have " in fetched.stderr) and ("ACK " in fetched.stderr)
    assert run_git(plain, "rev-parse", f"origin/p{protocol}", cwd=dest).stdout.strip() == tip
    fsck(dest, plain)


@pytest.mark.parametrize("protocol", [0, 2])
def test_blob_none_partial_clone_fetches_blobs_on_demand(
    srv: DockyardServer, history: History, tmp_path: Path, protocol: int
) -> None:
    env = git_env(srv, protocol)
    dest = tmp_path / "partial"
    clone(srv, dest, "--filter=blob:none", "--no-checkout", protocol=protocol)
    assert run_git(env, "config", "remote.origin.promisor", cwd=dest).stdout.strip() == "true"
    missing = missing_objects(dest, env)
    assert missing, "the filter was ignored: every blob came"
    types = {object_type(srv, oid) for oid in missing}
    assert types == {"blob"}
    # Checking out an old revision fetches just the blobs it needs.
    run_git(env, "checkout", "-q", history.commits[2], cwd=dest)
    assert (dest / "assets" / "big.bin").stat().st_size == BIG_BLOB
    assert (dest / "app.txt").read_text() == "version 2\n"
    still_missing = missing_objects(dest, env)
    assert 0 < len(still_missing) < len(missing)
    # `git log -p` needs every version of every file: fetched lazily, batch by batch.
    log = run_git(env, "log", "-p", "main", cwd=dest).stdout
    assert "+version 7" in log and "+version 0" in log
    assert missing_objects(dest, env, "main") == set()
    fsck(dest, env)


def test_partial_clone_then_fetch_keeps_its_filter(
    srv: DockyardServer, history: History, tmp_path: Path
) -> None:
    env = git_env(srv)
    dest = tmp_path / "partial"
    clone(srv, dest, "--filter=blob:none")
    pusher = Work(tmp_path / "pusher", srv)
    run_git(env, "clone", "-q", srv.remote(APP), str(pusher.path))
    pusher.env.update(env)
    tip = pusher.commit("later", {"later.txt": "later\n" * 500, "app.txt": "later\n"})
    assert pusher.push(APP, "HEAD:refs/heads/later").returncode == 0
    run_git(env, "fetch", "-q", "origin", cwd=dest)
    later_blob = run_git(env, "rev-parse", f"{tip}:later.txt", cwd=pusher.path).stdout.strip()
    assert later_blob in missing_objects(dest, env)  # the fetch was filtered too
    run_git(env, "checkout", "-q", tip, cwd=dest)
    assert (dest / "later.txt").read_text() == "later\n" * 500
    fsck(dest, env)


def test_blob_limit_sends_small_blobs_only(
    srv: DockyardServer, history: History, tmp_path: Path
) -> None:
    env = git_env(srv)
    dest = tmp_path / "limited"
    clone(srv, dest, "--filter=blob:limit=10k", "--no-checkout")
    big = run_git(env, "rev-parse", f"{history.commits[2]}:assets/big.bin",
                  cwd=history.work.path).stdout.strip()  # fmt: skip
    small = run_git(env, "rev-parse", f"{history.commits[0]}:app.txt",
                    cwd=history.work.path).stdout.strip()  # fmt: skip
    missing = missing_objects(dest, env)
    assert missing == {big}
    assert small not in missing
    run_git(env, "checkout", "-q", "main", cwd=dest)
    assert (dest / "assets" / "big.bin").stat().st_size == BIG_BLOB
    fsck(dest, env)


@pytest.mark.parametrize("protocol", [0, 2])
def test_tree_0_partial_clone_fetches_trees_on_demand(
    srv: DockyardServer, history: History, tmp_path: Path, protocol: int
) -> None:
    env = git_env(srv, protocol)
    dest = tmp_path / "treeless"
    clone(srv, dest, "--filter=tree:0", "--no-checkout", protocol=protocol)
    missing = missing_objects(dest, env)
    root = run_git(env, "rev-parse", f"{history.commits[-1]}^{{tree}}",
                   cwd=history.work.path).stdout.strip()  # fmt: skip
    assert root in missing
    assert run_git(env, "rev-list", "--count", "main", cwd=dest).stdout.strip() == "8"
    run_git(env, "checkout", "-q", history.commits[4], cwd=dest)
    assert (dest / "src" / "deep" / "er" / "module4.py").exists()
    fsck(dest, env)


def test_filter_the_server_does_not_serve_is_refused_clearly(
    srv: DockyardServer, history: History, tmp_path: Path
) -> None:
    env = git_env(srv)
    result = run_git(env, "clone", "--filter=sparse:oid=main:app.txt", srv.remote(APP),
                     str(tmp_path / "sparse"), check=False)  # fmt: skip
    assert result.returncode != 0
    assert "filter 'sparse:oid' not supported" in result.stderr


@pytest.mark.parametrize("protocol", [0, 2])
def test_shallow_clones_and_deepening(
    srv: DockyardServer, history: History, tmp_path: Path, protocol: int
) -> None:
    env = git_env(srv, protocol)

    def count(repo: Path) -> int:
        return int(run_git(env, "rev-list", "--count", "main", cwd=repo).stdout)

    def shallow_file(repo: Path) -> set[str]:
        path = repo / ".git" / "shallow"
        return set(path.read_text().split()) if path.exists() else set()

    depth = tmp_path / "depth"
    clone(srv, depth, "--depth", "2", "--single-branch", protocol=protocol)
    assert count(depth) == 2
    assert shallow_file(depth) == {history.commits[6]}
    run_git(env, "fetch", "-q", "--deepen=3", cwd=depth)
    assert count(depth) == 5
    assert shallow_file(depth) == {history.commits[3]}
    run_git(env, "fetch", "-q", "--unshallow", cwd=depth)
    assert count(depth) == 8 and shallow_file(depth) == set()
    fsck(depth, env)

    since = tmp_path / "since"
    clone(srv, since, f"--shallow-since={BASE_TIME + 5000}", "--single-branch", protocol=protocol)
    assert count(since) == 3
    assert shallow_file(since) == {history.commits[5]}
    fsck(since, env)

    exclude = tmp_path / "exclude"
    clone(srv, exclude, "--shallow-exclude=v1", "--single-branch", protocol=protocol)
    assert count(exclude) == 4  # commits 4..7: v1 (commit 3) and before are left out
    assert shallow_file(exclude) == {history.commits[4]}
    fsck(exclude, env)
    # A shallow clone can still fetch what is new.
    run_git(env, "fetch", "-q", "--shallow-exclude=light", "origin", "main", cwd=exclude)
    fsck(exclude, env)


def test_shallow_exclude_of_an_unknown_ref_is_refused(
    srv: DockyardServer, history: History, tmp_path: Path
) -> None:
    result = run_git(git_env(srv), "clone", "--shallow-exclude=nope", srv.remote(APP),
                     str(tmp_path / "x"), check=False)  # fmt: skip
    assert result.returncode != 0
    assert "deepen-not is not a ref: 'nope'" in result.stderr


# -- raw requests: what git would never send, refused with a clear ERR line -------------


def raw_upload_pack(
    srv: DockyardServer, request: bytes, git_protocol: str | None = None
) -> subprocess.CompletedProcess:
    extra = ["-o", f'SetEnv=GIT_PROTOCOL="{git_protocol}"'] if git_protocol else []
    return subprocess.run(
        [*srv.ssh_args(srv.admin_key, *extra), f"git-upload-pack '{APP}'"],
        input=request, capture_output=True, timeout=60,
    )  # fmt: skip


def pkt(text: bytes) -> bytes:
    return b"%04x" % (len(text) + 4) + text


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([b"filter blob:limit=zz\n"], b"invalid filter-spec 'blob:limit=zz'"),
        ([b"filter tree:-1\n"], b"invalid filter-spec 'tree:-1'"),
        ([b"filter combine:blob:none\n"], b"invalid filter-spec 'combine:blob:none'"),
        ([b"deepen 0\n"], b"invalid deepen: 0"),
        ([b"deepen-since yesterday\n"], b"invalid deepen-since: yesterday"),
        ([b"deepen-not ../../etc/passwd\n"], b"invalid deepen-not: ../../etc/passwd"),
        (
            [b"deepen-not refs/heads/main\n", b"deepen 1\n"],
            b"deepen and deepen-since (or deepen-not) cannot be used together",
        ),
        ([b"want " + b"1" * 40 + b"\n"], b"upload-pack: not our ref " + b"1" * 40),
        ([b"want zz\n"], b"invalid want: zz"),
        ([b"have-it-all\n"], b"unexpected line: 'have-it-all'"),
    ],
)
@pytest.mark.parametrize("version", ["version=2", None])
def test_malformed_requests_get_a_clear_error(
    srv: DockyardServer, history: History, lines: list[bytes], message: bytes,
    version: str | None,
) -> None:  # fmt: skip
    want = pkt(b"want " + history.commits[-1].encode() + b"\n")
    if version:
        request = (pkt(b"command=fetch\n") + pkt(b"agent=test\n") + b"0001" + want
                   + b"".join(pkt(x) for x in lines) + pkt(b"done\n") + b"0000")  # fmt: skip
    else:
        first = pkt(b"want " + history.commits[-1].encode() + b" side-band-64k ofs-delta filter\n")
        request = first + b"".join(pkt(x) for x in lines) + b"0000" + pkt(b"done\n")
    result = raw_upload_pack(srv, request, version)
    assert result.returncode != 0
    assert b"ERR " + message in result.stdout, result.stdout[-400:]
    assert message in result.stderr and b" !     " in result.stderr
    assert b"internal error" not in result.stderr


def test_only_a_well_formed_git_protocol_reaches_git_commands(
    srv: DockyardServer, history: History
) -> None:
    v2 = raw_upload_pack(srv, b"0000", "version=2")
    assert v2.stdout.startswith(pkt(b"version 2\n"))
    for value in ("version=2;id", "version=2 x", "v" * 300):
        served = raw_upload_pack(srv, b"0000", value)
        assert served.returncode == 0
        assert not served.stdout.startswith(pkt(b"version 2\n"))  # v0: refs come first
        assert b" refs/heads/main\0" in served.stdout or b"HEAD\0" in served.stdout
    # Other commands and other variables: no effect at all.
    listed = subprocess.run(
        [*srv.ssh_args(srv.admin_key, "-o", "SetEnv=GIT_PROTOCOL=version=2 DOCKYARD_ROLE=admin"),
         "apps:list"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0 and APP in listed.stdout


@pytest.mark.parametrize("protocol", [0, 2])
def test_clone_of_an_app_never_pushed_is_an_empty_repository(
    srv: DockyardServer, tmp_path: Path, protocol: int
) -> None:
    assert srv.ssh("apps:create", f"empty{protocol}").returncode == 0
    result = run_git(git_env(srv, protocol), "clone", srv.remote(f"empty{protocol}"),
                     str(tmp_path / "e"))  # fmt: skip
    assert "cloned an empty repository" in result.stderr
