"""Round trip of `ssh … apps:list` to Dockyard against `ssh … true` to OpenSSH's sshd.

Both servers run on loopback ports in this process's temporary directory, with the same
client key and the same client options; the two kinds of round trip are interleaved so that
machine noise hits both alike. Prints both medians (ms) and the ratio Dockyard/OpenSSH
(target: at most 1.5).

    sudo .venv/bin/python bench/bench_ssh_roundtrip.py [-n 30]

Must run as root: OpenSSH's sshd refuses to run otherwise, and wants /run/sshd.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from proxy.nginx import NginxMaster
from proxy.render import NginxPaths

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")  # OpenSSH's privilege-separation chroot; must exist
START_TIMEOUT = 30.0  # seconds for either server to listen
RUN_TIMEOUT = 10.0  # seconds for one ssh round trip
TOTAL_BUDGET = 300.0  # seconds for all timed round trips together
TARGET_RATIO = 1.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port}:\n{log.read_text(errors='replace')}")


@contextmanager
def running(
    argv: list[str], port: int, log: Path, preexec: Callable[[], None] | None = None
) -> Iterator[None]:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=preexec,
        )  # fmt: skip
    try:
        wait_for_port(port, process, log)
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path)], check=True
    )
    return path


def dockyard_server(tmp: Path, client_key: Path) -> tuple[list[str], int, Path]:
    data_dir = tmp / "dockyard"
    subprocess.run(
        [sys.executable, "-m", "dockyard.cli", "--data-dir", str(data_dir),
         "ssh-keys:add", "--admin", "bench", f"{client_key}.pub"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "dockyard.cli", "--data-dir", str(data_dir), "apps:create", "bench"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    argv = [
        sys.executable, "-m", "dockyard.cli", "serve", "--data-dir", str(data_dir),
        "--ssh-listen", f"127.0.0.1:{port}", "--http-listen", f"127.0.0.1:{free_port()}",
        "--https-listen", f"127.0.0.1:{free_port()}", "--log-format", "json",
    ]  # fmt: skip
    return argv, port, tmp / "dockyard.log"


def openssh_server(tmp: Path, client_key: Path) -> tuple[list[str], int, Path]:
    sshd_dir = tmp / "sshd"
    sshd_dir.mkdir()
    host_key = keygen(sshd_dir / "ssh_host_ed25519_key")
    authorized = sshd_dir / "authorized_keys"
    shutil.copy(f"{client_key}.pub", authorized)
    port = free_port()
    config = sshd_dir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {authorized}",
                f"PidFile {sshd_dir / 'sshd.pid'}",
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
                "",
            ]
        )
    )
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    return [SSHD, "-D", "-e", "-f", str(config)], port, tmp / "sshd.log"


CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


def hide_shell_rc(rc_file: Path, empty: Path) -> Callable[[], None] | None:
    """A pre-exec hook that gives sshd its own mount namespace in which `rc_file` is empty.

    sshd runs every command through the user's shell, and Debian's bash sources ~/.bashrc
    for commands run by sshd; a heavy .bashrc (pyenv, nvm) would bill its start-up to
    OpenSSH. Dockyard runs no shell, so the fair baseline is sshd without that file. The
    namespace is the sshd process's own: nothing on the machine changes.
    """
    if not rc_file.exists():
        return None
    empty.write_text("")
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

    def preexec() -> None:
        if libc.unshare(CLONE_NEWNS) != 0:
            return  # no namespaces here: the baseline then includes the rc file
        libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)
        libc.mount(bytes(empty), bytes(rc_file), None, MS_BIND, None)

    return preexec


def client_args(key: Path, port: int, user: str) -> list[str]:
    """Identical options for both servers: one key type, no multiplexing, no agent."""
    return [
        "ssh", "-p", str(port), "-i", str(key),
        "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
        "-o", "ControlMaster=no", "-o", "ControlPath=none",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "Compression=no",
        "-F", "/dev/null", f"{user}@127.0.0.1",
    ]  # fmt: skip


def time_one(argv: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[-1]} failed ({proc.returncode}): {proc.stderr.decode()}")
    return elapsed * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30, help="round trips per server (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed round trips each")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: OpenSSH's sshd needs it", file=sys.stderr)
        return 2
    user = os.environ.get("USER") or "root"
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as tmpdir:
        tmp = Path(tmpdir)
        key = keygen(tmp / "client")
        dy_argv, dy_port, dy_log = dockyard_server(tmp, key)
        os_argv, os_port, os_log = openssh_server(tmp, key)
        rc_file = Path(pwd.getpwnam(user).pw_dir) / ".bashrc"
        preexec = hide_shell_rc(rc_file, tmp / "empty-bashrc")
        with running(dy_argv, dy_port, dy_log), running(os_argv, os_port, os_log, preexec):
            dockyard = [*client_args(key, dy_port, "dockyard"), "apps:list"]
            openssh = [*client_args(key, os_port, user), "true"]
            for _ in range(args.warmup):
                time_one(dockyard)
                time_one(openssh)
            dy_ms, os_ms = [], []
            deadline = time.monotonic() + TOTAL_BUDGET
            for _ in range(args.n):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gave up after {TOTAL_BUDGET:.0f} s")
                dy_ms.append(time_one(dockyard))
                os_ms.append(time_one(openssh))
        # Dockyard's nginx outlives `dockyard serve` by design; the bench takes it along.
        NginxMaster(NginxPaths(prefix=tmp / "dockyard" / "nginx")).stop()
    dy, base = statistics.median(dy_ms), statistics.median(os_ms)
    ratio = dy / base
    print(f"round trips: {args.n} each, interleaved, after {args.warmup} warm-up each")
    if preexec is not None:
        print(f"openssh baseline runs without {rc_file} (hidden in sshd's mount namespace)")
    for label, median, samples in (
        ("dockyard  ssh … apps:list", dy, dy_ms),
        ("openssh   ssh … true     ", base, os_ms),
    ):
        spread = f"min {min(samples):.1f}, max {max(samples):.1f}"
        print(f"{label}  median {median:7.1f} ms  ({spread})")
    verdict = "ok" if ratio <= TARGET_RATIO else "ABOVE TARGET"
    print(f"ratio dockyard/openssh: {ratio:.2f} (target ≤ {TARGET_RATIO}: {verdict})")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
