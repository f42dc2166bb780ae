"""Which kinds of app can build on this host: the image a push of each kind (with no version
file and no per-app setting) builds FROM, and whether the engine has it.

Invariant: this resolves images exactly as a build does (`runtimes.resolve` with the global
`builder:set --global base-KIND`, then the local runtime images, then the official series),
so what it reports is what the next push of that kind would use; it changes nothing and
pulls nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from builder import engine, runtimes
from builder.detect import BY_NAME, PROCFILE_ONLY
from builder.properties import configured_base
from dockyard import images
from dockyard.services import Services


@dataclass(frozen=True)
class KindImage:
    kind: str  # as detection names it and `builder:set … base-KIND` sets it
    image: str  # what a default build of this kind builds FROM
    version: str  # the runtime's version, when the image says ("" otherwise)
    source: str  # "builder:set --global", "local runtime image" or "official image"
    present: bool  # on this host now (else the first push pulls it)
    also_needs: tuple[str, ...] = ()  # kinds whose image the build uses too (go runs on procfile)


def base_images(services: Services) -> list[KindImage]:
    """One entry per kind of app the builder detects, in `runtimes.OFFICIAL`'s order."""
    found = []
    for kind in runtimes.OFFICIAL:
        configured = configured_base(services.properties, None, kind)
        local = [] if configured else runtimes.local_images(engine.images_labelled, kind)
        runtime = runtimes.resolve(kind, None, configured, local)
        source = (
            "builder:set --global" if configured
            else "official image" if runtime.official
            else "local runtime image"
        )  # fmt: skip
        language = BY_NAME.get(kind)
        needs = (PROCFILE_ONLY.name,) if language is not None and language.runtime_stage else ()
        found.append(KindImage(kind, runtime.image, runtime.version, source,
                               images.has_image(runtime.image), needs))  # fmt: skip
    return found


def registry_problem(ref: str) -> str | None:
    """None when the engine's registry serves `ref`'s manifest now, else why not."""
    return images.registry_problem(ref)
