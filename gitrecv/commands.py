"""The git commands: `git-receive-pack`/`git-upload-pack` (what `git push`/`git clone` run
over SSH), `git:set`, `git:report`, `repo:gc`, and the repo's part in app rename/destroy."""

from __future__ import annotations

import dataclasses
import io
import re
import time
from collections.abc import Callable
from typing import BinaryIO

import structlog
from dulwich.errors import GitProtocolError, HangupException
from dulwich.gc import garbage_collect
from dulwich.protocol import Protocol
from dulwich.refs import check_ref_format
from dulwich.repo import Repo

from dockyard import apps as app_hooks
from dockyard import pipeline
from dockyard.apps import App
from dockyard.bridge import BlockingReader
from dockyard.errors import Conflict, DockyardError, NotFound, UsageError
from dockyard.output import Output
from dockyard.registry import CommandParser, Context, Services, command, split_global
from gitrecv.fetchspec import GIT_PROTOCOL_ENV, protocol_version
from gitrecv.receive import DeployingReceivePackHandler
from gitrecv.repos import RepoStore, app_name_from_repo_path, remove_leftovers
from gitrecv.source import GitSource
from gitrecv.upload import UploadPack

log = structlog.get_logger("dockyard.gitrecv")

DEPLOY_BRANCH = "git.deploy-branch"
MAX_PUSH_SIZE = "git.max-push-size"
DEPLOYED_REV = "git.deployed-rev"
DEPLOYED_AT = "git.deployed-at"
AUTOCREATION_DISABLED = "apps.disable-autocreation"
DEFAULT_MAX_PUSH_SIZE = 1024**3
RECEIVE_IDLE_TIMEOUT = 300.0  # seconds a push may send nothing while it holds the app lock

# `git:set` keys: which levels each may be set at.
GIT_PROPERTIES = {
    "deploy-branch": ("app", "global"),
    "max-push-size": ("global",),
    "gc-interval": ("global",),  # seconds between scheduled repacks of each repo
}

SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """`1048576`, `512K`, `100M`, `1G`, `2GiB` → bytes (binary multiples, as git does)."""
    match = SIZE_RE.match(text)
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"Invalid size {text!r}: use a positive number with K, M or G")
    return int(match.group(1)) * SIZE_UNITS[match.group(2).upper()]


def format_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size >= SIZE_UNITS[unit] and size % SIZE_UNITS[unit] == 0:
            return f"{size // SIZE_UNITS[unit]}{unit}"
    return str(size)


def repo_store(services: Services) -> RepoStore:
    return RepoStore(services.settings.repos_dir)


def max_push_size(services: Services) -> int:
    value = services.properties.get(None, MAX_PUSH_SIZE)
    return parse_size(value) if value else DEFAULT_MAX_PUSH_SIZE


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
        return self.ctx.services.properties.get(self.app, DEPLOY_BRANCH)

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
        pipeline.deploy(pipeline_ctx, self.app, GitSource(self.repo, revision))
        if properties.get(self.app, DEPLOY_BRANCH) is None:
            properties.set(self.app, DEPLOY_BRANCH, branch)
        properties.set(self.app, DEPLOYED_REV, revision)
        properties.set(self.app, DEPLOYED_AT, str(time.time()))
        self.ctx.event("git:deploy", self.app.name, f"{branch} {revision}")


def _app_for_push(ctx: Context, name: str) -> App:
    services = ctx.services
    if services.apps.find(name) is None:
        if services.properties.get(None, AUTOCREATION_DISABLED) == "true":
            raise NotFound(
                f"App {name} does not exist, and pushing does not create apps here "
                f"(apps:set --global disable-autocreation). Create it first: apps:create {name}"
            )
        try:
            services.apps.create(name, owner=ctx.identity.name)
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
    limit = max_push_size(services)
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
                repo, proto, recv, AppDeployTarget(ctx, app, repo), limit, ctx.stderr
            )
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


@command(
    "git:set",
    "Set a git property (deploy-branch; global: deploy-branch, max-push-size, gc-interval)",
    "(--global | APP) KEY [VALUE]",
)
def git_set(ctx: Context, argv: list[str]) -> None:
    is_global, argv = split_global(argv)
    parser = CommandParser("git:set")
    if not is_global:
        parser.add_argument("app", metavar="APP")
    parser.add_argument("key", choices=sorted(GIT_PROPERTIES))
    parser.add_argument("value", nargs="?", default="")
    args = parser.parse_args(argv)
    app = ctx.target(getattr(args, "app", None), is_global, "change global git settings")
    if ("global" if is_global else "app") not in GIT_PROPERTIES[args.key]:
        raise UsageError(f"{args.key} can only be set with --global")
    value = args.value
    if (
        value
        and args.key == "deploy-branch"
        and not check_ref_format(b"refs/heads/" + value.encode())
    ):
        raise UsageError(f"Invalid branch name {value!r}")
    if value and args.key == "max-push-size":
        value = format_size(parse_size(value))
    if value and args.key == "gc-interval" and not (value.isdigit() and int(value) > 0):
        raise UsageError(f"Invalid gc-interval {value!r}: a whole number of seconds")
    ctx.services.properties.set(app, f"git.{args.key}", value)
    ctx.out.step(
        f"{'Setting' if value else 'Unsetting'} {args.key}{f' to {value}' if value else ''}"
    )
    ctx.event("git:set", app.name if app else None, f"{args.key}={value}")


@command(
    "git:report", "Show an app's deploy branch and last deployed revision", "APP [--format json]"
)
def git_report(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("git:report")
    parser.add_argument("app")
    parser.add_format()
    args = parser.parse_args(argv)
    app = ctx.app(args.app)
    properties = ctx.services.properties
    deployed_at = properties.get_local(app, DEPLOYED_AT)
    rows = [
        ("Git deploy branch", properties.get(app, DEPLOY_BRANCH) or ""),
        ("Git global deploy branch", properties.get_local(None, DEPLOY_BRANCH) or ""),
        ("Git last deployed rev", properties.get_local(app, DEPLOYED_REV) or ""),
        (
            "Git last deployed at",
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(deployed_at)))
            if deployed_at
            else "",
        ),
        ("Git max push size", format_size(max_push_size(ctx.services))),
    ]
    ctx.out.report(f"{app.name} git information", rows, args.format)


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
    branch = services.properties.get(app, DEPLOY_BRANCH)
    repo = repo_store(services).find(app) if branch else None
    if repo is None or branch is None:
        return None
    try:
        revision = repo.refs[b"refs/heads/" + branch.encode()]
    except KeyError:
        repo.close()
        return None
    return GitSource(repo, revision.decode("ascii"))


@app_hooks.on_rename
def _move_repo(services: Services, old: str, new: str) -> None:
    repo_store(services).move(old, new)


@app_hooks.on_destroy
def _remove_repo(services: Services, name: str) -> None:
    repo_store(services).remove(name)
