"""What a killed test run left on the shared Docker engine, found and removed at the start
of the next run.

A run that ends normally removes everything it made (the fixtures' `finally`). A run that is
killed — a CI timeout, a machine's session ending — cannot, and its app containers restart
with the engine: a later run's server then finds `victim.web.1` of another home on the same
engine and, rightly, refuses to deploy an app of that name.

Invariants:
- Only things made by a test run are touched: containers, networks and images labelled
  `dockyard.home=<dir>` with the dir under pytest's root of temporary directories, and Swarm
  test clusters (label `dockyard.swarm-test`) whose nodes mount such a dir.
- Only when this run's own directory is pytest's numbered kind (`pytest-of-USER/pytest-N`,
  not a `--basetemp`): the root is then the folder of every run's directory.
- A run is over when its numbered directory holds no `.lock`, the lock predates this boot,
  or the process whose id it holds is gone: pytest writes the lock when a run starts and
  removes it when the run ends. Any live concurrent run is left alone. What is labelled
  with this run's own directory is a leftover too (numbering restarts once /tmp is
  cleared): this runs at session start, before this run has made anything.
- The `dockyard serve` processes of a finished run's homes are stopped first, so none of
  them makes again what is removed.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

HOME_LABEL = "dockyard.home"
SWARM_LABEL = "dockyard.swarm-test"
RUN_DIR_NAME = re.compile(r"pytest-\d+")
ROOT_NAME = re.compile(r"pytest-of-.+")


def is_numbered_run(current: Path) -> bool:
    """Is this run's directory pytest's own numbered kind (no `--basetemp`)?"""
    return bool(RUN_DIR_NAME.fullmatch(current.name) and ROOT_NAME.fullmatch(current.parent.name))


def run_dir_of(path: Path, root: Path) -> Path | None:
    """The `pytest-N` directory under `root` that `path` lies in, or None."""
    try:
        first = Path(os.path.normpath(path)).relative_to(root).parts[0]
    except (ValueError, IndexError):
        return None
    return root / first if RUN_DIR_NAME.fullmatch(first) else None


def boot_time() -> float:
    with open("/proc/stat") as stat:
        return float(next(ln for ln in stat if ln.startswith("btime")).split()[1])


def run_is_over(run_dir: Path) -> bool:
    lock = run_dir / ".lock"
    try:
        pid = int(lock.read_text().strip())
        if lock.stat().st_mtime < boot_time():  # a process of an earlier boot
            return True
    except (OSError, ValueError):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def stale_homes(labelled: list[dict[str, str]], root: Path, current: Path) -> set[Path]:
    """The `dockyard.home` dirs among these labels that belong to finished test runs (or to
    this run's directory in an earlier life)."""
    homes = set()
    for labels in labelled:
        home = Path(os.path.normpath(labels.get(HOME_LABEL) or "/"))
        run_dir = run_dir_of(home, root)
        if run_dir is not None and (run_dir == current or run_is_over(run_dir)):
            homes.add(home)
    return homes


def stop_servers_of(homes: set[Path]) -> None:
    """SIGKILL the `dockyard serve` processes whose data dir is one of `homes` (a killed
    pytest leaves its servers running)."""
    wanted = {str(h) for h in homes}
    killed = False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "dockyard.cli" not in argv or "serve" not in argv or "--data-dir" not in argv:
            continue
        at = argv.index("--data-dir") + 1
        if at < len(argv) and os.path.normpath(argv[at]) in wanted:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed = True
            except ProcessLookupError:
                pass
    if killed:
        time.sleep(0.1)  # the kernel reaps them; their containers are removed next


def reap(root: Path, current: Path, remove_home: Callable[[Path], None]) -> list[str]:
    """Remove what finished runs under `root` left on the engine; say what was removed."""
    from deployer.containers import client

    if not is_numbered_run(current):
        return []
    api = client().api
    has_home = {"label": HOME_LABEL}
    labelled = [c.get("Labels") or {} for c in api.containers(all=True, filters=has_home)]
    labelled += [n.get("Labels") or {} for n in api.networks(filters=has_home)]
    labelled += [i.get("Labels") or {} for i in api.images(filters=has_home)]
    removed = []
    homes = stale_homes(labelled, root, current)
    stop_servers_of(homes)
    for home in sorted(homes):
        remove_home(home)
        removed.append(str(home))
    for cluster in _stale_clusters(api, root, current):
        _remove_cluster(api, cluster)
        removed.append(cluster)
    return removed


def _stale_clusters(api, root: Path, current: Path) -> set[str]:  # noqa: ANN001
    clusters = set()
    for container in api.containers(all=True, filters={"label": SWARM_LABEL}):
        for mount in container.get("Mounts") or []:
            run_dir = run_dir_of(Path(mount.get("Source") or "/"), root)
            if run_dir is not None and (run_dir == current or run_is_over(run_dir)):
                clusters.add(container["Labels"][SWARM_LABEL])
    return clusters


def _remove_cluster(api, cluster: str) -> None:  # noqa: ANN001
    from tests.swarm_cluster import remove_cgroup_dirs

    mine = {"label": f"{SWARM_LABEL}={cluster}"}
    for container in api.containers(all=True, filters=mine):
        api.remove_container(container["Id"], force=True, v=True)
        for name in container.get("Names") or []:
            remove_cgroup_dirs(name.lstrip("/"))
    for volume in api.volumes(filters=mine).get("Volumes") or []:
        api.remove_volume(volume["Name"], force=True)
    for network in api.networks(filters=mine):
        api.remove_network(network["Id"])
