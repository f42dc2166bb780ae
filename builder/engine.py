"""The process's one Docker API client for building (the SDK's low-level client, which
streams build output as decoded JSON events)."""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Callable, Iterable
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


def owners_of(image_ids: Iterable[str], app: str) -> dict[str, str]:
    """Image id → app for these images only, as `app_images` says for them, but one inspect
    per image instead of a listing of every image on the engine (a listing costs hundreds
    of milliseconds on a busy engine, and each build made three). An image tagged for `app`
    and for another app maps to the other: the stricter answer."""
    owners: dict[str, str] = {}
    for image_id in dict.fromkeys(image_ids):
        try:
            info = api().inspect_image(image_id)
        except docker.errors.ImageNotFound:
            continue
        apps = [
            tag.rsplit(":", 1)[0][len(APP_IMAGE_NAMESPACE) :]
            for tag in info.get("RepoTags") or []
            if tag.startswith(APP_IMAGE_NAMESPACE)
        ]
        if apps:
            owners[info["Id"]] = next((a for a in apps if a != app), app)
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


def _outdated(network: dict) -> bool:
    labels, options = network.get("Labels") or {}, network.get("Options") or {}
    return (
        labels.get(BUILD_ROLE) == "build"
        and not network.get("Containers")
        and options.get(ICC_OPTION) != "false"
    )


# Builds run on a network of their own whose bridge the host refuses input from: a build
# reaches the internet (package registries) but none of the host's own services (the SSH
# front door, nginx, anything listening on the host's addresses).
BUILD_NETWORK = "dockyard-build"
BUILD_BRIDGE = "dy-build0"
_REFUSE_RULE = ["INPUT", "-i", BUILD_BRIDGE, "-j", "REJECT"]
BUILD_ROLE = "dockyard.role"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
ICC_OPTION = "com.docker.network.bridge.enable_icc"


def build_network() -> str:
    """The build network, made and fenced off from the host if it is not yet."""
    client = api()
    try:
        found = client.inspect_network(BUILD_NETWORK)
        if _outdated(found):  # an earlier Dockyard's, made before builds were kept apart
            client.remove_network(found["Id"])
            raise docker.errors.NotFound("outdated")
    except docker.errors.NotFound:
        try:
            client.create_network(
                BUILD_NETWORK, driver="bridge", labels={BUILD_ROLE: "build"},
                # Builds of different apps on the one bridge must not talk to each other.
                options={BRIDGE_NAME_OPTION: BUILD_BRIDGE, ICC_OPTION: "false"},
            )  # fmt: skip
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # made meanwhile by another Dockyard
                raise
        found = client.inspect_network(BUILD_NETWORK)
    # The fence below is bound to the bridge's name: a network that only has the right
    # name is not fenced, and is refused (checked every build, not once per process).
    options = found.get("Options") or {}
    if options.get(BRIDGE_NAME_OPTION) != BUILD_BRIDGE or options.get(ICC_OPTION) != "false":
        raise BuildFailed(
            f"The Docker network {BUILD_NETWORK} is not the one Dockyard fences off the host "
            f"(bridge {BUILD_BRIDGE}); an admin should remove it: docker network rm "
            f"{BUILD_NETWORK}"
        )
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
