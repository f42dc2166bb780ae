"""The process's one Docker API client for building (the SDK's low-level client, which
streams build output as decoded JSON events)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors

from builder.errors import BuildFailed
from builder.isolation import APP_IMAGE_NAMESPACE, ResolvedImage
from dockyard.envfile import env_file, sourcing

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


def images_labelled(label: str) -> list[dict]:
    return api().images(filters={"label": label})


def run_and_commit(
    image_id: str,
    argv: list[str],
    environment: dict[str, str],
    line: Callable[[str], None],
    scratch: Path,
) -> str:
    """Run `argv` in a container of `image_id` with `environment`, and return a new image
    holding its file changes, with the original's own config. The environment reaches the
    command through a mounted file (dockyard.envfile), so it is not baked into the image."""
    client = api()
    with env_file(scratch, environment) as bind:
        created = client.create_container(
            image_id, command=sourcing(argv),
            host_config=client.create_host_config(init=True, binds=[bind]),
        )  # fmt: skip
        container_id = created["Id"]
        try:
            client.start(container_id)
            partial = ""
            for chunk in client.logs(container_id, stream=True, follow=True):
                *lines, partial = (partial + chunk.decode("utf-8", "replace")).split("\n")
                for text in lines:
                    line(text.rstrip("\r"))
            if partial:
                line(partial)
            status = int(client.wait(container_id).get("StatusCode", 1))
            if status != 0:
                raise BuildFailed(f"`{' '.join(argv)}` failed with exit status {status}")
            config = client.inspect_image(image_id)["Config"]
            return client.commit(container_id, conf=config)["Id"]
        finally:
            client.remove_container(container_id, force=True)
