"""`docker-local`: the app's processes are containers on this host's engine.

This is `deployer.deploy.ReleaseDeployer`'s behaviour, unchanged, behind the scheduler
interface: new containers start beside the old ones, are checked, the proxy switches to
their published 127.0.0.1 ports and the old ones retire after `wait-to-retire`. One-offs are
containers attached to the client (`deployer.oneoff`).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from deployer import containers as docker_ops
from deployer.applogs import ContainerLogs, dyno_of
from deployer.deploy import ReleaseDeployer
from deployer.oneoff import OneOff
from deployer.releases import Release
from deployer.schedulers import LogSource, OneOffIO, Process
from deployer.schedulers.settings import LOCAL
from dockyard.apps import App
from dockyard.output import Output

if TYPE_CHECKING:
    from dockyard.services import Services


class LocalScheduler:
    name = LOCAL

    def __init__(self, services: Services, app: App, out: Output) -> None:
        self.app = app
        self.deployer = ReleaseDeployer(services, app, out)

    def deploy(self, release: Release, announce: bool = True) -> list[str]:
        return self.deployer.deploy(release, announce=announce)

    def scale(self, release: Release, formation: dict[str, int]) -> None:
        self.deployer.scale(release, formation)

    def stop(self) -> int:
        return self.deployer.stop()

    def reconcile(self) -> list[str]:
        return self.deployer.reconcile()

    def processes(self) -> list[Process]:
        return [
            Process(t, n, c.status, f"{c.status} (CID: {c.id[:12]})")
            for (t, n), c in sorted(self.deployer.live_containers().items())
        ]

    def log_sources(self, process: str | None = None) -> list[LogSource]:
        live = sorted(self.deployer.live_containers().items())
        return [ContainerLogs(c) for (t, _), c in live if process in (None, t, dyno_of(c))]

    def run_one_off(self, release: Release, argv: list[str], io: OneOffIO) -> int:
        number = _free_run_number(self.app)
        spec = self.deployer.spec(release, docker_ops.ONE_OFF_PROCESS, number)
        one_off = OneOff(spec, f"{self.app.name}.run.{number}", argv, tty=io.tty)
        return one_off.run(io.stdin, io.stdout, io.stderr, io.cancelled)

    def retire(self) -> None:
        """The app now runs elsewhere: its containers here leave like retiring ones."""
        live = list(self.deployer.live_containers().values())
        for c in live:
            process_type, instance = docker_ops.instance_of(c)
            c.rename(docker_ops.retiring_name(self.app.name, process_type, instance, c.id[:12]))
        docker_ops.retirer.schedule(live, self.deployer.settings.wait_to_retire)


def _free_run_number(app: App) -> int:
    """A `run.N` name no other one-off of this app holds (they may run side by side)."""
    taken = {c.name for c in docker_ops.list_containers({"name": f"{app.name}.run."})}
    while True:
        number = secrets.randbelow(9000) + 1000
        if f"{app.name}.run.{number}" not in taken:
            return number
