"""`swarm`: each process type of an app is a Docker Swarm service, `APP_TYPE`.

A deploy runs the release and predeploy phases on this host (the manager, where the image was
built), pushes the image to the registry (`registry.publish`, tagged by release, pinned by
digest), then creates or updates one service per process type: replicas from the formation,
config as environment, the app's limits and mounts, a health check from app.json,
`--update-order start-first`, `--update-failure-action rollback`, placement constraints from
`scheduler:set APP constraint …`, endpoint mode dnsrr on the app's attachable overlay network
`APP_swarm`. Traffic reaches the web tasks through the edge proxy (`edge.py`).

Invariants:
- A new task takes traffic only once healthy: Swarm adds a task to the service's DNS records
  when its health check passes, and removes it two seconds before stopping it, which is
  longer than the edge's one-second DNS cache. So updates, scaling and drains move traffic
  without failed requests.
- The deploy returns only when every service runs the new release on all its replicas (or,
  for an update, Swarm has finished it); a failed update is rolled back by Swarm itself, a
  failed first deploy removes the new service, and either way the previous release keeps
  serving and the release is recorded as failed.
- Services carry the home and app labels; nothing of another Dockyard is touched.
- Tasks that mount storage run on the manager (`node.id==…`): the data lives on this host.
  Linked services' containers stay on this host and join the app's overlay network under
  their usual aliases, so tasks on any node reach them.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import TYPE_CHECKING, Any

import docker.errors
from docker.types.daemon import CancellableStream

from deployer import containers as docker_ops
from deployer import cron, storage
from deployer.containers import ONE_OFF_PROCESS, STOP_TIMEOUT, Limits
from deployer.deploy import (
    DeployError,
    ReleaseDeployer,
    _script,
    container_port,
    home_of,
    router,
)
from deployer.healthchecks import DEFAULT_CHECK, Check, checks_for
from deployer.releases import Release, ReleaseStore, effective_formation
from deployer.schedulers import LogSource, OneOffIO, Process, cluster, registry
from deployer.schedulers.edge import Edge, upstream
from deployer.schedulers.settings import CONSTRAINT, SWARM, constraints_of
from dockyard.apps import App
from dockyard.config_vars import GIT_REV
from dockyard.errors import DockyardError, UsageError
from dockyard.output import Output
from dockyard.pipeline import extra_networks

if TYPE_CHECKING:
    from dockyard.services import Services

# Swarm names must be DNS name components; app names have no `_`, so neither a user network
# (app-style names) nor another app's can be called this.
NETWORK_SUFFIX = "_swarm"
SECOND = 1_000_000_000
UPDATE_MONITOR = 3 * SECOND
# How long a deploy waits for every service to converge, beyond the checks' own time.
CONVERGE_TIMEOUT = 180.0
POLL = 0.25
DEFAULT_INTERVAL = 1.0
DEFAULT_START_PERIOD = 10.0
DEFAULT_RETRIES = 3
FAILED_TASKS_LIMIT = 3  # a new service whose tasks failed this often per replica gives up
ROLLBACK_STATES = ("rollback_started", "rollback_paused", "rollback_completed", "paused")
TERMINAL = ("complete", "failed", "shutdown", "rejected", "orphaned", "remove")
ONE_OFF_TIMEOUT = 24 * 3600.0
UNIT = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class ConvergeFailed(Exception):
    pass


def network_name(app: str) -> str:
    return f"{app}{NETWORK_SUFFIX}"


def service_name(app: str, process_type: str) -> str:
    return f"{app}_{process_type}"


def _api() -> docker.APIClient:
    return docker_ops.client().api


def _labels(home: str, app: str, process_type: str, version: int | None = None) -> dict:
    labels = {
        docker_ops.LABEL_HOME: home, docker_ops.LABEL_APP: app,
        docker_ops.LABEL_PROCESS: process_type,
    }  # fmt: skip
    if version is not None:
        labels[docker_ops.LABEL_RELEASE] = str(version)
    return labels


def home_services(home: str, app: str | None = None) -> list[dict[str, Any]]:
    wanted = [f"{docker_ops.LABEL_HOME}={home}"]
    wanted.append(f"{docker_ops.LABEL_APP}={app}" if app else docker_ops.LABEL_APP)
    return _api().services(filters={"label": wanted})


def ensure_overlay(home: str, app: str) -> str:
    """The app's attachable overlay network, created when missing; returns its name."""
    name = network_name(app)
    try:
        found = _api().inspect_network(name)
    except docker.errors.NotFound:
        found = None
    if found is not None:
        if (found.get("Labels") or {}).get(docker_ops.LABEL_HOME) != home:
            raise DockyardError(f"A network named {name} exists and is not this Dockyard's")
        return name
    try:
        _api().create_network(
            name, driver="overlay", attachable=True, check_duplicate=True,
            labels={docker_ops.LABEL_HOME: home, docker_ops.LABEL_APP: app},
        )  # fmt: skip
    except docker.errors.APIError as exc:
        if exc.status_code != 409:
            raise
    return name


def memory_bytes(value: str) -> int:
    value = value.lower()
    number, unit = (value[:-1], value[-1]) if value[-1:] in UNIT else (value, "m")
    return int(number) * UNIT[unit]


def resources(limits: Limits) -> dict[str, Any]:
    found: dict[str, Any] = {"Pids": limits.pids}
    if limits.memory:
        found["MemoryBytes"] = memory_bytes(limits.memory)
    if limits.cpus:
        found["NanoCPUs"] = int(limits.cpus * 1e9)
    return {"Limits": found}


def restart_policy(policy: str) -> dict[str, Any]:
    """The `ps restart-policy` in Swarm's terms."""
    name, _, count = policy.partition(":")
    if name == "no":
        return {"Condition": "none"}
    if name == "on-failure":
        return {"Condition": "on-failure", "Delay": SECOND, "MaxAttempts": int(count or 0)}
    return {"Condition": "any", "Delay": SECOND}


def listen_probe(port: int) -> str:
    """Any image with a shell: is something listening on PORT (IPv4 or IPv6)?"""
    return f"grep -qsE ':{port:04X} [0-9A-F]+:0000 0A ' /proc/net/tcp /proc/net/tcp6"


def http_probe(check: Check, port: int) -> str:
    """A declared HTTP check with whatever client the image has: curl, wget or python3."""
    url = f"http://127.0.0.1:{port}{check.path or '/'}"
    content = f" | grep -qF -- {_sh_quote(check.content)}" if check.content else ""
    status = check.status
    python = (
        "import sys,urllib.request as u\n"
        "try:\n r=u.urlopen(sys.argv[1],timeout=float(sys.argv[2]));s=r.status;b=r.read()\n"
        "except u.HTTPError as e:\n s=e.code;b=e.read()\n"
        f"ok=(s=={status}) if {status is not None} else 200<=s<400\n"
        "sys.stdout.write(b.decode('utf-8','replace'));sys.exit(0 if ok else 1)"
    )
    timeout = max(1, int(check.timeout))
    if status is None:
        curl = f"curl -fsS -m {timeout} {_sh_quote(url)}"
    else:
        code = f"$(curl -s -o /dev/null -w '%{{http_code}}' -m {timeout} {_sh_quote(url)})"
        curl = f'[ "{code}" = {status} ]'
    return (
        f"if command -v curl >/dev/null 2>&1; then {curl}{content if status is None else ''}; "
        f"elif command -v wget >/dev/null 2>&1; then wget -q -O - {_sh_quote(url)}{content}; "
        f"else python3 -c {_sh_quote(python)} {_sh_quote(url)} {timeout}{content}; fi"
    )


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def healthcheck(app_json: dict, process_type: str, port: int | None) -> dict[str, Any] | None:
    """app.json's first startup check for the type (commands run as given), else for web a
    check that the port listens."""
    try:
        checks = checks_for(app_json, process_type)
    except (TypeError, ValueError) as exc:
        raise DeployError(f"app.json healthchecks.{process_type}: {exc}") from None
    if not checks:
        return None
    check = checks[0]
    if check is DEFAULT_CHECK or not check.declared:
        if port is None:
            return None
        return {
            "Test": ["CMD-SHELL", listen_probe(port)], "Interval": int(DEFAULT_INTERVAL * SECOND),
            "Timeout": 2 * SECOND, "Retries": DEFAULT_RETRIES,
            "StartPeriod": int(DEFAULT_START_PERIOD * SECOND),
        }  # fmt: skip
    if check.command:
        test = ["CMD", *check.command]
    else:
        test = ["CMD-SHELL", http_probe(check, check.port or port or 5000)]
    interval = max(1.0, check.wait)
    return {
        "Test": test, "Interval": int(interval * SECOND),
        "Timeout": int(max(1.0, check.timeout) * SECOND), "Retries": check.attempts,
        "StartPeriod": int((check.initial_delay + interval) * SECOND),
    }  # fmt: skip


class SwarmScheduler:
    name = SWARM

    def __init__(self, services: Services, app: App, out: Output) -> None:
        self.services = services
        self.app = app
        self.out = out
        self.home = home_of(services)
        self.releases = ReleaseStore(services.state)
        # Phases (release, predeploy, postdeploy) run on this host, as with docker-local.
        self.local = ReleaseDeployer(services, app, out)

    # -- what exists ------------------------------------------------------------------
    def existing(self) -> dict[str, dict[str, Any]]:
        """The app's services by process type (one-offs excluded)."""
        found = {}
        for svc in home_services(self.home, self.app.name):
            process_type = svc["Spec"]["Labels"].get(docker_ops.LABEL_PROCESS, "")
            if process_type != ONE_OFF_PROCESS:
                found[process_type] = svc
        return found

    def _auth_header(self, where: registry.Target) -> dict[str, str]:
        auth = where.auth_config()
        if auth is None:
            return {}
        return {"X-Registry-Auth": docker.auth.encode_header(auth).decode()}

    def constraints(self, mounts: list[dict[str, Any]]) -> list[str]:
        found = constraints_of(CONSTRAINT.raw(self.services.properties, self.app))
        if mounts:
            found.append(f"node.id=={cluster.state().node_id}")
        return found

    def mounts(self) -> list[dict[str, Any]]:
        found = []
        for bind in storage.binds(self.services, self.app):
            parts = bind.split(":")
            found.append({
                "Type": "bind", "Source": parts[0], "Target": parts[1],
                "ReadOnly": len(parts) > 2 and parts[2] == "ro",
            })  # fmt: skip
        return found

    def task_template(
        self, release: Release, process_type: str, image: str, network: str,
        instance: str = "{{.Task.Slot}}", argv: list[str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        env = self.local.environment(release)
        env["DYNO"] = f"{process_type}.{instance}"
        port = int(env["PORT"]) if process_type == "web" else None
        mounts = self.mounts()
        if argv is None:
            argv = docker_ops.container_command(release.image, release.command_for(process_type))
        spec: dict[str, Any] = {
            "Image": image,
            "Env": [f"{k}={v}" for k, v in sorted(env.items())],
            "Labels": _labels(self.home, self.app.name, process_type, release.version),
            "Init": True,
            "StopGracePeriod": STOP_TIMEOUT * SECOND,
            "Mounts": mounts,
        }
        if argv:
            spec["Args"] = argv
        if process_type != ONE_OFF_PROCESS:
            check = healthcheck(release.app_json, process_type, port)
            if check is not None and self.local.settings.checks_enabled:
                spec["Healthcheck"] = check
        restart = (
            {"Condition": "none"} if process_type == ONE_OFF_PROCESS
            else restart_policy(self.local.settings.restart_policy)
        )  # fmt: skip
        return {
            "ContainerSpec": spec,
            "Resources": resources(self.local.settings.limits),
            "RestartPolicy": restart,
            "Placement": {"Constraints": self.constraints(mounts)},
            "Networks": [{"Target": network}],
        }

    def service_spec(
        self, release: Release, process_type: str, replicas: int, image: str, network: str,
        force: int = 0,
    ) -> dict[str, Any]:  # fmt: skip
        template = self.task_template(release, process_type, image, network)
        template["ForceUpdate"] = force
        policy = {
            "Parallelism": 1, "Delay": 0, "Monitor": UPDATE_MONITOR, "MaxFailureRatio": 0,
            "Order": "start-first",
        }  # fmt: skip
        return {
            "Name": service_name(self.app.name, process_type),
            "Labels": _labels(self.home, self.app.name, process_type),
            "TaskTemplate": template,
            "Mode": {"Replicated": {"Replicas": replicas}},
            "UpdateConfig": {**policy, "FailureAction": "rollback"},
            "RollbackConfig": {**policy, "FailureAction": "pause"},
            "EndpointSpec": {"Mode": "dnsrr"},
        }

    # -- engine calls -------------------------------------------------------------------
    def _create(self, spec: dict[str, Any], headers: dict[str, str]) -> str:
        api = _api()
        resp = api._post_json(api._url("/services/create"), data=spec, headers=headers)
        return api._result(resp, json=True)["ID"]

    def _update(
        self, svc: dict[str, Any], spec: dict[str, Any], headers: dict[str, str],
        rollback: bool = False,
    ) -> None:  # fmt: skip
        api = _api()
        params: dict[str, Any] = {"version": svc["Version"]["Index"]}
        if rollback:
            params["rollback"] = "previous"
        resp = api._post_json(
            api._url("/services/{0}/update", svc["ID"]), data=spec, params=params,
            headers=headers,
        )  # fmt: skip
        api._result(resp, json=True)

    def _tasks(self, service_id: str) -> list[dict[str, Any]]:
        return _api().tasks(filters={"service": service_id})

    def _wait(
        self, service_id: str, version: int, replicas: int, before: dict, deadline: float
    ) -> None:
        """Until `replicas` tasks of release `version` run and no older task is wanted; or
        raise ConvergeFailed (Swarm is rolling back, or a new service's tasks keep failing)."""
        while True:
            svc = _api().inspect_service(service_id)
            status = svc.get("UpdateStatus") or {}
            ours = status and status.get("StartedAt") != before.get("StartedAt")
            if ours and status.get("State") in ROLLBACK_STATES:
                raise ConvergeFailed(status.get("Message") or status.get("State"))
            tasks = self._tasks(service_id)
            wanted = [t for t in tasks if t.get("DesiredState") == "running"]
            new = [t for t in wanted if _release(t) == version]
            old = [t for t in wanted if _release(t) != version]
            running = [t for t in new if t["Status"]["State"] == "running"]
            settled = not ours or status.get("State") == "completed"
            if len(running) >= replicas and not old and settled:
                return
            if not before:  # a new service: give up once its tasks keep failing
                failed = [t for t in tasks if t["Status"]["State"] in ("failed", "rejected")]
                if len(failed) >= FAILED_TASKS_LIMIT * max(replicas, 1):
                    last = max(failed, key=lambda t: t["Status"].get("Timestamp", ""))
                    raise ConvergeFailed(_task_error(last))
            if time.monotonic() > deadline:
                raise ConvergeFailed(
                    f"{len(running)} of {replicas} tasks of the new release running after "
                    f"{CONVERGE_TIMEOUT:.0f} s" + (f" ({_task_error(tasks[-1])})" if tasks else "")
                )
            time.sleep(POLL)

    # -- deploy -------------------------------------------------------------------------
    def deploy(self, release: Release, announce: bool = True) -> list[str]:
        cluster.require_manager()
        formation = effective_formation(release.formation, release)
        release.formation = formation
        try:
            cron.entries(release.app_json)
        except UsageError as exc:
            raise DeployError(f"Deploy of {self.app.name} failed: {exc.message}") from None
        if announce:
            self.out.step(f"Releasing {self.app.name}...")
        if "release" in release.procfile:
            self.local.run_before_switch(release, "release", release.procfile["release"])
        predeploy = _script(release.app_json, "predeploy")
        if predeploy:
            release.image = release.built_image or release.image
            self.local.run_before_switch(release, "predeploy", predeploy)
        self.out.heading("Processing deployment checks")
        self.out.step(f"Deploying {self.app.name} to the swarm...")
        where = registry.target(self.services)
        image = registry.publish(self.services, self.app.name, release)
        self.out.detail(f"Pushed {image}")
        network = ensure_overlay(self.home, self.app.name)
        self._attach_linked(network)
        self._roll_out(release, formation, image, network, self._auth_header(where))
        urls = self._route(release, formation, network)
        with self.services.state.transaction():
            self.releases.make_current(self.app, release)
            self.releases.set_formation(self.app, formation)
            if release.revision:
                self.services.config.set(self.app, {GIT_REV: release.revision})
        self.out.heading("Application deployed:")
        for url in urls:
            self.out.detail(url)
        postdeploy = _script(release.app_json, "postdeploy")
        if postdeploy:
            self.out.step(f"Running postdeploy: {postdeploy}")
            status = self.local.run_phase(release, "postdeploy", postdeploy)
            if status != 0:
                self.out.warn(
                    f"postdeploy command `{postdeploy}` failed with exit status {status}; "
                    f"{release.name} is deployed and serving (postdeploy runs after the switch)"
                )
        return urls

    def _roll_out(
        self, release: Release, formation: dict[str, int], image: str, network: str,
        headers: dict[str, str],
    ) -> None:  # fmt: skip
        """Create or update every process type's service and wait for all of them; on any
        failure undo what this deploy changed and raise DeployError."""
        existing = self.existing()
        created: list[str] = []
        updated: dict[str, dict] = {}
        order = sorted(formation, key=lambda t: (t != "web", t))
        deadline = time.monotonic() + CONVERGE_TIMEOUT
        waits: list[tuple[str, int, dict]] = []
        try:
            for process_type in order:
                replicas = formation[process_type]
                svc = existing.get(process_type)
                force = int(svc["Spec"]["TaskTemplate"].get("ForceUpdate", 0)) + 1 if svc else 0
                spec = self.service_spec(release, process_type, replicas, image, network, force)
                if svc is None:
                    service_id = self._create(spec, headers)
                    created.append(service_id)
                    waits.append((service_id, replicas, {}))
                    self.out.detail(f"Created {spec['Name']} ({replicas} replicas)")
                else:
                    self._update(svc, spec, headers)
                    updated[process_type] = svc
                    waits.append((svc["ID"], replicas, svc.get("UpdateStatus") or {"new": 1}))
                    self.out.detail(f"Updating {spec['Name']} ({replicas} replicas, start-first)")
            for service_id, replicas, before in waits:
                self._wait(service_id, release.version, replicas, before, deadline)
        except (ConvergeFailed, docker.errors.APIError) as exc:
            reason = str(exc) if isinstance(exc, ConvergeFailed) else _explain(exc)
            logs = self._failure_logs([w[0] for w in waits])
            self._undo(created, updated, headers)
            message = [f"Deploy of {self.app.name} failed: {reason}"]
            if logs:
                message += [f"Last {len(logs)} log lines:", *(f"  {line}" for line in logs)]
            message.append("The previous release keeps serving.")
            raise DeployError("\n".join(message)) from None
        for process_type, svc in existing.items():
            if process_type not in formation:
                _remove_service(svc["ID"])

    def _undo(self, created: list[str], updated: dict[str, dict], headers: dict) -> None:
        for service_id in created:
            _remove_service(service_id)
        for svc in updated.values():
            current = _api().inspect_service(svc["ID"])
            if (current.get("UpdateStatus") or {}).get("State", "").startswith("rollback"):
                continue  # Swarm is rolling it back already
            try:
                self._update(current, current["Spec"], headers, rollback=True)
            except docker.errors.APIError:
                pass

    def _failure_logs(self, service_ids: list[str], lines: int = 20) -> list[str]:
        found: list[str] = []
        for service_id in service_ids:
            try:
                data = ServiceLogs(service_id, {}).logs(tail=lines, timestamps=False)
            except docker.errors.APIError:
                continue
            found += data.decode("utf-8", "replace").splitlines()
        return found[-lines:]

    def _route(self, release: Release, formation: dict[str, int], network: str) -> list[str]:
        """Route the app's domains to its web service through the edge (or stop routing)."""
        edge = Edge(self.services)
        if formation.get("web", 0) <= 0 or not self.releases.is_running(self.app):
            router.unpublish(self.services, self.app.name)
            edge.set_route(self.app.name, None)
            return []
        edge.ensure(network)
        port = container_port(release, self.services.config.effective(self.app))
        edge.set_route(self.app.name, port)
        try:
            where = upstream(self.services, self.app.name)
            return router.publish(self.services, self.app.name, [where])
        except DockyardError as exc:
            raise DeployError(
                f"Deploy of {self.app.name} failed: the proxy refused the new routes: {exc.message}"
            ) from None

    def _attach_linked(self, network: str) -> None:
        """Containers of linked services (and attached networks) on this host join the app's
        overlay under the aliases they have on their own network."""
        api = _api()
        for name in extra_networks(self.services, self.app):
            try:
                found = api.inspect_network(name)
            except docker.errors.NotFound:
                continue
            for container_id in found.get("Containers") or {}:
                try:
                    attrs = api.inspect_container(container_id)
                except docker.errors.NotFound:
                    continue
                if attrs["Config"]["Labels"].get(docker_ops.LABEL_APP):
                    continue  # an app's own container, not a service
                nets = attrs["NetworkSettings"]["Networks"]
                if network in nets:
                    continue
                aliases = [a for a in (nets.get(name) or {}).get("Aliases") or []
                           if not container_id.startswith(a)]  # fmt: skip
                try:
                    api.connect_container_to_network(container_id, network, aliases=aliases)
                except docker.errors.APIError as exc:
                    if "already exists" not in str(exc):
                        raise

    # -- changes to a running release -----------------------------------------------------
    def scale(self, release: Release, formation: dict[str, int]) -> None:
        formation = effective_formation(formation, release)
        self.releases.set_formation(self.app, formation)
        if not self.releases.is_running(self.app):
            return
        cluster.require_manager()
        self._converge_replicas(release, formation)

    def _converge_replicas(self, release: Release, formation: dict[str, int]) -> list[str]:
        """Set each service's replicas (creating missing ones from `release`), wait, route."""
        done = []
        existing = self.existing()
        network = ensure_overlay(self.home, self.app.name)
        image = ""
        where = registry.target(self.services)
        headers = self._auth_header(where)
        deadline = time.monotonic() + CONVERGE_TIMEOUT
        waits = []
        for process_type, replicas in sorted(formation.items()):
            svc = existing.get(process_type)
            if svc is None:
                if replicas == 0:
                    continue
                image = image or registry.publish(self.services, self.app.name, release)
                spec = self.service_spec(release, process_type, replicas, image, network)
                service_id = self._create(spec, headers)
                waits.append((service_id, release.version, replicas))
                done.append(f"created {spec['Name']}")
                continue
            mode = svc["Spec"].get("Mode", {}).get("Replicated", {})
            if mode.get("Replicas") == replicas:
                continue
            spec = dict(svc["Spec"])
            spec["Mode"] = {"Replicated": {"Replicas": replicas}}
            self._update(svc, spec, headers)
            version = int(svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Labels"].get(
                docker_ops.LABEL_RELEASE, "0"))  # fmt: skip
            waits.append((svc["ID"], version, replicas))
            done.append(f"scaled {svc['Spec']['Name']} to {replicas}")
        for process_type, svc in existing.items():
            if process_type not in formation:
                _remove_service(svc["ID"])
                done.append(f"removed {svc['Spec']['Name']}")
        for service_id, version, replicas in waits:
            try:
                self._wait_replicas(service_id, version, replicas, deadline)
            except ConvergeFailed as exc:
                raise DeployError(f"Scaling {self.app.name} failed: {exc}") from None
        self._route(release, formation, network)
        return done

    def _wait_replicas(self, service_id: str, version: int, replicas: int, deadline: float) -> None:
        while True:
            tasks = [t for t in self._tasks(service_id) if t.get("DesiredState") == "running"]
            running = [t for t in tasks if t["Status"]["State"] == "running"]
            if len(running) == replicas == len(tasks):
                return
            if time.monotonic() > deadline:
                raise ConvergeFailed(f"{len(running)} of {replicas} tasks running")
            time.sleep(POLL)

    def stop(self) -> int:
        self.releases.set_running(self.app, False)
        count = 0
        headers: dict[str, str] = {}
        for svc in self.existing().values():
            replicas = svc["Spec"].get("Mode", {}).get("Replicated", {}).get("Replicas", 0)
            if replicas:
                spec = dict(svc["Spec"])
                spec["Mode"] = {"Replicated": {"Replicas": 0}}
                self._update(svc, spec, headers)
                count += replicas
        router.unpublish(self.services, self.app.name)
        Edge(self.services).set_route(self.app.name, None)
        return count

    def reconcile(self) -> list[str]:
        release = self.releases.current(self.app)
        if release is None:
            forget_app(self.services, self.app.name)
            return []
        if not cluster.is_manager():
            return []
        formation = effective_formation(self.releases.formation(self.app), release)
        if not self.releases.is_running(self.app):
            formation = {t: 0 for t in formation}
        return self._converge_replicas(release, formation)

    # -- reading --------------------------------------------------------------------------
    def processes(self) -> list[Process]:
        if not cluster.is_manager():
            return []
        hostnames = {n["ID"]: cluster.node_summary(n)["hostname"] for n in _api().nodes()}
        found = []
        for process_type, svc in sorted(self.existing().items()):
            for task in self._tasks(svc["ID"]):
                if task.get("DesiredState") != "running":
                    continue
                state = task["Status"]["State"]
                node = hostnames.get(task.get("NodeID", ""), "-")
                detail = f"{state} (task: {task['ID'][:12]}, node: {node})"
                found.append(Process(process_type, int(task.get("Slot") or 0), state, detail))
        return sorted(found, key=lambda p: (p.process_type, p.instance))

    def log_sources(self, process: str | None = None) -> list[LogSource]:
        if not cluster.is_manager():
            return []
        sources: list[LogSource] = []
        for process_type, svc in sorted(self.existing().items()):
            if process not in (None, process_type) and not (process or "").startswith(
                f"{process_type}."
            ):
                continue
            slots = {t["ID"]: int(t.get("Slot") or 0) for t in self._tasks(svc["ID"])}
            only = process if process and process != process_type else None
            sources.append(ServiceLogs(svc["ID"], slots, process_type, only))
        return sources

    # -- one-offs ---------------------------------------------------------------------------
    def run_one_off(self, release: Release, argv: list[str], io: OneOffIO) -> int:
        """A Swarm job (one task, never restarted) on the app's network and constraints. Its
        output comes from the service's logs once it ends; stdin is not forwarded."""
        cluster.require_manager()
        where = registry.target(self.services)
        image = registry.publish(self.services, self.app.name, release)
        network = ensure_overlay(self.home, self.app.name)
        number = secrets.randbelow(9000) + 1000
        template = self.task_template(
            release, ONE_OFF_PROCESS, image, network, instance=str(number), argv=argv
        )
        spec = {
            "Name": f"{self.app.name}_run_{number}",
            "Labels": _labels(self.home, self.app.name, ONE_OFF_PROCESS),
            "TaskTemplate": template,
            "Mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}},
            "EndpointSpec": {"Mode": "dnsrr"},
        }
        service_id = self._create(spec, self._auth_header(where))
        try:
            task = self._wait_task_end(service_id, io.cancelled)
            if task is None:
                return 130
            data = ServiceLogs(service_id, {}).logs(tail="all", timestamps=False, split=True)
            for stream, payload in data:
                (io.stderr if stream == 2 else io.stdout).write(payload)
            state = task["Status"]["State"]
            code = (task["Status"].get("ContainerStatus") or {}).get("ExitCode")
            if state in ("rejected", "orphaned") or code is None:
                io.stderr.write(f" !     {_task_error(task)}\n".encode())
                return 1
            return int(code)
        finally:
            _remove_service(service_id)

    def _wait_task_end(self, service_id: str, cancelled: threading.Event) -> dict | None:
        deadline = time.monotonic() + ONE_OFF_TIMEOUT
        while time.monotonic() < deadline and not cancelled.is_set():
            tasks = self._tasks(service_id)
            ended = [t for t in tasks if t["Status"]["State"] in TERMINAL]
            if ended:
                return ended[0]
            time.sleep(POLL)
        return None

    def retire(self) -> None:
        forget_app(self.services, self.app.name)


# -- logs -------------------------------------------------------------------------------
class ServiceLogs:
    """A service's logs (every task's) as a log source; each line names its task, which
    gives the dyno (`web.2` for slot 2)."""

    def __init__(
        self, service_id: str, slots: dict[str, int], process_type: str = "",
        only: str | None = None,
    ) -> None:  # fmt: skip
        self.service_id = service_id
        self.slots = slots
        self.process_type = process_type
        self.only = only

    def _response(self, tail: object, follow: bool, timestamps: bool, details: bool) -> Any:
        api = _api()
        params = {
            "stdout": 1, "stderr": 1, "timestamps": int(timestamps), "tail": tail,
            "follow": int(follow), "details": int(details),
        }  # fmt: skip
        resp = api._get(api._url("/services/{0}/logs", self.service_id), params=params, stream=True)
        api._raise_for_status(resp)
        return resp

    def logs(
        self, stdout: bool = True, stderr: bool = True, timestamps: bool = True,
        tail: object = "all", stream: bool = False, follow: bool = False, split: bool = False,
    ) -> Any:  # fmt: skip
        resp = self._response(tail, follow, timestamps, details=bool(self.slots))
        frames = _frames(resp)
        if split:
            return list(frames)
        chunks = (payload for _, payload in frames)
        if stream:
            return CancellableStream(self._filtered(chunks), resp)
        return b"".join(self._filtered(chunks))

    def _filtered(self, chunks: Any) -> Any:
        if self.only is None:
            yield from chunks
            return
        buf = b""
        for chunk in chunks:
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if self.dyno(line)[0] == self.only:
                    yield line + b"\n"

    def dyno(self, raw: bytes) -> tuple[str, bytes]:
        """`TIME com.docker.swarm.node.id=…,…task.id=ID MESSAGE` → (`web.SLOT`, `TIME MESSAGE`)."""
        stamp, _, rest = raw.partition(b" ")
        details, _, message = rest.partition(b" ")
        if not details.startswith(b"com.docker.swarm."):
            return self.process_type or "run", raw
        task = ""
        for item in details.split(b","):
            key, _, value = item.partition(b"=")
            if key == b"com.docker.swarm.task.id":
                task = value.decode()
        slot = self.slots.get(task, 0)
        return f"{self.process_type}.{slot}", stamp + b" " + message


def _frames(resp: Any) -> Any:
    """The engine's multiplexed log stream: (stream id, payload) per frame."""
    raw = resp.raw
    while True:
        header = raw.read(8)
        if len(header) < 8:
            return
        length = int.from_bytes(header[4:8], "big")
        payload = raw.read(length)
        if not payload:
            return
        yield header[0], payload


# -- whole-app and whole-home housekeeping --------------------------------------------------
def _release(task: dict[str, Any]) -> int:
    labels = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
    try:
        return int(labels.get(docker_ops.LABEL_RELEASE, "0"))
    except ValueError:
        return 0


def _task_error(task: dict[str, Any]) -> str:
    status = task.get("Status") or {}
    return status.get("Err") or status.get("Message") or status.get("State") or "unknown"


def _explain(exc: docker.errors.APIError) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def _remove_service(service_id: str) -> None:
    try:
        _api().remove_service(service_id)
    except docker.errors.NotFound:
        pass


def forget_app(services: Services, name: str) -> None:
    """Remove the app's services, its edge route and its overlay network (app destroyed,
    renamed, or moved to docker-local). Nothing to do when this engine manages no swarm."""
    if not cluster.is_manager():
        return
    home = home_of(services)
    found = home_services(home, name)
    for svc in found:
        _remove_service(svc["ID"])
    edge = Edge(services)
    edge.set_route(name, None)
    edge.detach(network_name(name))
    _remove_network(home, network_name(name), timeout=15.0 if found else 0.0)


def _remove_network(home: str, name: str, timeout: float = 15.0) -> None:
    """Tasks leave the network a moment after their service is removed: retry until then."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = _api().inspect_network(name)
            if (found.get("Labels") or {}).get(docker_ops.LABEL_HOME) != home:
                return
            _api().remove_network(found["Id"])
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            if time.monotonic() > deadline:
                return  # the next reconcile tries again
            time.sleep(POLL)


def remove_strays(services: Services, known: set[str]) -> None:
    """Services of apps this home no longer has, and one-offs a crash left behind."""
    if not cluster.is_manager():
        return
    for svc in home_services(home_of(services)):
        labels = svc["Spec"]["Labels"]
        app = labels.get(docker_ops.LABEL_APP, "")
        if app not in known:
            forget_app(services, app)
        elif labels.get(docker_ops.LABEL_PROCESS) == ONE_OFF_PROCESS:
            _remove_service(svc["ID"])
