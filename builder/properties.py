"""The builder's settings, declared once (`builder:set`, `builder:report` come from these)."""

from __future__ import annotations

from builder.isolation import APP_IMAGE_NAMESPACE
from builder.languages.base import IMAGE_REF_RE
from builder.runtimes import OFFICIAL
from dockyard.apps import App
from dockyard.properties import BadValue, PropertyGroup, PropertyStore, whole_number


def _image_ref(value: str) -> str:
    if not IMAGE_REF_RE.fullmatch(value):
        raise BadValue("takes an image reference such as python:3.12-slim")
    if value.startswith(APP_IMAGE_NAMESPACE):
        # Those are apps' images: a base there would build on another app's code, and a
        # pull of one from a registry would pass a stranger's image off as an app's.
        raise BadValue(f"takes a base image, not an app's image ({APP_IMAGE_NAMESPACE}…)")
    return value


BUILDER = PropertyGroup("builder")
# One base image setting per kind of app the builder detects; unset, the image follows the
# runtime version the app asks for (builder.runtimes).
BASE_IMAGES = {
    kind: BUILDER.declare(
        f"base-{kind}",
        _image_ref,
        help=f"the image {kind} apps build FROM, whatever version they ask for "
        "(unset: chosen by the app's version files)",
    )  # fmt: skip
    for kind in OFFICIAL
}
KEEP_RELEASES = BUILDER.declare(
    "keep-releases", whole_number(1, 1000), int, default="5",
    help="how many releases' images (rollback targets) and build logs are kept",
)  # fmt: skip
BUILD_ARG = BUILDER.declare_map(
    "build-arg", label="Builder build args",
    help="`NAME=VALUE` passed to `docker build --build-arg` (values never shown)",
)  # fmt: skip


def configured_base(store: PropertyStore, app: App | None, kind: str) -> str | None:
    """The image `builder:set … base-KIND` names, or None to follow the version files."""
    return BASE_IMAGES[kind].raw(store, app) or None
