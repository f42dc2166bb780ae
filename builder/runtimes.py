"""Which image runs a language at the version an app asks for, and getting it onto the host.

Three sources, in order:
1. `builder:set [--global|APP] base-LANG IMAGE`: that image, whatever the app asks for.
2. Runtime images on this host labelled `dockyard.runtime=LANG` and
   `dockyard.runtime.version=X.Y.Z` (machines without a registry build these from Debian
   packages: scripts/build-base-images.sh). The newest one that satisfies the request.
3. The official images (`python:3.13-slim`, `node:22-slim`, …) for the newest known
   series that satisfies the request, pulled when missing, with progress in the push.

A request nothing satisfies, or a pull that fails, fails the push at once, naming the
version asked for, where it came from, what this host has, and the setting that changes it.
Version specs are npm-style ranges (`>=18 <21`, `^20`, `18.x`); a bare `3.12` means any
3.12.x, a full `3.12.4` exactly that.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import semantic_version

from builder.errors import BuildFailed
from builder.languages.base import VersionRequest

LABEL_RUNTIME = "dockyard.runtime"
LABEL_VERSION = "dockyard.runtime.version"
LABEL_SUITE = "dockyard.runtime.suite"
LOCAL_NAMESPACE = "dockyard-base/"  # the platform's own images (scripts/build-base-images.sh)


@dataclass(frozen=True)
class Series:
    """An official image series: `3.12` → `python:3.12-slim`."""

    version: str
    tag: str


@dataclass(frozen=True)
class OfficialImages:
    template: str  # "python:{}-slim"
    series: tuple[str, ...]  # newest first; the first is the default

    def candidates(self) -> list[Series]:
        return [Series(v, self.template.format(v)) for v in self.series]


OFFICIAL = {
    "python": OfficialImages("python:{}-slim", ("3.13", "3.12", "3.11", "3.10", "3.9")),
    "node": OfficialImages("node:{}-slim", ("22", "24", "20", "18")),
    "go": OfficialImages("golang:{}", ("1.24", "1.23", "1.22", "1.21")),
    "ruby": OfficialImages("ruby:{}-slim", ("3.4", "3.3", "3.2", "3.1")),
    "php": OfficialImages("php:{}-cli", ("8.4", "8.3", "8.2", "8.1")),
    "java": OfficialImages("maven:3-eclipse-temurin-{}", ("21", "17")),
    "static": OfficialImages("busybox:{}", ("stable",)),
    "procfile": OfficialImages("debian:{}-slim", ("bookworm",)),
}


@dataclass(frozen=True)
class LocalImage:
    ref: str  # a tag on this host
    version: str  # as the runtime reports itself


@dataclass(frozen=True)
class Runtime:
    language: str
    image: str
    version: str  # what was matched ("" for an image set by builder:set)
    official: bool  # an official image (may need pulling), not a local or configured one
    request: VersionRequest | None = None  # what the app asked for


def spec_of(request: VersionRequest) -> semantic_version.NpmSpec:
    """`3.12` → `3.12.x`; `3.12.4` exactly; npm ranges as npm reads them; composer's
    `,` (and) and `8.2.*` in npm's words."""
    text = request.spec.strip().replace(",", " ").replace(".*", ".x")
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        text += ".x"
    try:
        return semantic_version.NpmSpec(text)
    except ValueError:
        raise BuildFailed(f"{request.source}: cannot read {request.spec!r} as a version") from None


def _version(text: str) -> semantic_version.Version | None:
    try:
        return semantic_version.Version.coerce(text)
    except ValueError:
        return None


def _satisfies(spec: semantic_version.NpmSpec, version: str) -> bool:
    parsed = _version(version)
    return parsed is not None and parsed in spec


def _series_satisfies(spec: semantic_version.NpmSpec, series: str) -> bool:
    """A series (`3.12`, `20`) answers a request if some release in it could."""
    base = _version(series)
    if base is None:
        return False
    if len(series.split(".")) == 1:
        probes = [base, semantic_version.Version(major=base.major, minor=999, patch=999)]
    else:
        probes = [base, semantic_version.Version(major=base.major, minor=base.minor, patch=999)]
    return any(p in spec for p in probes)


def resolve(
    language: str,
    request: VersionRequest | None,
    configured: str | None,
    local: Iterable[LocalImage],
) -> Runtime:
    """The image for `language` at `request`; see the module docstring for the order."""
    if configured:
        return Runtime(language, configured, "", official=False, request=request)
    local = sorted(local, key=lambda i: _version(i.version) or semantic_version.Version("0.0.0"),
                   reverse=True)  # fmt: skip
    spec = spec_of(request) if request else None
    for image in local:
        if spec is None or _satisfies(spec, image.version):
            return Runtime(language, image.ref, image.version, official=False, request=request)
    official = OFFICIAL[language]
    for series in official.candidates():
        if spec is None or _series_satisfies(spec, series.version):
            return Runtime(language, series.tag, series.version, official=True, request=request)
    raise BuildFailed(
        f"{_asked(language, request)} is not available: versions on this host: "
        f"{_have(local)}; official images: {', '.join(official.series)}. Ask for one of "
        f"those, or choose an image with `builder:set APP base-{language} IMAGE`"
    )


def _asked(language: str, request: VersionRequest | None) -> str:
    if request is None:
        return f"the default {language} runtime"
    return f"{language} {request.spec} (asked for in {request.source})"


def _have(local: Iterable[LocalImage]) -> str:
    return ", ".join(i.version for i in local) or "none"


def unavailable(runtime: Runtime, local: Iterable[LocalImage], reason: str) -> BuildFailed:
    """The refusal for a runtime image that could not be pulled."""
    asked, have = _asked(runtime.language, runtime.request), _have(local)
    return BuildFailed(
        f"Cannot get {asked}: pulling {runtime.image} failed: {reason}. "
        f"{runtime.language} versions on this host: {have}. "
        f"Choose another image with `builder:set APP base-{runtime.language} IMAGE`"
    )


def local_images(list_images: Callable[[str], list[dict]], language: str) -> list[LocalImage]:
    """The platform's runtime images on this host for `language`: tagged `dockyard-base/…`
    and labelled with the runtime. (Labels are inherited: every image built FROM a runtime
    image carries them too, apps' images included, so the name is what counts.)"""
    found = []
    for image in list_images(f"{LABEL_RUNTIME}={language}"):
        labels = image.get("Labels") or {}
        tags = [t for t in image.get("RepoTags") or [] if t.startswith(LOCAL_NAMESPACE)]
        version = labels.get(LABEL_VERSION, "")
        if tags and version:
            found.append(LocalImage(sorted(tags)[0], version))
    return found
