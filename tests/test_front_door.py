"""The front door end to end: the real OpenSSH client against a real `dockyard serve`.

Tests that only add and remove their own apps share one server (`shared_server`); tests that
change keys, restart or stop the server get a fresh one (`server`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    DockyardServer,
    SSHResult,
    free_port,
    make_key,
    remove_leftovers_of,
    start_server,
    stop_server,
    wait_for_port,
)

ERROR = " !     "
MISSING_APP_EXIT = 20


def run_ssh(args: list[str], input: bytes | None = None, timeout: float = 30) -> SSHResult:
    proc = subprocess.run(
        args, input=input, capture_output=True, timeout=timeout,
        stdin=subprocess.DEVNULL if input is None else None,
    )  # fmt: skip
    return SSHResult(
        proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )


def raw_exec(srv: DockyardServer, exec_string: str, key: Path | None = None) -> SSHResult:
    """Send `exec_string` to the server verbatim, as a user typing it after `ssh host` would."""
    return run_ssh([*srv.ssh_args(key or srv.admin_key), exec_string])


def app_names(srv: DockyardServer, key: Path | None = None) -> list[str]:
    result = srv.ssh("apps:list", "--format", "json", key=key)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def host_key_lines(port: int) -> set[str]:
    proc = subprocess.run(
        ["ssh-keyscan", "-p", str(port), "-t", "ed25519,ecdsa,rsa", "127.0.0.1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return {line for line in proc.stdout.splitlines() if line and not line.startswith("#")}


# --- apps -------------------------------------------------------------------------------


def test_app_lifecycle_create_list_report_rename_destroy(shared_server: DockyardServer) -> None:
    srv = shared_server
    created = srv.ssh("apps:create", "lifecycle")
    assert created.returncode == 0, created.stderr
    assert created.stdout == "-----> Creating lifecycle...\n"

    listed = srv.ssh("apps:list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0] == "=====> My Apps"
    assert "lifecycle" in lines[1:]
    assert "lifecycle" in app_names(srv)
    # `--` keeps OpenSSH from reading --quiet as one of its own options.
    quiet = run_ssh([*srv.ssh_args(srv.admin_key), "--", "--quiet apps:list"])
    assert "lifecycle" in quiet.stdout.splitlines()
    assert "=====>" not in quiet.stdout

    assert srv.ssh("apps:exists", "lifecycle").returncode == 0

    report = srv.ssh("apps:report", "lifecycle")
    assert report.returncode == 0, report.stderr
    rows = report.stdout.splitlines()
    assert rows[0] == "=====> lifecycle app information"
    assert rows[1] == "       " + "App name:".ljust(31) + " lifecycle"
    assert "       " + "App owner:".ljust(31) + " admin" in rows
    as_json = json.loads(srv.ssh("apps:report", "lifecycle", "--format", "json").stdout)
    assert as_json["app-name"] == "lifecycle"
    assert as_json["app-owner"] == "admin"

    renamed = srv.ssh("apps:rename", "lifecycle", "lifecycle2")
    assert renamed.returncode == 0, renamed.stderr
    names = app_names(srv)
    assert "lifecycle2" in names and "lifecycle" not in names

    # No stdin: refused at once (not left waiting), saying what would be lost and how.
    started = time.monotonic()
    refused = srv.ssh("apps:destroy", "lifecycle2")
    assert time.monotonic() - started < 20
    assert refused.returncode != 0
    assert refused.stderr.startswith(ERROR)
    for lost in ("git repository", "containers", "config vars", "release history", "--force",
                 'To proceed, type "lifecycle2"', "No confirmation: stdin is empty"):  # fmt: skip
        assert lost in refused.stderr
    # Linked services are unlinked by a destroy (services/), never destroyed with the app.
    assert "add-on" not in refused.stderr
    assert "unlinked, not destroyed" in refused.stderr
    assert "lifecycle2" in app_names(srv)
    wrong = srv.ssh("apps:destroy", "lifecycle2", input="lifecycle\n")
    assert wrong.returncode != 0 and "Confirmation did not match lifecycle2" in wrong.stderr
    assert "lifecycle2" in app_names(srv)

    destroyed = srv.ssh("apps:destroy", "lifecycle2", input="lifecycle2\n")
    assert destroyed.returncode == 0, destroyed.stderr
    assert destroyed.stdout == (
        "-----> Destroying lifecycle2 (linked services are unlinked, not destroyed)\n"
    )
    assert "lifecycle2" not in app_names(srv)
    assert srv.ssh("apps:exists", "lifecycle2").returncode == MISSING_APP_EXIT
    assert srv.ssh("apps:create", "lifecycle3").returncode == 0
    forced = srv.ssh("apps:destroy", "lifecycle3", "--force")
    assert forced.returncode == 0 and "WARNING" not in forced.stderr, forced


def test_destroy_on_a_terminal_reads_typed_keys(shared_server: DockyardServer) -> None:
    """Over `ssh -t` the client's terminal is raw and the server runs no shell: the prompt
    echoes what is typed, takes backspace, and Enter (a CR) ends the name; Ctrl-C aborts."""
    srv = shared_server
    assert srv.ssh("apps:create", "typed").returncode == 0
    args = [*srv.ssh_args(srv.admin_key, "-tt"), "apps:destroy typed"]
    aborted = run_ssh(args, input=b"typ\x03")
    assert aborted.returncode != 0 and "Aborted; typed is untouched" in aborted.stderr
    assert aborted.stdout == "> typ^C\r\n"
    assert 'To proceed, type "typed" (or run: apps:destroy typed --force)\r\n' in aborted.stderr
    assert "typed" in app_names(srv)
    # An arrow key's escape sequence is dropped; x then backspace leaves "typed".
    confirmed = run_ssh(args, input=b"typ\x1b[Dex\x7fd\r")
    assert confirmed.returncode == 0, confirmed
    assert "> typex\b \bd\r\n" in confirmed.stdout
    assert "-----> Destroying typed" in confirmed.stdout
    assert "typed" not in app_names(srv)


def test_local_destroy_reads_the_name_on_stdin(shared_server: DockyardServer) -> None:
    srv = shared_server
    assert srv.ssh("apps:create", "local-typed").returncode == 0
    refused = srv.cli("apps:destroy", "local-typed", input="")
    assert refused.returncode != 0 and "No confirmation: stdin is empty" in refused.stderr
    confirmed = srv.cli("apps:destroy", "local-typed", input="local-typed\n")
    assert confirmed.returncode == 0, confirmed.stderr
    assert "local-typed" not in app_names(srv)


@pytest.mark.parametrize(
    "bad_name",
    ["../x", "A", "a;b", "$(id)", "a\nb", "a" * 64, "\u0430pp", "-lead", ""],
    ids=["dotdot", "upper", "semicolon", "subst", "newline", "64chars", "cyrillic-a", "dash",
         "empty"],
)  # fmt: skip
def test_bad_app_names_are_refused_before_anything_is_created(
    shared_server: DockyardServer, bad_name: str
) -> None:
    srv = shared_server
    before = app_names(srv)
    result = srv.ssh("apps:create", bad_name)
    assert result.returncode != 0
    assert result.stderr.startswith(ERROR)
    # A leading dash reads as an option to the argument parser, which refuses it first.
    assert "Invalid app name" in result.stderr or bad_name.startswith("-")
    assert app_names(srv) == before
    assert sorted(p.name for p in (srv.data_dir / "repos").iterdir()) == []


def test_bad_name_never_reaches_the_filesystem(shared_server: DockyardServer) -> None:
    srv = shared_server
    outside = srv.data_dir.parent / "x"
    srv.ssh("apps:create", "../x")
    srv.ssh("apps:rename", "../x", "y")
    assert not outside.exists()
    assert not (srv.data_dir / "repos" / "..").resolve().joinpath("x").exists()


def test_63_char_name_is_the_longest_accepted(shared_server: DockyardServer) -> None:
    name = "b" * 63
    assert shared_server.ssh("apps:create", name).returncode == 0
    assert shared_server.ssh("apps:destroy", name, "--force").returncode == 0


def test_duplicate_app_name_is_taken(shared_server: DockyardServer) -> None:
    srv = shared_server
    assert srv.ssh("apps:create", "dup").returncode == 0
    again = srv.ssh("apps:create", "dup")
    assert again.returncode != 0
    assert f"{ERROR}Name is already taken" in again.stderr
    assert srv.ssh("apps:create", "dup2").returncode == 0
    taken = srv.ssh("apps:rename", "dup2", "dup")
    assert taken.returncode != 0 and "Name is already taken" in taken.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("apps:report", "ghost"),
        ("apps:exists", "ghost"),
        ("apps:rename", "ghost", "ghost2"),
        ("apps:destroy", "ghost", "--force"),
    ],
)
def test_missing_app_exits_20(shared_server: DockyardServer, command: tuple[str, ...]) -> None:
    result = shared_server.ssh(*command)
    assert result.returncode == MISSING_APP_EXIT
    assert result.stderr == f"{ERROR}App ghost does not exist\n"


def test_unknown_command_message(shared_server: DockyardServer) -> None:
    result = shared_server.ssh("foo")
    assert result.returncode != 0
    assert result.stderr == (
        f"{ERROR}`foo` is not a dockyard command.\n"
        f"{ERROR}See `dockyard help` for a list of available commands.\n"
    )


def test_help_and_version(shared_server: DockyardServer) -> None:
    srv = shared_server
    overview = srv.ssh("help")
    assert overview.returncode == 0
    for name in ("apps:create", "apps:destroy", "ssh-keys:add", "acl:add", "version"):
        assert name in overview.stdout
    one = srv.ssh("help", "apps:create")
    assert one.returncode == 0
    assert one.stdout.startswith("Usage: dockyard apps:create APP\n")
    version = srv.ssh("version")
    assert version.returncode == 0
    assert version.stdout.startswith("dockyard ")
    from dockyard import __version__

    assert version.stdout.strip() == f"dockyard {__version__}"


@pytest.mark.parametrize("user", ["git", "anything", "root"])
def test_ssh_user_name_is_ignored(shared_server: DockyardServer, user: str) -> None:
    srv = shared_server
    args = srv.ssh_args(srv.user_key)[:-1] + [f"{user}@127.0.0.1", "ssh-keys:list"]
    refused = run_ssh(args)  # alice stays non-admin whatever name she logs in as
    assert refused.returncode != 0 and "Only an admin key" in refused.stderr
    args = srv.ssh_args(srv.admin_key)[:-1] + [f"{user}@127.0.0.1", "version"]
    assert run_ssh(args).returncode == 0


def test_exec_string_split_honours_quotes(shared_server: DockyardServer) -> None:
    srv = shared_server
    created = raw_exec(srv, 'apps:create "quoted"')
    assert created.returncode == 0, created.stderr
    assert "quoted" in app_names(srv)
    assert raw_exec(srv, "apps:destroy 'quoted' --force").returncode == 0
    unbalanced = raw_exec(srv, 'apps:create "foo')
    assert unbalanced.returncode != 0
    assert unbalanced.stderr.startswith(f"{ERROR}Cannot parse command")
    assert "quotation" in unbalanced.stderr
    assert "foo" not in app_names(srv)
    # One quoted word with a space is one (bad) name, not two arguments.
    spaced = raw_exec(srv, 'apps:create "a b"')
    assert "Invalid app name 'a b'" in spaced.stderr


def test_state_db_is_wal(shared_server: DockyardServer) -> None:
    conn = sqlite3.connect(shared_server.data_dir / "state.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_fifty_concurrent_sessions_are_all_answered(shared_server: DockyardServer) -> None:
    srv = shared_server
    assert srv.ssh("apps:create", "busy").returncode == 0
    procs = [
        subprocess.Popen(
            [*srv.ssh_args(srv.admin_key), "apps:list --format json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(50)
    ]
    results = [(p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    for p in procs:
        p.stdout.close()  # type: ignore[union-attr]
        p.stderr.close()  # type: ignore[union-attr]
    assert [r[0] for r in results] == [0] * 50, [r[2] for r in results if r[0]]
    for _, out, _ in results:
        assert "busy" in json.loads(out)


# --- sessions: never a shell ------------------------------------------------------------


def test_no_command_shows_help(shared_server: DockyardServer) -> None:
    srv = shared_server
    result = run_ssh(srv.ssh_args(srv.admin_key))
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: dockyard")


def test_pty_without_command_gets_help_not_a_shell(shared_server: DockyardServer) -> None:
    srv = shared_server
    # -tt forces a pty even though our stdin is not a terminal; the line we send would run
    # in a shell, if there were one.
    result = run_ssh([*srv.ssh_args(srv.admin_key, "-tt")], input=b"echo SHELL-$((6*7))\n")
    assert "Usage: dockyard" in result.stdout
    assert "SHELL-42" not in result.stdout
    assert result.returncode == 0


def test_subsystem_is_refused(shared_server: DockyardServer) -> None:
    srv = shared_server
    result = run_ssh([*srv.ssh_args(srv.admin_key, "-s"), "sftp"])
    assert result.returncode == 255
    assert "subsystem request failed" in result.stderr
    assert result.stdout == ""


def test_compression_is_off(shared_server: DockyardServer) -> None:
    srv = shared_server
    args = srv.ssh_args(srv.admin_key, "-o", "Compression=yes", "-v")
    result = run_ssh([*args, "version"])
    assert result.returncode == 0
    assert "compression: zlib" not in result.stderr
    assert "compression: none" in result.stderr


# --- keys ---------------------------------------------------------------------------------


def test_ssh_keys_add_list_remove(server: DockyardServer, tmp_path: Path) -> None:
    srv = server
    bob = make_key(tmp_path, "bob")
    bob_pub = Path(f"{bob}.pub").read_text()
    added = srv.ssh("ssh-keys:add", "bob", input=bob_pub)
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("SHA256:")
    fingerprint = added.stdout.strip()

    listed = srv.ssh("ssh-keys:list")
    assert listed.returncode == 0
    assert f'{fingerprint} NAME="bob"' in listed.stdout
    entries = json.loads(srv.ssh("ssh-keys:list", "--format", "json").stdout)
    bob_entry = next(e for e in entries if e["name"] == "bob")
    assert bob_entry["fingerprint"] == fingerprint
    assert bob_entry["public-key"].split()[:2] == bob_pub.split()[:2]
    assert {e["name"] for e in entries} == {"admin", "alice", "bob"}

    assert srv.ssh("version", key=bob).returncode == 0  # bob may log in now

    other = Path(f"{make_key(tmp_path, 'other')}.pub").read_text()
    dup_name = srv.ssh("ssh-keys:add", "bob", input=other)
    assert dup_name.returncode != 0 and f"{ERROR}Duplicate ssh key name" in dup_name.stderr
    dup_key = srv.ssh("ssh-keys:add", "bob2", input=bob_pub)
    assert dup_key.returncode != 0
    assert f"{ERROR}Duplicate ssh public key specified" in dup_key.stderr
    for junk in ("", "not a key", "ssh-ed25519 AAAAnotbase64!!", bob_pub + bob_pub):
        bad = srv.ssh("ssh-keys:add", "junk", input=junk)
        assert bad.returncode != 0 and f"{ERROR}Invalid ssh public key" in bad.stderr, junk
    assert "junk" not in srv.ssh("ssh-keys:list").stdout

    removed = srv.ssh("ssh-keys:remove", "bob")
    assert removed.returncode == 0, removed.stderr
    assert "bob" not in srv.ssh("ssh-keys:list").stdout
    assert srv.ssh("version", key=bob).returncode == 255  # bob is locked out
    missing = srv.ssh("ssh-keys:remove", "bob")
    assert missing.returncode != 0 and missing.stderr.startswith(ERROR)


def test_local_cli_adds_key_from_file_and_acts_as_admin(
    server: DockyardServer, tmp_path: Path
) -> None:
    srv = server
    carol = make_key(tmp_path, "carol")
    added = srv.cli("ssh-keys:add", "--admin", "carol", f"{carol}.pub")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("SHA256:")
    assert 'NAME="carol" ROLE="admin"' in srv.ssh("ssh-keys:list").stdout
    # carol signs in as an admin at once, without a restart.
    assert srv.ssh("ssh-keys:list", key=carol).returncode == 0
    # Over SSH a file name would point at the server's disk: refused.
    remote_file = srv.ssh("ssh-keys:add", "dave", f"{carol}.pub")
    assert remote_file.returncode != 0 and "pipe the key on stdin" in remote_file.stderr


def test_hand_edits_to_authorized_keys_apply_on_next_login(
    server: DockyardServer, tmp_path: Path
) -> None:
    srv = server
    erin = make_key(tmp_path, "erin")
    assert srv.ssh("version", key=erin).returncode == 255
    authorized = srv.data_dir / "authorized_keys"
    erin_line = Path(f"{erin}.pub").read_text().strip()
    with open(authorized, "a") as f:
        f.write(f"# erin, added by hand\n{erin_line}\n")
    assert srv.ssh("version", key=erin).returncode == 0
    refused = srv.ssh("ssh-keys:list", key=erin)  # a hand-added line is a non-admin key
    assert refused.returncode != 0 and "Only an admin key" in refused.stderr

    kept = [line for line in authorized.read_text().splitlines() if "alice" not in line]
    authorized.write_text("\n".join(kept) + "\n")
    assert srv.ssh("version", key=srv.user_key).returncode == 255
    assert srv.ssh("version", key=erin).returncode == 0


def test_unknown_key_is_refused_at_login(shared_server: DockyardServer, tmp_path: Path) -> None:
    srv = shared_server
    stranger = make_key(tmp_path, "stranger")
    result = srv.ssh("apps:list", key=stranger)
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr
    assert "unknown key refused" in srv.log()


# --- access ------------------------------------------------------------------------------


def test_non_admin_refusals_say_why(shared_server: DockyardServer) -> None:
    srv, alice = shared_server, shared_server.user_key
    assert srv.ssh("apps:create", "admins-app").returncode == 0
    for command in (
        ("ssh-keys:list",),
        ("ssh-keys:remove", "admin"),
        ("apps:set", "--global", "disable-autocreation", "true"),
    ):
        result = srv.ssh(*command, key=alice)
        assert result.returncode != 0, command
        assert result.stderr.startswith(f"{ERROR}Only an admin key may"), result.stderr
        assert "(you are alice)" in result.stderr
    added = srv.ssh("ssh-keys:add", "mallory", key=alice, input=Path(f"{alice}.pub").read_text())
    assert added.returncode != 0 and "Only an admin key" in added.stderr
    for command in (
        ("apps:report", "admins-app"),
        ("apps:rename", "admins-app", "stolen"),
        ("apps:destroy", "admins-app", "--force"),
        ("acl:add", "admins-app", "alice"),
    ):
        result = srv.ssh(*command, key=alice)
        assert result.returncode != 0, command
        assert "Key alice may not manage app admins-app" in result.stderr
        assert "neither the owner nor granted" in result.stderr
    assert "admins-app" not in app_names(srv, key=alice)
    assert "admins-app" in app_names(srv)


def test_non_admin_owns_the_apps_it_creates(shared_server: DockyardServer) -> None:
    srv, alice = shared_server, shared_server.user_key
    assert srv.ssh("apps:create", "alices-app", key=alice).returncode == 0
    report = json.loads(srv.ssh("apps:report", "alices-app", "--format", "json", key=alice).stdout)
    assert report["app-owner"] == "alice"
    assert app_names(srv, key=alice) == ["alices-app"] or "alices-app" in app_names(srv, key=alice)
    renamed = srv.ssh("apps:rename", "alices-app", "alices-app2", key=alice)
    assert renamed.returncode == 0, renamed.stderr
    assert srv.ssh("apps:destroy", "alices-app2", "--force", key=alice).returncode == 0


def test_acl_grants_and_revokes(shared_server: DockyardServer) -> None:
    srv, alice = shared_server, shared_server.user_key
    assert srv.ssh("apps:create", "shared").returncode == 0
    assert srv.ssh("apps:report", "shared", key=alice).returncode != 0

    granted = srv.ssh("acl:add", "shared", "alice")
    assert granted.returncode == 0, granted.stderr
    assert srv.ssh("apps:report", "shared", key=alice).returncode == 0
    assert "shared" in app_names(srv, key=alice)
    listed = srv.ssh("acl:list", "shared")
    assert listed.stdout.splitlines()[0] == "=====> shared access"
    assert "       alice" in listed.stdout.splitlines()
    assert json.loads(srv.ssh("acl:list", "shared", "--format", "json").stdout) == {
        "owner": "admin", "grants": ["alice"],
    }  # fmt: skip
    nobody = srv.ssh("acl:add", "shared", "nobody")
    assert nobody.returncode != 0 and "No ssh key named nobody" in nobody.stderr
    # A grantee manages the app but may not hand it on or take others' access away.
    for grantee_attempt in (
        ("acl:add", "shared", "admin"), ("acl:remove", "shared", "alice"),
        ("apps:rename", "shared", "mine-now"), ("apps:destroy", "shared", "--force"),
    ):  # fmt: skip
        refused = srv.ssh(*grantee_attempt, key=alice)
        assert refused.returncode != 0 and "Only the owner of shared" in refused.stderr
    assert json.loads(srv.ssh("acl:list", "shared", "--format", "json").stdout)["grants"] == [
        "alice"
    ]

    revoked = srv.ssh("acl:remove", "shared", "alice")
    assert revoked.returncode == 0, revoked.stderr
    after = srv.ssh("apps:report", "shared", key=alice)
    assert after.returncode != 0 and "may not manage app shared" in after.stderr
    assert json.loads(srv.ssh("acl:list", "shared", "--format", "json").stdout)["grants"] == []


# --- authentication: the offered-not-signed bypass ---------------------------------------


def test_offering_admin_key_without_signing_does_not_make_you_admin(
    shared_server: DockyardServer, tmp_path: Path
) -> None:
    srv = shared_server
    # Only the admin's *public* key is here: ssh offers it, the server accepts it (PK_OK),
    # ssh cannot sign with it, and falls back to alice's key, which it can sign with.
    offered = tmp_path / "offered"
    offered.mkdir()
    admin_pub = offered / "admin.pub"
    shutil.copy(f"{srv.admin_key}.pub", admin_pub)
    assert not (offered / "admin").exists()
    args = [
        "ssh", "-v", "-p", str(srv.port),
        "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
        "-i", str(admin_pub), "-i", str(srv.user_key),
        "dockyard@127.0.0.1",
    ]  # fmt: skip
    log_before = len(srv.log().splitlines())
    result = run_ssh([*args, "ssh-keys:list"])
    session_log = [json.loads(line) for line in srv.log().splitlines()[log_before:]]
    admin_fp = subprocess.run(
        ["ssh-keygen", "-lf", str(admin_pub)], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    accepted = [line for line in result.stderr.splitlines() if "Server accepts key" in line]
    assert any(admin_fp in line for line in accepted), result.stderr
    assert any("alice" in line for line in accepted), result.stderr
    assert result.returncode != 0
    assert "Only an admin key may run ssh-keys:list (you are alice)" in result.stderr

    # The same connection sequence, asking who we are through a command alice may run.
    report = run_ssh([*args, "apps:create", "bypass-check"])
    assert report.returncode == 0
    owner = json.loads(srv.ssh("apps:report", "bypass-check", "--format", "json").stdout)
    assert owner["app-owner"] == "alice"
    logins = [entry for entry in session_log if entry["event"] == "login"]
    assert [(e["user"], e["admin"]) for e in logins] == [("alice", False)]


def test_client_environment_does_not_change_identity(shared_server: DockyardServer) -> None:
    srv = shared_server
    env = {**os.environ, "DOCKYARD_KEY": "admin", "DOCKYARD_ROLE": "admin"}
    args = srv.ssh_args(
        srv.user_key, "-o", "SendEnv=DOCKYARD_*", "-o", "SetEnv=DOCKYARD_ROLE=admin"
    )
    proc = subprocess.run(
        [*args, "ssh-keys:list"], capture_output=True, text=True, env=env, timeout=30,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode != 0 and "(you are alice)" in proc.stderr


# --- the server process ------------------------------------------------------------------


def test_sigterm_stops_cleanly_and_host_keys_survive_restart(server: DockyardServer) -> None:
    srv = server
    host_keys_before = host_key_lines(srv.port)
    assert len(host_keys_before) >= 2
    assert (srv.data_dir / "host_keys" / "ssh_host_ed25519_key").exists()

    # A session still waiting on its stdin must not keep the server from stopping.
    waiting = subprocess.Popen(
        [*srv.ssh_args(srv.admin_key), "ssh-keys:add", "pending"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    started = time.monotonic()
    srv.process.send_signal(signal.SIGTERM)
    assert srv.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    assert '"stopped"' in srv.log()
    waiting.stdin.close()  # type: ignore[union-attr]
    waiting.wait(timeout=10)
    assert "pending" not in (srv.data_dir / "authorized_keys").read_text()

    again = start_server(srv.data_dir, srv.keys_dir, srv.admin_key, srv.user_key, port=srv.port)
    try:
        assert host_key_lines(again.port) == host_keys_before
        assert again.ssh("version").returncode == 0
    finally:
        stop_server(again)


def test_sigint_stops_cleanly(server: DockyardServer) -> None:
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(timeout=10) == 0


def test_listen_address_from_environment(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = make_key(tmp_path, "admin")
    subprocess.run(
        [sys.executable, "-m", "dockyard.cli", "--data-dir", str(data_dir),
         "ssh-keys:add", "--admin", "admin", f"{key}.pub"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {
        **os.environ,
        "DOCKYARD_DATA_DIR": str(data_dir),
        "DOCKYARD_SSH_LISTEN": f"127.0.0.1:{port}",
        "DOCKYARD_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        "DOCKYARD_HTTPS_LISTEN": f"127.0.0.1:{free_port()}",
    }
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "dockyard.cli", "serve", "--log-format", "json"],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    try:
        wait_for_port(port, process, log_path)
        srv = DockyardServer(data_dir, port, 0, tmp_path, process, key, key, log_path, env)
        assert srv.ssh("version").returncode == 0
        assert (data_dir / "host_keys").is_dir()
        empty = srv.ssh("apps:list")
        assert (empty.returncode, empty.stdout) == (0, "=====> My Apps\n")
        assert empty.stderr == f"{ERROR}You haven't deployed any applications yet\n"
        assert srv.ssh("apps:list", "--format", "json").stdout == "[]\n"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        remove_leftovers_of(data_dir)


def wait_for_log(srv: DockyardServer, skip: int, event: str, timeout: float = 10) -> dict:
    """The first log record named `event` after the first `skip` lines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in srv.log().splitlines()[skip:]:
            record = json.loads(line)
            if record.get("event") == event:
                return record
        time.sleep(0.05)
    raise AssertionError(f"no {event!r} in the server log")


def test_client_that_disconnects_mid_command_is_cleaned_up(shared_server: DockyardServer) -> None:
    srv = shared_server
    skip = len(srv.log().splitlines())
    # ssh-keys:add blocks reading the key from stdin; kill the client while it waits.
    client = subprocess.Popen(
        [*srv.ssh_args(srv.admin_key), "ssh-keys:add", "halfway"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert wait_for_log(srv, skip, "command")["command"] == ["ssh-keys:add"]
    client.kill()
    client.wait()
    client.stdin.close()  # type: ignore[union-attr]
    ended = wait_for_log(srv, skip, "client disconnected")
    assert ended["command"] == ["ssh-keys:add"]
    assert "halfway" not in (srv.data_dir / "authorized_keys").read_text()
    assert srv.ssh("version").returncode == 0  # and the server keeps serving


# --- limits, on an in-process server with small numbers ---------------------------------


class InProcessFrontDoor:
    """`sshd.start_server` on its own event loop thread, with limits small enough to test."""

    def __init__(self, data_dir: Path, admin_pub: Path, limits: object) -> None:
        import asyncio

        import dockyard.commands  # noqa: F401  (registers version, apps:*)
        from dockyard.services import Services
        from dockyard.settings import Settings
        from sshd import start_server as start_front_door

        self.port = free_port()
        services = Services(Settings(data_dir=data_dir, ssh_listen=("127.0.0.1", self.port)))
        services.keys.add("admin", admin_pub.read_text(), admin=True)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.acceptor = asyncio.run_coroutine_threadsafe(
            start_front_door(services, limits),
            self.loop,  # type: ignore[arg-type]
        ).result(timeout=60)

    def close(self) -> None:
        async def stop() -> None:
            self.acceptor.close()
            await self.acceptor.wait_closed()

        import asyncio

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


@pytest.fixture
def tight_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[InProcessFrontDoor]:
    from sshd import FrontDoorLimits

    key = make_key(tmp_path, "admin")
    limits = FrontDoorLimits(**request.param)
    door = InProcessFrontDoor(tmp_path / "data", Path(f"{key}.pub"), limits)
    door.key = key  # type: ignore[attr-defined]
    try:
        yield door
    finally:
        door.close()


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True if the server hangs up on `sock` within `within` seconds (banner bytes aside)."""
    sock.settimeout(within)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def door_ssh(door: InProcessFrontDoor, *command: str) -> SSHResult:
    return run_ssh([
        "ssh", "-p", str(door.port), "-i", str(door.key),  # type: ignore[attr-defined]
        "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
        "dockyard@127.0.0.1", *command,
    ])  # fmt: skip


@pytest.mark.parametrize("tight_server", [{"login_timeout": 0.5}], indirect=True)
def test_login_timeout_hangs_up_on_idle_connections(tight_server: InProcessFrontDoor) -> None:
    with socket.create_connection(("127.0.0.1", tight_server.port)) as idle:
        started = time.monotonic()
        assert closed_by_server(idle, within=5)
        assert time.monotonic() - started < 3
    assert door_ssh(tight_server, "version").returncode == 0


@pytest.mark.parametrize("tight_server", [{"max_unauthenticated": 2}], indirect=True)
def test_unauthenticated_cap_drops_the_oldest(tight_server: InProcessFrontDoor) -> None:
    first = socket.create_connection(("127.0.0.1", tight_server.port))
    time.sleep(0.1)
    second = socket.create_connection(("127.0.0.1", tight_server.port))
    time.sleep(0.1)
    try:
        third = socket.create_connection(("127.0.0.1", tight_server.port))
        try:
            assert closed_by_server(first, within=3)
            assert not closed_by_server(third, within=0.3)
            # A real user still gets in past the idle crowd (it drops `second`).
            assert door_ssh(tight_server, "version").returncode == 0
        finally:
            third.close()
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("tight_server", [{"max_connections": 2}], indirect=True)
def test_connection_cap_refuses_beyond_it(tight_server: InProcessFrontDoor) -> None:
    held = [socket.create_connection(("127.0.0.1", tight_server.port)) for _ in range(2)]
    try:
        time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", tight_server.port)) as extra:
            assert closed_by_server(extra, within=3)
        assert door_ssh(tight_server, "version").returncode == 255
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    assert door_ssh(tight_server, "version").returncode == 0


@pytest.mark.parametrize(
    "tight_server", [{"keepalive_interval": 0.2, "keepalive_count_max": 2}], indirect=True
)
def test_keepalives_hang_up_on_a_silent_client(tight_server: InProcessFrontDoor) -> None:
    import asyncio

    import asyncssh

    async def silent_client() -> bool:
        conn = await asyncssh.connect(
            "127.0.0.1", tight_server.port, username="x", known_hosts=None,
            client_keys=[str(tight_server.key)],  # type: ignore[attr-defined]
        )  # fmt: skip
        transport = conn._transport  # noqa: SLF001  (the only way to stop answering)
        transport.pause_reading()
        await asyncio.sleep(1.5)
        transport.resume_reading()
        try:
            await asyncio.wait_for(conn.wait_closed(), timeout=3)
            return True
        except TimeoutError:
            conn.close()
            return False

    assert asyncio.run(silent_client())


def test_port_forwarding_is_refused(shared_server: DockyardServer) -> None:
    srv = shared_server
    # `ssh -W` asks the server to open a TCP connection for us: a way around "one command".
    result = run_ssh([*srv.ssh_args(srv.admin_key, "-W", f"127.0.0.1:{srv.port}")], input=b"")
    assert result.returncode == 255
    assert "stdio forwarding failed" in result.stderr
    assert result.stdout == ""
