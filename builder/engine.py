"""The process's one Docker API client for building (the SDK's low-level client, which
streams build output as decoded JSON events)."""

from __future__ import annotations

import functools
import os
import subprocess
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


def full_id(short_id: str) -> str:
    try:
        return api().inspect_image(short_id)["Id"]
    except docker.errors.ImageNotFound:
        return ""


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
            host_config=client.create_host_config(
                init=True, binds=[bind], network_mode=build_network()
            ),
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


# Builds run on a network of their own whose bridge the host refuses input from: a build
# reaches the internet (package registries) but none of the host's own services (the SSH
# front door, nginx, anything listening on the host's addresses).
BUILD_NETWORK = "dockyard-build"
BUILD_BRIDGE = "dy-build0"
_REFUSE_RULE = ["INPUT", "-i", BUILD_BRIDGE, "-j", "REJECT"]
_build_network_ready = False


def build_network() -> str:
    """The build network, made and fenced off from the host if it is not yet."""
    global _build_network_ready
    client = api()
    if not _build_network_ready:
        try:
            client.inspect_network(BUILD_NETWORK)
        except docker.errors.NotFound:
            try:
                client.create_network(
                    BUILD_NETWORK, driver="bridge",
                    options={"com.docker.network.bridge.name": BUILD_BRIDGE},
                    labels={"dockyard.role": "build"},
                )  # fmt: skip
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # made meanwhile by another Dockyard
                    raise
        _build_network_ready = True
    # Checked before every build: a firewall flush or a reboot removes the rule.
    for tool in ("iptables", "ip6tables"):
        if subprocess.run([tool, "-C", *_REFUSE_RULE], capture_output=True).returncode == 0:
            continue
        added = subprocess.run([tool, "-I", *_REFUSE_RULE], capture_output=True, text=True)
        if added.returncode != 0 and tool == "iptables":
            raise BuildFailed(
                "Cannot fence builds off from this host's services (iptables: "
                f"{added.stderr.strip() or added.returncode}); refusing to build"
            )
    return BUILD_NETWORK
