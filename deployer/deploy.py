"""Putting a release into service with zero downtime, and keeping it there.

`ReleaseDeployer.deploy` is the switch: release phase, new containers beside the old ones,
checks, the proxy moves traffic, the old ones retire in the background. Any failure before
the proxy switch removes only the new containers, so the old release keeps serving.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING, NoReturn, Protocol

import docker.errors
import structlog
from docker.models.containers import Container

from deployer import containers as docker_ops
from deployer import cron, storage
from deployer.containers import (
    DEFAULT_PORT,
    ONE_OFF_PROCESS,
    ProcessSpec,
    live_name,
    retiring_name,
    staged_name,
)
from deployer.healthchecks import (
    CheckFailed,
    checks_for,
    container_failed,
    run_check,
    wait_running,
)
from deployer.image_pruning import prune_images_unless_busy
from deployer.networks import app_network_name, ensure_app_network
from deployer.releases import Release, ReleaseStore, effective_formation
from deployer.settings import DeploySettings
from dockyard.apps import App
from dockyard.config_vars import GIT_REV
from dockyard.envfile import env_file, sourcing
from dockyard.errors import DockyardError, UsageError
from dockyard.output import Output
from dockyard.pipeline import extra_networks

if TYPE_CHECKING:
    from dockyard.services import Services

LOG_LINES_ON_FAILURE = 20
log = structlog.get_logger("dockyard.deployer")


class DeployError(DockyardError):
    """A deploy that did not switch; the message carries the reason and the logs."""


class Router(Protocol):
    def publish(self, services: Services, app: str, upstreams: list[str]) -> list[str]: ...
    def unpublish(self, services: Services, app: str) -> None: ...
    def app_urls(self, services: Services, app: str) -> list[str]: ...


class ProxyRouter:
    """The proxy stage's public surface, imported when first used."""

    def publish(self, services: Services, app: str, upstreams: list[str]) -> list[str]:
        import proxy

        return proxy.publish(services, app, upstreams)

    def unpublish(self, services: Services, app: str) -> None:
        import proxy

        proxy.unpublish(services, app)

    def app_urls(self, services: Services, app: str) -> list[str]:
        import proxy

        return proxy.app_urls(services, app)


router: Router = ProxyRouter()


class _NullStream:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def quiet_output() -> Output:
    """Output for work nobody watches (reconcile, cron): said to no one."""
    return Output(_NullStream(), _NullStream())  # type: ignore[arg-type]


def home_of(services: Services) -> str:
    return str(services.settings.data_dir)


def container_port(release: Release, config: dict[str, str]) -> int:
    """`PORT` as set by the user (a port number; anything else is ignored), else the image's
    single EXPOSE, else 5000."""
    port = config.get("PORT", "")
    if re.fullmatch(r"[0-9]{1,5}", port) and 0 < int(port) < 65536:
        return int(port)
    if len(release.ports) == 1:
        return int(release.ports[0])
    return DEFAULT_PORT


class ReleaseDeployer:
    """Starts, checks, switches and retires one app's containers."""

    def __init__(self, services: Services, app: App, out: Output) -> None:
        self.services = services
        self.app = app
        self.out = out
        self.releases = ReleaseStore(services.state)
        self.settings = DeploySettings(services.properties, app)
        self.home = home_of(services)
        self.scratch = services.settings.data_dir / "tmp"

    # -- building blocks ------------------------------------------------------------
    def environment(self, release: Release) -> dict[str, str]:
        env = self.services.config.effective(self.app)
        env["PORT"] = str(container_port(release, env))
        if release.revision:
            env[GIT_REV] = release.revision  # the config var is written when it goes live
        return env

    def networks(self) -> tuple[str, ...]:
        own = ensure_app_network(self.home, self.app.name)
        return (own, *extra_networks(self.services, self.app))

    def spec(self, release: Release, process_type: str, instance: int | str) -> ProcessSpec:
        """What one container of `release` runs with; `instance` is a number for processes,
        a phase name or a one-off's number otherwise."""
        env = self.environment(release)
        env["DYNO"] = f"{process_type}.{instance}"
        return ProcessSpec(
            home=self.home,
            app=self.app.name,
            version=release.version,
            image=release.image,
            process_type=process_type,
            instance=instance,
            command=release.command_for(process_type),
            environment=env,
            port=int(env["PORT"]) if process_type == "web" else None,
            restart_policy=self.settings.restart_policy,
            limits=self.settings.limits,
            networks=self.networks(),
            binds=storage.binds(self.services, self.app),
        )

    def live_containers(self) -> dict[tuple[str, int], Container]:
        """The containers holding live names, by (type, instance)."""
        found = {}
        for c in docker_ops.app_containers(self.home, self.app.name):
            process_type, instance = docker_ops.instance_of(c)
            if c.name == live_name(self.app.name, process_type, instance):
                found[(process_type, instance)] = c
        return found

    def upstream(self, container: Container) -> str | None:
        """`address:PORT` of a web container on the app's own network (the host reaches
        every bridge network; nothing is published on the host)."""
        process_type, _ = docker_ops.instance_of(container)
        if process_type != "web":
            return None
        env = dict(
            item.split("=", 1) for item in container.attrs["Config"].get("Env") or [] if "=" in item
        )
        port = int(env.get("PORT", DEFAULT_PORT))
        try:
            address = docker_ops.address_in(container, app_network_name(self.app.name))
        except DockyardError:
            return None
        return f"{address}:{port}"

    def publish(self, web: list[Container]) -> list[str]:
        upstreams = [u for u in (self.upstream(c) for c in web) if u]
        if not upstreams:
            router.unpublish(self.services, self.app.name)
            return []
        return router.publish(self.services, self.app.name, upstreams)

    def start_checked(
        self, release: Release, wanted: list[tuple[str, int]], name_for: Callable[[str, int], str]
    ) -> list[Container]:
        """Start containers and check them; on any failure remove them all and raise."""
        started: list[tuple[Container, ProcessSpec]] = []
        current: Container | None = None
        try:
            for process_type, instance in wanted:
                spec = self.spec(release, process_type, instance)
                current = None  # a start that fails leaves no container to read logs from
                current = docker_ops.start(spec, name_for(process_type, instance))
                started.append((current, spec))
            for current, spec in started:
                self.check(release, current, spec)
        except CheckFailed as exc:
            self.fail_with_logs([c for c, _ in started], current, str(exc))
        except docker.errors.DockerException as exc:
            self.fail_with_logs([c for c, _ in started], current, _docker_message(exc))
        except BaseException:
            # Anything else (a malformed check declaration, an interrupt): never leave
            # staged containers behind with nobody to retire them.
            docker_ops.remove([c for c, _ in started], timeout=1)
            raise
        return [c for c, _ in started]

    def check(self, release: Release, container: Container, spec: ProcessSpec) -> None:
        dyno = f"{spec.process_type}.{spec.instance}"
        try:
            checks = checks_for(release.app_json, spec.process_type)
        except (TypeError, ValueError) as exc:
            raise CheckFailed(f"app.json healthchecks.{spec.process_type}: {exc}") from None
        if not self.settings.checks_enabled:
            self.out.detail(f"Zero downtime checks are disabled, skipping ({dyno})")
            return
        if not checks:
            wait_running(container)
            return
        self.out.detail(f"Attempting pre-flight checks ({dyno})")
        try:
            host = docker_ops.address_in(container, spec.networks[0])
        except DockyardError:
            # Between two restarts a crashing container has no address: say why it crashed.
            time.sleep(0.5)
            raise CheckFailed(container_failed(container) or "it has no address") from None
        for check in checks:
            run_check(container, check, host, spec.port)
        self.out.detail(f"All checks successful ({dyno})")

    def fail_with_logs(
        self, started: list[Container], failing: Container | None, reason: str
    ) -> NoReturn:
        lines = docker_ops.last_log_lines(failing, LOG_LINES_ON_FAILURE) if failing else []
        name = failing.name if failing else self.app.name
        docker_ops.remove(started, timeout=1)
        message = [f"Deploy of {self.app.name} failed: {name}: {reason}"]
        if lines:
            message.append(f"Last {len(lines)} log lines of {name}:")
            message += [f"  {line}" for line in lines]
        message.append("The previous release keeps serving.")
        raise DeployError("\n".join(message))

    # -- one-off phases (release command, predeploy, postdeploy) --------------------
    def run_phase(
        self, release: Release, phase: str, command: str, keep_as: str | None = None
    ) -> int:
        """Run a phase's command in a one-off container of the release; returns its exit
        status. With `keep_as`, the container's file changes become that image (Dokku
        commits what predeploy writes), keeping the release image's own config."""
        spec = dataclasses.replace(self.spec(release, ONE_OFF_PROCESS, phase), command=command)
        spec.environment["DYNO"] = f"{phase}.1"
        name = f"{self.app.name}.{phase}.{release.version}"
        with ExitStack() as stack:
            if keep_as is None:
                container_id = docker_ops.create(spec, name, restart=False)
            else:
                # The config reaches the command through a mounted file: a committed image
                # must not carry it (see dockyard.envfile).
                bind = stack.enter_context(env_file(self.scratch, spec.environment))
                entry = docker_ops.image_entrypoint(release.image) or []
                argv = [*entry, *(docker_ops.container_command(release.image, command) or [])]
                spec = dataclasses.replace(spec, environment={}, binds=(*spec.binds, bind))
                container_id = docker_ops.create(
                    spec, name, sourcing(argv), restart=False, entrypoint=[""]
                )
            container = docker_ops.client().containers.get(container_id)
            return self._run_to_end(container, release, keep_as)

    def _run_to_end(self, container: Container, release: Release, keep_as: str | None) -> int:
        container.start()
        try:
            for chunk in _lines(container.logs(stream=True, follow=True)):
                self.out.detail(chunk)
            status = int(container.wait().get("StatusCode", 1))
            if status == 0 and keep_as is not None:
                docker_ops.commit(container, release.image, keep_as)
        finally:
            docker_ops.remove([container], timeout=1)
        return status

    def run_before_switch(self, release: Release, phase: str, command: str) -> None:
        self.out.step(f"Running {phase}: {command}")
        keep_as = f"{release.image.rpartition(':')[0]}:{release.version}-{phase}"
        if phase == "release":
            keep_as = None  # Heroku's release phase changes nothing in the image
        status = self.run_phase(release, phase, command, keep_as)
        if status != 0:
            raise DeployError(
                f"{phase} command `{command}` failed with exit status {status}; "
                "the deploy was aborted and the previous release keeps serving."
            )
        if keep_as is not None:
            release.image = keep_as
            self.releases.set_image(self.app, release)

    # -- the switch ----------------------------------------------------------------
    def deploy(self, release: Release, announce: bool = True) -> list[str]:
        """Release phase, new containers, checks, switch, retire. Returns the app's URLs."""
        formation = effective_formation(release.formation, release)
        release.formation = formation
        try:
            cron.entries(release.app_json)  # refused before anything starts, not at 3 a.m.
        except UsageError as exc:
            raise DeployError(f"Deploy of {self.app.name} failed: {exc.message}") from None
        if announce:
            self.out.step(f"Releasing {self.app.name}...")
        if "release" in release.procfile:
            self.run_before_switch(release, "release", release.procfile["release"])
        predeploy = _script(release.app_json, "predeploy")
        if predeploy:
            # From the build's own image each time: predeploy's changes never pile up.
            release.image = release.built_image or release.image
            self.run_before_switch(release, "predeploy", predeploy)
        self.out.heading("Processing deployment checks")
        self.out.step(f"Deploying {self.app.name}...")
        wanted = [(t, n) for t, q in sorted(formation.items()) for n in range(1, q + 1)]
        old = docker_ops.app_containers(self.home, self.app.name)
        started = time.monotonic()
        new = self.start_checked(
            release, wanted, lambda t, n: staged_name(self.app.name, t, n, release.version)
        )
        checked = time.monotonic()
        try:
            urls = self.publish([c for c in new if docker_ops.instance_of(c)[0] == "web"])
        except DockyardError as exc:
            docker_ops.remove(new, timeout=1)
            raise DeployError(
                f"Deploy of {self.app.name} failed: the proxy refused the new routes: "
                f"{exc.message}\nThe previous release keeps serving."
            ) from None
        with self.services.state.transaction():
            self.releases.make_current(self.app, release)
            self.releases.set_formation(self.app, formation)
            if release.revision:
                self.services.config.set(self.app, {GIT_REV: release.revision})
        self.swap_names(old, new)
        log.info(
            "switched", app=self.app.name, release=release.name,
            started_and_checked=round(checked - started, 3),
            published=round(time.monotonic() - checked, 3),
        )  # fmt: skip
        self.out.heading("Application deployed:")
        for url in urls:
            self.out.detail(url)
        postdeploy = _script(release.app_json, "postdeploy")
        if postdeploy:
            # Traffic has moved: a failure here cannot un-deploy, and must not claim to.
            self.out.step(f"Running postdeploy: {postdeploy}")
            status = self.run_phase(release, "postdeploy", postdeploy)
            if status != 0:
                self.out.warn(
                    f"postdeploy command `{postdeploy}` failed with exit status {status}; "
                    f"{release.name} is deployed and serving (postdeploy runs after the switch)"
                )
        return urls

    def swap_names(self, old: list[Container], new: list[Container]) -> None:
        """Old containers step aside under retiring names, the new take the live names."""
        new_ids = {c.id for c in new}
        leaving = [c for c in old if c.id not in new_ids and not docker_ops.is_retiring(c)]
        for c in leaving:
            process_type, instance = docker_ops.instance_of(c)
            try:
                c.rename(retiring_name(self.app.name, process_type, instance, _short(c)))
            except docker.errors.NotFound:
                pass
        for c in new:
            process_type, instance = docker_ops.instance_of(c)
            c.rename(live_name(self.app.name, process_type, instance))
        docker_ops.retirer.schedule(
            leaving,
            self.settings.wait_to_retire,
            then=lambda: prune_images_unless_busy(self.services, self.app),
        )

    # -- changes to a running release -------------------------------------------------
    def scale(self, release: Release, formation: dict[str, int]) -> None:
        """Start the instances that are missing, stop the ones beyond the new quantity;
        the existing ones keep running."""
        formation = effective_formation(formation, release)
        live = self.live_containers()
        missing = [
            (t, n)
            for t, q in sorted(formation.items())
            for n in range(1, q + 1)
            if (t, n) not in live
        ]
        surplus = [c for (t, n), c in live.items() if n > formation.get(t, 0)]
        self.releases.set_formation(self.app, formation)
        if not self.releases.is_running(self.app):
            return
        started = self.start_checked(release, missing, lambda t, n: live_name(self.app.name, t, n))
        keep = [c for c in live.values() if c not in surplus] + started
        try:
            self.publish([c for c in keep if docker_ops.instance_of(c)[0] == "web"])
        except DockyardError:
            docker_ops.remove(started, timeout=1)
            raise
        for c in surplus:
            process_type, instance = docker_ops.instance_of(c)
            c.rename(retiring_name(self.app.name, process_type, instance, _short(c)))
        docker_ops.retirer.schedule(surplus, self.settings.wait_to_retire)

    def stop(self) -> int:
        """Stop the live containers. The app's names stay routed, to no container (502 at
        once, as Dokku's nginx does), not to addresses the stopped ones gave up."""
        self.releases.set_running(self.app, False)
        live = list(self.live_containers().values())
        if any(docker_ops.instance_of(c)[0] == "web" for c in live):
            router.publish(self.services, self.app.name, [])
        for c in live:
            c.stop(timeout=docker_ops.STOP_TIMEOUT)
        return len(live)

    def reconcile(self) -> list[str]:
        """Make the containers match the current release and formation: start stopped
        ones, recreate missing ones, remove strays; then re-publish routes. Returns what
        was done, for the log."""
        done: list[str] = []
        release = self.releases.current(self.app)
        all_containers = docker_ops.app_containers(self.home, self.app.name)
        if release is None:
            docker_ops.remove(all_containers, timeout=2)
            return [f"removed {c.name}" for c in all_containers]
        formation = effective_formation(self.releases.formation(self.app), release)
        live = {}
        strays = []
        for c in all_containers:
            process_type, instance = docker_ops.instance_of(c)
            if (
                docker_ops.release_of(c) == release.version
                and c.name == live_name(self.app.name, process_type, instance)
                and instance <= formation.get(process_type, 0)
            ):
                live[(process_type, instance)] = c
            elif not (docker_ops.is_retiring(c) and c.id in docker_ops.retirer.pending_ids()):
                strays.append(c)
        docker_ops.remove(strays, timeout=2)
        done += [f"removed {c.name}" for c in strays]
        if not self.releases.is_running(self.app):
            return done
        for c in live.values():
            if c.status != "running":
                c.start()
                done.append(f"started {c.name}")
        for t, q in sorted(formation.items()):
            for n in range(1, q + 1):
                if (t, n) not in live:
                    live[(t, n)] = docker_ops.start(
                        self.spec(release, t, n), live_name(self.app.name, t, n)
                    )
                    done.append(f"created {live[(t, n)].name}")
        web = [c for (t, _), c in live.items() if t == "web"]
        if web:
            self._wait_ports(web)
            self.publish(web)
        return done

    def _wait_ports(self, web: list[Container], timeout: float = 5.0) -> None:
        """A just-started container gets its network address a moment after `start`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.upstream(c) for c in web):
                return
            time.sleep(0.05)


def _short(container: Container) -> str:
    return container.id[:12]


def _script(app_json: dict, phase: str) -> str | None:
    scripts = ((app_json.get("scripts") or {}).get("dokku") or {}) if app_json else {}
    value = scripts.get(phase)
    return value if isinstance(value, str) and value.strip() else None


def _docker_message(exc: docker.errors.DockerException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


def _lines(stream: Iterable[bytes]) -> Iterator[str]:
    """Split a docker log byte stream into text lines as they arrive."""
    buf = b""
    for chunk in stream:
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode("utf-8", "replace").rstrip("\r")
    if buf:
        yield buf.decode("utf-8", "replace")
