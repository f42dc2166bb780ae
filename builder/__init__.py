"""builder stage: source at a revision → image `dockyard/APP:<build id>`.

The deployer calls only what is exported here.
"""

from __future__ import annotations

# commands registers builds:* and builder:*; housekeeping its start and stop hooks; checks
# its doctor check.
from builder import checks, commands, housekeeping  # noqa: F401
from builder.build import BuiltImage, image_repo
from builder.build import build_image as _build_image
from builder.build import prune_images as _prune_images
from builder.build import remove_app_images as _remove_app_images
from builder.errors import BuildFailed
from builder.images import KindImage, base_images, registry_problem
from builder.manifest import parse_app_json, parse_procfile
from builder.properties import KEEP_RELEASES
from dockyard.apps import App
from dockyard.output import Output
from dockyard.pipeline import Source
from dockyard.services import Services

__all__ = [
    "BuildFailed",
    "BuiltImage",
    "KindImage",
    "base_images",
    "build_image",
    "image_repo",
    "keep_releases",
    "parse_app_json",
    "parse_procfile",
    "prune_images",
    "registry_problem",
    "remove_images",
]


def build_image(
    services: Services,
    app: App,
    source: Source,
    out: Output,
    build_args_extra: dict[str, str] | None = None,
) -> BuiltImage:
    """Build `source` as `dockyard/APP:<build id>` (and `:latest`); output streams to `out`.

    Raises BuildFailed with a clear message; the build output has already streamed."""
    try:
        return _build_image(services, app, source, out, build_args_extra)
    finally:
        try:
            housekeeping.prune_build_logs(services, app)
        except OSError as exc:  # a full disk must not turn a good build into a failed one
            housekeeping.log.warning("build logs not pruned", app=app.name, error=str(exc))


def prune_images(services: Services, app: str, keep: set[str]) -> list[str]:
    """Remove `dockyard/APP:*` images whose tag is not in `keep`; returns the removed tags."""
    return _prune_images(services, app, keep)


def remove_images(services: Services, app: str) -> None:
    """Remove every `dockyard/APP:*` image of this Dockyard (the app is being destroyed)."""
    _remove_app_images(app, str(services.settings.data_dir))


def keep_releases(services: Services, app: App) -> int:
    """How many releases' images to keep (`builder:set [--global|APP] keep-releases N`)."""
    return KEEP_RELEASES.get(services.properties, app)
