"""A Swarm test cluster on this machine: Docker-in-Docker nodes on a user-defined network.

Each node is a container of `dockyard-swarm/node:bookworm` (scripts/build-swarm-images.sh,
built here when missing) running its own dockerd, with the recipe that works without
`--privileged` (see shared/MACHINE-NOTES.md): an explicit capability list, seccomp and
AppArmor unconfined, the host's cgroup namespace with /sys/fs/cgroup mounted, and
`dockerd --cgroup-parent /<node>` so the nested engines keep their cgroups apart.

Invariants:
- Everything made here carries the cluster's id in its name (`dysw-<hex>…`) and the label
  `dockyard.swarm-test=<id>`: `Cluster.destroy` removes the nodes, their volumes, the
  network and the cgroup directories the nested engines left behind, and nothing else.
- `base` (a directory of the caller's) is mounted into the manager at the same path, so a
  Dockyard whose data dir lives under it sees the same paths as the manager's engine does
  (bind mounts of storage, env files, the edge proxy's sockets). The manager's API is
  reachable from this host at `base/n1-run/docker.sock` (`docker_host`).
- Only this machine's addresses are used: the nodes' network is a bridge of this engine.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

REPO_ROOT = Path(__file__).resolve().parent.parent
NODE_IMAGE = os.environ.get("DOCKYARD_SWARM_NODE_IMAGE", "dockyard-swarm/node:bookworm")
EDGE_IMAGE = os.environ.get("DOCKYARD_SWARM_EDGE_IMAGE", "dockyard-swarm/edge:latest")
LABEL = "dockyard.swarm-test"
CAPABILITIES = [
    "AUDIT_CONTROL", "DAC_READ_SEARCH", "IPC_LOCK", "LINUX_IMMUTABLE", "MKNOD", "NET_ADMIN",
    "NET_BROADCAST", "NET_RAW", "SETFCAP", "SETPCAP", "SYS_ADMIN", "SYS_CHROOT", "SYS_MODULE",
    "SYS_NICE", "SYS_PTRACE",
]  # fmt: skip
ENGINE_TIMEOUT = 60.0
NODE_RUN_DIR = "/run/dockyard-node"


class ClusterError(RuntimeError):
    pass


def ensure_images() -> None:
    """Build the node and edge images when missing (cached rootfs: seconds; else ~1 min)."""
    client = docker.from_env()
    try:
        client.images.get(NODE_IMAGE)
        client.images.get(EDGE_IMAGE)
        return
    except docker.errors.ImageNotFound:
        pass
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "build-swarm-images.sh")],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if proc.returncode != 0:
        raise ClusterError(f"building the swarm test images failed:\n{proc.stdout}\n{proc.stderr}")


@dataclass
class Node:
    name: str
    address: str
    container_id: str

    @property
    def cgroup_parent(self) -> str:
        return f"/{self.name}"


@dataclass
class Cluster:
    """Nodes `<id>-n1` (the manager) … `<id>-nN` (workers), not yet in a swarm until
    `form_swarm` (or Dockyard's `swarm:init`) and `join_workers` run."""

    id: str
    base: Path
    registry_port: int
    network: str = ""
    gateway: str = ""
    nodes: list[Node] = field(default_factory=list)
    host: docker.DockerClient = field(default_factory=docker.from_env)

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    @property
    def docker_host(self) -> str:
        return f"unix://{self.base / 'n1-run' / 'docker.sock'}"

    @property
    def registry_address(self) -> str:
        """Where a registry on this host is reached by every node (the bridge's gateway)."""
        return f"{self.gateway}:{self.registry_port}"

    def manager_client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.docker_host, timeout=120)

    # -- life ------------------------------------------------------------------------
    def create(self, count: int = 3) -> None:
        labels = {LABEL: self.id}
        net = self.host.networks.create(self.id, driver="bridge", labels=labels)
        self.network = net.name
        net.reload()
        self.gateway = net.attrs["IPAM"]["Config"][0]["Gateway"]
        for index in range(1, count + 1):
            self.nodes.append(self._start_node(f"{self.id}-n{index}", manager=index == 1))
        deadline = time.monotonic() + ENGINE_TIMEOUT
        for node in self.nodes:
            self._wait_engine(node, deadline)

    def _start_node(self, name: str, manager: bool) -> Node:
        volumes = {f"{name}-docker": {"bind": "/var/lib/docker", "mode": "rw"},
                   "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}}  # fmt: skip
        command = [
            "dockerd", "--cgroup-parent", f"/{name}",
            "--insecure-registry", self.registry_address, "-H", "unix:///var/run/docker.sock",
        ]  # fmt: skip
        if manager:
            run_dir = self.base / "n1-run"
            run_dir.mkdir(parents=True, exist_ok=True)
            volumes[str(run_dir)] = {"bind": NODE_RUN_DIR, "mode": "rw"}
            # The caller's directory at the same path: the manager sees Dockyard's paths.
            volumes[str(self.base)] = {"bind": str(self.base), "mode": "rw"}
            command += ["-H", f"unix://{NODE_RUN_DIR}/docker.sock"]
        self.host.volumes.create(f"{name}-docker", labels={LABEL: self.id})
        container = self.host.containers.run(
            NODE_IMAGE, command, name=name, hostname=name, detach=True,
            labels={LABEL: self.id}, network=self.network, volumes=volumes,
            cap_add=CAPABILITIES, security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            cgroupns="host", tmpfs={"/run": "", "/tmp": ""} if not manager else {"/tmp": ""},
        )  # fmt: skip
        container.reload()
        address = container.attrs["NetworkSettings"]["Networks"][self.network]["IPAddress"]
        return Node(name, address, container.id)

    def _wait_engine(self, node: Node, deadline: float) -> None:
        last = ""
        while time.monotonic() < deadline:
            result = self.exec(node, "docker", "info", "--format", "{{.ServerVersion}}")
            if result.returncode == 0:
                return
            last = result.stderr
            time.sleep(0.2)
        logs = self.host.containers.get(node.container_id).logs(tail=30).decode(errors="replace")
        raise ClusterError(f"dockerd on {node.name} did not answer: {last}\n{logs}")

    def exec(self, node: Node, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", "exec", node.name, *argv], capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def join_workers(self, token: str, nodes: list[Node] | None = None) -> None:
        for node in nodes or self.workers:
            result = self.exec(
                node, "docker", "swarm", "join", "--token", token,
                "--advertise-addr", node.address, f"{self.manager.address}:2377",
            )  # fmt: skip
            if result.returncode != 0:
                raise ClusterError(f"{node.name} could not join: {result.stderr}")

    def load_image(self, image: str) -> None:
        """Copy an image of this host's engine into the manager's (nothing can be pulled)."""
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        load = subprocess.run(
            ["docker", "exec", "-i", self.manager.name, "docker", "load", "-q"],
            stdin=save.stdout, capture_output=True, timeout=300,
        )  # fmt: skip
        assert save.stdout is not None
        save.stdout.close()
        if save.wait() != 0 or load.returncode != 0:
            raise ClusterError(f"loading {image} into the manager failed: {load.stderr!r}")

    def kill_engine(self, node: Node) -> None:
        """SIGKILL the node's dockerd from outside. It is the node container's PID 1 (which
        ignores a SIGKILL sent from inside its own namespace), so the whole node dies with it:
        its containerd, its tasks and its end of the overlay network, as when a machine
        fails."""
        self.host.containers.get(node.container_id).kill(signal="SIGKILL")

    def destroy(self) -> None:
        """Remove every node, volume, the network and the nodes' cgroup directories."""
        mine = {"label": f"{LABEL}={self.id}"}
        for container in self.host.containers.list(all=True, filters=mine):
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
        for volume in self.host.volumes.list(filters=mine):
            try:
                volume.remove(force=True)
            except docker.errors.NotFound:
                pass
        for net in self.host.networks.list(filters=mine):
            try:
                net.remove()
            except docker.errors.NotFound:
                pass
        for node in self.nodes:
            remove_cgroup_dirs(node.name)


def remove_cgroup_dirs(name: str, root: Path = Path("/sys/fs/cgroup")) -> None:
    """Nested engines leave (empty) `/sys/fs/cgroup/<controller>/<name>` trees behind."""
    for controller in root.iterdir():
        top = controller / name
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda e: -len(e[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def new_cluster(base: Path, registry_port: int, count: int = 3) -> Cluster:
    ensure_images()
    cluster = Cluster(id=f"dysw-{secrets.token_hex(3)}", base=base, registry_port=registry_port)
    try:
        cluster.create(count)
    except BaseException:
        cluster.destroy()
        raise
    return cluster
