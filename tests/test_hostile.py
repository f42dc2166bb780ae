"""Hostile input against a real `dockyard serve`, with "nothing lost" checked each time.

The server runs `tests.gitrecv_pipeline` (every stage loaded, the deploy pipeline scripted
so a push only records its revision): these tests are about what reaches the server, not
about image builds. Each attack is followed by the same checks: the state database holds
what it held before (events aside), no file appeared outside the data dir, the repos are
fsck-clean with their refs in place, and the server still answers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
import socket
import sqlite3
import statistics
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    DockyardServer,
    SSHResult,
    make_key,
    remove_server_leftovers,
    require_tool,
    start_harness_server,
    stop_server,
)

ERROR = " !     "
ACCESS_DENIED_EXIT = 13
VICTIM = "victim"  # owned by admin; alice attacks it
ZERO = "0" * 40
MARKER = Path("/tmp/dockyard-hostile-marker")  # what an injected command would create
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.com",
}  # fmt: skip

HOSTILE_NAMES = [
    "../etc", "../../tmp/x", "a/../b", "..", ".", "app;id", f"app;touch {MARKER}",
    f"$(touch {MARKER})", f"`touch {MARKER}`", "app\nid", "app\rid", "app\x00x", "a" * 64,
    "a" * 5000, "аpp", "ａｐｐ", "app\u202e", "\u200bapp", "app\u00a0", "-app", "App",
    "app name", "app'", 'app"', "app|id", "app&id", "app>x", "~root", "/etc/passwd",
    "app.git", "*", "",
]  # fmt: skip
HOSTILE_DOMAINS = [
    "../etc", "a.com/../../x", "a.com;id", f"$(touch {MARKER}).com", f"`touch {MARKER}`.com",
    "a.com\nserver_name evil", "a.com\x00", "a" * 300 + ".com", "xn--80ak6aa92e.com\u202e",
    "еxample.com", "ｅxample.com", "a.com{", "a.com }", "a.com;include /etc/passwd",
    "http://a.com", "a.com:80", "a .com", "-a.com", "a-.com", "*", "*.com", "",
]  # fmt: skip


# --- the server and its checks ----------------------------------------------------------


def git(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True,
        input: bytes | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env={**(env or {}), **GIT_IDENTITY, "PATH": "/usr/bin:/bin"},
        capture_output=True, timeout=120, input=input,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"git {args} failed: {proc.stderr.decode(errors='replace')}")
    return proc


def make_work(path: Path, content: str = "hello\n") -> Path:
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    (path / "app.txt").write_text(content)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "one")
    return path


def push(srv: DockyardServer, work: Path, url: str, key: Path | None = None,
         *refspecs: str) -> subprocess.CompletedProcess:  # fmt: skip
    return git(work, "push", url, *(refspecs or ("main",)), env=srv.git_env(key), check=False)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockyardServer]:
    require_tool("git")
    tmp = tmp_path_factory.mktemp("hostile")
    server = start_harness_server(tmp)
    try:
        work = make_work(tmp / "victim-work")
        result = push(server, work, server.remote(VICTIM))
        assert result.returncode == 0, result.stderr
        assert server.ssh("domains:add", VICTIM, "victim.example.com").returncode == 0
        assert server.ssh("config:set", "--no-restart", VICTIM, "KEEP=me").returncode == 0
        yield server
    finally:
        stop_server(server)
        remove_server_leftovers(server)


class Snapshot:
    """Everything an attack must not change: every table but the logs (UNSNAPSHOTTED), every
    repo's refs and the files next to the data dir (where a `../` would land)."""

    def __init__(self, srv: DockyardServer) -> None:
        self.tables = dump_state(srv.data_dir / "state.db")
        self.refs = {p.name: repo_refs(p) for p in sorted((srv.data_dir / "repos").glob("*.git"))}
        self.neighbours = files_outside(srv.data_dir)

    def assert_unchanged(self, srv: DockyardServer) -> None:
        after = Snapshot(srv)
        assert after.tables == self.tables
        assert after.refs == self.refs
        assert after.neighbours == self.neighbours
        assert not MARKER.exists()
        for repo in (srv.data_dir / "repos").glob("*.git"):
            fsck = subprocess.run(["git", "fsck", "--strict"], cwd=repo, capture_output=True)
            assert fsck.returncode == 0, fsck.stderr
        assert srv.ssh("version").returncode == 0


# The event log, and the dashboard's traffic and resource samples: the collector adds to them
# in the background from nginx's log and the engine's stats, whatever a test does.
UNSNAPSHOTTED = (
    "events", "sqlite_sequence",
    "dashboard_http", "dashboard_http_10m", "dashboard_stats", "dashboard_log_cursor",
)  # fmt: skip


def dump_state(db: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            name: sorted(conn.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr)
            for name in names
            if name not in UNSNAPSHOTTED
        }


def repo_refs(repo: Path) -> str:
    return subprocess.run(
        ["git", "for-each-ref", "--format=%(refname) %(objectname)"], cwd=repo,
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def files_outside(data_dir: Path) -> set[str]:
    """Files in the test's directory that are not under the data dir (logs excepted)."""
    root = data_dir.parent
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if data_dir not in p.parents
        and p != data_dir
        and not p.name.startswith("serve-")
        and "work" not in p.relative_to(root).parts[0]
    }


def refused(result: SSHResult) -> bool:
    return result.returncode != 0 and ERROR in result.stderr


def raw_ssh(srv: DockyardServer, exec_string: str, key: Path | None = None,
            input: bytes | None = None, timeout: float = 30) -> SSHResult:  # fmt: skip
    proc = subprocess.run(
        [*srv.ssh_args(key or srv.admin_key), exec_string], input=input, capture_output=True,
        timeout=timeout, stdin=subprocess.DEVNULL if input is None else None,
    )  # fmt: skip
    return SSHResult(
        proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )


def log_since(srv: DockyardServer, offset: int) -> str:
    return srv.log()[offset:]


# --- hostile names ----------------------------------------------------------------------


def sendable(text: str) -> bool:
    """OpenSSH cannot put NUL into an exec string; those go through the other paths."""
    return "\x00" not in text


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_app_names_over_ssh(srv: DockyardServer, name: str) -> None:
    before = Snapshot(srv)
    if sendable(name):
        for words in (("apps:create", name), ("apps:rename", VICTIM, name),
                      ("apps:report", name), ("config:set", "--no-restart", name, "A=1"),
                      ("git:set", name, "deploy-branch", "main")):  # fmt: skip
            result = srv.ssh(*words)
            assert refused(result), (words, result)
            assert "internal error" not in result.stderr
        # The same name unquoted, as a user might type it: the server's splitter, not a shell.
        result = raw_ssh(srv, f"apps:create {name}")
        assert result.returncode != 0 or name.strip() in ("App",) or not name.strip()
    before.assert_unchanged(srv)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_app_names_from_local_cli(srv: DockyardServer, name: str) -> None:
    before = Snapshot(srv)
    for words in (("apps:create", name), ("apps:rename", VICTIM, name),
                  ("domains:add", name, "a.example.com")):  # fmt: skip
        if not sendable(name):
            continue  # execve itself refuses NUL in an argument
        result = srv.cli(*words)
        assert result.returncode != 0 and ERROR in result.stderr, (words, result)
        assert "internal error" not in result.stderr
    before.assert_unchanged(srv)


@pytest.mark.parametrize(
    "path",
    ["/../etc", "../etc", "/..", "victim/../other", "app;id", "'app;id'", "$(id)", "`id`",
     "%2e%2e/etc", "аpp", "ａｐｐ", "a" * 300, "victim.git/../../x", "~/../../etc"],
)  # fmt: skip
def test_hostile_push_urls(srv: DockyardServer, tmp_path: Path, path: str) -> None:
    work = make_work(tmp_path / "work")
    before = Snapshot(srv)
    result = push(srv, work, f"ssh://dockyard@127.0.0.1:{srv.port}/{path}")
    assert result.returncode != 0
    assert b"Invalid app name" in result.stderr or b"does not appear" in result.stderr
    # git quotes the path itself; a client that does not gets the same refusal.
    for quoted in (shlex.quote(path), path):
        direct = raw_ssh(srv, f"git-receive-pack {quoted}", input=b"")
        assert direct.returncode != 0
    before.assert_unchanged(srv)


@pytest.mark.parametrize("domain", HOSTILE_DOMAINS)
def test_hostile_domains(srv: DockyardServer, domain: str) -> None:
    before = Snapshot(srv)
    nginx_before = sorted(p.name for p in (srv.data_dir / "nginx").rglob("*") if p.is_file())
    if sendable(domain):
        for words in (("domains:add", VICTIM, domain), ("domains:set", VICTIM, domain)):
            result = srv.ssh(*words)
            assert refused(result), (words, result)
            assert "internal error" not in result.stderr
        assert refused(srv.ssh("domains:set-global", domain))
    cli = srv.cli("domains:add", VICTIM, domain) if sendable(domain) else None
    assert cli is None or cli.returncode != 0
    before.assert_unchanged(srv)
    after = sorted(p.name for p in (srv.data_dir / "nginx").rglob("*") if p.is_file())
    assert [n for n in after if not n.endswith((".pid", ".log"))] == [
        n for n in nginx_before if not n.endswith((".pid", ".log"))
    ]


# --- config keys and values -------------------------------------------------------------

HOSTILE_VALUES = [
    "two words", "  padded  ", "it's", 'say "hi"', "$HOME", "$(id)", "`id`", "back\\slash",
    "\\n", "line1\nline2", "trailing\n", "\ttab", "a=b=c", "=", "", "ünïcødé ✓", "аpp",
    "\u202eRTL", "%s%n", "'; rm -rf / #", "x" * 10000, "\r\n", "{{.}}", "--flag",
]  # fmt: skip
BAD_KEYS = ["1A", "A-B", "A B", "A.B", "", "$A", "A;B", "Ä", "A\nB", "../A", "A\tB", "a" * 300]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_config_values_round_trip_verbatim(srv: DockyardServer, value: str) -> None:
    encoded = base64.b64encode(value.encode()).decode()
    # Two ways in: the value as one SSH word, and --encoded base64.
    assert srv.ssh("config:set", "--no-restart", VICTIM, f"HOSTILE={value}").returncode == 0
    got = srv.ssh("config:get", VICTIM, "HOSTILE")
    assert got.returncode == 0 and got.stdout == value + "\n"
    set_b64 = srv.ssh("config:set", "--no-restart", "--encoded", VICTIM, f"HOSTILE2={encoded}")
    assert set_b64.returncode == 0
    assert srv.ssh("config:get", VICTIM, "HOSTILE2").stdout == value + "\n"
    # `config:export --format shell` evaluated by sh gives back the same bytes.
    export = srv.ssh("config:export", "--format", "shell", VICTIM)
    assert export.returncode == 0
    shell = subprocess.run(
        ["sh", "-c", f'{export.stdout.strip()} && printf "%s" "$HOSTILE"'],
        capture_output=True, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout == value.encode()
    exports = srv.ssh("config:export", VICTIM)
    shell = subprocess.run(
        ["sh", "-c", f'{exports.stdout} printf "%s" "$HOSTILE2"'], capture_output=True,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert shell.stdout == value.encode()
    assert (
        json.loads(srv.ssh("config:export", "--format", "json", VICTIM).stdout)["HOSTILE"] == value
    )
    assert not MARKER.exists()
    assert srv.ssh("config:unset", "--no-restart", VICTIM, "HOSTILE", "HOSTILE2").returncode == 0


def test_config_value_with_nul_is_refused(srv: DockyardServer) -> None:
    before = Snapshot(srv)
    encoded = base64.b64encode(b"a\x00b").decode()
    result = srv.ssh("config:set", "--no-restart", "--encoded", VICTIM, f"NUL={encoded}")
    assert refused(result) and "NUL" in result.stderr
    before.assert_unchanged(srv)


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_config_keys_are_refused_cleanly(srv: DockyardServer, key: str) -> None:
    before = Snapshot(srv)
    result = srv.ssh("config:set", "--no-restart", VICTIM, f"{key}=v")
    assert refused(result) and "internal error" not in result.stderr, result
    result = srv.ssh("config:set", "--no-restart", "--global", f"{key}=v")
    assert refused(result)
    before.assert_unchanged(srv)


# --- malformed pkt-lines over a real SSH channel ----------------------------------------


def pkt(payload: bytes) -> bytes:
    return b"%04x" % (len(payload) + 4) + payload


def empty_pack() -> bytes:
    body = b"PACK" + struct.pack(">II", 2, 0)
    return body + hashlib.sha1(body).digest()


def victim_head(srv: DockyardServer) -> bytes:
    repo = srv.data_dir / "repos" / f"{VICTIM}.git"
    return subprocess.run(
        ["git", "rev-parse", "refs/heads/main"], cwd=repo, capture_output=True, check=True
    ).stdout.strip()


def receive_cases(head: bytes) -> dict[str, bytes]:
    zero = ZERO.encode()
    caps = b"\x00report-status side-band-64k"
    return {
        "bad hex length": b"zzzz" + b"x" * 20,
        "length below 4": b"0003abc",
        "length 2": b"0002",
        "negative length": b"-001" + b"x" * 10,
        "length over 65520": b"fff5" + b"a" * 65521,
        "truncated packet": b"0040" + b"0" * 20,
        "claims ffff, sends little": b"ffff" + b"x" * 100,
        "garbage after flush": b"0000" + b"\xff" * 5000,
        "non-hex sha": pkt(b"z" * 40 + b" " + head + b" refs/heads/main" + caps + b"\n"),
        "short sha": pkt(b"abc " + head + b" refs/heads/main" + caps + b"\n"),
        "two fields": pkt(head + b" refs/heads/main\n"),
        "dotdot ref": pkt(zero + b" " + head + b" refs/heads/../../x" + caps + b"\n")
        + b"0000" + empty_pack(),
        "a..b ref": pkt(zero + b" " + head + b" refs/heads/a..b" + caps + b"\n")
        + b"0000" + empty_pack(),
        "ref outside refs/": pkt(zero + b" " + head + b" ../../../etc/x" + caps + b"\n")
        + b"0000" + empty_pack(),
        "missing object": pkt(zero + b" " + b"f" * 40 + b" refs/heads/new" + caps + b"\n")
        + b"0000" + empty_pack(),
        "stale old sha": pkt(b"e" * 40 + b" " + head + b" refs/heads/main" + caps + b"\n")
        + b"0000" + empty_pack(),
        "bad pack": pkt(zero + b" " + head + b" refs/heads/x" + caps + b"\n")
        + b"0000" + b"PACK\x00\x00\x00\x02\x00\x00\x00\x05garbage",
        "bad shallow": pkt(b"shallow xyz\n") + b"0000",
    }  # fmt: skip


def upload_cases() -> dict[str, bytes]:
    return {
        "want missing object": pkt(b"want " + b"f" * 40 + b" side-band-64k\n") + b"0000"
        + pkt(b"done\n"),
        "want non-hex": pkt(b"want " + b"z" * 40 + b"\n") + b"0000" + pkt(b"done\n"),
        "want nothing but garbage": pkt(b"\xff\xfe\x00\x01") + b"0000",
        "bad hex length": b"zzzz",
        "length below 4": b"0003",
        "truncated packet": b"0032want ",
        "have before want": pkt(b"have " + b"a" * 40 + b"\n") + b"0000",
        "deepen garbage": pkt(b"want " + b"a" * 40 + b"\n") + pkt(b"deepen -1\n") + b"0000",
    }  # fmt: skip


def assert_clean_refusal(srv: DockyardServer, result: SSHResult, log_offset: int) -> None:
    new_log = log_since(srv, log_offset)
    assert "Traceback" not in new_log, new_log[-3000:]
    assert "internal error" not in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_receive_pack_requests(srv: DockyardServer) -> None:
    head = victim_head(srv)
    before = Snapshot(srv)
    for name, payload in receive_cases(head).items():
        offset = len(srv.log())
        result = raw_ssh(srv, f"git-receive-pack '{VICTIM}'", input=payload)
        assert_clean_refusal(srv, result, offset)
        assert result.returncode != 0 or b"0000" in payload, (name, result)
    before.assert_unchanged(srv)
    # Refused ref names are reported as such, never written.
    zero = ZERO.encode()
    for ref in (b"refs/heads/../../x", b"refs/heads/a..b"):
        payload = pkt(zero + b" " + head + b" " + ref + b"\x00report-status\n") + b"0000"
        result = subprocess.run(
            [*srv.ssh_args(srv.admin_key), f"git-receive-pack '{VICTIM}'"],
            input=payload + empty_pack(), capture_output=True, timeout=30,
        )  # fmt: skip
        assert b"ng " + ref + b" funny refname" in result.stdout
    before.assert_unchanged(srv)


def test_malformed_upload_pack_requests(srv: DockyardServer, tmp_path: Path) -> None:
    before = Snapshot(srv)
    for name, payload in upload_cases().items():
        offset = len(srv.log())
        result = raw_ssh(srv, f"git-upload-pack '{VICTIM}'", input=payload)
        assert_clean_refusal(srv, result, offset)
        assert result.returncode != 0 or name == "have before want", (name, result)
    before.assert_unchanged(srv)
    clone = git(tmp_path, "clone", "-q", srv.remote(VICTIM), "c", env=srv.git_env())
    assert clone.returncode == 0


def wait_until_locked(srv: DockyardServer, app: str, timeout: float = 10) -> bool:
    from dockyard.locks import AppBusy, app_lock

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with app_lock(srv.data_dir / "locks", app, timeout=0):
                pass
        except AppBusy:
            return True
        time.sleep(0.05)
    return False


def test_stalled_hostile_push_does_not_block_others(srv: DockyardServer, tmp_path: Path) -> None:
    """A client that sends half a request and then waits holds only its own app's lock."""
    stalled = subprocess.Popen(
        [*srv.ssh_args(srv.admin_key), f"git-receive-pack '{VICTIM}'"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        stalled.stdin.write(b"00a0" + b"0" * 20)  # type: ignore[union-attr]
        stalled.stdin.flush()  # type: ignore[union-attr]
        assert wait_until_locked(srv, VICTIM), "the stalled push never took the app's lock"
        assert srv.ssh("apps:list").returncode == 0
        clone = git(tmp_path, "clone", "-q", srv.remote(VICTIM), "c", env=srv.git_env())
        assert clone.returncode == 0
        other = make_work(tmp_path / "other-work")
        assert push(srv, other, srv.remote("bystander")).returncode == 0
    finally:
        stalled.kill()
        stalled.wait()
    assert srv.ssh("apps:destroy", "bystander", "--force").returncode == 0


def test_stalled_push_is_cut_off_and_frees_the_app(srv: DockyardServer, tmp_path: Path) -> None:
    """The app lock is held while a push reads: silence beyond the idle timeout ends it."""
    from tests.gitrecv_pipeline import HARNESS_IDLE_TIMEOUT

    stalled = subprocess.Popen(
        [*srv.ssh_args(srv.admin_key), f"git-receive-pack '{VICTIM}'"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        stalled.stdin.write(b"00a0" + b"0" * 20)  # type: ignore[union-attr]
        stalled.stdin.flush()  # type: ignore[union-attr]
        started = time.monotonic()
        assert stalled.wait(timeout=HARNESS_IDLE_TIMEOUT + 20) != 0
        assert time.monotonic() - started >= HARNESS_IDLE_TIMEOUT - 1
        assert b"No data from the client" in stalled.stderr.read()  # type: ignore[union-attr]
    finally:
        stalled.kill()
        stalled.wait()
    from dockyard.locks import app_lock

    with app_lock(srv.data_dir / "locks", VICTIM, timeout=2):
        pass  # the stalled push let go of the app


# --- a non-admin against someone else's app --------------------------------------------

# Plausible arguments per command, APP standing for the victim; the default is just APP.
ATTACK_ARGS: dict[str, list[str]] = {
    "acl:add": ["APP", "alice"], "acl:remove": ["APP", "admin"],
    "apps:destroy": ["APP", "--force"], "apps:rename": ["APP", "stolen"],
    "apps:set": ["--global", "disable-autocreation", "true"], "backup": ["/tmp/x.tgz"],
    "builder:set": ["APP", "keep-releases", "1"], "builds:output": ["APP"],
    "certs:add": ["APP"], "checks:set": ["APP", "wait-to-retire", "1"],
    "config:get": ["APP", "KEEP"], "config:set": ["--no-restart", "APP", "KEEP=stolen"],
    "config:unset": ["--no-restart", "APP", "KEEP"],
    "domains:add": ["APP", "stolen.example.com"], "domains:remove": ["APP", "victim.example.com"],
    "domains:set": ["APP", "stolen.example.com"], "domains:set-global": ["stolen.example.com"],
    "events": ["APP"], "git-receive-pack": ["APP"], "git-upload-pack": ["APP"],
    "git:set": ["APP", "deploy-branch", "evil"], "logs": ["APP", "-n", "5"],
    "letsencrypt:auto-renew": ["APP", "--force"],
    "letsencrypt:set": ["APP", "server", "https://127.0.0.1:2375/"],
    "proxy:set": ["APP", "client-max-body-size", "1m"], "ps:scale": ["APP", "web=3"],
    "ps:set": ["APP", "restart-policy", "no"], "releases:rollback": ["APP", "v1"],
    "resource:limit": ["APP", "--memory", "1g"], "restore": ["/tmp/x.tgz", "--force"],
    "run": ["APP", "id"], "ssh-keys:add": ["evil"], "ssh-keys:remove": ["admin"],
    "doctor": [], "ssh-keys:list": [],
    "cron:run": ["APP", "0123456789"], "cron:suspend": ["APP", "0123456789"],
    "cron:resume": ["APP", "0123456789"],
    "postgres:set": ["--global", "image", "busybox"], "redis:set": ["--global", "image", "x"],
    "mysql:set": ["--global", "image", "x"],
    "network:set": ["APP", "attach-post-deploy", "evilnet"],
    "storage:mount": ["APP", "/etc:/stolen"], "storage:unmount": ["APP", "/etc:/stolen"],
    "dashboard:set": ["APP", "login-ttl", "5"], "dashboard:certs-add": [],
    "dashboard:certs-remove": [],
}  # fmt: skip


def attackable_commands() -> list[str]:
    import dockyard.cli as cli
    from dockyard.access import Access
    from dockyard.registry import COMMANDS

    cli._load_stages()
    return sorted(n for n, c in COMMANDS.items() if c.access in (Access.APP, Access.ADMIN))


@pytest.mark.parametrize("name", attackable_commands())
def test_non_admin_cannot_touch_someone_elses_app(srv: DockyardServer, name: str) -> None:
    before = Snapshot(srv)
    args = [VICTIM if a == "APP" else a.replace("APP", VICTIM)
            for a in ATTACK_ARGS.get(name, ["APP"])]  # fmt: skip
    line = " ".join([name, *(shlex.quote(a) for a in args)])
    result = raw_ssh(srv, line, key=srv.user_key, input=b"", timeout=60)
    assert result.returncode == ACCESS_DENIED_EXIT, (line, result)
    assert ERROR in result.stderr and (
        "may not manage app" in result.stderr
        or "Only an admin key" in result.stderr
        or "Only the owner" in result.stderr
    ), (line, result.stderr)
    before.assert_unchanged(srv)
    assert srv.ssh("config:get", VICTIM, "KEEP").stdout == "me\n"


# --- floods and brute force (fresh servers: they leave penalties behind) ----------------


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[DockyardServer]:
    require_tool("git")
    server = start_harness_server(tmp_path)
    try:
        yield server
    finally:
        stop_server(server)
        remove_server_leftovers(server)


class ConnectionFlood:
    """Keeps `count` TCP connections open that never authenticate: half send only the SSH
    banner, half send nothing; each one the server closes is opened again after
    `REOPEN_AFTER` seconds (so the flood as a whole reconnects up to ~1000 times a second)."""

    REOPEN_AFTER = 0.2

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.opened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConnectionFlood:
        self._thread.start()
        deadline = time.monotonic() + 30
        while self.opened < self.count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _open(self, n: int) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            if n % 2:
                sock.sendall(b"SSH-2.0-flood\r\n")
            sock.setblocking(False)
            self.opened += 1
            return sock
        except OSError:
            return None

    def _run(self) -> None:
        import selectors

        sel = selectors.DefaultSelector()
        socks: dict[int, socket.socket | None] = {n: self._open(n) for n in range(self.count)}
        for n, s in socks.items():
            if s is not None:
                sel.register(s, selectors.EVENT_READ, n)
        reopen: list[tuple[float, int]] = []
        while not self._stop.is_set():
            now = time.monotonic()
            for due, n in [r for r in reopen if r[0] <= now]:
                reopen.remove((due, n))
                new = self._open(n)
                if new is not None:
                    sel.register(new, selectors.EVENT_READ, n)
            for key, _ in sel.select(timeout=0.02):
                s = key.fileobj
                try:
                    gone = not s.recv(65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                except OSError:
                    gone = True
                if gone:
                    sel.unregister(s)
                    s.close()  # type: ignore[union-attr]
                    reopen.append((time.monotonic() + self.REOPEN_AFTER, key.data))
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]


def test_connection_flood_does_not_lock_out_the_admin(
    fresh: DockyardServer, tmp_path: Path
) -> None:
    from sshd import FrontDoorLimits

    flood_size = 200
    assert FrontDoorLimits().max_unauthenticated < flood_size < FrontDoorLimits().max_connections
    work = make_work(tmp_path / "work")
    with ConnectionFlood(fresh.port, flood_size) as flood:
        assert flood.opened >= flood_size
        deadline = time.monotonic() + 10
        while flood.opened <= flood_size and time.monotonic() < deadline:
            time.sleep(0.05)  # until the server has dropped some and the flood has come back
        for _ in range(3):
            listed = fresh.ssh("apps:list", "--format", "json", timeout=60)
            assert listed.returncode == 0, listed.stderr
        pushed = push(fresh, work, fresh.remote("floodproof"))
        assert pushed.returncode == 0, pushed.stderr
        assert flood.opened > flood_size  # the server kept dropping idle ones; they came back
    assert "floodproof" in json.loads(fresh.ssh("apps:list", "--format", "json").stdout)
    assert "unauthenticated cap reached" in fresh.log()


def refused_logins(srv: DockyardServer) -> list[dict]:
    events = json.loads(srv.ssh("events", "-n", "1000", "--format", "json").stdout)
    return [e for e in events if e["kind"] == "login:refused"]


def wait_for_refused_logins(srv: DockyardServer, count: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while True:
        found = refused_logins(srv)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_many_keys_in_one_connection_are_cut_off_and_logged(
    fresh: DockyardServer, tmp_path: Path
) -> None:
    from sshd import FrontDoorLimits

    keys = [make_key(tmp_path, f"intruder{n}") for n in range(10)]
    args = fresh.ssh_args(keys[0])
    identities = [a for k in keys[1:] for a in ("-i", str(k))]
    proc = subprocess.run(
        [*args[:-1], *identities, "-o", "LogLevel=INFO", args[-1], "apps:list"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 255
    assert "Too many authentication failures" in proc.stderr
    log_lines = [json.loads(ln) for ln in fresh.log().splitlines() if ln.startswith("{")]
    offered = [ln for ln in log_lines if ln.get("event") == "unknown key refused"]
    assert len(offered) == FrontDoorLimits().max_auth_attempts
    events = wait_for_refused_logins(fresh, 1)
    assert len(events) == 1  # one per connection, not one per key
    assert events[0]["actor"].startswith("SHA256:")
    assert "127.0.0.1:" in events[0]["detail"]
    assert f"+{FrontDoorLimits().max_auth_attempts - 1} more keys" in events[0]["detail"]


def test_repeated_unknown_keys_are_slowed_and_the_admin_still_gets_in(
    fresh: DockyardServer, tmp_path: Path
) -> None:
    from sshd import FrontDoorLimits

    limits = FrontDoorLimits()
    intruder = make_key(tmp_path, "intruder")
    attempts = limits.refusals_before_delay + 7
    took = []
    for _ in range(attempts):
        started = time.monotonic()
        result = fresh.ssh("apps:list", key=intruder)
        took.append(time.monotonic() - started)
        assert result.returncode == 255
    # Measured against this machine's own undelayed round trip, not a fixed number: on a
    # loaded 2-core box a plain refusal alone can take half a second.
    base = statistics.median(took[: limits.refusals_before_delay - 1])
    slow = took[-2:]
    assert min(slow) - base >= 0.8 * limits.max_refusal_delay, took  # slowed …
    assert max(slow) - base < limits.max_refusal_delay + 2.0, took  # … but bounded
    undelayed = base + 0.5 * limits.max_refusal_delay
    # The admin at the same address is not delayed: a known key never waits.
    started = time.monotonic()
    assert fresh.ssh("apps:list").returncode == 0
    assert time.monotonic() - started < undelayed
    # A successful login clears the address's record.
    started = time.monotonic()
    assert fresh.ssh("apps:list", key=intruder).returncode == 255
    assert time.monotonic() - started < undelayed
    events = wait_for_refused_logins(fresh, attempts + 1)
    assert len(events) == attempts + 1
    assert {e["actor"] for e in events} == {events[0]["actor"]}
