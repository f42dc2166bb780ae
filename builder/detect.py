"""Which Dockerfile builds an app: its own, or one generated from what its root contains.

`plan_build` is a pure function of the tree at the revision, the Procfile, and how runtime
images are found (`RuntimeFinder`): the app's own `Dockerfile` wins; else `.buildpacks`
(Dokku's multi-buildpack file) lists the languages to build, in order; else the first
language that detects itself, in the Heroku buildpacks' order (Ruby, Node.js, Python,
Java, PHP, Go), then a static site, then a Procfile-only app.

A generated Dockerfile has one stage per language: every stage but the last builds in
/app on its language's image, and the next stage starts from what it built (a Node build
step's assets reach a Python app); the last stage's runtime runs the app. Process commands
come from the Procfile, run with `/bin/sh -c` as on Heroku; a language's default (`npm
start`, the Go binary) applies only to a type the Procfile does not name. An app whose
`web` process cannot be named, and that declares no other process, is refused here rather
than built into an image that serves nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from builder.errors import BuildFailed
from builder.languages.base import (
    APP_DIR,
    DEFAULT_PORT,
    IMAGE_REF_RE,
    BuildContext,
    Dockerfile,
    Language,
    ReadFile,
    Tree,
)
from builder.languages.go import BUILD_STAGE as GO_BUILD_STAGE
from builder.languages.go import Go
from builder.languages.java import Java
from builder.languages.node import Node
from builder.languages.php import Php
from builder.languages.python import Python
from builder.languages.ruby import Ruby
from builder.languages.static import ProcfileOnly, Static
from builder.runtimes import Runtime

DOCKERFILE = "Dockerfile"
BUILDPACKS = ".buildpacks"
PROCFILE = "Procfile"

# Heroku's default buildpack order; a static site and a bare Procfile come last.
LANGUAGES: tuple[Language, ...] = (Ruby(), Node(), Python(), Java(), Php(), Go(), Static())
PROCFILE_ONLY = ProcfileOnly()
BY_NAME = {lang.name: lang for lang in (*LANGUAGES, PROCFILE_ONLY)}
LOOKED_FOR = (
    DOCKERFILE, BUILDPACKS, "Gemfile", "package.json", "requirements.txt", "pyproject.toml",
    "Pipfile", "pom.xml", "build.gradle", "composer.json", "index.php", "go.mod", "*.go",
    "index.html", ".static", PROCFILE,
)  # fmt: skip
# `.buildpacks` lines: a URL or `owner/name`, with an optional `#ref`.
BUILDPACK_LINE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,300}(#[A-Za-z0-9._/-]{1,100})?$")


class Kind:
    DOCKERFILE = "dockerfile"


def check_image_ref(ref: str) -> str:
    if not IMAGE_REF_RE.fullmatch(ref):
        raise BuildFailed(f"Invalid image reference {ref!r}")
    return ref


# How the planner gets the image for a language: (language, tree) → Runtime.
RuntimeFinder = Callable[[Language, Tree], Runtime]


@dataclass(frozen=True)
class BuildPlan:
    kind: str  # "dockerfile", "python", "node+python"
    dockerfile: str | None  # None: the app's own Dockerfile builds it
    runtimes: Sequence[Runtime] = ()  # the images the generated Dockerfile builds FROM
    needs_ca: bool = False  # the context must carry the host CA bundle at `ca_path`
    after_build: list[str] | None = None  # run in the image with the app's config, kept
    processes: dict[str, str] = field(default_factory=dict)  # language defaults

    @property
    def title(self) -> str:
        return "Dockerfile" if self.kind == Kind.DOCKERFILE else f"detected {self.kind} app"


def make_tree(read_file: ReadFile, names: Sequence[str]) -> Tree:
    """The tree's top-level names from every path in it (`a/b/c` → `a`)."""
    return Tree(read_file, frozenset(n.split("/", 1)[0] for n in names if n))


def plan_build(
    tree: Tree,
    procfile: dict[str, str],
    find_runtime: RuntimeFinder,
    ca_path: str | None,
    config: dict[str, str] | None = None,
) -> BuildPlan:
    """The build plan for a tree; `ca_path` is where the context would hold the host CA
    bundle (None when the host has none: installs then use the image's own trust store)."""
    if tree.read_file(DOCKERFILE) is not None:
        return BuildPlan(Kind.DOCKERFILE, None)
    languages = _languages(tree)
    ctx = BuildContext(ca_path, dict(config or {}))
    runtimes = [find_runtime(lang, tree) for lang in languages]
    defaults: dict[str, str] = {}
    for lang in languages:
        defaults.update(lang.processes(tree))
    web = procfile.get("web") or defaults.get("web")
    if web is None and not procfile:
        raise BuildFailed(
            f"{languages[-1].title} app without a web process: add a Procfile with a line "
            "such as `web: ./start-server` (it runs with PORT set)"
        )
    df = Dockerfile()
    last = len(languages) - 1
    for i, (lang, runtime) in enumerate(zip(languages, runtimes, strict=True)):
        stage = None if i == last and not lang.runtime_stage else f"build{i}"
        if lang.runtime_stage and i == last:
            stage = GO_BUILD_STAGE
        df.stage(check_image_ref(runtime.image), stage)
        df.add(f"WORKDIR {APP_DIR}")
        df.env(PORT=str(DEFAULT_PORT), **lang.env)
        if i:
            df.copy(APP_DIR, to=APP_DIR, stage=f"build{i - 1}")
        lang.build(df, tree, ctx)
    final = languages[-1]
    if final.runtime_stage:
        runner = find_runtime(PROCFILE_ONLY, tree)
        runtimes.append(runner)
        df.stage(check_image_ref(runner.image))
        df.add(f"WORKDIR {APP_DIR}")
        df.env(PORT=str(DEFAULT_PORT), **final.env)
        df.copy(APP_DIR, to=APP_DIR, stage=GO_BUILD_STAGE)
    df.add(f"EXPOSE {DEFAULT_PORT}")
    if web:
        df.add("CMD " + json.dumps(["/bin/sh", "-c", web]))
    return BuildPlan(
        "+".join(lang.name for lang in languages), df.text(), tuple(runtimes), ctx.ca_copied,
        final.after_build(tree, ctx), defaults,
    )  # fmt: skip


def _languages(tree: Tree) -> list[Language]:
    listed = tree.text(BUILDPACKS)
    if listed is not None:
        return _from_buildpacks(listed)
    for lang in LANGUAGES:
        if lang.detect(tree):
            return [lang]
    if PROCFILE_ONLY.detect(tree):
        return [PROCFILE_ONLY]
    raise BuildFailed(
        "Unable to detect how to build this app: none of "
        + ", ".join(LOOKED_FOR)
        + " was found at the root of the repository"
    )


def _from_buildpacks(text: str) -> list[Language]:
    found: list[Language] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not BUILDPACK_LINE_RE.fullmatch(line):
            raise BuildFailed(f".buildpacks line {number}: {line[:80]!r} is not a buildpack")
        name = line.split("#", 1)[0].rstrip("/").removesuffix(".git").rsplit("/", 1)[-1]
        lang = next((g for g in BY_NAME.values() if name in g.buildpack_names), None)
        if lang is None:
            known = ", ".join(sorted({g.buildpack_names[0] for g in LANGUAGES}))
            raise BuildFailed(
                f".buildpacks line {number}: unknown buildpack {line[:80]!r}; Dockyard builds "
                f"{known} (add a Dockerfile for anything else)"
            )
        if lang not in found:
            found.append(lang)
    if not found:
        raise BuildFailed(".buildpacks lists no buildpack")
    return found
