"""The seam between receiving code and deploying it.

gitrecv calls `deploy(ctx, app, source)` after a pushed pack is stored and before the
deploy branch moves; a `DeployFailed` rejects the push. The deployer installs the real
pipeline with `set_pipeline`; until one is installed the revision is only recorded.
Nothing downstream knows git: it sees a `Source` it can read files from and tar up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, Protocol

import structlog

from dockyard.apps import App
from dockyard.config_vars import GIT_REV
from dockyard.errors import DockyardError

if TYPE_CHECKING:
    from dockyard.context import Context
    from dockyard.services import Services


class DeployFailed(DockyardError):
    """The pipeline refused this revision; its output already told the user why."""


class Source(Protocol):
    """A snapshot of an app's code at one revision."""

    revision: str

    def read_file(self, path: str) -> bytes | None:
        """The file's bytes at this revision, or None when it does not exist."""
        ...

    def write_tar(self, fileobj: BinaryIO) -> None:
        """Write the whole tree as an uncompressed tar archive."""
        ...

    def close(self) -> None:
        """Release what reading the snapshot holds open (a repository's pack files)."""
        ...


Pipeline = Callable[["Context", App, Source], None]


def record_revision(ctx: Context, app: App, source: Source) -> None:
    ctx.services.config.set(app, {GIT_REV: source.revision})
    ctx.out.step(f"Recorded revision {source.revision[:12]} for {app.name}")


_pipeline: Pipeline = record_revision


def set_pipeline(pipeline: Pipeline) -> None:
    global _pipeline
    _pipeline = pipeline


# What other stages do once a deploy has put its release into service (the proxy asks for a
# certificate on an app's first deploy). A hook runs with the push's context, after the
# switch; it cannot fail the deploy: the new release already serves.
PostDeployHook = Callable[["Context", App], None]
_post_deploy: list[PostDeployHook] = []
log = structlog.get_logger("dockyard.pipeline")


def register_post_deploy(hook: PostDeployHook) -> PostDeployHook:
    _post_deploy.append(hook)
    return hook


def deploy(ctx: Context, app: App, source: Source) -> None:
    _pipeline(ctx, app, source)
    for hook in _post_deploy:
        try:
            hook(ctx, app)
        except DockyardError as exc:
            ctx.out.warn(exc.message)
        except Exception:
            log.exception("post-deploy hook failed", hook=hook.__qualname__, app=app.name)
            ctx.out.warn(f"A post-deploy step failed for {app.name}; the server log has details")


# Rebuilding without a push (`ps:rebuild`) needs the deploy branch's tip; whoever keeps the
# repositories registers how to get it, so the deployer never knows git.
SourceProvider = Callable[["Services", App], "Source | None"]
_source_providers: list[SourceProvider] = []


def register_source_provider(provider: SourceProvider) -> SourceProvider:
    _source_providers.append(provider)
    return provider


def current_source(services: Services, app: App) -> Source | None:
    """The code the app's deploy branch names now, or None when nothing was pushed."""
    for provider in _source_providers:
        source = provider(services, app)
        if source is not None:
            return source
    return None


# Other stages change what an app runs with (config vars, a linked database's URL, a
# network) and ask for a zero-downtime redeploy of the current release with the change;
# the deployer installs how, and undoes the change if the switch fails. The caller holds
# the app's lock. Until a deployer is installed only the change is made.
Redeployer = Callable[["Context", App, str, "Callable[[], None] | None"], None]


def _no_redeploy(
    ctx: Context, app: App, description: str, change: Callable[[], None] | None = None
) -> None:
    if change is not None:
        change()


_redeployer: Redeployer = _no_redeploy


def set_redeployer(redeployer: Redeployer) -> None:
    global _redeployer
    _redeployer = redeployer


def redeploy(
    ctx: Context, app: App, description: str, change: Callable[[], None] | None = None
) -> None:
    """Make `change`, then start the current release again with today's config and
    attachments (no build); a failed switch undoes the change."""
    _redeployer(ctx, app, description, change)


# Docker networks an app's containers join besides its own: those of linked services and
# of `network:set … attach-post-deploy`. Each stage that attaches apps registers a provider;
# the deployer asks at every container start. Names returned are engine network names.
NetworkProvider = Callable[["Services", App], "list[str]"]
_network_providers: list[NetworkProvider] = []


def register_network_provider(provider: NetworkProvider) -> NetworkProvider:
    _network_providers.append(provider)
    return provider


def extra_networks(services: Services, app: App) -> list[str]:
    found: list[str] = []
    for provider in _network_providers:
        found += [n for n in provider(services, app) if n not in found]
    return found
