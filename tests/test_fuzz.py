"""Fuzzing the parsers that read what a client sends, in-process, with hypothesis.

- pkt-lines: random and half-valid byte streams go to `git-receive-pack`/`git-upload-pack`
  through the same command handlers an SSH session runs, against a real repository. Every
  example must end in a return or a DockyardError (dulwich's hang-up and protocol errors are
  turned into those by gitrecv); any other exception type is a bug, and the repository must
  stay fsck-clean with its refs where they were.
- command lines: random exec strings go through `split_command` and `dispatch`; every
  outcome is an exit status with normal output or a ` !     ` message, never the
  internal-error path.
- fetch arguments: filter specs, depths, times, `deepen-not` names and `GIT_PROTOCOL`
  values go through their parsers; each either parses (and a parsed filter prints back to
  itself) or is refused with a `RequestError`, nothing else. Protocol v2 requests (and v0
  ones carrying shallow and filter lines) go through `git-upload-pack` as above.
"""

from __future__ import annotations

import hashlib
import io
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dulwich.repo import Repo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard import pipeline
from dockyard.access import Identity
from dockyard.context import Context
from dockyard.errors import DockyardError
from dockyard.output import ERROR, Output
from dockyard.registry import COMMANDS, dispatch
from dockyard.services import Services
from dockyard.settings import Settings
from tests.conftest import free_port, remove_leftovers_of

FUZZ_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ADMIN = Identity(name="admin", is_admin=True)
ALICE = Identity(name="alice", is_admin=False)
APP = "fuzzed"
ZERO = b"0" * 40
INTERNAL_ERROR = "internal error"


def pkt(payload: bytes) -> bytes:
    return b"%04x" % (len(payload) + 4) + payload


def empty_pack() -> bytes:
    body = b"PACK" + struct.pack(">II", 2, 0)
    return body + hashlib.sha1(body).digest()


def make_services(tmp: Path) -> Services:
    import dockyard.cli  # noqa: F401  (the core's commands)
    import gitrecv  # noqa: F401  (git-receive-pack, git-upload-pack)

    # Loopback ports nobody listens on: a fuzzed proxy command must never put an nginx on :80.
    return Services(
        Settings(
            data_dir=tmp / "data",
            http_listen=("127.0.0.1", free_port()),
            https_listen=("127.0.0.1", free_port()),
        )
    )


def context(
    services: Services, stdin: bytes, identity: Identity = ADMIN, env: dict[str, str] | None = None
) -> Context:
    stdout, stderr = io.BytesIO(), io.BytesIO()
    return Context(
        services=services,
        identity=identity,
        stdin=io.BytesIO(stdin),
        stdout=stdout,
        stderr=stderr,
        out=Output(stdout, stderr),
        client_env=env or {},
    )


def refs_of(repo_path: Path) -> dict[bytes, bytes]:
    with Repo(str(repo_path)) as repo:
        return dict(repo.get_refs())


def assert_fsck_clean(repo_path: Path) -> None:
    fsck = subprocess.run(
        ["git", "fsck", "--strict", "--no-dangling"], cwd=repo_path, capture_output=True
    )
    assert fsck.returncode == 0, fsck.stderr.decode(errors="replace")
    leftovers = list(repo_path.glob("objects/tmp_pack_*")) + list(repo_path.glob("**/*.lock"))
    assert leftovers == []


@pytest.fixture(scope="module")
def pushed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Services, Path, list[bytes]]]:
    """An app with a repo holding two commits (pushed with the real git over a local path)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    services = make_services(tmp)
    services.apps.create(APP, owner="admin")
    work = tmp / "work"
    env = {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "T",
           "GIT_COMMITTER_EMAIL": "t@e", "HOME": str(tmp), "PATH": "/usr/bin:/bin"}  # fmt: skip
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True, env=env)
    for n in range(2):
        (work / "f.txt").write_text(f"v{n}\n")
        subprocess.run(["git", "add", "-A"], cwd=work, check=True, env=env)
        subprocess.run(["git", "commit", "-q", "-m", f"c{n}"], cwd=work, check=True, env=env)
    repo_path = services.settings.repos_dir / f"{APP}.git"
    repo_path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "init", "-q", "-b", "main", "--bare", str(repo_path)], check=True, env=env
    )
    subprocess.run(["git", "push", "-q", str(repo_path), "main"], cwd=work, check=True, env=env)
    shas = list(refs_of(repo_path).values())
    # A push that gets through deploys with the default pipeline: it only records the rev.
    pipeline.set_pipeline(pipeline.record_revision)
    yield services, repo_path, shas


SHA = st.sampled_from([ZERO, b"f" * 40, b"1234", b"g" * 40, b"0" * 39 + b"x"])
REF = st.sampled_from([
    b"refs/heads/main", b"refs/heads/../../x", b"refs/heads/a..b", b"HEAD", b"refs/heads/",
    b"refs/tags/v1", b"refs/heads/x\x00y", b"refs/heads/new", b"../../etc/passwd", b"refs/",
])  # fmt: skip
CAPS = st.sampled_from([b"", b"\x00report-status side-band-64k", b"\x00atomic", b"\x00\xff\xfe"])
LENGTH_PREFIX = st.one_of(
    st.binary(min_size=4, max_size=4),
    st.sampled_from([b"zzzz", b"0003", b"0002", b"-001", b"+004", b"0x10", b"fff1", b"ffff"]),
)


@st.composite
def receive_stream(draw: st.DrawFn, shas: list[bytes]) -> bytes:
    known = st.sampled_from(shas)
    parts: list[bytes] = []
    if draw(st.booleans()):  # a well-formed request, so pack storage and ref updates run too
        old = draw(st.sampled_from([ZERO, *shas]))
        line = old + b" " + draw(known) + b" " + draw(REF) + b"\x00report-status\n"
        parts += [pkt(line), b"0000", empty_pack()]
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.integers(0, 5))
        if kind == 0:
            line = draw(st.one_of(SHA, known)) + b" " + draw(st.one_of(SHA, known)) + b" "
            parts.append(pkt(line + draw(REF) + draw(CAPS) + b"\n"))
        elif kind == 1:
            parts.append(pkt(b"shallow " + draw(st.one_of(SHA, known))))
        elif kind == 2:
            parts.append(draw(LENGTH_PREFIX) + draw(st.binary(max_size=64)))
        elif kind == 3:
            parts.append(pkt(draw(st.binary(max_size=200))))
        else:
            parts.append(b"0000")
    tail = draw(st.sampled_from([b"", empty_pack(), b"PACK", b"PACK\x00\x00\x00\x02\xff\xff"]))
    parts.append(tail + draw(st.binary(max_size=64)))
    return b"".join(parts)


@st.composite
def upload_stream(draw: st.DrawFn, shas: list[bytes]) -> bytes:
    known = st.sampled_from(shas)
    verbs = st.sampled_from([b"want ", b"have ", b"shallow ", b"deepen ", b"done", b"filter ",
                             b"deepen-since ", b"deepen-not "])  # fmt: skip
    parts = []
    if draw(st.booleans()):  # a well-formed request, so the pack writer runs too
        caps = draw(
            st.sampled_from([b" side-band-64k thin-pack ofs-delta", b" side-band-64k", b""])
        )
        parts += [pkt(b"want " + draw(known) + caps + b"\n"), b"0000", pkt(b"done\n")]
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            line = draw(verbs) + draw(st.one_of(SHA, known)) + draw(CAPS)
            parts.append(pkt(line + b"\n"))
        elif kind == 1:
            parts.append(b"0000")
        elif kind == 2:
            parts.append(draw(LENGTH_PREFIX) + draw(st.binary(max_size=32)))
        else:
            parts.append(pkt(draw(st.binary(max_size=120))))
    return b"".join(parts) + draw(st.binary(max_size=16))


FILTER_SPECS = st.one_of(
    st.sampled_from([
        b"blob:none", b"blob:limit=1k", b"blob:limit=0", b"tree:0", b"tree:2", b"object:type=blob",
        b"combine:blob%3Anone+tree%3A1", b"sparse:oid=main:x", b"blob:limit=zz", b"tree:-1",
    ]),
    st.binary(max_size=40),
)  # fmt: skip
V2_ARGS = st.one_of(
    st.sampled_from([b"done", b"thin-pack", b"ofs-delta", b"no-progress", b"include-tag",
                     b"deepen-relative", b"deepen 1", b"deepen 0", b"deepen-since 1",
                     b"deepen-not main", b"deepen-not refs/heads/main", b"want-ref refs/x",
                     b"sideband-all", b"symrefs", b"peel", b"ref-prefix refs/"]),
    st.binary(max_size=60),
)  # fmt: skip


@st.composite
def upload_stream_v2(draw: st.DrawFn, shas: list[bytes]) -> bytes:
    known = st.sampled_from(shas)
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        command = draw(st.sampled_from([b"fetch", b"ls-refs", b"fetch", b"bogus"]))
        parts.append(pkt(b"command=" + command + b"\n"))
        if draw(st.booleans()):
            capability = st.sampled_from(
                [b"agent=x", b"object-format=sha1", b"object-format=sha256", b"server-option=a"]
            )
            parts.append(pkt(draw(capability)))
        parts.append(draw(st.sampled_from([b"0001", b"0001", b"0000", b"0002"])))
        for _ in range(draw(st.integers(0, 6))):
            kind = draw(st.integers(0, 4))
            if kind == 0:
                parts.append(pkt(b"want " + draw(st.one_of(SHA, known)) + b"\n"))
            elif kind == 1:
                parts.append(pkt(b"have " + draw(st.one_of(SHA, known)) + b"\n"))
            elif kind == 2:
                parts.append(pkt(b"filter " + draw(FILTER_SPECS) + b"\n"))
            elif kind == 3:
                parts.append(pkt(b"shallow " + draw(st.one_of(SHA, known))))
            else:
                parts.append(pkt(draw(V2_ARGS)))
        parts.append(b"0000")
    return b"".join(parts) + draw(st.sampled_from([b"", b"0000", b"zz"]))


def run_git_command(
    services: Services, name: str, stdin: bytes, env: dict[str, str] | None = None
) -> Context:
    ctx = context(services, stdin, env=env)
    try:
        COMMANDS[name].handler(ctx, [APP])  # what split_command makes of 'APP'
    except DockyardError:
        pass  # a clean refusal; anything else propagates and fails the example
    return ctx


@FUZZ_SETTINGS
@given(data=st.data())
def test_receive_pack_survives_any_byte_stream(
    pushed: tuple[Services, Path, list[bytes]], data: st.DataObject
) -> None:
    services, repo_path, shas = pushed
    before = refs_of(repo_path)
    stream = data.draw(st.one_of(receive_stream(shas), st.binary(max_size=300)))
    run_git_command(services, "git-receive-pack", stream)
    after = refs_of(repo_path)
    # Only a well-formed request with a valid pack may move refs, and only to known commits.
    assert set(after.values()) <= set(shas)
    for ref in after.keys() - before.keys():
        assert ref == b"HEAD" or (ref.startswith(b"refs/") and b".." not in ref)
    assert_fsck_clean(repo_path)


@FUZZ_SETTINGS
@given(data=st.data())
def test_upload_pack_survives_any_byte_stream(
    pushed: tuple[Services, Path, list[bytes]], data: st.DataObject
) -> None:
    services, repo_path, shas = pushed
    before = refs_of(repo_path)
    stream = data.draw(st.one_of(upload_stream(shas), st.binary(max_size=300)))
    run_git_command(services, "git-upload-pack", stream)
    assert refs_of(repo_path) == before
    assert_fsck_clean(repo_path)


@FUZZ_SETTINGS
@given(data=st.data())
def test_upload_pack_v2_survives_any_request(
    pushed: tuple[Services, Path, list[bytes]], data: st.DataObject
) -> None:
    services, repo_path, shas = pushed
    before = refs_of(repo_path)
    stream = data.draw(st.one_of(upload_stream_v2(shas), st.binary(max_size=300)))
    ctx = run_git_command(services, "git-upload-pack", stream, {"GIT_PROTOCOL": "version=2"})
    assert ctx.stdout.getvalue().startswith(b"000eversion 2\n")  # type: ignore[attr-defined]
    assert refs_of(repo_path) == before
    assert_fsck_clean(repo_path)


@FUZZ_SETTINGS
@given(value=st.one_of(FILTER_SPECS, st.binary(max_size=80)))
def test_filter_specs_parse_or_are_refused(value: bytes) -> None:
    from gitrecv.fetchspec import RequestError, parse_filter

    try:
        parsed = parse_filter(value)
    except RequestError:
        return
    assert parse_filter(str(parsed).encode()) == parsed


@FUZZ_SETTINGS
@given(value=st.binary(max_size=40), text=st.one_of(st.none(), st.text(max_size=40)))
def test_fetch_arguments_parse_or_are_refused(value: bytes, text: str | None) -> None:
    from dulwich.refs import check_ref_format

    from gitrecv.fetchspec import (
        RequestError,
        deepen_not_candidates,
        parse_depth,
        parse_oid,
        parse_since,
        protocol_version,
    )

    for parse in (parse_depth, parse_since, parse_oid):
        try:
            parse(value)
        except RequestError:
            pass
    try:
        names = deepen_not_candidates(value)
    except RequestError:
        names = []
    assert all(check_ref_format(n) or n == b"HEAD" for n in names)  # safe to look up
    assert protocol_version(text) in (0, 1, 2)


# Commands that start containers, follow logs or reach the engine/nginx on their happy path:
# their argument parsing is still fuzzed, but against an app name that does not exist.
ENGINE_COMMANDS = frozenset({
    "run", "logs", "ps:start", "ps:stop", "ps:restart", "ps:rebuild", "ps:scale",
    "releases:rollback", "doctor", "proxy:build-config", "git-receive-pack", "git-upload-pack",
})  # fmt: skip
WORDS = st.one_of(
    st.sampled_from([
        APP, "other", "--global", "--format", "json", "--force", "-t", "-n", "5", "KEY=VALUE",
        "A=1", "=x", "1A=2", "../etc", "a;id", "$(id)", "`id`", "x\ny", "\x00", "web=1",
        "--no-restart", "--encoded", "QUJD", "deploy-branch", "max-push-size", "--all",
        "example.com", "*.example.com", "а", "ａｐｐ", "\u202eppa", "x" * 300, "-", "--",
        "--admin", "v1", "wait-to-retire", "restart-policy", "--memory", "1g",
    ]),
    st.text(max_size=20),
)  # fmt: skip
QUOTED = st.sampled_from(["'", '"', "\\", " ", "\t", "#", ";", "|", "&"])


@st.composite
def exec_string(draw: st.DrawFn) -> str:
    names = sorted(COMMANDS)
    name = draw(st.one_of(st.sampled_from(names), st.text(max_size=12)))
    words = draw(st.lists(WORDS, max_size=5))
    if name in ENGINE_COMMANDS:
        words = [w for w in words if w != APP]
    import shlex

    line = " ".join([shlex.quote(name), *(shlex.quote(w) for w in words)])
    if draw(st.booleans()):
        line += draw(st.text(QUOTED, max_size=3))  # unbalanced quotes and shell metacharacters
    return line


@pytest.fixture(scope="module")
def command_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    services = make_services(tmp_path_factory.mktemp("fuzzcmd"))
    services.keys.add("alice", _throwaway_public_key(), admin=False)
    services.apps.create(APP, owner="admin")
    yield services
    remove_leftovers_of(services.settings.data_dir)  # a fuzzed domains:* may start nginx


def _throwaway_public_key() -> str:
    import asyncssh

    return asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()


@FUZZ_SETTINGS
@given(line=exec_string(), as_admin=st.booleans())
def test_command_parser_refuses_cleanly(
    command_services: Services, line: str, as_admin: bool
) -> None:
    from sshd.session import split_command

    try:
        argv = split_command(line)
    except ValueError:
        return  # the session answers "Cannot parse command" itself
    ctx = context(command_services, b"", ADMIN if as_admin else ALICE)
    status = dispatch(ctx, argv)
    stderr = ctx.stderr.getvalue().decode(errors="replace")  # type: ignore[attr-defined]
    assert isinstance(status, int)
    assert INTERNAL_ERROR not in stderr, (argv, stderr)
    if status != 0 and stderr:
        assert all(ln.startswith(ERROR) for ln in stderr.splitlines()), (argv, stderr)
    if command_services.apps.find(APP) is None:  # a fuzzed destroy got through: put it back
        command_services.apps.create(APP, owner="admin")


def test_push_of_an_empty_pack_then_clone(pushed: tuple[Services, Path, list[bytes]]) -> None:
    """A push that only moves refs sends a pack with no objects; a later clone must work."""
    services, repo_path, shas = pushed
    line = ZERO + b" " + shas[0] + b" refs/heads/empty-pack\x00report-status\n"
    ctx = run_git_command(services, "git-receive-pack", pkt(line) + b"0000" + empty_pack())
    assert b"ok refs/heads/empty-pack" in ctx.stdout.getvalue()  # type: ignore[attr-defined]
    request = (
        pkt(b"want " + shas[0] + b" side-band-64k thin-pack ofs-delta\n") + b"0000" + pkt(b"done\n")
    )
    ctx = run_git_command(services, "git-upload-pack", request)
    assert b"PACK" in ctx.stdout.getvalue()  # type: ignore[attr-defined]
    assert ctx.stderr.getvalue() == b""  # type: ignore[attr-defined]
    assert_fsck_clean(repo_path)
