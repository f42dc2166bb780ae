"""The process's one Docker API client for building (the SDK's low-level client, which
streams build output as decoded JSON events)."""

from __future__ import annotations

import functools
import os

import docker
import docker.errors

from builder.errors import BuildFailed
from builder.isolation import APP_IMAGE_NAMESPACE, ResolvedImage

DEFAULT_DOCKER_HOST = "unix://var/run/docker.sock"
# A build step may stay silent for a long time (a big pip install); the timeout is per read.
BUILD_READ_TIMEOUT = 3600


@functools.cache
def api() -> docker.APIClient:
    return docker.APIClient(
        base_url=os.environ.get("DOCKER_HOST", DEFAULT_DOCKER_HOST),
        timeout=BUILD_READ_TIMEOUT,
        version="auto",
    )


def resolve_image(ref: str) -> ResolvedImage | None:
    """What the engine makes of an image name: its id and the repositories it is tagged
    with; None when there is no such image here."""
    try:
        info = api().inspect_image(ref)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        raise BuildFailed(f"Invalid image reference {ref!r}: {exc.explanation}") from None
    tags = [t.rsplit(":", 1)[0] for t in info.get("RepoTags") or []]
    digests = [d.split("@", 1)[0] for d in info.get("RepoDigests") or []]
    return ResolvedImage(info["Id"], tags + digests)


def app_images() -> dict[str, str]:
    """Image id → app, for every image tagged `dockyard/APP:…`."""
    owners: dict[str, str] = {}
    for image in api().images(filters={"reference": f"{APP_IMAGE_NAMESPACE}*"}):
        for tag in image.get("RepoTags") or []:
            repo = tag.rsplit(":", 1)[0]
            if repo.startswith(APP_IMAGE_NAMESPACE):
                owners[image["Id"]] = repo[len(APP_IMAGE_NAMESPACE) :]
    return owners
