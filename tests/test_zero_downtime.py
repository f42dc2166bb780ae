"""Zero downtime under load, end to end: the scenario of bench/bench_zero_downtime.py.

While a load generator sends requests through Dockyard's nginx, the app is redeployed 5
times by real `git push`es over SSH, scaled 1→3→1, config-changed, and Dockyard itself is
restarted on the same ports and data dir. Not one request may fail, the last version must
be what answers, and the restarted Dockyard must adopt the running nginx.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.bench_zero_downtime import Scenario
from tests.conftest import DockyardServer, stop_server

REDEPLOYS = 5


def test_no_request_fails_through_redeploys_scaling_config_and_restart(
    server: DockyardServer, docker_engine, tmp_path: Path
) -> None:
    started = time.monotonic()
    scenario = Scenario(server, tmp_path, redeploys=REDEPLOYS)
    try:
        result = scenario.run()
    finally:
        # The restart replaced the fixture's process; the fixture removes nginx and the
        # containers by data dir once this one is stopped.
        stop_server(scenario.server)
    print(result.report())
    print(f"scenario took {time.monotonic() - started:.1f}s")

    load = result.load
    assert load.failed == 0, result.report()
    assert load.sent > 500, result.report()
    names = [p.name for p in result.phases]
    assert names[-3:] == ["stop Dockyard", "start Dockyard", "after restart"], names
    # Every version answered at some point, and the last one is what answers now.
    assert set(load.bodies) == {f"version-{n}" for n in range(1, REDEPLOYS + 2)}, load.bodies
    assert result.final_body == scenario.expected_body() == f"version-{REDEPLOYS + 1}"
    assert result.final_config == scenario.expected_config()
    # Dockyard's restart adopted the running nginx master instead of replacing it.
    assert result.nginx_pid_before_restart is not None
    assert result.nginx_pid_after_restart == result.nginx_pid_before_restart
