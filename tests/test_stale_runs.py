"""Which leftovers on the engine belong to a finished test run (tests/stale_runs.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.stale_runs import boot_time, is_numbered_run, run_dir_of, run_is_over, stale_homes


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_run_is_over_without_a_lock_or_with_a_dead_process(tmp_path: Path) -> None:
    runs = [tmp_path / f"pytest-{n}" for n in range(4)]
    finished, killed, live, earlier_boot = runs
    for run in runs:
        run.mkdir()
    (killed / ".lock").write_text(str(_dead_pid()))
    (live / ".lock").write_text(str(os.getpid()))
    (earlier_boot / ".lock").write_text(str(os.getpid()))  # the pid taken again since
    os.utime(earlier_boot / ".lock", (boot_time() - 60, boot_time() - 60))
    assert run_is_over(finished)
    assert run_is_over(killed)
    assert not run_is_over(live)
    assert run_is_over(earlier_boot)


def test_homes_of_finished_runs_and_of_this_runs_earlier_life_are_stale(tmp_path: Path) -> None:
    root = tmp_path / "pytest-of-root"
    current, killed, live = (root / n for n in ("pytest-9", "pytest-8", "pytest-7"))
    for run in (current, killed, live):
        run.mkdir(parents=True)
    (killed / ".lock").write_text(str(_dead_pid()))
    (live / ".lock").write_text(str(os.getpid()))
    labels = [
        {"dockyard.home": str(killed / "dockyard1" / "data")},
        {"dockyard.home": str(current / "dockyard2" / "data")},  # before a reboot cleared /tmp
        {"dockyard.home": str(live / "dockyard1" / "data")},  # a concurrent run's
        {"dockyard.home": "/var/lib/dockyard"},  # a real server's
        {"dockyard.home": str(root / "elsewhere" / "data")},  # not a numbered run dir
        {"dockyard.home": str(root / "pytest-current" / "x" / "data")},  # pytest's symlink
        {"dockyard.home": str(live / ".." / "pytest-8" / "y" / "data")},  # not pytest-7's
        {},
    ]
    assert stale_homes(labels, root, current) == {
        killed / "dockyard1" / "data",
        current / "dockyard2" / "data",
        killed / "y" / "data",
    }
    assert run_dir_of(Path("/var/lib/dockyard"), root) is None


def test_only_pytests_numbered_directories_are_reaped_from() -> None:
    """With `--basetemp /tmp/x` the root would be /tmp, and `pytest-of-root` a "run"."""
    assert is_numbered_run(Path("/tmp/pytest-of-root/pytest-12"))
    assert not is_numbered_run(Path("/tmp/x"))
    assert not is_numbered_run(Path("/tmp/pytest-of-root"))
    assert not is_numbered_run(Path("/srv/builds/pytest-3"))
