"""Keep one app's build from reading another app's images.

Every app's images live on the one local engine as `dockyard/APP:N`, so a Dockerfile line
`FROM dockyard/other` or `COPY --from=dockyard/other:3 /app /x` would copy another tenant's
code (and build-time secrets) into this app. Two checks, both before the build starts:

1. `image_references` reads every image a Dockerfile names (`FROM`, `COPY --from=`,
   `RUN --mount=…,from=`, also under `ONBUILD`) the way the builder will: continuation
   lines joined with comment and blank lines inside them dropped, and `ARG`s scoped as the
   builder scopes them — a `FROM` line sees only the ARGs declared before the first
   `FROM` (with the app's build args for those), whatever a stage redeclares. `--from=`
   and `from=` take no variables at all: there the builder would also expand `ENV`,
   including ENV inherited from a base image, which no reading of the text can know, so a
   `$` there is refused. What the text check cannot read faithfully (an `escape` parser
   directive) is refused, not guessed at.
2. `check_image_sources` asks the engine what each reference resolves to and refuses it
   when that is an image tagged for another app, or when it resolves only by image id (a
   name that is a prefix of some image's id), whatever registry prefix spelled it.
3. After the build, `check_images_used` looks at what the engine actually used — the image
   each `FROM` step resolved to, as the build reported it — and refuses (the build's image
   is removed) if any is another app's image.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from builder.errors import BuildFailed
from dockyard.names import is_whole_number

# App images only; the platform's own base images are `dockyard-base/…`, shared by design.
APP_IMAGE_NAMESPACE = "dockyard/"
DOCKER_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z]+)\s*=\s*(.*)$")
_INSTRUCTION_RE = re.compile(r"^(\w+)\s*(.*)$", re.DOTALL)
_FROM_RE = re.compile(r"^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", re.IGNORECASE)
_FROM_FLAG_RE = re.compile(r"--from=(\S+)", re.IGNORECASE)
_MOUNT_FROM_RE = re.compile(r"--mount=\S*?\bfrom=([^,\s]+)", re.IGNORECASE)
_VAR_RE = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


def _instructions(dockerfile: str) -> list[str]:
    """Logical instructions as the builder sees them."""
    lines = dockerfile.splitlines()
    for raw in lines:  # parser directives: only at the very top
        m = _DIRECTIVE_RE.match(raw.strip())
        if not m:
            break
        if m.group(1).lower() == "escape" and m.group(2).strip() != "\\":
            raise BuildFailed("Dockerfiles with an `escape` parser directive are not supported")
    out, pending = [], None
    for raw in lines:
        stripped = raw.strip()
        if pending is not None and (not stripped or stripped.startswith("#")):
            continue  # the builder drops these inside a continuation
        if pending is None and (not stripped or stripped.startswith("#")):
            continue
        text = (pending or "") + stripped
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        out.append(text)
        pending = None
    if pending is not None:
        out.append(pending)
    return out


def _substitute(text: str, args: Mapping[str, str]) -> str:
    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(4)
        current = args.get(name, "")
        if m.group(2) == "-":
            return current or m.group(3)
        if m.group(2) == "+":
            return m.group(3) if current else ""
        return current

    return _VAR_RE.sub(value, text)


def image_references(dockerfile: str, build_args: Mapping[str, str]) -> list[str]:
    """Every image the Dockerfile names, variables resolved as the builder resolves them;
    build stages left out."""
    global_args: dict[str, str] = {}  # declared before the first FROM: FROM lines see these
    stages: list[str] = []
    refs: list[str] = []
    for line in _instructions(dockerfile):
        m = _INSTRUCTION_RE.match(line)
        if not m:
            continue
        keyword, rest = m.group(1).upper(), m.group(2)
        if keyword == "ONBUILD":  # its trigger runs in a child build: check it as written
            m = _INSTRUCTION_RE.match(rest)
            if not m:
                continue
            keyword, rest = m.group(1).upper(), m.group(2)
        if keyword == "ARG":
            # A stage's own ARGs reach neither FROM lines nor (refused below) --from=.
            if not stages:
                _declare_global(line, rest, build_args, global_args)
            continue
        if keyword == "FROM":
            fm = _FROM_RE.match(_substitute(rest, global_args))
            if fm:
                _note(fm.group(1), stages, refs)
            stages.append((fm.group(2) or "").lower() if fm else "")
            continue
        for raw in _FROM_FLAG_RE.findall(rest) + _MOUNT_FROM_RE.findall(rest):
            if "$" in raw:
                raise BuildFailed(
                    f"The Dockerfile line {line[:120]!r} names its source with a variable; "
                    "name the build stage or the image literally"
                )
            _note(raw, stages, refs)
    return refs


def _declare_global(
    line: str, rest: str, build_args: Mapping[str, str], args: dict[str, str]
) -> None:
    """`ARG NAME[=default]…` before the first FROM: a build arg given to the build wins
    over the declared default."""
    try:
        words = shlex.split(rest)
    except ValueError:
        raise BuildFailed(f"Cannot read the Dockerfile line {line!r}") from None
    for word in words:
        name, sep, default = word.partition("=")
        args[name] = build_args.get(name, _substitute(default, args) if sep else "")


def _note(raw: str, stages: list[str], refs: list[str]) -> None:
    """Add `raw` to `refs` unless it names an earlier build stage (by name or index)."""
    ref = raw.strip("\"'")
    if not ref:
        return  # `FROM $UNSET`: the builder refuses it itself
    if ref.lower() in [s for s in stages if s] or (
        is_whole_number(ref, 4) and int(ref) < len(stages)
    ):
        return
    refs.append(ref)


@dataclass(frozen=True)
class ResolvedImage:
    id: str
    names: list[str]  # repository names it is tagged with, e.g. "dockyard/web"


def registry_host(ref: str) -> str | None:
    """The registry a reference names (`127.0.0.1:5000/x` → `127.0.0.1:5000`), or None for
    Docker Hub's short form. As the engine reads it: a first path component with a dot, a
    colon or `localhost` is a registry."""
    first, sep, _ = ref.split("@", 1)[0].partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first.lower()
    return None


def check_registry(ref: str) -> None:
    """An image the engine would pull comes from a registry on a public address: the engine
    pulls from the host's own network, so a private one would let a build reach what the
    build network is fenced off from (and answer with what it found)."""
    host = registry_host(ref)
    if host is None or host in DOCKER_HUB:
        return
    name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    name = name.strip("[]")
    try:
        infos = socket.getaddrinfo(name, int(port) if is_whole_number(port, 5) else 443)
        addresses = {ipaddress.ip_address(i[4][0]) for i in infos}
    except (OSError, ValueError):
        addresses = set()
    if not addresses:
        raise BuildFailed(f"The image {ref!r} comes from registry {host}, which does not resolve")
    if not all(a.is_global for a in addresses):
        raise BuildFailed(
            f"The image {ref!r} comes from registry {host}, which is not on a public address; "
            "builds pull only from public registries"
        )


def check_ends_complete(dockerfile: str) -> None:
    """Dockyard's owner labels are appended as the last line; a Dockerfile ending in a
    continuation would swallow that line into its own last instruction."""
    lines = [ln.strip() for ln in dockerfile.splitlines()]
    code = [ln for ln in lines if ln and not ln.startswith("#")]
    if code and code[-1].endswith("\\"):
        raise BuildFailed(
            f"The Dockerfile ends in a continuation ({code[-1][-60:]!r}): remove the trailing "
            "backslash of its last instruction"
        )


def check_no_url_add(dockerfile: str) -> None:
    """`ADD https://…` makes the engine fetch the URL from the host's network: refused (a
    `RUN` step in the build downloads it from the fenced-off build network instead)."""
    for line in _instructions(dockerfile):
        m = _INSTRUCTION_RE.match(line)
        if not m:
            continue
        keyword, rest = m.group(1).upper(), m.group(2)
        if keyword == "ONBUILD" and (m := _INSTRUCTION_RE.match(rest)):
            keyword, rest = m.group(1).upper(), m.group(2)
        if keyword == "ADD" and re.search(r"(?i)(^|\s|\[\s*\")(https?|git|ssh)://|\bgit@", rest):
            raise BuildFailed(
                f"The Dockerfile line {line[:120]!r} makes the Docker engine fetch a URL; "
                "download it in a RUN step instead"
            )


def _repository(ref: str) -> str:
    """`docker.io/dockyard/web:3` → `dockyard/web`; `busybox@sha256:…` → `library/busybox`;
    any registry host is dropped (`127.0.0.1:5000/dockyard/web` → `dockyard/web`)."""
    ref = ref.split("@", 1)[0].lower()
    host = registry_host(ref)
    if host is not None:
        ref = ref[len(host) + 1 :]
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref = ref[: len(ref) - len(last)] + last.split(":", 1)[0]
    return ref if "/" in ref else f"library/{ref}"


def check_image_sources(
    refs: Iterable[str],
    app: str,
    resolve: Callable[[str], ResolvedImage | None],
    app_images: Callable[[], Mapping[str, str]],
) -> None:
    """Raise BuildFailed if a reference reaches another app's image.

    `resolve(ref)` is what the engine makes of a name (None: no such image, the build will
    fail on its own); `app_images()` maps the id of every `dockyard/*` image to its app."""
    own = f"{APP_IMAGE_NAMESPACE}{app}"
    others: Mapping[str, str] | None = None
    for ref in refs:
        repo = _repository(ref)
        if repo.startswith(APP_IMAGE_NAMESPACE) and repo != own:
            raise BuildFailed(_refusal(ref, app))
        check_registry(ref)
        image = resolve(ref)
        if image is None:
            continue
        if repo not in {_repository(name) for name in image.names}:
            raise BuildFailed(
                f"The Dockerfile names {ref!r}, which is not an image name but a prefix of an "
                "image id; name base images by repository and tag"
            )
        if others is None:
            others = {i: a for i, a in app_images().items() if a != app}
        if image.id in others:
            raise BuildFailed(_refusal(ref, app))


def _refusal(ref: str, app: str) -> str:
    return (
        f"The Dockerfile uses {ref!r}, another app's image; an app may build only from its own "
        f"images ({APP_IMAGE_NAMESPACE}{app}) and public or platform base images"
    )


def check_images_used(
    used_ids: Iterable[str], app: str, app_images: Callable[[], Mapping[str, str]]
) -> None:
    """Raise BuildFailed if a FROM of the build used another app's image.
    `used_ids` are full image ids as the engine reported them."""
    others = {i: a for i, a in app_images().items() if a != app}
    for image_id in used_ids:
        if image_id in others:
            raise BuildFailed(
                f"The build used app {others[image_id]}'s image ({image_id[7:19]}); an app may "
                f"build only from its own images ({APP_IMAGE_NAMESPACE}{app}) and public or "
                "platform base images. The build's image was removed"
            )
