"""The app's containers on the local Docker engine: names, labels, start, find, retire.

Live containers are named `APP.TYPE.N` (`shop.web.1`). While a deploy is checked, the new
ones run beside them as `APP.TYPE.N.vK`; after the switch the old ones become
`APP.TYPE.N.retiring.vJ` and the new ones take the live names. Labels, not names, are the
truth the reconciler reads.
"""

from __future__ import annotations

import atexit
import shlex
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import docker
import docker.errors
import structlog
from docker.models.containers import Container

from dockyard.errors import DockyardError
from dockyard.images import LABEL_APP, LABEL_HOME
from dockyard.names import is_whole_number

# Which Dockyard (its data dir) owns a container: several may share one engine, and one
# must never treat another's containers as strays.
LABEL_RELEASE = "dockyard.release"
LABEL_PROCESS = "dockyard.process"
LABEL_INSTANCE = "dockyard.instance"
ONE_OFF_PROCESS = "run"
DEFAULT_PORT = 5000
DEFAULT_RESTART_POLICY = "on-failure:10"
log = structlog.get_logger("dockyard.deployer")
STOP_TIMEOUT = 10
DEFAULT_PIDS_LIMIT = 1024
RETIRING = "retiring"

_client: docker.DockerClient | None = None
_client_lock = threading.Lock()


def client() -> docker.DockerClient:
    """One shared SDK client: its connection pool is thread-safe."""
    global _client
    with _client_lock:
        if _client is None:
            _client = docker.from_env(max_pool_size=64, timeout=120)
        return _client


def live_name(app: str, process_type: str, instance: int) -> str:
    return f"{app}.{process_type}.{instance}"


def staged_name(app: str, process_type: str, instance: int, version: int) -> str:
    return f"{live_name(app, process_type, instance)}.v{version}"


def retiring_name(app: str, process_type: str, instance: int, tag: str) -> str:
    return f"{live_name(app, process_type, instance)}.{RETIRING}.{tag}"


def parse_restart_policy(value: str) -> dict[str, object]:
    """`no`, `always`, `unless-stopped`, `on-failure[:N]` → the engine's RestartPolicy."""
    name, _, count = value.partition(":")
    if name == "on-failure":
        if count and not is_whole_number(count, 6):
            raise ValueError(value)
        return {"Name": name, "MaximumRetryCount": int(count or 0)}
    if name in ("no", "always", "unless-stopped") and not count:
        return {"Name": name}
    raise ValueError(value)


@dataclass(frozen=True)
class Limits:
    memory: str | None = None  # docker syntax: 512m, 1g
    cpus: float | None = None
    # Every container gets one: a fork bomb in one app must not exhaust the host's pids.
    pids: int = DEFAULT_PIDS_LIMIT


@dataclass(frozen=True)
class ProcessSpec:
    """One container to start for a release."""

    home: str
    app: str
    version: int
    image: str
    process_type: str
    instance: int | str  # a number, or for one-off phases the phase's name
    command: str | None
    environment: dict[str, str]
    port: int | None  # web processes: where the app listens (nginx reaches it on its network)
    restart_policy: str = DEFAULT_RESTART_POLICY
    limits: Limits = Limits()
    networks: tuple[str, ...] = ()  # the app's own network first
    binds: tuple[str, ...] = ()  # `HOST:CONTAINER[:ro]` mounts (storage:mount)

    def labels(self) -> dict[str, str]:
        return {
            LABEL_HOME: self.home,
            LABEL_APP: self.app,
            LABEL_RELEASE: str(self.version),
            LABEL_PROCESS: self.process_type,
            LABEL_INSTANCE: str(self.instance),
        }

    def aliases(self) -> list[str]:
        """The names other containers on its networks reach it by, as on Dokku: `APP.TYPE.N`
        and, for every instance of the type, `APP.TYPE`. The container's own name is not
        enough: it is created as `APP.TYPE.N.vK` and renamed at the switch, and the
        engine's DNS keeps answering for the name it joined the network with."""
        if not isinstance(self.instance, int) or self.process_type == ONE_OFF_PROCESS:
            return []
        kind = f"{self.app}.{self.process_type}"
        return [f"{kind}.{self.instance}", kind]


def container_command(image: str, command: str | None) -> list[str] | None:
    """A Procfile command runs through the image's shell, unless the image has an
    ENTRYPOINT, which then receives the command's words as its arguments (as Dokku does)."""
    if command is None:
        return None
    if image_entrypoint(image):
        try:
            return shlex.split(command)
        except ValueError as exc:  # an unbalanced quote in the Procfile
            raise DockyardError(f"Cannot split the command {command!r}: {exc}") from None
    return ["/bin/sh", "-c", command]


def image_entrypoint(image: str) -> list[str] | None:
    attrs = client().images.get(image).attrs
    return (attrs.get("Config") or {}).get("Entrypoint")


def create(
    spec: ProcessSpec,
    name: str,
    argv: list[str] | None = None,
    *,
    tty: bool = False,
    stdin_open: bool = False,
    restart: bool = True,
    entrypoint: list[str] | None = None,
) -> str:
    """Create (not start) a container for `spec`, joined to every network it needs before
    it can run a line of code: the app's own network first, then linked services' and
    attached ones. Returns its id. Every container of an app is made here, so limits, the
    pids cap, mounts and networks cannot differ between processes, phases and one-offs."""
    api = client().api
    limits = spec.limits
    host: dict[str, object] = {
        "init": True,  # signals reach the app (SIGTERM on retire), zombies are reaped
        "pids_limit": limits.pids,
        "binds": list(spec.binds) or None,
    }
    if limits.memory:
        host["mem_limit"] = limits.memory
    if limits.cpus:
        host["nano_cpus"] = int(limits.cpus * 1e9)
    if restart:
        host["restart_policy"] = parse_restart_policy(spec.restart_policy)
    ports = None
    if spec.port is not None:
        # Routing never uses this port: nginx reaches a web container on its app-network
        # address, like the checks do (Docker's userland forwarder would be one more hop
        # per request). It stays published on 127.0.0.1 only, for an operator's curl and
        # because tests/test_deployer.py holds that binding.
        host["port_bindings"] = {spec.port: ("127.0.0.1", None)}
        ports = [spec.port]
    networks = list(spec.networks)
    aliases = spec.aliases() or None
    networking = None
    if networks:
        host["network_mode"] = networks[0]
        if aliases:
            endpoint = api.create_endpoint_config(aliases=aliases)
            networking = api.create_networking_config({networks[0]: endpoint})
    remove_named(name, spec.home)
    created = api.create_container(
        spec.image,
        command=argv if argv is not None else container_command(spec.image, spec.command),
        name=name,
        environment=spec.environment,
        labels=spec.labels(),
        ports=ports,
        tty=tty,
        stdin_open=stdin_open,
        detach=not stdin_open,  # with stdin_open: StdinOnce, closing our stdin ends theirs
        entrypoint=entrypoint,
        host_config=api.create_host_config(**host),
        networking_config=networking,
    )
    container_id = created["Id"]
    try:
        for network in networks[1:]:
            api.connect_container_to_network(container_id, network, aliases=aliases)
    except BaseException:
        api.remove_container(container_id, force=True)
        raise
    return container_id


def start(spec: ProcessSpec, name: str) -> Container:
    container_id = create(spec, name)
    try:
        client().api.start(container_id)
    except BaseException:
        client().api.remove_container(container_id, force=True)
        raise
    return client().containers.get(container_id)


def remove_named(name: str, home: str) -> None:
    """Remove a leftover container of ours holding `name` (a crashed deploy's)."""
    try:
        container = client().containers.get(name)
    except docker.errors.NotFound:
        return
    if container.labels.get(LABEL_HOME) != home:
        raise DockyardError(
            f"A container named {name} exists and does not belong to this Dockyard; "
            "remove or rename it"
        )
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass


def commit(container: Container, config_of: str, tag: str) -> str:
    """Save the container's file changes as image `tag`, with image `config_of`'s own
    config: the environment the container ran with (config vars) is not kept."""
    config = client().api.inspect_image(config_of)["Config"]
    repo, _, name = tag.rpartition(":")
    return client().api.commit(container.id, repository=repo, tag=name, conf=config)["Id"]


def address_in(container: Container, network: str) -> str:
    """The container's IP address in `network` (the host reaches every bridge network)."""
    container.reload()
    networks = container.attrs["NetworkSettings"].get("Networks") or {}
    address = (networks.get(network) or {}).get("IPAddress")
    if not address:
        raise DockyardError(f"{container.name} has no address in network {network}")
    return address




def app_containers(
    home: str, app: str | None = None, include_one_off: bool = False
) -> list[Container]:
    """This Dockyard's containers, of one app or of all."""
    filters = {"label": [f"{LABEL_HOME}={home}", f"{LABEL_APP}={app}" if app else LABEL_APP]}
    found = list_containers(filters)
    if include_one_off:
        return found
    return [c for c in found if c.labels.get(LABEL_PROCESS) != ONE_OFF_PROCESS]


def one_offs_running(home: str, app: str) -> int:
    """How many one-off containers (run, cron, deploy phases) the app has now."""
    found = app_containers(home, app, include_one_off=True)
    return sum(1 for c in found if c.labels.get(LABEL_PROCESS) == ONE_OFF_PROCESS)


def list_containers(filters: dict) -> list[Container]:
    """`containers.list` without its race: the SDK inspects each listed container, and one
    removed in between (a retiring container) would make the whole listing fail."""
    found = []
    for summary in client().api.containers(all=True, filters=filters):
        try:
            found.append(client().containers.get(summary["Id"]))
        except docker.errors.NotFound:
            continue
    return found


def release_of(container: Container) -> int:
    try:
        return int(container.labels.get(LABEL_RELEASE, "0"))
    except ValueError:
        return 0


def instance_of(container: Container) -> tuple[str, int]:
    try:
        instance = int(container.labels.get(LABEL_INSTANCE, "0"))
    except ValueError:
        instance = 0
    return container.labels.get(LABEL_PROCESS, ""), instance


def is_retiring(container: Container) -> bool:
    return f".{RETIRING}." in container.name


def remove(containers: Iterable[Container], timeout: int = STOP_TIMEOUT) -> None:
    for container in containers:
        try:
            if container.status == "running":
                container.stop(timeout=timeout)
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # removal already in progress
                raise


def last_log_lines(container: Container, count: int = 20) -> list[str]:
    try:
        data = container.logs(stdout=True, stderr=True, tail=count)
    except docker.errors.APIError:
        return []
    return data.decode("utf-8", "replace").splitlines()


class Retirer:
    """Stops old containers after the drain delay, on background threads.

    What is still waiting when the process exits: a one-shot CLI retires it at once (the
    proxy no longer points at it); `dockyard serve` leaves it draining, and its next start
    removes it with the other containers of releases that are no longer current."""

    def __init__(self) -> None:
        self._pending: dict[str, Container] = {}
        self._lock = threading.Lock()
        self._retire_at_exit = True
        atexit.register(self._at_exit)

    def leave_to_next_start(self) -> None:
        self._retire_at_exit = False

    def _at_exit(self) -> None:
        if self._retire_at_exit:
            self.retire_all_now()

    def schedule(
        self, containers: list[Container], delay: float, then: Callable[[], None] | None = None
    ) -> None:
        """Retire `containers` after `delay`, then call `then` (their images are free)."""
        if not containers:
            return
        with self._lock:
            for c in containers:
                self._pending[c.id] = c
        timer = threading.Timer(delay, self._retire, args=(containers, then))
        timer.daemon = True
        timer.start()

    def _retire(self, containers: list[Container], then: Callable[[], None] | None) -> None:
        with self._lock:
            mine = [c for c in containers if self._pending.pop(c.id, None) is not None]
        try:
            remove(mine)
        except docker.errors.DockerException:
            return  # the reconciler removes stragglers at the next start
        if then is not None and mine:
            try:
                then()
            except Exception as exc:  # a timer thread: nobody else would see it
                log.warning("after retiring", error=str(exc))

    def pending_ids(self) -> set[str]:
        with self._lock:
            return set(self._pending)

    def retire_all_now(self) -> None:
        """At exit: stop what is still waiting, all at once (one by one, a server with a few
        pending retirements took ten seconds to stop). Stragglers are strays at next start."""
        with self._lock:
            mine, self._pending = list(self._pending.values()), {}
        threads = [threading.Thread(target=_remove_quietly, args=(c,), daemon=True) for c in mine]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=STOP_TIMEOUT + 5)


def _remove_quietly(container: Container) -> None:
    try:
        remove([container], timeout=2)
    except Exception as exc:  # interpreter shutdown: best effort, the next start reconciles
        log.warning("container not retired at exit", container=container.name, error=str(exc))


retirer = Retirer()
