"""What the deployer's command groups share: the engine's errors as clear refusals, and
the current release."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import docker.errors

from deployer.releases import Release, ReleaseStore
from dockyard.access import Access
from dockyard.apps import App
from dockyard.context import Context
from dockyard.errors import DockyardError
from dockyard.registry import command as register_command

Handler = Callable[[Context, list[str]], "int | None"]


@contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """The engine stopped, a name clash, a bad limit: a refusal that says so, not an
    internal error."""
    try:
        yield
    except docker.errors.DockerException as exc:
        detail = getattr(exc, "explanation", None) or str(exc)
        raise DockyardError(f"{what} failed: Docker engine: {detail}") from None


def command(
    name: str, summary: str, usage: str = "", access: Access = Access.APP
) -> Callable[[Handler], Handler]:
    """`dockyard.registry.command`, with the engine's errors shown as a clear refusal."""

    def register(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def guarded(ctx: Context, argv: list[str]) -> int | None:
            with engine_errors(name):
                return handler(ctx, argv)

        return register_command(name, summary, usage, access=access)(guarded)

    return register


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def releases(ctx: Context) -> ReleaseStore:
    return ReleaseStore(ctx.services.state)


def current_or_fail(ctx: Context, app: App) -> Release:
    release = releases(ctx).current(app)
    if release is None:
        raise DockyardError(f"App {app.name} has not been deployed")
    return release
