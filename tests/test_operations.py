"""Operating Dockyard: events, doctor, backup and restore, schema migration, systemd units."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
from pathlib import Path

import pytest

from dockyard.commands.backup import add_tree_unfollowed
from tests.conftest import REPO_ROOT, DockyardServer, stop_server


def test_events_record_who_did_what(server: DockyardServer) -> None:
    assert server.ssh("apps:create", "evt").returncode == 0
    assert server.ssh("apps:create", "evt2", key=server.user_key).returncode == 0
    result = server.ssh("events", "--format", "json")
    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout)
    assert {"actor": "admin", "kind": "apps:create", "app": "evt"}.items() <= events[-2].items()
    assert {"actor": "alice", "kind": "apps:create", "app": "evt2"}.items() <= events[-1].items()
    refused = server.ssh("events", key=server.user_key)
    assert refused.returncode != 0 and "Only an admin" in refused.stderr


def test_doctor_reports_and_fails_on_problems(server: DockyardServer) -> None:
    ok = server.cli("doctor", "--format", "json")
    findings = {f["check"]: f for f in json.loads(ok.stdout)}
    assert findings["docker"]["ok"], findings["docker"]
    assert findings["permissions"]["ok"], findings
    server.data_dir.joinpath("authorized_keys").chmod(0o666)
    bad = server.cli("doctor")
    assert bad.returncode == 1
    assert "authorized_keys is open to others" in bad.stderr and "chmod go-rwx" in bad.stderr
    server.data_dir.joinpath("authorized_keys").chmod(0o600)


def findings(server: DockyardServer) -> tuple[int, dict[str, dict]]:
    result = server.cli("doctor", "--format", "json")
    return result.returncode, {f["check"]: f for f in json.loads(result.stdout)}


def test_doctor_checks_the_addresses_the_running_server_uses(server: DockyardServer) -> None:
    """The test server listens on random ports: doctor (a local CLI run with none of the
    server's flags) checks those, as recorded at start, not the defaults."""
    status, found = findings(server)
    assert status == 0, found
    assert found["ssh"]["ok"] and found["ssh"]["message"] == (
        f"127.0.0.1:{server.port} answers (dockyard serve)"
    )
    assert found["http"]["ok"] and f"127.0.0.1:{server.http_port} answers" in (
        found["http"]["message"]
    )
    assert "no listener until the first certificate" in found["https"]["message"]
    assert found["domain"]["ok"] and "APP.localhost" in found["domain"]["message"]
    assert found["disk"]["ok"] and "GiB free" in found["disk"]["message"]
    # Stopped: the SSH port it used answers no more, and doctor says how to start it.
    stop_server(server)
    status, found = findings(server)
    assert status == 1
    assert not found["ssh"]["ok"]
    assert found["ssh"]["message"] == (
        f"dockyard serve is not running (it listened on 127.0.0.1:{server.port})"
    )
    assert "systemctl start dockyard" in found["ssh"]["fix"]
    # nginx outlives Dockyard by design: HTTP still answers.
    assert found["http"]["ok"], found["http"]


def test_doctor_says_which_kinds_of_app_cannot_build(server: DockyardServer) -> None:
    status, found = findings(server)
    kinds = ("python", "node", "go", "ruby", "php", "java", "static", "procfile")
    assert all(found[f"image {k}"]["ok"] for k in kinds), found  # setup built them all
    assert "local runtime image" in found["image python"]["message"]
    # An image neither here nor in any registry: static apps cannot build, and go apps
    # (which run on the procfile image) can while their images are here.
    assert server.cli("builder:set", "--global", "base-static",
                      "dockyard-test/no-such-image:1").returncode == 0  # fmt: skip
    assert server.cli("builder:set", "--global", "base-procfile",
                      "dockyard-test/no-such-runner:1").returncode == 0  # fmt: skip
    status, found = findings(server)
    assert status == 1
    static = found["image static"]
    assert not static["ok"] and static["message"].startswith("static apps cannot build")
    assert "scripts/build-base-images.sh" in static["fix"]
    assert "builder:set --global base-static" in static["fix"]
    assert not found["image go"]["ok"]  # its runner image is missing
    assert "dockyard-test/no-such-runner:1" in found["image go"]["message"]
    assert found["image python"]["ok"]
    assert not found["registry"]["ok"] and found["registry"]["fix"]
    text = server.cli("doctor")
    assert "BAD image static: static apps cannot build" in text.stdout
    assert "fix: build local runtime images" in text.stderr


def test_doctor_domain_resolution() -> None:
    """The wildcard check's verdicts, with the resolver and the machine's addresses given."""
    import ipaddress

    from dockyard.commands.doctor import check_domain_resolution

    here = [ipaddress.ip_address("10.0.0.4"), ipaddress.ip_address("127.0.0.1")]

    def resolver(answer: list[str] | None):  # noqa: ANN202
        def resolve(name: str) -> list[str]:
            assert name.startswith("dockyard-check-") and name.endswith(".apps.example.com")
            if answer is None:
                raise OSError("Name or service not known")
            return answer

        return resolve

    ok = check_domain_resolution("apps.example.com", None, resolver(["10.0.0.4"]), here)
    assert ok.ok and "resolves to this machine (10.0.0.4)" in ok.message
    missing = check_domain_resolution("apps.example.com", None, resolver(None), here)
    assert not missing.ok and "does not resolve" in missing.message
    assert "*.apps.example.com A" in missing.fix and "sslip.io" in missing.fix
    elsewhere = check_domain_resolution("apps.example.com", lambda a: False,
                                        resolver(["203.0.113.9"]), here)  # fmt: skip
    assert not elsewhere.ok and "203.0.113.9, not to this machine" in elsewhere.message
    assert "10.0.0.4" in elsewhere.message
    nat = check_domain_resolution("apps.example.com", lambda a: a == "203.0.113.9",
                                  resolver(["203.0.113.9"]), here)  # fmt: skip
    assert nat.ok and "behind NAT" in nat.message
    local = check_domain_resolution("localhost", None, resolver(None), here)
    assert local.ok and "on this machine only" in local.message


def test_backup_while_running_then_restore(server: DockyardServer, tmp_path: Path) -> None:
    assert server.ssh("apps:create", "keepme").returncode == 0
    assert server.ssh("acl:add", "keepme", "alice").returncode == 0
    repo = server.data_dir / "repos" / "keepme.git"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "HEAD").write_text("ref: refs/heads/main\n")
    archive = tmp_path / "backup.tar.gz"
    result = server.cli("backup", str(archive))
    assert result.returncode == 0, result.stderr
    assert "state.db" in result.stdout and "repos/keepme.git" in result.stdout

    fresh = tmp_path / "fresh"
    restored = subprocess.run(
        [str(REPO_ROOT / ".venv/bin/dockyard"), "--data-dir", str(fresh), "restore", str(archive)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    listing = subprocess.run(
        [str(REPO_ROOT / ".venv/bin/dockyard"), "--data-dir", str(fresh), "acl:list", "keepme"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "alice" in listing.stdout
    assert (fresh / "repos/keepme.git/HEAD").read_text() == "ref: refs/heads/main\n"
    assert (fresh / "host_keys").stat().st_mode & 0o077 == 0
    assert (fresh / "authorized_keys").read_text() == (
        server.data_dir / "authorized_keys"
    ).read_text()
    # Restoring over a data dir that has apps needs --force, and loses nothing without it.
    again = server.cli("restore", str(archive))
    assert again.returncode != 0 and "--force" in again.stderr
    assert "keepme" in server.ssh("apps:list").stdout


def test_restore_refuses_unsafe_archives(tmp_path: Path, server: DockyardServer) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in (("dockyard-backup.json", b"{}"), ("../escape", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    fresh = tmp_path / "fresh"
    result = subprocess.run(
        [str(REPO_ROOT / ".venv/bin/dockyard"), "--data-dir", str(fresh), "restore", str(archive)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0 and "unsafe entry" in result.stderr
    assert not (tmp_path / "escape").exists()
    over_ssh = server.ssh("backup", "/tmp/x.tgz")
    assert over_ssh.returncode != 0 and "runs on the server itself" in over_ssh.stderr


def test_older_state_is_migrated_forward(tmp_path: Path) -> None:
    """A data dir from before a component's later steps gains them on open, keeping rows."""
    from dockyard.state import StateStore, register_migrations

    db = tmp_path / "state.db"
    StateStore(db).query("SELECT 1")
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO apps (name, owner, created_at) VALUES ('old', 'admin', 0)")
    conn.commit()
    conn.close()
    register_migrations("test-later", ["CREATE TABLE later (x INTEGER)"])
    try:
        store = StateStore(db)
        assert store.query_one("SELECT name FROM apps")["name"] == "old"
        assert store.query("SELECT * FROM later") == []
        steps = store.query("SELECT * FROM schema_migrations WHERE component = 'test-later'")
        assert len(steps) == 1
    finally:
        from dockyard import state

        state._MIGRATIONS.pop("test-later", None)


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing (Debian package systemd)"
    unit = (REPO_ROOT / "systemd/dockyard.service").read_text()
    # verify checks that ExecStart exists: point it at this checkout's venv.
    unit = unit.replace("/opt/dockyard/.venv/bin/dockyard", str(REPO_ROOT / ".venv/bin/dockyard"))
    unit = unit.replace("/etc/dockyard/dockyard.env", str(REPO_ROOT / "systemd/dockyard.env"))
    target = tmp_path / "dockyard.service"
    target.write_text(unit)
    proc = subprocess.run([analyze, "verify", str(target)], capture_output=True, text=True)
    problems = [
        line for line in (proc.stdout + proc.stderr).splitlines()
        if "dockyard.service" in line
    ]  # fmt: skip
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr


def test_restore_on_a_fresh_machine_then_rebuild_all(
    server: DockyardServer, docker_engine, tmp_path: Path
) -> None:
    """The disaster-recovery path: backup, lose the machine, restore, `ps:rebuild --all`."""
    from tests.conftest import _provision, remove_server_leftovers, start_server, stop_server
    from tests.deploying import busybox_repo, ok, push, wait_for_body

    ok(push(server, busybox_repo(tmp_path, "phoenix", "risen"), "phoenix"))
    assert server.ssh("apps:create", "empty-one").returncode == 0
    archive = tmp_path / "backup.tar.gz"
    ok(server.cli("backup", str(archive)))
    stop_server(server)
    remove_server_leftovers(server)  # the old machine, its nginx and containers are gone

    fresh_root = tmp_path / "fresh"
    fresh_root.mkdir()
    data_dir, keys_dir, admin_key, user_key = _provision(fresh_root)
    restored = subprocess.run(
        [str(REPO_ROOT / ".venv/bin/dockyard"), "--data-dir", str(data_dir), "restore",
         str(archive), "--force"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    # The restored authorized_keys is the old machine's: log in with the old admin key.
    reborn = start_server(data_dir, keys_dir, server.admin_key, server.user_key)
    try:
        rebuilt = reborn.ssh("ps:rebuild", "--all", timeout=300)
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        assert "Skipping empty-one: nothing pushed yet" in rebuilt.stdout
        assert wait_for_body(reborn, "phoenix", "risen")
    finally:
        stop_server(reborn)
        remove_server_leftovers(reborn)


# --- storage archived without following links --------------------------------------------


def _archived(tree: Path) -> dict[str, tarfile.TarInfo]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        add_tree_unfollowed(tar, tree)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_storage_is_archived_with_links_as_links(tmp_path: Path) -> None:
    tree = tmp_path / "store"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "data.txt").write_text("mine")
    (tree / "to-etc").symlink_to("/etc")
    (tree / "passwd").symlink_to("/etc/passwd")
    members = _archived(tree)
    assert set(members) == {".", "./sub", "./sub/data.txt", "./to-etc", "./passwd"}
    assert members["./to-etc"].issym() and members["./to-etc"].linkname == "/etc"
    assert members["./passwd"].issym() and members["./sub/data.txt"].size == 4
    with pytest.raises(OSError):
        _archived(tree / "to-etc")  # the directory itself a link: refused, not followed


def test_a_directory_swapped_for_a_link_while_archived_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app swaps `sub` for a link to /etc between the listing (stat: a directory) and
    the open: the kernel refuses the open (O_NOFOLLOW) and nothing of /etc is archived."""
    tree = tmp_path / "store"
    (tree / "sub").mkdir(parents=True)
    (tree / "file").write_text("x")
    real_stat = os.stat

    def stat_then_swap(name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        result = real_stat(name, *args, **kwargs)
        if name in ("sub", "file") and kwargs.get("dir_fd") is not None:
            target = tree / name
            if target.is_dir():
                target.rmdir()
            else:
                target.unlink()
            target.symlink_to("/etc" if name == "sub" else "/etc/passwd")
        return result

    monkeypatch.setattr(os, "stat", stat_then_swap)
    members = _archived(tree)
    monkeypatch.undo()
    assert set(members) == {"."}, sorted(members)
