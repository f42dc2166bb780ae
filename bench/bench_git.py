"""git push/clone through Dockyard (asyncssh + dulwich) against OpenSSH sshd + C git.

Both servers run on loopback in temp dirs and are reached by the same OpenSSH client and
the same git CLI; only the server side differs. Per run, on a fresh remote:
  1. initial push of the generated repo (bench/make_repo.py: >= 2,000 commits, >= 20 MB),
  2. a 10-commit incremental push on top,
  3. a bare clone back.
Prints each run, the medians and the Dockyard/C git ratios with the issue's targets.

    .venv/bin/python bench/bench_git.py [--runs 3] [--profile DIR]

`--profile DIR` runs the Dockyard server under pyinstrument (if installed) and leaves its
HTML report in DIR (profiling skews the timings; do not read ratios from such a run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.make_repo import add_commits, ensure_repo, pack_size  # noqa: E402
from tests.conftest import remove_leftovers_of  # noqa: E402

SSHD = "/usr/sbin/sshd"
TARGETS = {"initial push": 1.5, "incremental push": 1.1, "clone": 2.0}
INCREMENTAL_COMMITS = 10
STEP_TIMEOUT = 300
NO_DEPLOY_BRANCH = "bench-never-pushed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early ({proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def ssh_command(key: Path, port: int) -> str:
    return (
        f"ssh -p {port} -i {key} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
        "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
    )


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )
    return path


class OpenSSHGit:
    """OpenSSH sshd with C git's receive-pack/upload-pack: the baseline."""

    def __init__(self, root: Path, client_key: Path) -> None:
        self.root = root
        self.port = free_port()
        self.key = client_key
        self.repos = root / "repos"
        self.repos.mkdir(parents=True)
        host_key = keygen(root / "ssh_host_ed25519_key")
        authorized = root / "authorized_keys"
        shutil.copy(f"{client_key}.pub", authorized)
        config = root / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {authorized}\nPidFile {root / 'sshd.pid'}\n"
            "UsePAM no\nStrictModes no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin yes\nPubkeyAuthentication yes\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(root / "sshd.log", "wb"),  # noqa: SIM115
        )
        wait_for_port(self.port, self.proc, "sshd")
        self.env = {**os.environ, "GIT_SSH_COMMAND": ssh_command(client_key, self.port)}

    def fresh_remote(self, name: str) -> str:
        path = self.repos / f"{name}.git"
        subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
        user = os.environ.get("USER") or "root"
        return f"ssh://{user}@127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Dockyard:
    """`dockyard serve` on a temp data dir."""

    def __init__(self, root: Path, client_key: Path, profile_dir: Path | None) -> None:
        self.port = free_port()
        self.key = client_key
        data_dir = self.data_dir = root / "data"
        python = sys.executable
        subprocess.run(
            [python, "-m", "dockyard.cli", "--data-dir", str(data_dir), "ssh-keys:add",
             "--admin", "bench", f"{client_key}.pub"],
            check=True, capture_output=True,
        )  # fmt: skip
        # The bench measures git transport, not builds: no pushed branch is the deploy branch.
        subprocess.run(
            [python, "-m", "dockyard.cli", "--data-dir", str(data_dir), "git:set", "--global",
             "deploy-branch", NO_DEPLOY_BRANCH],
            check=True, capture_output=True,
        )  # fmt: skip
        serve = [
            "-m", "dockyard.cli", "serve", "--data-dir", str(data_dir),
            "--ssh-listen", f"127.0.0.1:{self.port}", "--http-listen", f"127.0.0.1:{free_port()}",
            "--https-listen", f"127.0.0.1:{free_port()}", "--log-format", "json",
        ]  # fmt: skip
        if profile_dir is not None:
            out = profile_dir / "dockyard-profile.html"
            serve = ["-m", "pyinstrument", "-r", "html", "-o", str(out), *serve]
        self.log = root / "serve.log"
        self.proc = subprocess.Popen(
            [python, *serve],
            stdout=open(self.log, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
        wait_for_port(self.port, self.proc, "dockyard serve")
        self.env = {**os.environ, "GIT_SSH_COMMAND": ssh_command(client_key, self.port)}

    def fresh_remote(self, name: str) -> str:
        return f"ssh://dockyard@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.proc.send_signal(2)  # SIGINT lets pyinstrument write its report
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        remove_leftovers_of(self.data_dir)  # its nginx outlives it by design


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def git(env: dict[str, str], *args: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, timeout=STEP_TIMEOUT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed:\n{proc.stderr.decode(errors='replace')}")


def one_run(
    server: OpenSSHGit | Dockyard, name: str, source: Path, extended: Path, work: Path
) -> dict[str, float]:
    remote = server.fresh_remote(name)
    env = server.env
    clone_dir = work / f"clone-{name}"
    results = {
        "initial push": timed(lambda: git(env, "push", "-q", remote, "main", cwd=source)),
        "incremental push": timed(lambda: git(env, "push", "-q", remote, "main", cwd=extended)),
        "clone": timed(lambda: git(env, "clone", "-q", "--bare", remote, str(clone_dir))),
    }
    expected = subprocess.run(["git", "rev-parse", "main"], cwd=extended, capture_output=True,
                              check=True).stdout.strip()  # fmt: skip
    cloned = subprocess.run(["git", "rev-parse", "main"], cwd=clone_dir, capture_output=True,
                            check=True).stdout.strip()  # fmt: skip
    if cloned != expected:
        raise RuntimeError(f"{name}: cloned main {cloned!r} is not the pushed {expected!r}")
    shutil.rmtree(clone_dir)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description="git push/clone: Dockyard vs OpenSSH + C git")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="run Dockyard under pyinstrument")
    args = parser.parse_args()

    source = ensure_repo()
    print(f"repo: {source} ({pack_size(source) / 1e6:.1f} MB pack)")
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-git-"))
    servers: list[OpenSSHGit | Dockyard] = []
    try:
        extended = work / "extended"
        subprocess.run(["git", "clone", "-q", str(source), str(extended)], check=True)
        commits = int(subprocess.run(["git", "rev-list", "--count", "main"], cwd=source,
                                     capture_output=True, check=True).stdout)  # fmt: skip
        add_commits(extended, INCREMENTAL_COMMITS, start=commits)
        key = keygen(work / "client_key")
        baseline = OpenSSHGit(work / "sshd", key)
        servers.append(baseline)
        (work / "dockyard").mkdir()
        dockyard = Dockyard(work / "dockyard", key, args.profile)
        servers.append(dockyard)

        timings: dict[str, dict[str, list[float]]] = {"C git": {}, "Dockyard": {}}
        for run in range(args.runs):
            for label, server in (("C git", baseline), ("Dockyard", dockyard)):
                result = one_run(server, f"bench-{run}", source, extended, work)
                for step, seconds in result.items():
                    timings[label].setdefault(step, []).append(seconds)
                shown = "  ".join(f"{k} {v:6.2f}s" for k, v in result.items())
                print(f"run {run + 1} {label:9} {shown}", flush=True)

        print("\nmedians (seconds) and ratio Dockyard / C git:")
        failed = False
        for step, target in TARGETS.items():
            base = statistics.median(timings["C git"][step])
            ours = statistics.median(timings["Dockyard"][step])
            ratio = ours / base
            verdict = "ok" if ratio <= target else "OVER TARGET"
            failed |= ratio > target
            print(f"  {step:17} C git {base:6.2f}  Dockyard {ours:6.2f}  "
                  f"ratio {ratio:4.2f} (target <= {target}) {verdict}")  # fmt: skip
        return 1 if failed else 0
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
