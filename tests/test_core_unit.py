"""Fast unit tests of the core and the SSH session's parsing: no network, no server."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
from pathlib import Path

import asyncssh
import pytest

from dockyard.access import Access, Identity, check_access
from dockyard.apps import AppStore
from dockyard.config_vars import ConfigStore
from dockyard.errors import AccessDenied, Conflict, UsageError
from dockyard.keys import KeyStore, parse_authorized_keys, parse_public_key
from dockyard.names import check_app_name, check_config_key, check_key_name
from dockyard.output import Output, report_key
from dockyard.properties import PropertyStore
from dockyard.settings import Settings, parse_listen
from dockyard.state import StateStore
from sshd.session import split_command

# --- names ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "0", "my-app", "a" * 63, "9lives", "a-"])
def test_valid_app_names(name: str) -> None:
    assert check_app_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "A", "-a", "../x", "a/b", "a;b", "$(id)", "a\nb", "a b", "a_b", "a.b", "a" * 64,
     "\u0430pp", "app\u200b", "app\n", "\uff41pp"],
)  # fmt: skip
def test_invalid_app_names(name: str) -> None:
    with pytest.raises(UsageError, match="Invalid app name"):
        check_app_name(name)


def test_key_and_config_names() -> None:
    assert check_key_name("alice@laptop.home") == "alice@laptop.home"
    for bad in ("", ".hidden", "a b", "a/b", "x" * 65, 'a"b'):
        with pytest.raises(UsageError):
            check_key_name(bad)
    assert check_config_key("_PORT1") == "_PORT1"
    for bad in ("1X", "A-B", "A B", ""):
        with pytest.raises(UsageError):
            check_config_key(bad)


# --- exec string splitting -------------------------------------------------------------


@pytest.mark.parametrize(
    ("exec_string", "argv"),
    [
        (None, []),
        ("", []),
        ("apps:list", ["apps:list"]),
        ('apps:create "foo"', ["apps:create", "foo"]),
        ("git-receive-pack 'my-app'", ["git-receive-pack", "my-app"]),
        ("config:set app 'K=a b' L=\"x y\"", ["config:set", "app", "K=a b", "L=x y"]),
        ("config:set app K=$(id) `id` ;", ["config:set", "app", "K=$(id)", "`id`", ";"]),
        ("a  b\tc", ["a", "b", "c"]),
        ("x # not a comment", ["x", "#", "not", "a", "comment"]),
        ("'a'\"b\"c", ["abc"]),
        ("'it''s'", ["its"]),
        ('"a\\"b"', ['a"b']),
    ],
)
def test_split_command(exec_string: str | None, argv: list[str]) -> None:
    assert split_command(exec_string) == argv


@pytest.mark.parametrize("exec_string", ['apps:create "foo', "apps:create 'foo", "x \\"])
def test_split_command_unbalanced(exec_string: str) -> None:
    with pytest.raises(ValueError):
        split_command(exec_string)


# --- authorized_keys ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pubkeys(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    d = tmp_path_factory.mktemp("keys")
    keys = []
    for name, kind in (("k1", "ed25519"), ("k2", "ed25519"), ("k3", "ecdsa")):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", name, "-f", str(d / name)], check=True
        )
        keys.append((d / f"{name}.pub").read_text().strip())
    return keys


def test_parse_authorized_keys_by_hand(pubkeys: list[str]) -> None:
    k1, k2, k3 = pubkeys
    text = "\n".join(
        [
            "# a comment",
            "",
            f'environment="DOCKYARD_KEY=alice",environment="DOCKYARD_ROLE=admin",restrict {k1}',
            f"no-pty {k2}",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBROKEN",
            "garbage line",
            f"   {k3}   ",
            'environment="DOCKYARD_KEY=x" not-a-key-type AAAA',
            f'command="echo hi there" {k3}',  # a forced command Dockyard cannot honour
        ]
    )
    entries, refused = parse_authorized_keys(text)
    assert [e.name for e in entries[:1]] == ["alice"]
    assert entries[0].is_admin
    assert len(entries) == 3  # the malformed lines are skipped, not fatal
    assert [r.number for r in refused] == [5, 6, 8, 9]
    assert "command" in refused[-1].reason
    hand = entries[1]
    assert not hand.is_admin and not hand.policy.pty
    assert hand.name.startswith("SHA256:")  # no name option: named by fingerprint
    assert hand.public_key.split()[:2] == k2.split()[:2]
    assert entries[2].public_key.split()[:2] == k3.split()[:2]
    assert entries[2].as_dict()["fingerprint"] == entries[2].fingerprint


def test_role_comes_only_from_the_role_option(pubkeys: list[str]) -> None:
    k1 = pubkeys[0]
    for line in (
        f"{k1} DOCKYARD_ROLE=admin",  # in the comment
        f'environment="DOCKYARD_ROLE=user" {k1}',
        f'environment="DOCKYARD_ROLE=administrator" {k1}',
    ):
        assert not parse_authorized_keys(line)[0][0].is_admin, line


def test_parse_public_key_refuses_junk(pubkeys: list[str]) -> None:
    assert isinstance(parse_public_key(pubkeys[0]), asyncssh.SSHKey)
    for junk in ("", "hello", f"{pubkeys[0]}\n{pubkeys[1]}", f'restrict {pubkeys[0]}',
                 "ssh-ed25519 !!!", "ssh-rsa AAAAB3NzaC1yc2E="):  # fmt: skip
        with pytest.raises(UsageError, match="Invalid ssh public key"):
            parse_public_key(junk)


def test_keystore_add_remove_and_reload(tmp_path: Path, pubkeys: list[str]) -> None:
    k1, k2, k3 = pubkeys
    path = tmp_path / "authorized_keys"
    store = KeyStore(path)
    assert store.entries() == []
    admin = store.add("admin", k1, admin=True)
    assert admin.is_admin and admin.name == "admin"
    store.add("bob", k2)
    with pytest.raises(Conflict, match="Duplicate ssh key name"):
        store.add("bob", k3)
    with pytest.raises(Conflict, match="Duplicate ssh public key specified"):
        store.add("carol", k2)
    assert path.stat().st_mode & 0o777 == 0o600
    # A hand edit is seen by the same store object on its next read.
    with open(path, "a") as f:
        f.write(f"{k3}\n")
    assert [e.is_admin for e in store.entries()] == [True, False, False]
    assert store.identify(asyncssh.import_public_key(k3)) is not None
    store.remove("bob")
    assert store.identify(asyncssh.import_public_key(k2)) is None
    assert len(path.read_text().splitlines()) == 2


# --- output ------------------------------------------------------------------------------


def make_output(quiet: bool = False) -> tuple[Output, io.BytesIO, io.BytesIO]:
    out, err = io.BytesIO(), io.BytesIO()
    return Output(out, err, quiet=quiet), out, err


def test_output_shapes() -> None:
    o, out, err = make_output()
    o.step("Creating app...")
    o.heading("My Apps")
    o.detail("detail")
    o.report("app app information", [("App name", "app"), ("Flags", ["a", "b"]), ("On", True)])
    o.error("first\nsecond")
    lines = out.getvalue().decode().splitlines()
    assert lines[:3] == ["-----> Creating app...", "=====> My Apps", "       detail"]
    assert lines[3] == "=====> app app information"
    assert lines[4] == "       App name:                       app"
    assert lines[4].index("app", 8) == 7 + 31 + 1
    assert lines[5] == "       " + "Flags:".ljust(31) + " a b"
    assert lines[6].endswith(" true")
    assert err.getvalue().decode() == " !     first\n !     second\n"


def test_output_quiet_and_json() -> None:
    o, out, _ = make_output(quiet=True)
    o.step("hidden")
    o.heading("hidden")
    o.detail("bare")
    o.json(["a", "ü"])
    assert out.getvalue().decode().splitlines() == ["bare", '["a", "ü"]']
    assert json.loads(out.getvalue().decode().splitlines()[1]) == ["a", "ü"]
    assert report_key("Deploy branch") == "deploy-branch"


# --- access ------------------------------------------------------------------------------

ADMIN = Identity("root", is_admin=True)
OWNER = Identity("alice", is_admin=False)
GRANTEE = Identity("bob", is_admin=False)
STRANGER = Identity("eve", is_admin=False)


@pytest.mark.parametrize(
    ("who", "need", "allowed"),
    [
        (ADMIN, Access.ANYONE, True), (ADMIN, Access.APP, True), (ADMIN, Access.ADMIN, True),
        (OWNER, Access.ANYONE, True), (OWNER, Access.APP, True), (OWNER, Access.ADMIN, False),
        (GRANTEE, Access.ANYONE, True), (GRANTEE, Access.APP, True),
        (GRANTEE, Access.ADMIN, False),
        (STRANGER, Access.ANYONE, True), (STRANGER, Access.APP, False),
        (STRANGER, Access.ADMIN, False),
    ],
)  # fmt: skip
def test_check_access_truth_table(who: Identity, need: Access, allowed: bool) -> None:
    def check() -> None:
        check_access(who, need, "app", "alice", ["bob"], action="manage keys")

    if allowed:
        check()
        return
    with pytest.raises(AccessDenied) as caught:
        check()
    assert caught.value.exit_code == 13
    if need is Access.ADMIN:
        assert caught.value.message == f"Only an admin key may manage keys (you are {who.name})"
    else:
        assert f"Key {who.name} may not manage app app" in caught.value.message


# --- state, properties, config -----------------------------------------------------------


def test_migrations_are_idempotent_and_wal(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    StateStore(db)
    again = StateStore(db)  # reopening applies nothing twice
    counts = again.query("SELECT component, COUNT(*) AS n FROM schema_migrations GROUP BY 1")
    steps = {r["component"]: r["n"] for r in counts}
    assert steps["core"] == 7
    StateStore(db)
    assert again.query_one("SELECT COUNT(*) AS n FROM schema_migrations")["n"] == sum(
        steps.values()
    )
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    apps = AppStore(StateStore(tmp_path / "state.db"))
    with pytest.raises(RuntimeError):
        with apps.state.transaction() as conn:
            conn.execute("INSERT INTO apps (name, owner, created_at) VALUES ('x', 'a', 0)")
            raise RuntimeError("boom")
    assert apps.find("x") is None
    apps.create("x", "a")
    with pytest.raises(Conflict, match="Name is already taken"):
        apps.create("x", "b")


def test_properties_app_over_global(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state.db")
    app = AppStore(state).create("web", "alice")
    props = PropertyStore(state)
    assert props.get(app, "git.deploy-branch", "main") == "main"
    props.set(None, "git.deploy-branch", "trunk")
    assert props.get(app, "git.deploy-branch", "main") == "trunk"
    props.set(app, "git.deploy-branch", "prod")
    assert props.get(app, "git.deploy-branch") == "prod"
    assert props.get_local(None, "git.deploy-branch") == "trunk"
    props.set(app, "git.deploy-branch", "")  # unset falls back to global
    assert props.get(app, "git.deploy-branch") == "trunk"
    assert props.get_local(app, "git.deploy-branch") is None


def test_config_app_over_global(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state.db")
    app = AppStore(state).create("web", "alice")
    config = ConfigStore(state)
    config.set(None, {"A": "global", "B": "global"})
    config.set(app, {"B": "app $HOME 'q' ü"})
    assert config.effective(app) == {"A": "global", "B": "app $HOME 'q' ü"}
    assert config.unset(app, ["B", "NOPE"]) == ["B"]
    assert config.effective(app)["B"] == "global"
    with pytest.raises(UsageError):
        config.set(app, {"BAD-KEY": "x"})


def test_app_destroy_cascades(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state.db")
    apps = AppStore(state)
    app = apps.create("web", "alice")
    apps.grant(app, "bob")
    ConfigStore(state).set(app, {"K": "v"})
    apps.delete(app)
    assert state.query("SELECT * FROM acl") == []
    assert state.query("SELECT * FROM app_config") == []


# --- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("0.0.0.0:2222", ("0.0.0.0", 2222)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        (":80", ("0.0.0.0", 80)),
        ("[::1]:2222", ("::1", 2222)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_parse_listen(value: str, parsed: tuple[str, int]) -> None:
    assert parse_listen(value) == parsed


@pytest.mark.parametrize("value", ["2222", "host:", "host:x", "host:65536", "host:-1", ""])
def test_parse_listen_refuses(value: str) -> None:
    with pytest.raises(UsageError, match="Invalid listen address"):
        parse_listen(value)


def test_settings_flags_over_env_over_defaults(tmp_path: Path) -> None:
    env = {"DOCKYARD_DATA_DIR": str(tmp_path / "env"), "DOCKYARD_SSH_LISTEN": "127.0.0.1:2200"}
    from_env = Settings.resolve(environ=env)
    assert from_env.data_dir == tmp_path / "env"
    assert from_env.ssh_listen == ("127.0.0.1", 2200)
    assert from_env.http_listen == ("0.0.0.0", 80)
    assert from_env.https_listen == ("0.0.0.0", 443)
    flagged = Settings.resolve(str(tmp_path / "flag"), "127.0.0.1:2300", environ=env)
    assert flagged.data_dir == tmp_path / "flag"
    assert flagged.ssh_listen == ("127.0.0.1", 2300)
    assert Settings.resolve(environ={}).ssh_listen == ("0.0.0.0", 2222)


# --- sshd TCP tuning -----------------------------------------------------------------------


class FakeConnection:
    """Just what `acknowledge_promptly` touches of an asyncssh connection."""

    def __init__(self, sock: object) -> None:
        self.sock = sock
        self.received: list[bytes] = []

    def get_extra_info(self, name: str) -> object:
        return self.sock if name == "socket" else None

    def data_received(self, data: bytes, datatype: object = None) -> None:
        self.received.append(data)


def test_quick_ack_is_rearmed_on_every_read() -> None:
    import socket

    from sshd.tcp import TCP_QUICKACK, acknowledge_promptly

    assert TCP_QUICKACK is not None  # the servers Dockyard targets are Linux
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server_side, _ = listener.accept()
        with client, server_side:
            conn = FakeConnection(server_side)
            acknowledge_promptly(conn)  # type: ignore[arg-type]
            server_side.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 0)
            conn.data_received(b"SSH-2.0-x\r\n")
            assert conn.received == [b"SSH-2.0-x\r\n"]
            assert server_side.getsockopt(socket.IPPROTO_TCP, TCP_QUICKACK) == 1


def test_quick_ack_leaves_unix_sockets_alone() -> None:
    import socket

    from sshd.tcp import acknowledge_promptly

    a, b = socket.socketpair()
    with a, b:
        conn = FakeConnection(a)
        before = conn.data_received
        acknowledge_promptly(conn)  # type: ignore[arg-type]
        assert conn.data_received == before


# --- sshd identity ---------------------------------------------------------------------


class FakeSSHConnection:
    def __init__(self) -> None:
        self.extra: dict[str, object] = {}
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)

    def set_extra_info(self, **kwargs: object) -> None:
        self.extra.update(kwargs)

    def close(self) -> None:
        self.closed = True


def front_door(tmp_path: Path, pubkeys: list[str]) -> tuple[object, FakeSSHConnection]:
    from dockyard.services import Services
    from sshd.server import ConnectionTable, FrontDoorConnection, FrontDoorLimits

    services = Services(Settings(data_dir=tmp_path / "data"))
    services.keys.add("admin", pubkeys[0], admin=True)
    services.keys.add("alice", pubkeys[1])
    door = FrontDoorConnection(services, ConnectionTable(FrontDoorLimits()))
    conn = FakeSSHConnection()
    door.connection_made(conn)  # type: ignore[arg-type]
    return door, conn


def test_identity_is_the_last_validated_key_not_the_first_offered(
    tmp_path: Path, pubkeys: list[str]
) -> None:
    from sshd.server import IDENTITY_INFO

    door, conn = front_door(tmp_path, pubkeys)
    admin, alice = (asyncssh.import_public_key(k) for k in pubkeys[:2])
    assert door.validate_public_key("dockyard", admin)  # type: ignore[attr-defined]  (offered)
    assert door.validate_public_key("dockyard", alice)  # type: ignore[attr-defined]  (signed)
    door.auth_completed()  # type: ignore[attr-defined]
    assert conn.extra[IDENTITY_INFO] == Identity("alice", is_admin=False)


def test_auth_completed_without_a_validated_key_fails_closed(
    tmp_path: Path, pubkeys: list[str]
) -> None:
    from sshd.server import IDENTITY_INFO

    door, conn = front_door(tmp_path, pubkeys)
    stranger = asyncssh.import_public_key(pubkeys[2])
    assert not door.validate_public_key("dockyard", stranger)  # type: ignore[attr-defined]
    door.auth_completed()  # type: ignore[attr-defined]
    assert IDENTITY_INFO not in conn.extra
    assert conn.closed


def test_only_owner_or_admin_may_change_grants() -> None:
    from dockyard.access import Access, Identity, check_access
    from dockyard.errors import AccessDenied

    bob = Identity("bob", is_admin=False)
    check_access(bob, Access.APP, "web", "alice", grants=["bob"])  # a grantee manages it
    with pytest.raises(AccessDenied, match="Only the owner of web .alice. or an admin may x"):
        check_access(bob, Access.OWNER, "web", "alice", grants=["bob"], action="x")
    with pytest.raises(AccessDenied, match="may not manage app web"):
        check_access(bob, Access.OWNER, "web", "alice")
    check_access(Identity("alice", False), Access.OWNER, "web", "alice")
    check_access(Identity("root", True), Access.OWNER, "web", "alice")


def test_removed_key_leaves_no_ownership_to_inherit(tmp_path: Path) -> None:
    from dockyard.apps import AppStore
    from dockyard.state import StateStore

    apps = AppStore(StateStore(tmp_path / "state.db"))
    app = apps.create("web", owner="alice")
    apps.grant(app, "bob")
    apps.forget_key("alice")
    apps.forget_key("bob")
    assert apps.get("web").owner == "removed:alice"
    assert apps.grants(app) == []


def test_events_are_pruned_to_the_newest(tmp_path: Path) -> None:
    from dockyard.commands.events import prune_events
    from dockyard.state import StateStore

    state = StateStore(tmp_path / "state.db")
    for i in range(12):
        state.record_event("admin", "test", detail=str(i))
    assert prune_events(state, keep=5) == 7
    details = [r["detail"] for r in state.query("SELECT detail FROM events ORDER BY id")]
    assert details == [str(i) for i in range(7, 12)]


def test_a_background_task_that_dies_is_restarted(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from dockyard import lifecycle

    monkeypatch.setattr(lifecycle, "RESTART_DELAYS", (0.0,))
    runs: list[int] = []

    async def flaky(services: object) -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("transient")

    asyncio.run(lifecycle._supervised(flaky, None))  # type: ignore[arg-type]
    assert len(runs) == 3
