"""The builder's settings, declared once (`builder:set`, `builder:report` come from these)."""

from __future__ import annotations

from builder.detect import IMAGE_REF_RE, BaseImages
from dockyard.properties import BadValue, PropertyGroup, whole_number


def _image_ref(value: str) -> str:
    if not IMAGE_REF_RE.fullmatch(value):
        raise BadValue("takes an image reference such as python:3.12-slim")
    return value


BUILDER = PropertyGroup("builder")
# One base image setting per kind of app the builder detects.
BASE_IMAGES = {
    kind: BUILDER.declare(
        f"base-{kind}", _image_ref, default=getattr(BaseImages(), kind),
        help=f"the image {kind} apps are built FROM",
    )  # fmt: skip
    for kind in ("python", "node", "static", "procfile")
}
KEEP_RELEASES = BUILDER.declare(
    "keep-releases", whole_number(1, 1000), int, default="5",
    help="how many releases' images (rollback targets) and build logs are kept",
)  # fmt: skip
BUILD_ARG = BUILDER.declare_map(
    "build-arg", label="Builder build args",
    help="`NAME=VALUE` passed to `docker build --build-arg` (values never shown)",
)  # fmt: skip


def base_images(store, app) -> BaseImages:  # noqa: ANN001 (PropertyStore, App | None)
    return BaseImages(**{kind: prop.raw(store, app) for kind, prop in BASE_IMAGES.items()})
