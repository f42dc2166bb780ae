"""What every language module implements, and the pieces they share.

A language is a small class following its Heroku buildpack: `detect` looks at the files at
the root of the tree, `version_request` reads the runtime version the app asks for (from
the same files Heroku reads), `build` writes the Dockerfile lines that install the app's
dependencies and build it, and `processes` names the default process commands. Nothing
here runs anything: the result is Dockerfile text, built by the engine.

Invariant: generated Dockerfiles contain no text taken from the tree except file names the
module itself checked and version strings matched by `VERSION_RE`; commands are JSON exec
arrays, so nothing from the app reaches a shell at build time except the app's own
`package.json` scripts, which it runs as any build of it would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from builder.errors import BuildFailed

APP_DIR = "/app"
DEFAULT_PORT = 5000
# Where the host's CA bundle lands in the build, for dependency installs only.
IMAGE_CA_PATH = "/etc/dockyard/ca.crt"
# Version strings as version files hold them: `3.12`, `3.12.4`, `>=18 <21`, `^8.1`, `1.22`.
VERSION_RE = re.compile(r"^[0-9A-Za-z.*^~<>=| ,x-]{1,64}$")
# A Docker image reference; anything else could smuggle lines into a generated FROM.
IMAGE_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")

SIMPLE_PATH_RE = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")

ReadFile = Callable[[str], "bytes | None"]


@dataclass(frozen=True)
class Tree:
    """The files of one revision, as detection sees them: the root's names and contents."""

    read_file: ReadFile
    root_names: frozenset[str]

    def has(self, name: str) -> bool:
        return name in self.root_names

    def text(self, name: str) -> str | None:
        data = self.read_file(name)
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise BuildFailed(f"{name} is not valid UTF-8") from None

    def json(self, name: str) -> dict | None:
        text = self.text(name)
        if text is None:
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BuildFailed(f"{name} is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise BuildFailed(f"{name} must contain a JSON object")
        return value


@dataclass(frozen=True)
class VersionRequest:
    """A runtime version an app asks for: the spec as written and the file it came from."""

    spec: str
    source: str

    def __post_init__(self) -> None:
        if not VERSION_RE.fullmatch(self.spec):
            raise BuildFailed(f"{self.source}: {self.spec!r} is not a version")


@dataclass
class Dockerfile:
    """Accumulates generated Dockerfile lines; RUN and CMD are JSON exec arrays, never a
    shell line built from text."""

    lines: list[str] = field(default_factory=list)

    def stage(self, image: str, name: str | None = None) -> None:
        if not IMAGE_REF_RE.fullmatch(image):
            raise BuildFailed(f"Invalid image reference {image!r}")
        self.lines.append(f"FROM {image}" + (f" AS {name}" if name else ""))

    def add(self, line: str) -> None:
        self.lines.append(line)

    def env(self, **values: str) -> None:
        self.add("ENV " + " ".join(f"{k}={_env_value(v)}" for k, v in values.items()))

    def run(self, *argv: str) -> None:
        self.add("RUN " + json.dumps(list(argv)))

    def copy(self, *sources: str, to: str = APP_DIR + "/", stage: str | None = None) -> None:
        """`COPY`; `stage` copies out of an earlier build stage. Sources are names the
        language module chose (no spaces or quotes), never arbitrary tree paths."""
        if not all(SIMPLE_PATH_RE.fullmatch(p) for p in (*sources, to)):
            raise BuildFailed(f"Unexpected path in a generated COPY: {sources!r}")
        frm = f"--from={stage} " if stage else ""
        self.add(f"COPY {frm}{' '.join(sources)} {to}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _env_value(value: str) -> str:
    return value if PLAIN_ENV_RE.fullmatch(value) else json.dumps(value)


PLAIN_ENV_RE = re.compile(r"^[A-Za-z0-9_./:$-]+$")


@dataclass
class BuildContext:
    """What a language's build step may use besides the tree."""

    ca_path: str | None  # where the host CA bundle sits in the context, if the host has one
    config: dict[str, str]  # the app's config vars (read for build switches only)
    ca_copied: bool = False  # a step copied the bundle in: the context must carry it

    def with_ca(self, *names: str) -> list[str]:
        """An `env NAME=bundle …` prefix that makes one RUN step trust the host's CAs."""
        if self.ca_path is None:
            return []
        return ["env", *(f"{n}={IMAGE_CA_PATH}" for n in names)]

    def copy_ca(self, df: Dockerfile) -> None:
        if self.ca_path is not None:
            df.copy(self.ca_path, to=IMAGE_CA_PATH)
            self.ca_copied = True


class Language:
    """One buildpack's conventions. Subclasses set the class attributes and override what
    differs; the defaults describe a language with nothing to install."""

    name: ClassVar[str]  # the runtime label and the `builder:set base-NAME` suffix
    title: ClassVar[str]  # what the push says: "Building APP from detected Python app"
    buildpack_names: ClassVar[tuple[str, ...]] = ()  # how `.buildpacks` may name it
    env: ClassVar[dict[str, str]] = {}
    # A separate image runs the app (the build stage's tools are left behind): Go.
    runtime_stage: ClassVar[bool] = False

    def detect(self, tree: Tree) -> bool:
        raise NotImplementedError

    def version_request(self, tree: Tree) -> VersionRequest | None:
        return None

    def build(self, df: Dockerfile, tree: Tree, ctx: BuildContext) -> None:
        """Lines after `FROM <runtime>` and `WORKDIR /app`: install, copy the app, build."""
        df.add(f"COPY . {APP_DIR}")

    def processes(self, tree: Tree) -> dict[str, str]:
        """Default process commands when the Procfile does not name them."""
        return {}

    def after_build(self, tree: Tree, ctx: BuildContext) -> list[str] | None:
        """A command to run in the built image with the app's config, whose file changes
        are kept (Django's collectstatic); None when there is none."""
        return None
