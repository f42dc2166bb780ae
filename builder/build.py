"""Source → image: plan, context, a streamed `docker build`, a recorded result.

Build output reaches the pusher line by line as the daemon emits it (as Dokku's indented
detail lines) and is appended to `builds/APP/<id>.log` as it arrives, so `builds:output`
shows a failed build as far as it got.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TextIO

import docker
import docker.errors
import requests
import structlog

from builder import engine, runtimes
from builder.context import make_context
from builder.detect import DOCKERFILE, BuildPlan, make_tree, plan_build
from builder.errors import BuildFailed
from builder.isolation import check_image_sources, image_references
from builder.languages.base import Language, Tree
from builder.manifest import APP_JSON, PROCFILE, parse_app_json, parse_procfile
from builder.properties import BUILD_ARG, configured_base
from builder.runtimes import LocalImage, Runtime
from builder.store import BuildStore, Status, build_log_path
from dockyard import images
from dockyard.apps import App
from dockyard.errors import DockyardError
from dockyard.output import Output
from dockyard.pipeline import Source
from dockyard.services import Services

log = structlog.get_logger("dockyard.builder")

IMAGE_NAMESPACE = "dockyard"
LATEST = "latest"
_SUCCESSFULLY_BUILT_RE = re.compile(r"^Successfully built ([0-9a-f]+)\s*$")
# The legacy builder colours a step's stderr; the escapes would litter logs and git output.
_ANSI_SGR_RE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class BuiltImage:
    tag: str  # "dockyard/APP:<build id>" (also tagged dockyard/APP:latest)
    image_id: str
    exposed_ports: list[int]  # from the image's EXPOSE (config ExposedPorts)
    procfile: dict[str, str]  # process type -> command, {} if no Procfile
    app_json: dict  # parsed app.json, {} if none
    build_id: str


def image_repo(app: str) -> str:
    return f"{IMAGE_NAMESPACE}/{app}"


class BuildOutput:
    """Splits the daemon's stream chunks into lines for the client and the log file."""

    def __init__(self, out: Output, log_file: TextIO) -> None:
        self.out = out
        self.log_file = log_file
        self._partial = ""

    def feed(self, text: str) -> None:
        text = self._partial + _ANSI_SGR_RE.sub("", text)
        *lines, self._partial = text.split("\n")
        for line in lines:
            self.line(line)

    def line(self, line: str) -> None:
        line = line.rstrip("\r")
        self.log_file.write(line + "\n")
        self.log_file.flush()
        self.out.detail(line)

    def note(self, line: str) -> None:
        """A line for the log only: the caller reports it to the client its own way."""
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def close(self) -> None:
        if self._partial:
            self.line(self._partial)
            self._partial = ""


def build_image(
    services: Services,
    app: App,
    source: Source,
    out: Output,
    build_args_extra: dict[str, str] | None = None,
) -> BuiltImage:
    """Build `source` into `dockyard/APP:<build id>`; raise BuildFailed if it cannot be."""
    store = BuildStore(services.state)
    record = store.start(app, source.revision)
    log_path = build_log_path(services.settings, app.name, record.build_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    status, plan, image_id = Status.FAILED, None, ""
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8", errors="replace") as log_file:
        output = BuildOutput(out, log_file)
        job = _BuildJob(services, app, source, output, build_args_extra or {})
        try:
            plan, image_id = job.run(f"{image_repo(app.name)}:{record.build_id}")
            inspect = engine.api().inspect_image(image_id)
            image_id = inspect["Id"]  # the legacy builder reports only a short id
            engine.api().tag(image_id, image_repo(app.name), record.build_id, force=True)
            engine.api().tag(image_id, image_repo(app.name), LATEST, force=True)
            status = Status.SUCCEEDED
        except BuildFailed as exc:
            output.close()
            output.note(f"Build failed: {exc.message}")
            raise
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            output.close()
            output.note(f"Build failed: {exc}")
            raise BuildFailed(f"Docker engine error while building {app.name}: {exc}") from exc
        finally:
            store.finish(app, record.number, status, plan.kind if plan else "", image_id)
            log.info(
                "build finished", app=app.name, build=record.build_id, status=status,
                seconds=round(time.monotonic() - started, 2),
            )  # fmt: skip
    tag = f"{image_repo(app.name)}:{record.build_id}"
    return BuiltImage(
        tag, image_id, _exposed_ports(inspect), {**job.procfile}, job.app_json, record.build_id
    )


class _BuildJob:
    """One build, step by step: read the declarations, check the images the build may
    use, plan, get the runtime images, build, then run the post-build step."""

    def __init__(
        self, services: Services, app: App, source: Source, output: BuildOutput,
        build_args_extra: dict[str, str],
    ) -> None:  # fmt: skip
        self.services = services
        self.app = app
        self.source = source
        self.output = output
        self.procfile = parse_procfile(source.read_file(PROCFILE))
        self.app_json = parse_app_json(source.read_file(APP_JSON))
        self.build_args = {**BUILD_ARG.get(services.properties, app), **build_args_extra}
        self.config = services.config.effective(app)
        self.local: dict[str, list[LocalImage]] = {}

    def run(self, tag: str) -> tuple[BuildPlan, str]:
        own_dockerfile = self.source.read_file(DOCKERFILE)
        if own_dockerfile is not None:
            refs = image_references(own_dockerfile.decode("utf-8", "replace"), self.build_args)
            self.check_images(refs)
        ctx = make_context(self.source, self.plan, self.services.settings.builds_dir / ".tmp")
        try:
            plan = ctx.plan
            what = f"{self.app.name} from {plan.title}"
            self.output.out.step(f"Building {what}")
            self.output.note(f"Building {what} at {self.source.revision}")
            self.check_images([r.image for r in plan.runtimes])
            for runtime in plan.runtimes:
                self.ensure(runtime)
            image_id = _run_build(ctx.fileobj, ctx.dockerfile, tag, self.build_args, self.output)
        finally:
            ctx.close()
        if plan.after_build:
            self.output.out.step(f"Running {' '.join(plan.after_build)}")
            image_id = engine.run_and_commit(
                image_id, plan.after_build, self.config, self.output.line,
                self.services.settings.builds_dir / ".tmp",
            )  # fmt: skip
        return plan, image_id

    def plan(self, ca_path: str | None, names: list[str]) -> BuildPlan:
        tree = make_tree(self.source.read_file, names)
        return plan_build(tree, self.procfile, self.find_runtime, ca_path, self.config)

    def find_runtime(self, language: Language, tree: Tree) -> Runtime:
        configured = configured_base(self.services.properties, self.app, language.name)
        return runtimes.resolve(
            language.name, language.version_request(tree), configured, self.local_images(language)
        )

    def local_images(self, language: Language) -> list[LocalImage]:
        if language.name not in self.local:
            self.local[language.name] = runtimes.local_images(engine.images_labelled, language.name)
        return self.local[language.name]

    def check_images(self, refs: list[str]) -> None:
        check_image_sources(refs, self.app.name, engine.resolve_image, engine.app_images)

    def ensure(self, runtime: Runtime) -> None:
        """A runtime image missing from this host is pulled, with progress in the push."""
        if images.has_image(runtime.image):
            return
        self.output.out.step(f"Pulling {runtime.image}")
        try:
            images.pull(runtime.image, self.output.line)
        except images.PullFailed as exc:
            local = self.local.get(runtime.language, [])
            raise runtimes.unavailable(runtime, local, str(exc)) from None


def _run_build(
    context, dockerfile: str | None, tag: str, build_args: dict[str, str], output: BuildOutput
) -> str:  # noqa: ANN001 (a binary file object)
    image_id = ""
    error = ""
    stream = engine.api().build(
        fileobj=context,
        custom_context=True,
        dockerfile=dockerfile,
        tag=tag,
        buildargs=build_args or None,
        decode=True,
        rm=True,
        forcerm=True,
        pull=False,
    )
    try:
        for event in stream:
            if "stream" in event:
                output.feed(event["stream"])
                for line in event["stream"].splitlines():
                    match = _SUCCESSFULLY_BUILT_RE.match(line)
                    if match:
                        image_id = match.group(1)
            elif "status" in event:
                output.feed(event["status"] + "\n")
            elif "error" in event:
                error = event["error"].strip()
                output.close()
                output.line(error)
            elif "aux" in event and isinstance(event["aux"], dict) and "ID" in event["aux"]:
                image_id = event["aux"]["ID"]
    finally:
        # Closing the response stops a build the client abandoned (the daemon cancels it).
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        output.close()
    if error:
        raise BuildFailed(f"Build failed: {error}")
    if not image_id:
        raise BuildFailed("Build failed: the Docker engine reported no image")
    return image_id


def _exposed_ports(inspect: dict) -> list[int]:
    ports = (inspect.get("Config") or {}).get("ExposedPorts") or {}
    numbers = set()
    for spec in ports:
        number = spec.split("/", 1)[0]
        if number.isdigit():
            numbers.add(int(number))
    return sorted(numbers)


def image_tags(app: str) -> list[tuple[str, str]]:
    """(tag, image id) for every `dockyard/APP:*` tag on this host."""
    repo = image_repo(app)
    found = []
    for image in engine.api().images(name=repo):
        for tag in image.get("RepoTags") or []:
            if tag.rpartition(":")[0] == repo:
                found.append((tag, image["Id"]))
    return found


def prune_images(services: Services, app: str, keep: set[str]) -> list[str]:
    """Remove `dockyard/APP:<id>` tags whose build id is not kept; `latest` stays.

    `keep` holds tags (or bare build ids); only the build id part counts, so tags recorded
    before an `apps:rename` still protect the retagged images. An image still used by a
    container is left alone, to be pruned another time."""
    repo = image_repo(app)
    keep_ids = {k.rpartition(":")[2] for k in keep} | {LATEST}
    removed = []
    try:
        api = engine.api()
        for tag, _image_id in image_tags(app):
            if tag.rpartition(":")[2] in keep_ids:
                continue
            try:
                api.remove_image(tag)
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as exc:
                log.warning("image kept", tag=tag, reason=str(exc))
                continue
            removed.append(tag)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise DockyardError(f"Could not prune the images of {repo}: {exc}") from exc
    return sorted(removed)


def retag_app_images(old: str, new: str) -> None:
    api = engine.api()
    for tag, image_id in image_tags(old):
        api.tag(image_id, image_repo(new), tag.rpartition(":")[2], force=True)
        # The image now carries the new name too, so this only drops the old tag.
        api.remove_image(tag)


def remove_app_images(app: str) -> None:
    api = engine.api()
    for tag, _image_id in image_tags(app):
        try:
            api.remove_image(tag, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            # A running container pins its image; the deployer prunes after removing it.
            log.warning("image kept", tag=tag, reason=str(exc))
