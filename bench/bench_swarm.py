"""Swarm against docker-local: push-to-serving and rolling-update time for the same app.

    .venv/bin/python bench/bench_swarm.py [--rounds 3]

Two Dockyards run side by side: one whose engine is the manager of a three-node
Docker-in-Docker swarm built on this machine (`tests/swarm_env.py`), one on this host's
engine with the default `docker-local` scheduler. Each round, interleaved (this machine is
noisy: compare within a round), both:

1. push-to-serving: `apps:create`, `git push` of the same busybox app (build, for swarm the
   push to Dockyard's registry, the service's tasks healthy, the route), until the proxy
   answers with the pushed body;
2. rolling update of 3 replicas: with `web=3`, push a new version; time until the push
   returns (swarm: `--update-order start-first`, one task at a time, each healthy before
   the next) and until every answer is the new version.

Conditions (cores, load, engine, nodes) are printed with the figures. The swarm's nodes run
nested inside this host's engine, so its figures include Docker-in-Docker overhead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker  # noqa: E402

from tests.conftest import (  # noqa: E402
    _provision,
    remove_leftovers_of,
    start_server,
    stop_server,
)
from tests.deploying import commit, get, make_repo, push  # noqa: E402
from tests.swarm_env import app_files, ok, swarm_env  # noqa: E402


def wait_body(server, app: str, expected: str, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, text = get(server, app)
            if status == 200 and text.strip() == expected:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{app} never answered {expected!r}")


def all_new(server, app: str, expected: str, timeout: float = 120, samples: int = 20) -> float:
    """Until `samples` answers in a row are the new version."""
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline:
        try:
            status, text = get(server, app)
            streak = streak + 1 if status == 200 and text.strip() == expected else 0
        except OSError:
            streak = 0
        if streak >= samples:
            return time.monotonic()
        time.sleep(0.02)
    raise RuntimeError(f"{app} never settled on {expected!r}")


def one_round(server, base: Path, app: str, swarm: bool) -> tuple[float, float, float]:
    ok(server.ssh("apps:create", app))
    if swarm:
        ok(server.ssh("scheduler:set", app, "selected", "swarm"))
    repo = make_repo(base / f"repo-{app}", app_files(f"{app}-v1"))
    t0 = time.monotonic()
    result = push(server, repo, app)
    assert result.returncode == 0, result.stderr
    serving = wait_body(server, app, f"{app}-v1") - t0
    ok(server.ssh("ps:scale", app, "web=3"))
    commit(repo, {"www/index.html": f"{app}-v2\n"}, "v2")
    t1 = time.monotonic()
    result = push(server, repo, app)
    assert result.returncode == 0, result.stderr
    returned = time.monotonic() - t1
    settled = all_new(server, app, f"{app}-v2") - t1
    ok(server.ssh("apps:destroy", app, "--force"))
    return serving, returned, settled


def conditions() -> str:
    info = docker.from_env().info()
    load = os.getloadavg()
    return (
        f"cores={os.cpu_count()} load={load[0]:.1f}/{load[1]:.1f} "
        f"engine={info['ServerVersion']} storage={info['Driver']} cgroup={info['CgroupVersion']}; "
        "swarm: 3 DinD nodes (1 manager + 2 workers) on one bridge, Dockyard's registry "
        "(docker-registry 2.8) on this host; app: busybox httpd (2 MB image), default checks"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = max(1, min(args.rounds, 10))
    print(f"conditions: {conditions()}")
    results: dict[str, list[tuple[float, float, float]]] = {"swarm": [], "docker-local": []}
    with tempfile.TemporaryDirectory(prefix="bench-swarm-") as tmp:
        base = Path(tmp)
        local_dir = base / "local"
        local_dir.mkdir()
        t = time.monotonic()
        with swarm_env(base / "swarm") as env:
            print(f"cluster up in {time.monotonic() - t:.1f} s ({env.timings})")
            local = start_server(*_provision(local_dir))
            try:
                for i in range(rounds):
                    order = [("swarm", env.server), ("docker-local", local)]
                    if i % 2:
                        order.reverse()
                    for name, server in order:
                        app = f"b{'s' if name == 'swarm' else 'l'}{i}"
                        found = one_round(server, base, app, name == "swarm")
                        results[name].append(found)
                        print(f"round {i + 1} {name:12s} push-to-serving {found[0]:5.1f} s | "
                              f"rolling update x3: push returns {found[1]:5.1f} s, all answers "
                              f"new {found[2]:5.1f} s", flush=True)  # fmt: skip
            finally:
                stop_server(local)
                remove_leftovers_of(local.data_dir)
    print("median over rounds:")
    for name, rows in results.items():
        cols = list(zip(*rows, strict=True))
        print(f"  {name:12s} push-to-serving {statistics.median(cols[0]):5.1f} s | rolling "
              f"update x3 {statistics.median(cols[1]):5.1f} s (all new "
              f"{statistics.median(cols[2]):5.1f} s)")  # fmt: skip
    print(f"conditions after: load={os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
