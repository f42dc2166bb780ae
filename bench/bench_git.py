"""git push, clone and fetch through Dockyard (asyncssh + dulwich) against OpenSSH + C git.

Both servers run on loopback in temp dirs and are reached by the same OpenSSH client, with
the same options and key exchange, and the same git CLI; only the server side differs. The
OpenSSH baseline runs C git without the login user's shell start-up file and accepts
GIT_PROTOCOL, so both sides speak the same protocol version (bench/openssh_baseline.py).
Per run, on a fresh remote on each server, one server after the other (the order alternates
between runs):
  1. initial push of the generated repo (bench/make_repo.py: 2,100 commits, 35 MB pack),
  2. a bare clone of it (the first clone of that state: nothing cached),
  3. the same clone again,
  4. a 10-commit incremental push on top,
  5. a fetch of those 10 commits into the clone of step 2,
  6. a partial clone, `--filter=blob:none` (C git with uploadpack.allowFilter).
Prints the conditions, each run, the medians and the Dockyard/C git ratios with targets.

    sudo .venv/bin/python bench/bench_git.py [--runs 5] [--protocol 2] [--profile DIR]

`--profile DIR` runs the Dockyard server under pyinstrument and leaves its HTML report in
DIR (profiling skews the timings; do not read ratios from such a run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.make_repo import add_commits, ensure_repo, pack_size  # noqa: E402
from bench.openssh_baseline import (  # noqa: E402
    OpenSSHServer,
    client_options,
    free_port,
    git_ssh_command,
    keygen,
    machine_conditions,
    negotiated,
    wait_for_port,
)
from tests.conftest import remove_leftovers_of  # noqa: E402

# Dockyard / C git, medians. None: shown, not judged.
TARGETS: dict[str, float | None] = {
    "initial push": 0.8,
    "clone": 1.0,
    "clone again": 1.0,
    "incremental push": 1.1,
    "fetch": 1.0,
    "partial clone": None,
}
INCREMENTAL_COMMITS = 10
STEP_TIMEOUT = 300
NO_DEPLOY_BRANCH = "bench-never-pushed"


class OpenSSHGit:
    """OpenSSH sshd with C git's receive-pack/upload-pack: the baseline."""

    label = "C git"

    def __init__(self, root: Path, client_key: Path, protocol: int) -> None:
        self.sshd = OpenSSHServer(root, client_key, accept_env=("GIT_PROTOCOL",))
        self.repos = root / "repos"
        self.repos.mkdir()
        self.env = git_env(client_key, self.sshd.port, protocol)

    def fresh_remote(self, name: str) -> str:
        path = self.repos / f"{name}.git"
        subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
        # Partial clone is off by default in C git; servers that offer it turn this on.
        subprocess.run(["git", "config", "uploadpack.allowFilter", "true"], cwd=path, check=True)
        return f"ssh://{self.sshd.user}@127.0.0.1:{self.sshd.port}{path}"

    def stop(self) -> None:
        self.sshd.stop()


class Dockyard:
    """`dockyard serve` on a temp data dir."""

    label = "Dockyard"

    def __init__(
        self, root: Path, client_key: Path, protocol: int, profile_dir: Path | None
    ) -> None:
        self.port = free_port()
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
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [python, *serve], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent,
            )  # fmt: skip
        try:
            wait_for_port(self.port, self.proc, self.log, "dockyard serve")
        except BaseException:
            self.stop()
            raise
        self.env = git_env(client_key, self.port, protocol)

    def fresh_remote(self, name: str) -> str:
        return f"ssh://dockyard@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT lets pyinstrument write its report
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        remove_leftovers_of(self.data_dir)  # its nginx outlives it by design


Server = OpenSSHGit | Dockyard


def git_env(key: Path, port: int, protocol: int) -> dict[str, str]:
    return {
        **os.environ,
        "GIT_SSH_COMMAND": git_ssh_command(key, port),
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "protocol.version",
        "GIT_CONFIG_VALUE_0": str(protocol),
    }


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def git(env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, timeout=STEP_TIMEOUT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed:\n{proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode()


def rev(repo: Path, ref: str) -> str:
    return git(dict(os.environ), "rev-parse", ref, cwd=repo).strip()


def spoken_protocol(server: Server, remote: str) -> str:
    """The protocol version the server answered with, from git's packet trace."""
    env = {**server.env, "GIT_TRACE_PACKET": "1"}
    proc = subprocess.run(["git", "ls-remote", remote], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    return "v2" if "< version 2" in proc.stderr else "v0"


def one_run(
    server: Server, name: str, source: Path, extended: Path, work: Path
) -> dict[str, float]:
    remote = server.fresh_remote(name)
    env = server.env
    clone = work / f"clone-{name}"
    again = work / f"again-{name}"
    partial = work / f"partial-{name}"
    results = {
        "initial push": timed(lambda: git(env, "push", "-q", remote, "main", cwd=source)),
        "clone": timed(lambda: git(env, "clone", "-q", "--bare", remote, str(clone))),
        "clone again": timed(lambda: git(env, "clone", "-q", "--bare", remote, str(again))),
        "incremental push": timed(lambda: git(env, "push", "-q", remote, "main", cwd=extended)),
        "fetch": timed(lambda: git(env, "fetch", "-q", "origin", "main:main", cwd=clone)),
        "partial clone": timed(
            lambda: git(env, "clone", "-q", "--bare", "--filter=blob:none", remote, str(partial))
        ),
    }
    expected = rev(extended, "main")
    for path in (clone, partial):
        if rev(path, "main") != expected:
            raise RuntimeError(f"{server.label}: {path.name} main is not the pushed {expected}")
    if rev(again, "main") != rev(source, "main"):
        raise RuntimeError(f"{server.label}: the second clone is not the first push")
    missing = git(env, "rev-list", "--objects", "--missing=print", "main", cwd=partial)
    if not any(line.startswith("?") for line in missing.splitlines()):
        raise RuntimeError(f"{server.label}: the partial clone has every blob (filter ignored)")
    for path in (clone, again, partial):
        shutil.rmtree(path)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description="git push/clone/fetch: Dockyard vs C git")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--protocol", type=int, choices=(0, 2), default=2,
                        help="git protocol.version for both (default 2, git's own default)")
    parser.add_argument("--profile", type=Path, help="run Dockyard under pyinstrument")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: OpenSSH's sshd needs it", file=sys.stderr)
        return 2

    source = ensure_repo()
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-git-"))
    servers: list[Server] = []
    try:
        extended = work / "extended"
        subprocess.run(["git", "clone", "-q", str(source), str(extended)], check=True)
        commits = int(git(dict(os.environ), "rev-list", "--count", "main", cwd=source))
        add_commits(extended, INCREMENTAL_COMMITS, start=commits)
        key = keygen(work / "client_key")
        baseline = OpenSSHGit(work / "sshd", key, args.protocol)
        servers.append(baseline)
        (work / "dockyard").mkdir()
        dockyard = Dockyard(work / "dockyard", key, args.protocol, args.profile)
        servers.append(dockyard)

        print("conditions:")
        print(f"  {machine_conditions()}")
        print(f"  repo: {source} ({commits} commits, {pack_size(source) / 1e6:.1f} MB pack)")
        for server, dest, command in (
            (baseline, f"{baseline.sshd.user}@127.0.0.1", "true"),
            (dockyard, "dockyard@127.0.0.1", "apps:list"),
        ):
            port = baseline.sshd.port if server is baseline else dockyard.port
            ssh = negotiated(client_options(key, port), dest, command)
            probe = server.fresh_remote("bench-probe")
            git(server.env, "push", "-q", probe, "main", cwd=source)
            print(f"  {server.label:8}: {ssh}; protocol {spoken_protocol(server, probe)}")
        print(f"  C git   : {baseline.sshd.condition()}")
        print(f"  runs: {args.runs}, each server on a fresh remote, the order alternating",
              flush=True)  # fmt: skip

        timings: dict[str, dict[str, list[float]]] = {"C git": {}, "Dockyard": {}}
        for run in range(args.runs):
            order = (baseline, dockyard) if run % 2 == 0 else (dockyard, baseline)
            for server in order:
                result = one_run(server, f"bench-{run}", source, extended, work)
                for step, seconds in result.items():
                    timings[server.label].setdefault(step, []).append(seconds)
                shown = "  ".join(f"{k} {v:5.2f}s" for k, v in result.items())
                print(f"run {run + 1} {server.label:9} {shown}", flush=True)

        print("\nmedians (seconds) and ratio Dockyard / C git:")
        failed = False
        for step, target in TARGETS.items():
            base = statistics.median(timings["C git"][step])
            ours = statistics.median(timings["Dockyard"][step])
            ratio = ours / base
            if target is None:
                verdict = "(informational)"
            else:
                verdict = f"(target <= {target}) " + ("ok" if ratio <= target else "OVER TARGET")
                failed |= ratio > target
            print(f"  {step:17} C git {base:6.2f}  Dockyard {ours:6.2f}  "
                  f"ratio {ratio:4.2f} {verdict}")  # fmt: skip
        return 1 if failed else 0
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
