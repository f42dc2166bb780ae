"""The build context: the source tree as a tar on disk, plus what Dockyard adds to it.

The daemon never applies `.dockerignore` to a context it is handed (the docker CLI does it
on the client side), so the context is filtered here the same way. A generated Dockerfile
and the host CA bundle go under a directory name the tree does not use, so nothing of the
user's is ever overwritten.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from docker.utils.build import PatternMatcher

from builder.detect import BuildPlan
from dockyard.pipeline import Source

DOCKERIGNORE = ".dockerignore"
DOCKERFILE = "Dockerfile"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
GENERATED_DIR = ".dockyard"
COPY_CHUNK = 1024 * 1024


@dataclass
class BuildContext:
    fileobj: BinaryIO  # positioned at 0, ready to send
    dockerfile: str | None  # path of a generated Dockerfile inside the context
    plan: BuildPlan

    def close(self) -> None:
        self.fileobj.close()


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def _free_dir(names: set[str]) -> str:
    """A top-level directory name the tree does not use."""
    taken = {n.split("/", 1)[0] for n in names}
    candidate, n = GENERATED_DIR, 0
    while candidate in taken:
        n += 1
        candidate = f"{GENERATED_DIR}-{n}"
    return candidate


def dockerignore_patterns(data: bytes | None) -> list[str]:
    if data is None:
        return []
    patterns = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            body = line[1:] if negated else line
            patterns.append(("!" if negated else "") + body.lstrip("/"))
    # As the docker CLI does: these two always reach the daemon, which decides about them.
    return [*patterns, "!Dockerfile", "!" + DOCKERIGNORE] if patterns else []


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0  # a stable mtime keeps the layer cache stable across builds
    tar.addfile(info, io.BytesIO(data))


def make_context(
    source: Source,
    plan_for: Callable[[str | None, list[str]], BuildPlan],
    spool_dir: Path,
    host_ca: Path = HOST_CA_BUNDLE,
    last_line: str = "",
) -> BuildContext:
    """Spool the source tar to disk, decide the plan (given where a CA bundle would sit and
    every path in the tree), then produce the final context: filtered by .dockerignore,
    with generated files added."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    spooled = tempfile.TemporaryFile(dir=spool_dir)
    try:
        source.write_tar(spooled)
        spooled.seek(0)
        with tarfile.open(fileobj=spooled, mode="r:") as tar:
            names = {_norm(m.name) for m in tar.getmembers()}
        generated = _free_dir(names)
        ca_path = f"{generated}/ca.crt" if host_ca.is_file() else None
        plan = plan_for(ca_path, sorted(names))
        extras: dict[str, bytes] = {}
        dockerfile = None
        text = plan.dockerfile
        if text is None and last_line:
            own = source.read_file(DOCKERFILE)
            text = own.decode("utf-8", "surrogateescape") if own is not None else None
        if text is not None:
            # `last_line` (the owner's labels) ends the final stage: one step, not one per
            # label as the engine's own `labels` parameter would add.
            dockerfile = f"{generated}/Dockerfile"
            extras[dockerfile] = (text.rstrip("\n") + "\n" + last_line + "\n").encode(
                "utf-8", "surrogateescape"
            )
        if plan.needs_ca and ca_path is not None:
            extras[ca_path] = host_ca.read_bytes()
        patterns = dockerignore_patterns(source.read_file(DOCKERIGNORE))
        if patterns:
            context = _filtered_copy(spooled, PatternMatcher(patterns), extras, spool_dir)
            spooled.close()
        else:
            context = spooled
            if extras:
                spooled.seek(0)
                with tarfile.open(fileobj=spooled, mode="a:") as tar:
                    for name, data in extras.items():
                        _add_bytes(tar, name, data)
        context.seek(0)
        return BuildContext(context, dockerfile, plan)
    except BaseException:
        spooled.close()
        raise


def _filtered_copy(
    spooled: BinaryIO, matcher: PatternMatcher, extras: dict[str, bytes], spool_dir: Path
) -> BinaryIO:
    out = tempfile.TemporaryFile(dir=spool_dir)
    try:
        spooled.seek(0)
        with (
            tarfile.open(fileobj=spooled, mode="r:") as src,
            tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as dst,
        ):
            for member in src:
                name = _norm(member.name)
                if not name or matcher.matches(name):
                    continue
                data = src.extractfile(member) if member.isfile() else None
                dst.addfile(member, data)
            for name, data in extras.items():
                _add_bytes(dst, name, data)
        return out
    except BaseException:
        out.close()
        raise
