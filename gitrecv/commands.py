"""The git commands: `git-receive-pack`/`git-upload-pack` (what `git push`/`git clone` run
over SSH), `git:set`/`git:report` (derived from gitrecv.properties), `repo:gc`, and the
repo's part in app rename/destroy."""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable
from typing import BinaryIO

import structlog
from dulwich.errors import GitProtocolError, HangupException
from dulwich.gc import garbage_collect
from dulwich.protocol import Protocol
from dulwich.repo import Repo

from dockyard import pipeline
from dockyard import services as app_hooks
from dockyard.apps import App
from dockyard.bridge import BlockingReader
from dockyard.commands.apps import DISABLE_AUTOCREATION, create_owned_app
from dockyard.config_vars import GIT_REV
from dockyard.context import Context
from dockyard.errors import Conflict, DockyardError, NotFound
from dockyard.output import Output
from dockyard.property_commands import ReportRow, register_property_commands
from dockyard.registry import CommandParser, command
from dockyard.services import Services
from gitrecv.fetchspec import GIT_PROTOCOL_ENV, protocol_version
from gitrecv.properties import (
    DEPLOY_BRANCH,
    GIT,
    MAX_OBJECT_SIZE,
    MAX_PUSH_SIZE,
    SUBMODULE_PRIVATE_HOSTS,
)
from gitrecv.receive import DeployingReceivePackHandler
from gitrecv.repos import RepoStore, app_name_from_repo_path, remove_leftovers
from gitrecv.source import GitSource, SubmoduleFetcherFactory
from gitrecv.submodules import SubmoduleFetcher
from gitrecv.upload import UploadPack

log = structlog.get_logger("dockyard.gitrecv")

DEPLOYED_AT = "git.deployed-at"  # recorded by the push, not a setting
RECEIVE_IDLE_TIMEOUT = 300.0  # seconds a push may send nothing while it holds the app lock


def repo_store(services: Services) -> RepoStore:
    return RepoStore(services.settings.repos_dir)


def _repo_argument(name: str, argv: list[str]) -> str:
    parser = CommandParser(name)
    parser.add_argument("path")
    return app_name_from_repo_path(parser.parse_args(argv).path)


class AppDeployTarget:
    """A push's view of its app: the deploy branch setting and the deploy pipeline."""

    def __init__(self, ctx: Context, app: App, repo: Repo) -> None:
        self.ctx = ctx
        self.app = app
        self.repo = repo

    def deploy_branch(self) -> str | None:
        return DEPLOY_BRANCH.raw(self.ctx.services.properties, self.app) or None

    def deploy(self, branch: str, revision: str, progress: BinaryIO) -> None:
        properties = self.ctx.services.properties
        # The pipeline writes to its context as any command does; here that is the client's
        # side-band, line by line, and it must not read the push's stdin.
        pipeline_ctx = dataclasses.replace(
            self.ctx,
            stdin=io.BytesIO(),
            stdout=progress,
            stderr=progress,
            out=Output(progress, progress, quiet=self.ctx.out.quiet),
        )
        source = GitSource(self.repo, revision, submodules_for(self.ctx.services))
        pipeline.deploy(pipeline_ctx, self.app, source)
        if not DEPLOY_BRANCH.raw(properties, self.app):
            DEPLOY_BRANCH.set(properties, self.app, branch)
        properties.set(self.app, DEPLOYED_AT, str(time.time()))
        self.ctx.event("git:deploy", self.app.name, f"{branch} {revision}")


def _app_for_push(ctx: Context, name: str) -> App:
    services = ctx.services
    if services.apps.find(name) is None:
        if DISABLE_AUTOCREATION.get(services.properties, None):
            raise NotFound(
                f"App {name} does not exist, and pushing does not create apps here "
                f"(apps:set --global disable-autocreation). Create it first: apps:create {name}"
            )
        try:
            create_owned_app(ctx, name)
            ctx.event("apps:create", name, "created by git push")
        except Conflict:
            pass  # a concurrent push created it first; ctx.app checks who owns it
    return ctx.app(name)


def _speak_git(ctx: Context, session: Callable[[], None]) -> int | None:
    """Run a protocol session; a client that hangs up ends it quietly."""
    try:
        session()
    except HangupException:
        # The client closed the session itself (e.g. git refusing `-o` after reading the
        # advertisement) and has already told its user why; nobody is left to read more.
        return 255
    except GitProtocolError as exc:
        if ctx.cancelled.is_set() or getattr(ctx.stdout, "closed", False):
            return 255
        raise DockyardError(f"git protocol error: {exc}") from None
    return None


@command("git-receive-pack", "Receive a push (run by `git push`)", "'APP'", hidden=True)
def receive_pack(ctx: Context, argv: list[str]) -> int | None:
    app = _app_for_push(ctx, _repo_argument("git-receive-pack", argv))
    services = ctx.services
    limit = MAX_PUSH_SIZE.get(services.properties, None)
    # Held from before the ref advertisement to the end: a concurrent push to this app
    # waits, then sees the new tips and is refused as non-fast-forward by its own client.
    with services.hold(app) as app:
        repo = repo_store(services).open_or_create(app)
        try:
            remove_leftovers(repo)
            if isinstance(ctx.stdin, BlockingReader):
                # The app's lock is held while we read: a client that stalls must not keep
                # every other push to this app waiting for ever.
                ctx.stdin.idle_timeout = RECEIVE_IDLE_TIMEOUT
            proto = Protocol(ctx.stdin.read, ctx.stdout.write)
            recv = getattr(ctx.stdin, "recv", None) or ctx.stdin.read1
            handler = DeployingReceivePackHandler(
                repo, proto, recv, AppDeployTarget(ctx, app, repo), limit, ctx.stderr,
                MAX_OBJECT_SIZE.get(services.properties, None),
            )  # fmt: skip
            status = _speak_git(ctx, handler.handle)
            if handler.moved:
                pushed = " ".join(
                    f"{u.short_name}:{'deleted' if u.is_delete else u.new.decode()[:12]}"
                    for u in handler.moved
                )
                ctx.event("git:push", app.name, pushed)
            return status
        finally:
            repo.close()


@command("git-upload-pack", "Send a clone or fetch (run by `git clone`)", "'APP'", hidden=True)
def upload_pack(ctx: Context, argv: list[str]) -> int | None:
    app = ctx.app(_repo_argument("git-upload-pack", argv))
    services = ctx.services
    store = repo_store(services)
    # Clones never wait for a push's deploy: the lock is only needed to put a repo in place.
    repo = store.find(app)
    if repo is None:
        with services.hold(app) as app:
            repo = store.open_or_create(app)
    try:
        version = protocol_version(ctx.client_env.get(GIT_PROTOCOL_ENV))
        session = UploadPack(repo, ctx.stdin.read, ctx.stdout.write, version)
        return _speak_git(ctx, session.serve)
    finally:
        repo.close()


def _report_rows(ctx: Context, app: App, rows: list[ReportRow]) -> list[ReportRow]:
    deployed_at = ctx.services.properties.get_local(app, DEPLOYED_AT)
    return [
        *rows,
        ("Git last deployed rev", ctx.services.config.local(app).get(GIT_REV, "")),
        ("Git last deployed at", _iso(float(deployed_at)) if deployed_at else ""),
    ]


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


register_property_commands(GIT, report_rows=_report_rows)


@command("repo:gc", "Repack an app's git repository", "APP")
def repo_gc(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("repo:gc")
    parser.add_argument("app")
    app = ctx.app(parser.parse_args(argv).app)
    services = ctx.services
    with services.hold(app) as app:
        repo = repo_store(services).find(app)
        if repo is None:
            raise NotFound(f"App {app.name} has no git repository yet; push to it first")
        try:
            remove_leftovers(repo)
            ctx.out.step(f"Repacking {app.name}")
            stats = garbage_collect(repo)
        finally:
            repo.close()
    ctx.out.detail(
        f"{stats.packs_before} pack(s) and {stats.loose_objects_before} loose object(s) "
        f"became {stats.packs_after} pack(s); {len(stats.pruned_objects)} unreachable pruned"
    )
    ctx.event("repo:gc", app.name)


@pipeline.register_source_provider
def deploy_branch_source(services: Services, app: App) -> GitSource | None:
    """The deploy branch's tip, for a rebuild without a push (`ps:rebuild`).

    Called by the deployer with the app's lock already held, so it only reads."""
    branch = DEPLOY_BRANCH.raw(services.properties, app)
    repo = repo_store(services).find(app) if branch else None
    if repo is None or not branch:
        return None
    try:
        revision = repo.refs[b"refs/heads/" + branch.encode()]
    except KeyError:
        repo.close()
        return None
    return GitSource(repo, revision.decode("ascii"), submodules_for(services))


def submodules_for(services: Services) -> SubmoduleFetcherFactory:
    hosts = SUBMODULE_PRIVATE_HOSTS.get(services.properties, None)
    return lambda repo, gitmodules: SubmoduleFetcher(repo, gitmodules, hosts)


@app_hooks.on_rename
def _move_repo(services: Services, old: str, new: str) -> None:
    repo_store(services).move(old, new)


@app_hooks.on_destroy
def _remove_repo(services: Services, name: str) -> None:
    repo_store(services).remove(name)
