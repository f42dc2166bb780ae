"""The process's one Docker API client for building (the SDK's low-level client, which
streams build output as decoded JSON events)."""

from __future__ import annotations

import functools
import os

import docker

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
