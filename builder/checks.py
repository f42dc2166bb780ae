"""The builder's part in `doctor`: which kinds of app can build here, and whether a registry
can supply the images of the others.

A kind can build when its image (and the image it runs on, for Go) is on this host, or
when the engine can pull it: one registry probe (a manifest request through the engine, no
layers) decides the second, made only when some image is missing. Apps with their own
Dockerfile build FROM what they name and are not judged here.
"""

from __future__ import annotations

from builder.images import KindImage, base_images, registry_problem
from dockyard.commands.doctor import Finding, register_check
from dockyard.services import Services

LOCAL_FIX = (
    "build local runtime images from Debian packages (DOCKYARD_LOCAL_IMAGES=1 bash "
    "scripts/build-base-images.sh), or load an image (docker load) and run builder:set "
    "--global base-{kind} IMAGE"
)


def _describe(entry: KindImage) -> str:
    version = f", {entry.kind} {entry.version}" if entry.version else ""
    return f"{entry.image} ({entry.source}{version})"


@register_check
def check_base_images(services: Services) -> list[Finding]:
    try:
        entries = {e.kind: e for e in base_images(services)}
    except Exception as exc:  # no engine: reported by the engine check
        return [Finding("images", False, f"cannot list images: {exc}", "see the docker check")]
    missing = [e for e in entries.values() if not e.present]
    problem = registry_problem(missing[0].image) if missing else None
    found = []
    for entry in entries.values():
        lacking = [entry, *(entries[k] for k in entry.also_needs if k in entries)]
        absent = [e for e in lacking if not e.present]
        name = f"image {entry.kind}"
        if not absent:
            found.append(Finding(name, True, _describe(entry)))
        elif problem is None:
            found.append(Finding(name, True, f"{', '.join(e.image for e in absent)} pulled at "
                                 "the first push (a registry is reachable)"))  # fmt: skip
        else:
            found.append(Finding(
                name, False,
                f"{entry.kind} apps cannot build: {', '.join(e.image for e in absent)} is not "
                "on this host and no registry is reachable",
                LOCAL_FIX.replace("{kind}", absent[0].kind),
            ))  # fmt: skip
    if missing:
        if problem is None:
            found.append(Finding("registry", True, "reachable: missing images are pulled"))
        else:
            found.append(Finding("registry", False, f"not reachable ({problem})",
                                 "allow the engine to reach its registry (proxy, DNS, "
                                 "firewall), or build local images as above"))  # fmt: skip
    return found
