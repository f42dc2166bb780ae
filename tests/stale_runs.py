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
- A run is over when its numbered directory (`pytest-N`) holds no `.lock`, or the process
  whose id the lock holds is gone: pytest writes the lock when the run starts and removes
  it when the run ends. The current run and any live concurrent run are left alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

HOME_LABEL = "dockyard.home"
SWARM_LABEL = "dockyard.swarm-test"


def run_dir_of(path: Path, root: Path) -> Path | None:
    """The `pytest-N` directory under `root` that `path` lies in, or None."""
    try:
        first = path.relative_to(root).parts[0]
    except (ValueError, IndexError):
        return None
    return root / first if first.startswith("pytest-") else None


def run_is_over(run_dir: Path) -> bool:
    try:
        pid = int((run_dir / ".lock").read_text().strip())
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
    """The `dockyard.home` dirs among these labels that belong to finished test runs."""
    homes = set()
    for labels in labelled:
        home = Path(labels.get(HOME_LABEL) or "/")
        run_dir = run_dir_of(home, root)
        if run_dir is not None and run_dir != current and run_is_over(run_dir):
            homes.add(home)
    return homes


def reap(root: Path, current: Path, remove_home: Callable[[Path], None]) -> list[str]:
    """Remove what finished runs under `root` left on the engine; say what was removed."""
    from deployer.containers import client

    api = client().api
    has_home = {"label": HOME_LABEL}
    labelled = [c.get("Labels") or {} for c in api.containers(all=True, filters=has_home)]
    labelled += [n.get("Labels") or {} for n in api.networks(filters=has_home)]
    labelled += [i.get("Labels") or {} for i in api.images(filters=has_home)]
    removed = []
    for home in sorted(stale_homes(labelled, root, current)):
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
            if run_dir is not None and run_dir != current and run_is_over(run_dir):
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
