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

from builder import engine
from builder.context import make_context
from builder.detect import DOCKERFILE, Kind, detect
from builder.errors import BuildFailed
from builder.isolation import check_image_sources, image_references
from builder.manifest import APP_JSON, PROCFILE, parse_app_json, parse_procfile
from builder.properties import BUILD_ARG, base_images
from builder.store import BuildStore, Status, build_log_path
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
    status, kind, image_id = Status.FAILED, "", ""
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8", errors="replace") as log_file:
        output = BuildOutput(out, log_file)
        try:
            procfile = parse_procfile(source.read_file(PROCFILE))
            app_json = parse_app_json(source.read_file(APP_JSON))
            build_args = {**BUILD_ARG.get(services.properties, app), **(build_args_extra or {})}
            bases = base_images(services.properties, app)
            own_dockerfile = source.read_file(DOCKERFILE)
            if own_dockerfile is not None:
                refs = image_references(own_dockerfile.decode("utf-8", "replace"), build_args)
                check_image_sources(refs, app.name, engine.resolve_image, engine.app_images)
            ctx = make_context(
                source,
                lambda ca_path: detect(source.read_file, bases, procfile, ca_path),
                services.settings.builds_dir / ".tmp",
            )
            kind = ctx.plan.kind
            try:
                _require_local_base(ctx.plan.base_image, kind)
                if ctx.plan.base_image:
                    check_image_sources(
                        [ctx.plan.base_image], app.name, engine.resolve_image, engine.app_images
                    )
                what = "Dockerfile" if kind == Kind.DOCKERFILE else f"detected {kind} app"
                out.step(f"Building {app.name} from {what}")
                output.note(f"Building {app.name} from {what} at {source.revision}")
                tag = f"{image_repo(app.name)}:{record.build_id}"
                image_id = _run_build(ctx.fileobj, ctx.dockerfile, tag, build_args, output)
            finally:
                ctx.close()
            api = engine.api()
            inspect = api.inspect_image(image_id)
            image_id = inspect["Id"]  # the legacy builder reports only a short id
            api.tag(image_id, image_repo(app.name), LATEST, force=True)
            exposed = _exposed_ports(inspect)
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
            store.finish(app, record.number, status, kind, image_id)
            log.info(
                "build finished", app=app.name, build=record.build_id, status=status,
                seconds=round(time.monotonic() - started, 2),
            )  # fmt: skip
    return BuiltImage(tag, image_id, exposed, procfile, app_json, record.build_id)


def _require_local_base(base: str | None, kind: str) -> None:
    """Nothing is pulled: a missing base image fails at once with the setting to change."""
    if base is None:
        return
    try:
        engine.api().inspect_image(base)
    except docker.errors.ImageNotFound:
        raise BuildFailed(
            f"Base image {base} for {kind} apps is not available on this host and is never "
            f"pulled; build it locally or choose another with "
            f"`builder:set APP base-{kind} IMAGE`"
        ) from None


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
