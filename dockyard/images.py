"""Images on the local engine: is one here, and pulling one with progress. Shared by the
stages that need an image before they can go on (the builder's runtimes, services).

A pull reports one line per layer state change (not the byte counters), so a push or a
`postgres:create` shows what happens without flooding the client; a failure carries the
engine's reason, for the caller to say what to do instead.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import docker
import docker.errors

DEFAULT_DOCKER_HOST = "unix://var/run/docker.sock"
# Whose an image or container is: the Dockyard (its data dir) and the app. Several
# Dockyards may share one engine; each acts only on what carries its own home.
LABEL_HOME = "dockyard.home"
LABEL_APP = "dockyard.app"
PULL_STATES = ("Pulling from", "Pull complete", "Already exists", "Digest:", "Status:")


class PullFailed(Exception):
    pass


@functools.cache
def _api() -> docker.APIClient:
    return docker.APIClient(
        base_url=os.environ.get("DOCKER_HOST", DEFAULT_DOCKER_HOST), version="auto", timeout=600
    )


def has_image(ref: str) -> bool:
    try:
        _api().inspect_image(ref)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError:
        return False  # not a name the engine can look up
    return True


def pull(ref: str, line: Callable[[str], None]) -> None:
    """Pull `ref`, reporting progress line by line; raises PullFailed with the reason."""
    repo, tag = split_tag(ref)
    try:
        for event in _api().pull(repo, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise PullFailed(str(event["error"]).strip())
            status = str(event.get("status", ""))
            if status.startswith(PULL_STATES):
                layer = event.get("id")
                line(f"{layer}: {status}" if layer and not status.startswith("Pulling") else status)
    except docker.errors.DockerException as exc:
        raise PullFailed(str(getattr(exc, "explanation", None) or exc)) from None
    if not has_image(ref):
        raise PullFailed("the engine reported no image")


def registry_problem(ref: str, timeout: float = 10.0) -> str | None:
    """Could the engine pull `ref` now? Asks the engine for the image's manifest from its
    registry (its own mirrors, proxy and credentials apply; no layer is downloaded). None
    when the registry answered, else the reason."""
    client = docker.APIClient(
        base_url=os.environ.get("DOCKER_HOST", DEFAULT_DOCKER_HOST), version="auto",
        timeout=timeout,
    )  # fmt: skip
    try:
        client.inspect_distribution(ref)
    except docker.errors.APIError as exc:
        return str(exc.explanation or exc).strip()
    except Exception as exc:  # a timeout, a refused socket: the SDK raises several types
        return str(exc).strip() or type(exc).__name__
    finally:
        client.close()
    return None


def split_tag(ref: str) -> tuple[str, str | None]:
    """`name:tag` → (name, tag); a digest reference pulls as it is; no tag means latest."""
    if "@" in ref:
        return ref, None
    repo, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return repo, tag
    return ref, "latest"
