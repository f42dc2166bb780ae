"""Concurrent pushes: ten pushes to ten apps at once against one push alone, same server,
same run.

A real `dockyard serve` (temp data dir, loopback ports) holds ten tiny apps (bench/pushing:
a busybox Dockerfile serving one file), each deployed once before the clock runs. Then
each round, alternating: one push to one app (push-to-serving: from `git push` until the
new body answers through nginx), and ten pushes started together to the ten apps (the time
until the last of the ten serves its new body). Every push is a redeploy of a cached build:
build, release, new container, checks, the proxy switch, the old container retired.

Prints each round and the median of the per-round ratios ten-at-once / one; target <= 2.5
(ten perfectly overlapped pushes on 2 cores would still share the CPU).

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pushing import first_push, make_repo, push_to_serving  # noqa: E402
from tests.conftest import _provision, remove_leftovers_of, start_server, stop_server  # noqa: E402

TARGET = 2.5


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--apps", type=int, default=10)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dockyard-bench-concurrency-"))
    data_dir, keys_dir, admin_key, user_key = _provision(tmp)
    server = start_server(data_dir, keys_dir, admin_key, user_key)
    apps = [f"c{i}" for i in range(a.apps)]
    try:
        repos = {app: make_repo(tmp / app, f"{app}-v0") for app in apps}
        with ThreadPoolExecutor(len(apps)) as pool:  # first deploys, not timed
            list(pool.map(lambda app: first_push(server, repos[app], app, f"{app}-v0"), apps))
        print(f"conditions: {a.apps} tiny apps deployed on one server; {a.rounds} rounds, each "
              f"one push then {a.apps} at once (redeploys of cached builds); "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
        singles, batches, ratios = [], [], []
        for r in range(a.rounds):
            single = push_to_serving(server, repos[apps[0]], apps[0], f"single-{r}-{time.time()}")
            start = time.perf_counter()
            with ThreadPoolExecutor(len(apps)) as pool:
                each = list(pool.map(
                    lambda app, r=r: push_to_serving(
                        server, repos[app], app, f"{app}-{r}-{time.time()}"), apps))  # fmt: skip
            batch = time.perf_counter() - start
            singles.append(single)
            batches.append(batch)
            ratios.append(batch / single)
            print(f"round {r + 1}: one push {single:.2f} s; {a.apps} at once {batch:.2f} s "
                  f"(each {min(each):.2f}–{max(each):.2f} s); ratio {batch / single:.2f}")
        ratio = statistics.median(ratios)
        print(f"median one push {statistics.median(singles):.2f} s, {a.apps} at once "
              f"{statistics.median(batches):.2f} s")
        print(f"ratio {a.apps} at once / one (median of rounds): {ratio:.2f} "
              f"(target <= {TARGET}: {'met' if ratio <= TARGET else 'MISSED'})")
        return 0 if ratio <= TARGET else 1
    finally:
        stop_server(server)
        remove_leftovers_of(data_dir)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
