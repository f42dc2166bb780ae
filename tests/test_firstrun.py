"""The first run on a new server: `scripts/setup.sh` putting `dockyard` on PATH
(scripts/link-cli.sh) and printing the next steps, and `dockyard init` (first admin key,
global domain, systemd unit, doctor), run as the README says: as root, by the local CLI,
against a real `dockyard serve` that starts with an empty data dir.

systemd is never touched on this machine: the unit step is checked with `--systemd-root`
(a tree whose `run/systemd/system` says "systemd runs here", enabled there by the real
`systemctl --root`), and against this machine, whose PID 1 is not systemd.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    REPO_ROOT,
    DockyardServer,
    make_key,
    remove_server_leftovers,
    start_server,
    stop_server,
)

# The CLI of the Python running the tests (setup's .venv, or another interpreter's venv).
DOCKYARD = Path(sys.prefix) / "bin" / "dockyard"
SETUP_DOCKYARD = REPO_ROOT / ".venv" / "bin" / "dockyard"  # what setup.sh installs and links
LINK_CLI = REPO_ROOT / "scripts" / "link-cli.sh"


@pytest.fixture
def empty_server(tmp_path: Path, docker_engine) -> Iterator[DockyardServer]:  # noqa: ANN001
    """`dockyard serve` on a data dir with no key yet (nobody can log in before init)."""
    keys = tmp_path / "keys"
    keys.mkdir()
    key = make_key(keys, "laptop")
    srv = start_server(tmp_path / "data", keys, key, key)
    try:
        yield srv
    finally:
        stop_server(srv)
        remove_server_leftovers(srv)


def home_with_keys(path: Path, *lines: str) -> Path:
    (path / ".ssh").mkdir(parents=True, mode=0o700)
    (path / ".ssh" / "authorized_keys").write_text("".join(line + "\n" for line in lines))
    return path


def init(data_dir: Path, home: Path, *args: str, input: str | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    environ = {k: v for k, v in os.environ.items()
               if k not in ("SUDO_USER", "DOCKYARD_DATA_DIR", "DOCKYARD_SYSTEMD_ROOT")}  # fmt: skip
    environ.update({"HOME": str(home), "DOCKYARD_DATA_DIR": str(data_dir), **(env or {})})
    return subprocess.run(
        [str(DOCKYARD), "init", *args], input=input, capture_output=True, text=True,
        env=environ, timeout=120, stdin=None if input is not None else subprocess.DEVNULL,
    )  # fmt: skip


def pub(key: Path) -> str:
    return Path(f"{key}.pub").read_text().strip()


# --- dockyard init: the first admin key ------------------------------------------------------


def test_init_makes_the_invoking_users_keys_admins_once(
    empty_server: DockyardServer, tmp_path: Path
) -> None:
    srv = empty_server
    other = make_key(tmp_path, "tablet")
    home = home_with_keys(
        tmp_path / "home",
        "# the keys root logs in with, as a cloud provider leaves them",
        f'no-pty,command="echo hi" {pub(srv.admin_key)}',
        "not a key at all",
        pub(other),
    )  # fmt: skip
    assert srv.ssh("apps:list").returncode != 0  # no key yet: nobody gets in
    first = init(srv.data_dir, home, "--no-systemd")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "added key admin, an admin (SHA256:" in first.stdout
    assert "added key admin-2, an admin (SHA256:" in first.stdout
    assert "Dockyard doctor" in first.stdout and "skipped (--no-systemd)" in first.stdout
    assert srv.ssh("ssh-keys:list").returncode == 0  # the admin logs in and is an admin
    assert srv.ssh("ssh-keys:list", key=other).returncode == 0
    # Again: nothing added twice, nothing changed.
    keys_before = (srv.data_dir / "authorized_keys").read_text()
    again = init(srv.data_dir, home, "--no-systemd")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "laptop: present as admin, an admin" in again.stdout
    assert "tablet: present as admin-2, an admin" in again.stdout
    assert (srv.data_dir / "authorized_keys").read_text() == keys_before


def test_init_key_from_a_file_or_stdin_and_a_user_key_is_not_promoted(
    empty_server: DockyardServer, tmp_path: Path
) -> None:
    srv = empty_server
    home = tmp_path / "nohome"  # no ~/.ssh/authorized_keys
    home.mkdir()
    added = init(srv.data_dir, home, "--key", f"{srv.admin_key}.pub", "--name", "ops",
                 "--no-systemd")  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    assert "added key ops, an admin" in added.stdout
    user = make_key(tmp_path, "someone")
    assert srv.cli("ssh-keys:add", "someone", f"{user}.pub").returncode == 0
    piped = init(srv.data_dir, home, "--key", "-", "--no-systemd", input=pub(user) + "\n")
    assert "someone: present as someone, NOT an admin" in piped.stdout
    assert srv.ssh("ssh-keys:list", key=user).returncode != 0  # still not an admin
    # With admins present and no file to read, the key step has nothing to do.
    quiet = init(srv.data_dir, home, "--no-systemd")
    assert quiet.returncode == 0 and "admin keys present (ops)" in quiet.stdout


def test_init_without_any_key_says_how_and_still_does_the_rest(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    result = init(tmp_path / "data", home, "--no-systemd")
    assert result.returncode == 1
    assert f"{home}/.ssh/authorized_keys does not exist" in result.stderr
    assert "dockyard init --key /path/to/your-key.pub" in result.stderr
    assert "skipped (--no-systemd)" in result.stdout and "Dockyard doctor" in result.stdout
    assert "init: Admin key failed" in result.stderr


def test_init_reads_the_sudo_users_keys(tmp_path: Path) -> None:
    """Under sudo, $HOME may be root's: the keys are those of the user who ran sudo."""
    import pwd

    nobody = pwd.getpwnam("nobody").pw_dir
    result = init(tmp_path / "data", tmp_path, "--no-systemd", env={"SUDO_USER": "nobody"})
    assert f"{nobody}/.ssh/authorized_keys does not exist" in result.stderr


def test_init_is_for_the_server_itself(empty_server: DockyardServer, tmp_path: Path) -> None:
    srv = empty_server
    assert init(srv.data_dir, home_with_keys(tmp_path / "h", pub(srv.admin_key)),
                "--no-systemd").returncode == 0  # fmt: skip
    over_ssh = srv.ssh("init")
    assert over_ssh.returncode != 0 and "runs on the server itself" in over_ssh.stderr


# --- dockyard init: the global domain ------------------------------------------------------


def test_init_domain_that_does_not_resolve_gets_the_record_to_add(
    empty_server: DockyardServer, tmp_path: Path
) -> None:
    srv = empty_server
    home = home_with_keys(tmp_path / "home", pub(srv.admin_key))
    result = init(srv.data_dir, home, "--domain", "apps.nowhere.invalid", "--no-systemd")
    assert "Set global domain to apps.nowhere.invalid" in result.stdout
    assert ".apps.nowhere.invalid does not resolve" in result.stdout
    assert "to fix: add a wildcard DNS record, *.apps.nowhere.invalid A" in result.stdout
    # doctor agrees, and init's status says something is wrong.
    assert "BAD domain:" in result.stdout and result.returncode == 1
    # It was set all the same (the DNS record may come later); apps answer under it.
    assert srv.ssh("apps:create", "later").returncode == 0
    assert srv.ssh("urls", "later").stdout.startswith("http://later.apps.nowhere.invalid")


# --- dockyard init: systemd --------------------------------------------------------------------


def test_init_installs_and_enables_the_unit_in_a_systemd_tree(
    empty_server: DockyardServer, tmp_path: Path
) -> None:
    srv = empty_server
    home = home_with_keys(tmp_path / "home", pub(srv.admin_key))
    root = tmp_path / "root"
    (root / "run/systemd/system").mkdir(parents=True)
    first = init(srv.data_dir, home, "--systemd-root", str(root))
    assert first.returncode == 0, first.stdout + first.stderr
    unit = root / "etc/systemd/system/dockyard.service"
    text = unit.read_text()
    assert f"ExecStart={DOCKYARD} serve --log-format json" in text
    assert f"Documentation=file://{REPO_ROOT}/README.md" in text
    assert "KillMode=process" in text  # the rest is the shipped unit
    env = (root / "etc/dockyard/dockyard.env").read_text()
    assert f"DOCKYARD_DATA_DIR={srv.data_dir}\n" in env
    wanted = root / "etc/systemd/system/multi-user.target.wants/dockyard.service"
    assert wanted.is_symlink() and os.readlink(wanted) == "/etc/systemd/system/dockyard.service"
    assert "nothing was started" in first.stdout
    # Again: unchanged; the environment file is the administrator's from now on.
    (root / "etc/dockyard/dockyard.env").write_text("DOCKYARD_DATA_DIR=/srv/elsewhere\n")
    again = init(srv.data_dir, home, "--systemd-root", str(root))
    assert f"{unit} unchanged" in again.stdout
    assert "names data dir /srv/elsewhere, not" in again.stderr
    assert (root / "etc/dockyard/dockyard.env").read_text() == "DOCKYARD_DATA_DIR=/srv/elsewhere\n"
    # The installed unit passes systemd's own verification (paths made to exist here).
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing (Debian package systemd)"
    check = tmp_path / "dockyard.service"
    check.write_text(text.replace("/etc/dockyard/dockyard.env",
                                  str(REPO_ROOT / "systemd/dockyard.env")))  # fmt: skip
    verified = subprocess.run([analyze, "verify", str(check)], capture_output=True, text=True)
    problems = [line for line in (verified.stdout + verified.stderr).splitlines()
                if "dockyard.service" in line]  # fmt: skip
    assert verified.returncode == 0 and not problems, verified.stdout + verified.stderr


def test_init_without_systemd_says_so_and_writes_nothing(
    empty_server: DockyardServer, tmp_path: Path
) -> None:
    srv = empty_server
    home = home_with_keys(tmp_path / "home", pub(srv.admin_key))
    root = tmp_path / "root"  # no run/systemd/system: PID 1 is something else
    (root / "proc/1").mkdir(parents=True)
    (root / "proc/1/comm").write_text("tini\n")
    result = init(srv.data_dir, home, "--systemd-root", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PID 1 is not systemd (tini): no unit installed" in result.stdout
    assert not (root / "etc").exists()
    # This machine itself (no --systemd-root), only where that cannot install anything: the
    # same, naming its real PID 1. (Where systemd runs, tests never touch its units.)
    if not Path("/run/systemd/system").is_dir():
        here = init(srv.data_dir, home)
        comm = Path("/proc/1/comm").read_text().strip()
        assert f"PID 1 is not systemd ({comm})" in here.stdout


# --- scripts/setup.sh and scripts/link-cli.sh ------------------------------------------------


def link(target: Path, at: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(LINK_CLI), str(target), str(at)],
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def test_link_cli_links_once_and_never_over_a_foreign_file(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    at = bin_dir / "dockyard"
    made = link(DOCKYARD, at)
    assert made.returncode == 0 and f"Linked {at} -> {DOCKYARD}" in made.stdout
    assert os.readlink(at) == str(DOCKYARD)
    again = link(DOCKYARD, at)
    assert again.returncode == 0 and "dockyard on PATH" in again.stdout
    # A link to another checkout's virtualenv (or one since deleted) is ours to move.
    other = tmp_path / "old-checkout/.venv"
    (other / "bin").mkdir(parents=True)
    (other / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (other / "bin/dockyard").write_text("#!/bin/sh\n")
    at.unlink()
    at.symlink_to(other / "bin/dockyard")
    moved = link(DOCKYARD, at)
    assert moved.returncode == 0 and f"it pointed at {other}/bin/dockyard" in moved.stdout
    assert os.readlink(at) == str(DOCKYARD)
    at.unlink()
    at.symlink_to("/gone/.venv/bin/dockyard")
    assert link(DOCKYARD, at).returncode == 0 and os.readlink(at) == str(DOCKYARD)
    # Anything else is left alone, and setup goes on.
    for foreign in ("file", "symlink"):
        at.unlink()
        if foreign == "file":
            at.write_text("#!/bin/sh\necho someone else's dockyard\n")
        else:
            at.symlink_to("/usr/bin/true")
        left = link(DOCKYARD, at)
        assert left.returncode == 0 and "left alone" in left.stderr
        assert (at.is_symlink() and os.readlink(at) == "/usr/bin/true") or (
            not at.is_symlink() and "someone else's" in at.read_text()
        )


def test_setup_puts_dockyard_on_path_and_prints_the_next_steps(tmp_path: Path) -> None:
    """The whole setup on this (already set up) machine: each step finds its work done."""
    bin_dir = tmp_path / "bin"
    env = {**os.environ, "DOCKYARD_BIN_DIR": str(bin_dir),
           "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}  # fmt: skip
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts/setup.sh")], capture_output=True,
                          text=True, env=env, timeout=900, stdin=subprocess.DEVNULL)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert os.readlink(bin_dir / "dockyard") == str(SETUP_DOCKYARD)
    version = subprocess.run(["dockyard", "version"], capture_output=True, text=True, env=env)
    assert version.returncode == 0 and version.stdout.startswith("dockyard ")
    tail = proc.stdout[proc.stdout.index("-----> Setup done"):]
    for step in ("1. Add your key:  dockyard init", "2. Set a domain:  dockyard init --domain",
                 "3. Push an app:   git push ssh://dockyard@"):  # fmt: skip
        assert step in tail, tail
    # The venv is Debian's python3 (what users have), whatever python3 is first on PATH.
    cfg = (REPO_ROOT / ".venv/pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg, cfg
