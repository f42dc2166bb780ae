"""Where an app's processes run: one interface, one implementation per scheduler.

`scheduler_for(services, app, out)` picks the implementation from the app's
`scheduler selected` property (`deployer.schedulers.settings`): `docker-local`
(`local.LocalScheduler`, containers on this host's engine, the ReleaseDeployer's behaviour)
or `swarm` (`swarm.SwarmScheduler`, one Swarm service per process type). Everything that
puts a release into service, scales, stops, restarts, reconciles, reports processes, reads
logs or runs a one-off goes through this interface; nothing above the deployer knows which
scheduler runs an app.

Invariants:
- A scheduler touches only what carries this Dockyard's home label (containers, services,
  networks), so several Dockyards can share one engine or one swarm.
- After a deploy switched, what another scheduler still runs for the app is retired
  (`deploy` below), so an app moved between schedulers never runs twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from deployer.releases import Release
from deployer.schedulers.settings import LOCAL, SELECTED, SWARM
from dockyard.apps import App
from dockyard.output import Output

if TYPE_CHECKING:
    import threading

    from dockyard.services import Services


@dataclass(frozen=True)
class Process:
    """One running (or wanted) instance of a process type, for `ps:report`."""

    process_type: str
    instance: int
    state: str  # the engine's word: running, exited, starting, pending…
    detail: str  # what the report shows after the state: the container or task id, the node


class LogSource(Protocol):
    """Something with Docker-style logs: `logs(stdout=, stderr=, timestamps=, tail=,
    stream=, follow=)` returning bytes, or with `stream` a closable iterator of chunks."""

    def logs(self, **kwargs: Any) -> Any: ...

    def dyno(self, raw: bytes) -> tuple[str, bytes]:
        """The dyno (`web.1`) a raw log line came from, and the line without any prefix the
        engine added to say so."""
        ...


@dataclass
class OneOffIO:
    """The client's side of a one-off: its streams, whether it asked for a terminal, and
    the event set when it goes away."""

    stdin: BinaryIO
    stdout: BinaryIO
    stderr: BinaryIO
    tty: bool
    cancelled: threading.Event


class Scheduler(Protocol):
    name: str

    def deploy(self, release: Release, announce: bool = True) -> list[str]:
        """Release phase, new processes beside the old, checks, switch, retire the old;
        returns the app's URLs. A failure leaves the previous release serving."""
        ...

    def scale(self, release: Release, formation: dict[str, int]) -> None:
        """Run this many of each type; instances that stay keep running."""
        ...

    def stop(self) -> int:
        """Stop every process (the app stays deployed); returns how many were stopped."""
        ...

    def reconcile(self) -> list[str]:
        """Make what runs match the current release and formation; returns what was done."""
        ...

    def processes(self) -> list[Process]: ...

    def log_sources(self, process: str | None = None) -> list[LogSource]:
        """Where the live processes' logs are read, optionally of one type or dyno."""
        ...

    def run_one_off(self, release: Release, argv: list[str], io: OneOffIO) -> int:
        """Run `argv` once in a new process of `release`; returns its exit status."""
        ...

    def retire(self) -> None:
        """Remove whatever this scheduler runs for the app (it moved, or is destroyed)."""
        ...


def selected(services: Services, app: App) -> str:
    return SELECTED.get(services.properties, app)


def scheduler_named(name: str, services: Services, app: App, out: Output) -> Scheduler:
    if name == SWARM:
        from deployer.schedulers.swarm import SwarmScheduler

        return SwarmScheduler(services, app, out)
    from deployer.schedulers.local import LocalScheduler

    return LocalScheduler(services, app, out)


def scheduler_for(services: Services, app: App, out: Output) -> Scheduler:
    return scheduler_named(selected(services, app), services, app, out)


def deploy(
    services: Services, app: App, out: Output, release: Release, announce: bool = True
) -> list[str]:
    """Put `release` into service with the app's scheduler, then retire what the other
    scheduler may still run for it (the app was moved between them)."""
    chosen = selected(services, app)
    urls = scheduler_named(chosen, services, app, out).deploy(release, announce=announce)
    for other in (LOCAL, SWARM):
        if other != chosen:
            scheduler_named(other, services, app, out).retire()
    return urls
