"""Concurrent pushes: ten pushes to ten apps at once against one push alone, same server,
same run.

A real `dockyard serve` (temp data dir, loopback ports) holds ten tiny apps (bench/pushing:
a busybox Dockerfile serving one file), each deployed once before the clock runs. Then
each round, alternating: one push to one app (push-to-serving: from `git push` until the
new body answers through nginx), and ten pushes started together to the ten apps (the time
until the last of the ten serves its new body). Every push is a redeploy of a cached build:
build, release, new container, checks, the proxy switch, the old container retired.

The engine's own share, same rounds: the same Dockerfile (with Dockyard's owner LABEL as
its last line, as Dockyard builds it) and file change built and run with the Docker engine
alone (docker-py in threads: build, run the new container on a bridge network, wait for
its body on its address), one app then ten at once. Old containers are removed outside
every clock on both sides: Dockyard retires them `wait-to-retire` (set to 1 s here) after
a switch, and each timed section starts once none is left (within the ten, the first
pushes' retirements may land while the last still run: that counts against Dockyard); the
baseline removes its old ones after its clock stops. Which side goes first alternates.
That baseline does less than a push (no git, checks or proxy), so its ten-at-once time is
what the engine on this machine allows any PaaS built on it.

Prints each round and the medians of the per-round ratios ten-at-once / one, Dockyard's and
the engine's; target <= 2.5 for Dockyard's (ten perfectly overlapped pushes on 2 cores would
still share the CPU).

    .venv/bin/python bench/bench_concurrency.py [--rounds 5] [--apps 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pushing import DOCKERFILE, answers, first_push, make_repo, push_to_serving  # noqa: E402
from tests.conftest import _provision, remove_leftovers_of, start_server, stop_server  # noqa: E402

TARGET = 2.5


def busy_cpu_seconds() -> float:
    """CPU time the whole machine spent busy (every process: dockerd, containerd, runc,
    nginx, Dockyard, git), from /proc/stat."""
    fields = open("/proc/stat").readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class EngineOnly:
    """Ten tiny apps deployed with the engine alone (the baseline's apps `ENGINE_PREFIX-N`)."""

    PREFIX = "dockyard-bench-engine"

    def __init__(self, tmp: Path, count: int) -> None:
        import docker

        self.docker = docker.from_env(timeout=300)
        self.network = self.docker.networks.create(self.PREFIX, driver="bridge")
        self.contexts = []
        self.running: dict[int, object] = {}
        self.replaced: list[object] = []
        for i in range(count):
            context = tmp / f"engine-{i}"
            (context / "www").mkdir(parents=True)
            owner = f'LABEL dockyard.home="{tmp}/engine" dockyard.app="e{i}"\n'
            (context / "Dockerfile").write_text(DOCKERFILE + owner)
            self.contexts.append(context)

    def deploy(self, i: int, body: str) -> float:
        """Build, run, wait for `body` on the new container's address; the old container
        is left for `retire`, outside the clock."""
        context = self.contexts[i]
        (context / "www" / "index.html").write_text(body + "\n")
        start = time.perf_counter()
        image, _ = self.docker.images.build(
            path=str(context), tag=f"{self.PREFIX}-{i}:latest", rm=True, forcerm=True
        )
        new = self.docker.containers.run(
            image.id, detach=True, network=self.network.name, environment={"PORT": "5000"},
            labels={self.PREFIX: "1"},
        )  # fmt: skip
        new.reload()
        address = new.attrs["NetworkSettings"]["Networks"][self.network.name]["IPAddress"]
        deadline = time.monotonic() + 120
        while not answers(5000, address, body, address=address):
            if time.monotonic() > deadline:
                raise RuntimeError(f"engine-only app {i} never answered {body!r}")
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        old = self.running.pop(i, None)
        if old is not None:
            self.replaced.append(old)
        self.running[i] = new
        return elapsed

    def retire(self) -> None:
        while self.replaced:
            self.replaced.pop().remove(force=True)

    def close(self) -> None:
        for c in self.docker.containers.list(all=True, filters={"label": self.PREFIX}):
            c.remove(force=True)
        self.network.remove()
        for i in range(len(self.contexts)):
            try:
                self.docker.images.remove(f"{self.PREFIX}-{i}:latest", force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass


def wait_retired(engine: EngineOnly, data_dir: Path) -> None:
    """Until no container Dockyard retired (`APP.TYPE.N.retiring.ID`) is left."""
    mine = {"label": f"dockyard.home={data_dir}"}
    deadline = time.monotonic() + 120

    def retiring() -> bool:
        found = engine.docker.containers.list(all=True, filters=mine)
        return any(".retiring." in c.name for c in found)

    while retiring():
        if time.monotonic() > deadline:
            raise RuntimeError("Dockyard's old containers were not retired in 120 s")
        time.sleep(0.1)


def ten_at_once(count: int, one: Callable[[int], float]) -> tuple[float, list[float]]:
    start = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        each = list(pool.map(one, range(count)))
    return time.perf_counter() - start, each


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--apps", type=int, default=10)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dockyard-bench-concurrency-"))
    data_dir, keys_dir, admin_key, user_key = _provision(tmp)
    server = start_server(data_dir, keys_dir, admin_key, user_key)
    apps = [f"c{i}" for i in range(a.apps)]
    engine = EngineOnly(tmp, a.apps)
    try:
        repos = {app: make_repo(tmp / app, f"{app}-v0") for app in apps}
        with ThreadPoolExecutor(len(apps)) as pool:  # first deploys, not timed
            list(pool.map(lambda app: first_push(server, repos[app], app, f"{app}-v0"), apps))
        ten_at_once(a.apps, lambda i: engine.deploy(i, f"e{i}-v0"))
        engine.retire()
        result = server.ssh("checks:set", "--global", "wait-to-retire", "1")
        if result.returncode != 0:
            raise RuntimeError(f"checks:set wait-to-retire failed: {result.stderr}")
        print(
            f"conditions: {a.apps} tiny apps deployed on one server; {a.rounds} rounds, each "
            f"one deploy then {a.apps} at once (redeploys of cached builds), by Dockyard and "
            f"by the engine alone, the order alternating; old containers removed outside "
            f"the clocks; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"
        )
        cores = os.cpu_count() or 1
        ratios, floors, engine_ratios, batches, engine_batches = [], [], [], [], []
        for r in range(a.rounds):

            def push(i: int, r: int = r) -> float:
                app = apps[i]
                return push_to_serving(server, repos[app], app, f"{app}-{r}-{time.time()}")

            def dockyard_side() -> str:
                wait_retired(engine, data_dir)
                cpu0 = busy_cpu_seconds()
                single = push(0)
                cpu1 = busy_cpu_seconds()
                wait_retired(engine, data_dir)
                cpu1b = busy_cpu_seconds()
                batch, each = ten_at_once(a.apps, push)
                cpu2 = busy_cpu_seconds()
                # The floor for ten: their CPU work spread perfectly over every core.
                floors.append((cpu2 - cpu1b) / cores / single)
                ratios.append(batch / single)
                batches.append(batch)
                return (
                    f"Dockyard: one push {single:.2f} s ({cpu1 - cpu0:.2f} CPU-s busy), "
                    f"{a.apps} at once {batch:.2f} s ({cpu2 - cpu1b:.2f} CPU-s; each "
                    f"{min(each):.2f}–{max(each):.2f} s), ratio {ratios[-1]:.2f}, CPU floor "
                    f"{floors[-1]:.2f}"
                )

            def engine_side(r: int = r) -> str:
                cpu0 = busy_cpu_seconds()
                single = engine.deploy(0, f"e-single-{r}-{time.time()}")
                cpu1 = busy_cpu_seconds()
                engine.retire()
                cpu1b = busy_cpu_seconds()
                batch, _ = ten_at_once(
                    a.apps, lambda i: engine.deploy(i, f"e{i}-{r}-{time.time()}")
                )
                cpu2 = busy_cpu_seconds()
                engine.retire()
                engine_ratios.append(batch / single)
                engine_batches.append(batch)
                return (
                    f"engine alone: one {single:.2f} s ({cpu1 - cpu0:.2f} CPU-s), {a.apps} at "
                    f"once {batch:.2f} s ({cpu2 - cpu1b:.2f} CPU-s), ratio {engine_ratios[-1]:.2f}"
                )

            sides = (dockyard_side, engine_side) if r % 2 == 0 else (engine_side, dockyard_side)
            print(f"round {r + 1}: " + " | ".join(side() for side in sides))
        ratio = statistics.median(ratios)
        print(
            f"CPU floor of Dockyard's ratio (the ten's busy CPU-seconds / cores / one push's "
            f"time; includes anything else the machine ran): {statistics.median(floors):.2f}"
        )
        print(
            f"engine alone, ratio {a.apps} at once / one (median of rounds): "
            f"{statistics.median(engine_ratios):.2f}; {a.apps} at once: Dockyard "
            f"{statistics.median(batches):.2f} s, the engine alone "
            f"{statistics.median(engine_batches):.2f} s (medians)"
        )
        print(
            f"Dockyard, ratio {a.apps} at once / one (median of rounds): {ratio:.2f} "
            f"(target <= {TARGET}: {'met' if ratio <= TARGET else 'MISSED'})"
        )
        return 0 if ratio <= TARGET else 1
    finally:
        stop_server(server)
        remove_leftovers_of(data_dir)
        engine.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
