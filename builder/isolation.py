"""Keep one app's build from reading another app's images.

Every app's images live on the one local engine as `dockyard/APP:N`, so a Dockerfile line
`FROM dockyard/other` or `COPY --from=dockyard/other:3 /app /x` would copy another tenant's
code (and build-time secrets) into this app. Before a build, every image a Dockerfile names
(`FROM`, `COPY --from=`, `RUN --mount=…,from=`) is resolved — `ARG` defaults and the app's
build args substituted — and refused if it is an app image of someone else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from builder.errors import BuildFailed

# App images only; the platform's own base images are `dockyard-base/…`, shared by design.
APP_IMAGE_NAMESPACE = "dockyard/"

_ARG_RE = re.compile(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?", re.IGNORECASE)
_FROM_RE = re.compile(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", re.IGNORECASE)
_FROM_FLAG_RE = re.compile(r"--from=(\S+)", re.IGNORECASE)
_MOUNT_FROM_RE = re.compile(r"--mount=\S*?\bfrom=([^,\s]+)", re.IGNORECASE)
_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-+][^}]*)?\}|([A-Za-z_][A-Za-z0-9_]*))")


def _logical_lines(dockerfile: str) -> list[str]:
    """Instructions with `\\` continuations joined and comments dropped."""
    lines, pending = [], ""
    for raw in dockerfile.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def _repository(ref: str) -> str:
    """`dockyard/web:3` → `dockyard/web`; `dockyard/web@sha256:…` → `dockyard/web`."""
    ref = ref.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref = ref[: len(ref) - len(last)] + last.split(":", 1)[0]
    return ref.lower()


def check_image_sources(dockerfile: str, app: str, build_args: Mapping[str, str]) -> None:
    """Raise BuildFailed if the Dockerfile names another app's image."""
    args = dict(build_args)
    stages: set[str] = set()

    def resolve(ref: str) -> str:
        def value(m: re.Match[str]) -> str:
            return args.get(m.group(1) or m.group(2), "")

        return _VAR_RE.sub(value, ref)

    for line in _logical_lines(dockerfile):
        if m := _ARG_RE.match(line):
            args.setdefault(m.group(1), m.group(2) or "")
            continue
        refs: list[str] = []
        if m := _FROM_RE.match(line):
            refs.append(m.group(1))
            if m.group(2):
                stages.add(m.group(2).lower())
        refs += _FROM_FLAG_RE.findall(line) + _MOUNT_FROM_RE.findall(line)
        for raw in refs:
            ref = resolve(raw.strip("\"'"))
            if ref.lower() in stages or ref.isdigit():
                continue  # an earlier build stage, by name or index
            repo = _repository(ref)
            if repo.startswith(APP_IMAGE_NAMESPACE) and repo != f"{APP_IMAGE_NAMESPACE}{app}":
                raise BuildFailed(
                    f"The Dockerfile uses {ref!r}, another app's image; an app may build "
                    f"only from its own images ({APP_IMAGE_NAMESPACE}{app}) and public or "
                    "platform base images"
                )
