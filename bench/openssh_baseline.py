"""OpenSSH's sshd as a benchmark baseline, under the same conditions as Dockyard's server.

Shared by bench/bench_ssh_roundtrip.py and bench/bench_git.py, so both baselines are built
one way:

- **No shell start-up files.** sshd runs every command through the user's shell, and
  Debian's bash sources `~/.bashrc` for commands run by sshd. Root's here runs a version
  manager's init (~270 ms per session) that would be billed to OpenSSH. Dockyard runs no
  shell, so the fair baseline is sshd with that file hidden: `hide_shell_rc` gives the sshd
  process (and so every session it forks) its own mount namespace in which the file is
  empty. Nothing on the machine changes.
- **The same key exchange.** OpenSSH 9.2's default is the post-quantum
  `sntrup761x25519-sha512`, which asyncssh does not offer, so against Dockyard the same
  client negotiates `curve25519-sha256`. `client_options(kex=SAME_KEX)` pins that on both
  sides; `kex=None` leaves the client's defaults.
- **One client, one set of options**: one key, no agent, no multiplexing, no compression,
  no config file.

`negotiated` asks the client what it actually agreed on (`ssh -v`), so each bench prints
its conditions beside its figures.

Must run as root: sshd refuses otherwise, and wants /run/sshd.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")  # OpenSSH's privilege-separation chroot; must exist
START_TIMEOUT = 30.0  # seconds for a server to listen
SAME_KEX = "curve25519-sha256"  # spoken by OpenSSH 9.2 and asyncssh alike

CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}:\n{log.read_text(errors='replace')}")


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path)], check=True
    )
    return path


def login_user() -> str:
    return os.environ.get("USER") or pwd.getpwuid(os.geteuid()).pw_name


def hide_shell_rc(rc_file: Path, empty: Path) -> Callable[[], None] | None:
    """A pre-exec hook that gives sshd its own mount namespace in which `rc_file` is empty;
    None when there is no such file."""
    if not rc_file.exists():
        return None
    empty.write_text("")
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

    def preexec() -> None:
        if libc.unshare(CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) failed")
        libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)
        if libc.mount(bytes(empty), bytes(rc_file), None, MS_BIND, None) != 0:
            raise OSError(ctypes.get_errno(), f"cannot hide {rc_file}")

    return preexec


class OpenSSHServer:
    """sshd on 127.0.0.1 with its own host key and the client's key authorized, running
    commands without the login user's shell start-up file."""

    def __init__(
        self, root: Path, client_key: Path, accept_env: tuple[str, ...] = ()
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.port = free_port()
        self.user = login_user()
        host_key = keygen(root / "ssh_host_ed25519_key")
        authorized = root / "authorized_keys"
        shutil.copy(f"{client_key}.pub", authorized)
        config = root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"AuthorizedKeysFile {authorized}",
                    f"PidFile {root / 'sshd.pid'}",
                    "UsePAM no",
                    "StrictModes no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin yes",
                    "Compression no",
                    "UseDNS no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    *(f"AcceptEnv {name}" for name in accept_env),
                    "",
                ]
            )
        )
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        self.rc_file = Path(pwd.getpwnam(self.user).pw_dir) / ".bashrc"
        preexec = hide_shell_rc(self.rc_file, root / "empty-bashrc")
        self.rc_hidden = preexec is not None
        self.log = root / "sshd.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=preexec,
            )  # fmt: skip
        try:
            wait_for_port(self.port, self.process, self.log, "sshd")
        except BaseException:
            self.stop()
            raise

    def condition(self) -> str:
        if self.rc_hidden:
            return f"sshd runs commands without {self.rc_file} (hidden in its mount namespace)"
        return "sshd: the login user has no ~/.bashrc"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def client_options(key: Path, port: int, kex: str | None = SAME_KEX) -> list[str]:
    """`ssh` and its options (without the destination), identical for every server."""
    options = [
        "ssh", "-F", "/dev/null", "-p", str(port), "-i", str(key),
        "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
        "-o", "ControlMaster=no", "-o", "ControlPath=none",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "Compression=no",
    ]  # fmt: skip
    if kex is not None:
        options += ["-o", f"KexAlgorithms={kex}"]
    return options


def git_ssh_command(key: Path, port: int, kex: str | None = SAME_KEX) -> str:
    """The same options as one GIT_SSH_COMMAND string (paths here contain no spaces)."""
    return " ".join(client_options(key, port, kex))


@dataclass(frozen=True)
class Negotiated:
    kex: str
    host_key: str
    cipher: str

    def __str__(self) -> str:
        return f"kex {self.kex}, host key {self.host_key}, cipher {self.cipher}"


def negotiated(options: list[str], destination: str, command: str) -> Negotiated:
    """What the client and server agree on, from one verbose `ssh` run of `command`."""
    argv = [o if o != "LogLevel=ERROR" else "LogLevel=DEBUG1" for o in options]
    proc = subprocess.run(
        [*argv, destination, command], capture_output=True, text=True, timeout=30,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    text = proc.stderr

    def find(pattern: str) -> str:
        match = re.search(pattern, text)
        return match.group(1) if match else "?"

    return Negotiated(
        kex=find(r"kex: algorithm: (\S+)"),
        host_key=find(r"kex: host key algorithm: (\S+)"),
        cipher=find(r"kex: server->client cipher: (\S+)"),
    )


def machine_conditions() -> str:
    """One line: cores, load, kernel, client versions."""
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    git_version = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores, load {load}, {platform.system()} {platform.release()}; "
        f"{ssh_version.split(',')[0]}; {git_version.strip()}"
    )
