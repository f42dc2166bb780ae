"""Source → image: plan, context, a streamed `docker build`, a recorded result.

Build output reaches the pusher line by line as the daemon emits it (as Dokku's indented
detail lines) and is appended to `builds/APP/<id>.log` as it arrives, so `builds:output`
shows a failed build as far as it got.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

import docker
import docker.errors
import requests
import structlog

from builder import engine, runtimes
from builder.context import make_context
from builder.detect import DOCKERFILE, BuildPlan, make_tree, plan_build
from builder.errors import BuildFailed
from builder.isolation import (
    ResolvedImage,
    check_ends_complete,
    check_image_sources,
    check_images_used,
    check_no_url_add,
    image_references,
)
from builder.languages.base import Language, Tree
from builder.manifest import APP_JSON, PROCFILE, parse_app_json, parse_procfile
from builder.properties import BUILD_ARG, configured_base
from builder.runtimes import LocalImage, Runtime
from builder.store import BuildStore, Status, build_log_path
from dockyard import images
from dockyard.apps import App
from dockyard.errors import DockyardError
from dockyard.images import LABEL_APP, LABEL_HOME
from dockyard.output import Output
from dockyard.pipeline import Source
from dockyard.services import Services

log = structlog.get_logger("dockyard.builder")

IMAGE_NAMESPACE = "dockyard"
LATEST = "latest"
_SUCCESSFULLY_BUILT_RE = re.compile(r"^Successfully built ([0-9a-f]+)\s*$")
_FROM_STEP_RE = re.compile(r"^Step \d+/\d+ : FROM\s", re.IGNORECASE)
_STEP_RESULT_RE = re.compile(r"^ ---> ([0-9a-f]{12})\s*$")
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
        foreign = foreign_users(self.app.name, str(self.services.settings.data_dir))
        if foreign:
            raise BuildFailed(
                f"Another Dockyard on this Docker engine runs an app named {self.app.name} "
                f"({', '.join(foreign[:3])}) from images {image_repo(self.app.name)}; "
                "give this app another name"
            )
        own_dockerfile = self.source.read_file(DOCKERFILE)
        if own_dockerfile is not None:
            text = own_dockerfile.decode("utf-8", "replace")
            check_ends_complete(text)
            check_no_url_add(text)
            self.check_images(image_references(text, self.build_args))
        labels = " ".join(f"{k}={json.dumps(v)}" for k, v in self.labels().items())
        ctx = make_context(
            self.source, self.plan, self.services.settings.builds_dir / ".tmp",
            last_line=f"LABEL {labels}",
        )  # fmt: skip
        try:
            plan = ctx.plan
            what = f"{self.app.name} from {plan.title}"
            self.output.out.step(f"Building {what}")
            self.output.note(f"Building {what} at {self.source.revision}")
            self.check_images([r.image for r in plan.runtimes])
            for runtime in plan.runtimes:
                self.ensure(runtime)
            build = EngineBuild(self.output)
            image_id = build.run(ctx.fileobj, ctx.dockerfile, tag, self.build_args)
        finally:
            ctx.close()
        self.check_used(build.from_ids, image_id)
        self.check_labels(image_id)
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

    def labels(self) -> dict[str, str]:
        """Whose image this is: the Dockyard home and the app (rename and destroy act only
        on their own, and another Dockyard sharing the engine leaves them alone)."""
        return {LABEL_HOME: str(self.services.settings.data_dir), LABEL_APP: self.app.name}

    def check_used(self, from_ids: list[str], image_id: str) -> None:
        """What the engine actually used for each FROM must not be another app's image; if
        it is, the result is removed. (Layers after a FROM may come from the cache of
        another app's build: the cache matches only identical instructions and files, so
        they hold nothing but this app's own content.)"""
        used = [i for i in (engine.full_id(i) for i in from_ids) if i]
        try:
            check_images_used(used, self.app.name, lambda: engine.owners_of(used, self.app.name))
        except BuildFailed:
            engine.api().remove_image(image_id, force=True)
            raise

    def check_labels(self, image_id: str) -> None:
        """The image must carry exactly this app's owner labels (the last step sets them;
        a Dockerfile that got around it could pass its image off as another app's)."""
        found = engine.api().inspect_image(image_id)["Config"].get("Labels") or {}
        wanted = self.labels()
        if any(found.get(k) != v for k, v in wanted.items()):
            engine.api().remove_image(image_id, force=True)
            raise BuildFailed(
                "The built image does not carry Dockyard's owner labels as its last step set "
                "them; does the Dockerfile's last instruction swallow the next line?"
            )

    def check_images(self, refs: list[str]) -> None:
        # Who owns what is asked only of the images these names resolve to (the checks and
        # their order are check_image_sources' own; names resolve once each).
        resolved: dict[str, ResolvedImage | None] = {}

        def resolve(ref: str) -> ResolvedImage | None:
            if ref not in resolved:
                resolved[ref] = engine.resolve_image(ref)
            return resolved[ref]

        def owners() -> dict[str, str]:
            ids = []
            for ref in refs:
                try:
                    image = resolve(ref)
                except BuildFailed:
                    continue  # refused when the check reaches this name
                if image is not None:
                    ids.append(image.id)
            return engine.owners_of(ids, self.app.name)

        check_image_sources(refs, self.app.name, resolve, owners)

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


@dataclass
class EngineBuild:
    """One `docker build` as the engine reports it: its output streamed, the image it made,
    and the image each `FROM` step resolved to (what the build really used)."""

    output: BuildOutput
    image_id: str = ""
    error: str = ""
    from_ids: list[str] = field(default_factory=list)
    _after_from: bool = False

    def run(
        self, context: BinaryIO, dockerfile: str | None, tag: str, build_args: dict[str, str]
    ) -> str:
        stream = engine.api().build(
            fileobj=context, custom_context=True, dockerfile=dockerfile, tag=tag,
            buildargs=build_args or None, decode=True, rm=True, forcerm=True,
            pull=False, network_mode=engine.build_network(),
        )  # fmt: skip
        try:
            for event in stream:
                self.event(event)
        finally:
            # Closing the response stops a build the client abandoned (the daemon cancels it).
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            self.output.close()
        if self.error:
            raise BuildFailed(f"Build failed: {self.error}")
        if not self.image_id:
            raise BuildFailed("Build failed: the Docker engine reported no image")
        return self.image_id

    def event(self, event: dict) -> None:
        if "stream" in event:
            self.output.feed(event["stream"])
            for line in event["stream"].splitlines():
                self.line(line)
        elif "status" in event:
            self.output.feed(event["status"] + "\n")
        elif "error" in event:
            self.error = event["error"].strip()
            self.output.close()
            self.output.line(self.error)
        elif "aux" in event and isinstance(event["aux"], dict) and "ID" in event["aux"]:
            self.image_id = event["aux"]["ID"]

    def line(self, line: str) -> None:
        if _FROM_STEP_RE.match(line):
            self._after_from = True
        elif (match := _STEP_RESULT_RE.match(line)) and self._after_from:
            self.from_ids.append(match.group(1))
            self._after_from = False
        elif match := _SUCCESSFULLY_BUILT_RE.match(line):
            self.image_id = match.group(1)


def _exposed_ports(inspect: dict) -> list[int]:
    ports = (inspect.get("Config") or {}).get("ExposedPorts") or {}
    numbers = set()
    for spec in ports:
        number = spec.split("/", 1)[0]
        if number.isdigit():
            numbers.add(int(number))
    return sorted(numbers)


def image_tags(app: str, home: str | None = None) -> list[tuple[str, str]]:
    """(tag, image id) for every `dockyard/APP:*` tag on this host; with `home`, only those
    of that Dockyard (and unlabelled ones from before images carried their home)."""
    repo = image_repo(app)
    found = []
    for image in engine.api().images(name=repo):
        owner = (image.get("Labels") or {}).get(LABEL_HOME)
        if home is not None and owner and owner != home:
            continue
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
        for tag, _image_id in image_tags(app, str(services.settings.data_dir)):
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


def foreign_users(app: str, home: str) -> list[str]:
    """Containers another Dockyard on this engine runs for an app of this name: its images
    `dockyard/APP:N` are in use there, and building here would retag them under it."""
    found = engine.api().containers(all=True, filters={"label": f"{LABEL_APP}={app}"})
    return [
        (c.get("Names") or ["?"])[0].lstrip("/")
        for c in found
        if (c.get("Labels") or {}).get(LABEL_HOME) not in (None, home)
    ]


def retag_app_images(old: str, new: str, home: str) -> None:
    api = engine.api()
    for tag, image_id in image_tags(old, home):
        api.tag(image_id, image_repo(new), tag.rpartition(":")[2], force=True)
        # The image now carries the new name too, so this only drops the old tag.
        api.remove_image(tag)


def remove_app_images(app: str, home: str) -> None:
    """Remove the app's tags; the engine removes the layers no other image uses with them."""
    api = engine.api()
    for tag, _image_id in image_tags(app, home):
        try:
            # Not forced: a tag forced off an image a container still uses would leave it
            # behind untagged, where no later clean-up finds it by name.
            api.remove_image(tag)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            # A running container pins its image; the deployer prunes after removing it.
            log.warning("image kept", tag=tag, reason=str(exc))
