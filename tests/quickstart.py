"""The README's quick start, run as a reader runs it: its code blocks, taken from README.md
itself, executed in order by one bash (`set -euo pipefail`, each command echoed) against a
real server. Used by tests/test_readme.py (a test server on free ports) and, through
`python -m tests.quickstart`, by scripts/fresh-debian-check.sh (the server a fresh Debian
container runs on the real ports).

What is changed to run the blocks here, mechanically and nothing else:

- The blocks: every ```sh fence between the `## Quick start` heading and the next `## `
  heading, in order.
- `server` (in `dockyard@server`) is this machine: the `ssh` first on PATH is a wrapper
  that reads an ssh config naming `server` as 127.0.0.1 with the reader's key (OpenSSH
  reads ~/.ssh/config from the passwd entry's home, not from $HOME); git pushes through the
  same `ssh`.
- Ports: `-p 2222` and `@server:2222/` become the server's SSH port; `http://NAME/` and
  `https://NAME/` get `:PORT` when the server's HTTP or HTTPS port is not 80 or 443.
- `~` is a fresh home ($HOME) whose `.ssh/authorized_keys` holds the reader's public key, as
  a new cloud server holds the key its owner logs in with; git has an identity in the
  environment, as any machine one pushes from has; the blocks start in the repository.
- Wildcard DNS: names resolve through a DNS server of the harness (pebble-challtestsrv,
  every name → 127.0.0.1), named by /etc/resolv.conf in a private mount namespace of the
  bash that runs the blocks (`unshare --mount`); the rest of the machine is untouched.
- Let's Encrypt: pebble (Let's Encrypt's test CA) stands in for it; before the blocks the
  server is pointed at it with `letsencrypt:set --global server` and `server-ca-file`, and
  curl trusts its root through CURL_CA_BUNDLE.
- systemd: `dockyard init` installs its unit into a scratch tree that stands for a machine
  where systemd runs (DOCKYARD_SYSTEMD_ROOT, init's `--systemd-root`), enabled there by
  `systemctl --root`: nothing on the machine running the blocks is enabled or started.

Invariants: the README is read at run time (never a copy); every process the harness starts
(pebble, challtestsrv, the bash) is stopped before it returns; a run is bounded by
`RUN_TIMEOUT`.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
HEADING = "## Quick start"
FENCE_RE = re.compile(r"^```sh[^\n]*\n(.*?)^```\s*$", re.S | re.M)
RUN_TIMEOUT = 900.0
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Quick Start", "GIT_AUTHOR_EMAIL": "reader@example.com",
    "GIT_COMMITTER_NAME": "Quick Start", "GIT_COMMITTER_EMAIL": "reader@example.com",
}  # fmt: skip


@dataclass(frozen=True)
class Target:
    """The server the blocks run against."""

    ssh_port: int = 2222
    http_port: int = 80
    https_port: int = 443
    data_dir: Path | None = None  # the local CLI's data dir; None: its default
    path_first: tuple[Path, ...] = ()  # put before the system PATH (a venv's bin)


@dataclass(frozen=True)
class Reader:
    """The person following the quick start: a home, a key, an ssh config for `server`."""

    home: Path
    key: Path
    bin_dir: Path


@dataclass
class StandIns:
    """The DNS and ACME stand-ins of one run."""

    resolv_conf: Path
    ca_bundle: Path
    systemd_root: Path


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float
    script: str = field(repr=False, default="")


def quickstart_blocks(readme: str) -> list[str]:
    """The ```sh blocks of the quick start section, in order."""
    lines = readme.splitlines(keepends=True)
    try:
        start = next(i for i, line in enumerate(lines) if line.rstrip() == HEADING)
    except StopIteration:
        raise ValueError(f"README.md has no {HEADING!r} section") from None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))  # fmt: skip
    section = "".join(lines[start:end])
    return [m.group(1) for m in FENCE_RE.finditer(section)]


def substitute(block: str, target: Target) -> str:
    """The port substitutions of the module docstring; nothing else changes."""
    text = re.sub(r"-p 2222\b", f"-p {target.ssh_port}", block)
    text = text.replace("@server:2222/", f"@server:{target.ssh_port}/")
    if target.http_port != 80:
        text = re.sub(r"http://([A-Za-z0-9.-]+)/", rf"http://\1:{target.http_port}/", text)
    if target.https_port != 443:
        text = re.sub(r"https://([A-Za-z0-9.-]+)/", rf"https://\1:{target.https_port}/", text)
    return text


def make_reader(home: Path) -> Reader:
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(parents=True, mode=0o700)
    key = ssh_dir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "reader@laptop",
                    "-f", str(key)], check=True)  # fmt: skip
    shutil.copy(f"{key}.pub", ssh_dir / "authorized_keys")
    config = ssh_dir / "config"
    config.write_text(
        "Host server\n"
        "    HostName 127.0.0.1\n"
        f"    IdentityFile {key}\n"
        "    IdentitiesOnly yes\n"
        "    StrictHostKeyChecking accept-new\n"
        f"    UserKnownHostsFile {ssh_dir / 'known_hosts'}\n"
        "    BatchMode yes\n"
        "    LogLevel ERROR\n"
        "    ConnectTimeout 20\n"
    )
    bin_dir = home / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ssh"
    real_ssh = shutil.which("ssh") or "/usr/bin/ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {real_ssh} -F "{config}" "$@"\n')
    wrapper.chmod(0o755)
    return Reader(home, key, bin_dir)


def _dockyard(target: Target, *args: str) -> None:
    env = _base_env(target)
    proc = subprocess.run(["dockyard", *args], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"dockyard {' '.join(args)} failed: {proc.stdout}{proc.stderr}")


def _base_env(target: Target) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKYARD_", "GIT_"))}
    path = [str(p) for p in target.path_first] + [env.get("PATH", "/usr/bin:/bin")]
    env["PATH"] = ":".join(path)
    if target.data_dir is not None:
        env["DOCKYARD_DATA_DIR"] = str(target.data_dir)
    return env


@contextmanager
def stand_ins(target: Target, workdir: Path) -> Iterator[StandIns]:
    """Start pebble with challtestsrv answering DNS on a loopback address's port 53, point
    the server's Let's Encrypt at it, and name that DNS server in a resolv.conf."""
    from tests.pebble import start_pebble, stop_pebble

    dns_host = f"127.53.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
    pebble = start_pebble(workdir / "pebble", http_port=target.http_port,
                          dns_address=f"{dns_host}:53")  # fmt: skip
    try:
        _dockyard(target, "letsencrypt:set", "--global", "server", pebble.directory_url)
        _dockyard(target, "letsencrypt:set", "--global", "server-ca-file",
                  str(pebble.api_ca_file))  # fmt: skip
        resolv = workdir / "resolv.conf"
        resolv.write_text(f"nameserver {dns_host}\noptions timeout:2 attempts:2\n")
        systemd_root = workdir / "systemd-root"
        (systemd_root / "run/systemd/system").mkdir(parents=True)
        yield StandIns(resolv, pebble.root_pem, systemd_root)
    finally:
        stop_pebble(pebble)


def script_for(blocks: list[str], target: Target, repo: Path) -> str:
    parts = ["set -euo pipefail", f"cd {shlex.quote(str(repo))}", "set -x"]
    for number, block in enumerate(blocks, start=1):
        parts.append(f": ---- quick start block {number} ----")
        parts.append(substitute(block, target).rstrip("\n"))
    return "\n".join(parts) + "\n"


def run_quickstart(
    target: Target,
    reader: Reader,
    extras: StandIns,
    repo: Path = REPO_ROOT,
    readme: Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> Run:
    """Run the quick start's blocks; `echo` sees each output line as it comes."""
    text = (readme or repo / "README.md").read_text()
    script = script_for(quickstart_blocks(text), target, repo)
    script_path = reader.home / "quickstart.sh"
    script_path.write_text(script)
    env = _base_env(target)
    env.update(GIT_IDENTITY)
    env["HOME"] = str(reader.home)
    env["PATH"] = f"{reader.bin_dir}:{env['PATH']}"
    env["CURL_CA_BUNDLE"] = str(extras.ca_bundle)
    env["DOCKYARD_SYSTEMD_ROOT"] = str(extras.systemd_root)
    env["LANG"] = "C.UTF-8"
    env["PS4"] = "+ "
    argv = [
        "unshare", "--mount", "--propagation", "private", "sh", "-c",
        'mount --bind "$1" /etc/resolv.conf && exec bash "$2"',
        "quickstart", str(extras.resolv_conf), str(script_path),
    ]  # fmt: skip
    started = time.monotonic()
    # A session of its own: a timeout stops the bash and whatever it started (git, ssh).
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, cwd=repo,
                            start_new_session=True)  # fmt: skip
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.append(line)
            if echo is not None:
                echo(line)

    reader_thread = threading.Thread(target=pump, daemon=True)
    reader_thread.start()
    try:
        returncode = proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        lines.append(f"(the quick start ran longer than {RUN_TIMEOUT:.0f} s: stopped)")
        returncode = -1
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader_thread.join(timeout=10)
    return Run(returncode, "\n".join(lines), time.monotonic() - started, script)


def main(argv: list[str] | None = None) -> int:
    """Run the quick start against the server on this machine (the fresh-machine check)."""
    parser = argparse.ArgumentParser(prog="python -m tests.quickstart", description=__doc__)
    parser.add_argument("--repo", type=Path, default=REPO_ROOT)
    parser.add_argument("--ssh-port", type=int, default=2222)
    parser.add_argument("--http-port", type=int, default=80)
    parser.add_argument("--https-port", type=int, default=443)
    args = parser.parse_args(argv)
    target = Target(args.ssh_port, args.http_port, args.https_port)
    with tempfile.TemporaryDirectory(prefix="quickstart.") as tmp:
        work = Path(tmp)
        reader = make_reader(work / "home")
        with stand_ins(target, work) as extras:
            run = run_quickstart(target, reader, extras, repo=args.repo,
                                 echo=lambda line: print(line, flush=True))  # fmt: skip
    print(f"quick start: exit {run.returncode} in {run.seconds:.0f} s", flush=True)
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
