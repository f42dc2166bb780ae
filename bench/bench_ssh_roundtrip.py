"""Round trip of `ssh … apps:list` to Dockyard against `ssh … true` to OpenSSH's sshd.

Both servers run on loopback ports in this process's temporary directory and are reached by
the same client with the same key and options (bench/openssh_baseline.py: no shell start-up
file on the OpenSSH side, no agent, no multiplexing). Three kinds of round trip are
interleaved so that machine noise hits them alike:

- Dockyard, key exchange pinned to curve25519-sha256;
- OpenSSH, the same key exchange (the headline ratio is against this one);
- OpenSSH with the client's default key exchange (sntrup761x25519, post-quantum, which
  asyncssh does not offer: against Dockyard the default client lands on curve25519 anyway).

Prints the conditions (negotiated algorithms, what the baseline skips, the machine), the
medians (ms) and both ratios; the target applies to the same-kex ratio (at most 1.5).

    sudo .venv/bin/python bench/bench_ssh_roundtrip.py [-n 30]

Must run as root: OpenSSH's sshd refuses to run otherwise, and wants /run/sshd.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.openssh_baseline import (  # noqa: E402
    SAME_KEX,
    OpenSSHServer,
    client_options,
    free_port,
    keygen,
    machine_conditions,
    negotiated,
    wait_for_port,
)
from proxy.nginx import NginxMaster  # noqa: E402
from proxy.render import NginxPaths  # noqa: E402

RUN_TIMEOUT = 10.0  # seconds for one ssh round trip
TOTAL_BUDGET = 300.0  # seconds for all timed round trips together
TARGET_RATIO = 1.5


@contextmanager
def dockyard_server(tmp: Path, client_key: Path) -> Iterator[int]:
    data_dir = tmp / "dockyard"
    for args in (["ssh-keys:add", "--admin", "bench", f"{client_key}.pub"],
                 ["apps:create", "bench"]):  # fmt: skip
        subprocess.run([sys.executable, "-m", "dockyard.cli", "--data-dir", str(data_dir), *args],
                       check=True, capture_output=True)  # fmt: skip
    port = free_port()
    argv = [
        sys.executable, "-m", "dockyard.cli", "serve", "--data-dir", str(data_dir),
        "--ssh-listen", f"127.0.0.1:{port}", "--http-listen", f"127.0.0.1:{free_port()}",
        "--https-listen", f"127.0.0.1:{free_port()}", "--log-format", "json",
    ]  # fmt: skip
    log = tmp / "dockyard.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_port(port, process, log, "dockyard serve")
        yield port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # Dockyard's nginx outlives `dockyard serve` by design; the bench takes it along.
        NginxMaster(NginxPaths(prefix=data_dir / "nginx")).stop()


def time_one(argv: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[-1]} failed ({proc.returncode}): {proc.stderr.decode()}")
    return elapsed * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30, help="round trips per kind (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed round trips each")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: OpenSSH's sshd needs it", file=sys.stderr)
        return 2
    conditions = [machine_conditions()]
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as tmpdir:
        tmp = Path(tmpdir)
        key = keygen(tmp / "client")
        baseline = OpenSSHServer(tmp / "sshd", key)
        try:
            with dockyard_server(tmp, key) as dy_port:
                openssh_at = f"{baseline.user}@127.0.0.1"
                kinds = {
                    "dockyard  ssh … apps:list (same kex)": (
                        client_options(key, dy_port), "dockyard@127.0.0.1", "apps:list"),
                    "openssh   ssh … true      (same kex)": (
                        client_options(key, baseline.port), openssh_at, "true"),
                    "openssh   ssh … true      (default) ": (
                        client_options(key, baseline.port, kex=None), openssh_at, "true"),
                }  # fmt: skip
                for label, (options, dest, command) in kinds.items():
                    conditions.append(f"{label.strip()}: {negotiated(options, dest, command)}")
                conditions.append(baseline.condition())
                argvs = {label: [*o, d, c] for label, (o, d, c) in kinds.items()}
                for _ in range(args.warmup):
                    for argv in argvs.values():
                        time_one(argv)
                samples: dict[str, list[float]] = {label: [] for label in argvs}
                deadline = time.monotonic() + TOTAL_BUDGET
                for _ in range(args.n):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"gave up after {TOTAL_BUDGET:.0f} s")
                    for label, argv in argvs.items():
                        samples[label].append(time_one(argv))
        finally:
            baseline.stop()

    print("conditions:")
    for line in conditions:
        print(f"  {line}")
    print(f"round trips: {args.n} of each kind, interleaved, after {args.warmup} warm-up each")
    medians = {label: statistics.median(ms) for label, ms in samples.items()}
    for label, ms in samples.items():
        print(f"{label}  median {medians[label]:7.1f} ms  (min {min(ms):.1f}, max {max(ms):.1f})")
    dockyard, same, default = medians.values()
    ratio = dockyard / same
    verdict = "ok" if ratio <= TARGET_RATIO else "ABOVE TARGET"
    print(f"ratio dockyard/openssh, same kex ({SAME_KEX}): {ratio:.2f} "
          f"(target ≤ {TARGET_RATIO}: {verdict})")  # fmt: skip
    print(f"ratio dockyard/openssh, openssh's default kex: {dockyard / default:.2f} "
          "(informational)")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
