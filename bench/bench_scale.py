"""Deploy cost against the number of apps: the first push of a tiny app on a server that
holds no other app, against the same on a server that holds `--apps - 1` others, side by side.

Two real `dockyard serve`s (temp data dirs, loopback ports). The second is first filled with
`--apps - 1` tiny apps (bench/pushing: busybox Dockerfile serving one file), each deployed
and routed. Then each round creates one new app on each server by its first push, timed
from `git push` until its body answers through that server's nginx, alternating between the
two; the app is destroyed after, so the counts stay 1 and `--apps`. The ratio "at app N /
at app 1" is the median of per-round ratios; target <= 1.15.

    .venv/bin/python bench/bench_scale.py [--apps 40] [--rounds 5]
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

from bench.pushing import first_push, make_repo  # noqa: E402
from tests.conftest import _provision, remove_leftovers_of, start_server, stop_server  # noqa: E402

TARGET = 1.15
FILL_PARALLEL = 4


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--apps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dockyard-bench-scale-"))
    servers = []
    try:
        for name in ("empty", "full"):
            (tmp / name).mkdir()
            data_dir, keys_dir, admin_key, user_key = _provision(tmp / name)
            servers.append(start_server(data_dir, keys_dir, admin_key, user_key))
        empty, full = servers
        fill = [f"f{i}" for i in range(a.apps - 1)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(FILL_PARALLEL) as pool:
            list(pool.map(lambda app: first_push(full, make_repo(tmp / "full" / app, app), app,
                                                 app), fill))  # fmt: skip
        print(f"filled the second server with {len(fill)} apps in {time.perf_counter() - t0:.0f} s")
        print(f"conditions: first push of a tiny app, {a.rounds} rounds alternating a server "
              f"with no other app and one with {len(fill)}; {os.cpu_count()} cores, load "
              f"average {os.getloadavg()[0]:.1f} at start")
        ones, ns, ratios = [], [], []
        for r in range(a.rounds):
            times = {}
            order = (empty, full) if r % 2 == 0 else (full, empty)
            for srv in order:
                app = f"new{r}"
                repo = make_repo(tmp / ("e" if srv is empty else "f") / app, f"{app}-{time.time()}")
                body = (repo / "www" / "index.html").read_text().strip()
                times[id(srv)] = first_push(srv, repo, app, body)
                res = srv.ssh("apps:destroy", app, "--force")
                if res.returncode != 0:
                    raise RuntimeError(res.stderr)
            one, n = times[id(empty)], times[id(full)]
            ones.append(one)
            ns.append(n)
            ratios.append(n / one)
            print(f"round {r + 1}: at app 1 {one:.2f} s, at app {a.apps} {n:.2f} s, "
                  f"ratio {n / one:.2f}")
        ratio = statistics.median(ratios)
        print(f"median push-to-serving at app 1 {statistics.median(ones):.2f} s, at app "
              f"{a.apps} {statistics.median(ns):.2f} s")
        print(f"ratio at app {a.apps} / at app 1 (median of rounds): {ratio:.2f} "
              f"(target <= {TARGET}: {'met' if ratio <= TARGET else 'MISSED'})")
        return 0 if ratio <= TARGET else 1
    finally:
        for srv in servers:
            stop_server(srv)
            remove_leftovers_of(srv.data_dir)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
