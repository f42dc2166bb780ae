"""Which leftovers on the engine belong to a finished test run (tests/stale_runs.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.stale_runs import run_dir_of, run_is_over, stale_homes


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_run_is_over_without_a_lock_or_with_a_dead_process(tmp_path: Path) -> None:
    finished, killed, live = (tmp_path / n for n in ("pytest-1", "pytest-2", "pytest-3"))
    for run in (finished, killed, live):
        run.mkdir()
    (killed / ".lock").write_text(str(_dead_pid()))
    (live / ".lock").write_text(str(os.getpid()))
    assert run_is_over(finished)
    assert run_is_over(killed)
    assert not run_is_over(live)


def test_only_homes_of_other_finished_runs_under_the_root_are_stale(tmp_path: Path) -> None:
    root = tmp_path / "pytest-of-root"
    current, killed, live = (root / n for n in ("pytest-9", "pytest-8", "pytest-7"))
    for run in (current, killed, live):
        run.mkdir(parents=True)
    (killed / ".lock").write_text(str(_dead_pid()))
    (live / ".lock").write_text(str(os.getpid()))
    labels = [
        {"dockyard.home": str(killed / "dockyard1" / "data")},
        {"dockyard.home": str(current / "dockyard1" / "data")},  # this run's own
        {"dockyard.home": str(live / "dockyard1" / "data")},  # a concurrent run's
        {"dockyard.home": "/var/lib/dockyard"},  # a real server's
        {"dockyard.home": str(root / "elsewhere" / "data")},  # not a numbered run dir
        {},
    ]
    assert stale_homes(labels, root, current) == {killed / "dockyard1" / "data"}
    assert run_dir_of(Path("/var/lib/dockyard"), root) is None
