"""Config vars for a container whose file changes become an image (collectstatic, predeploy).

`docker commit` folds the container's environment into the new image's config, so a step
run with the app's config vars as its environment would bake them (secrets included) into
the image for anyone who can inspect it. Instead the vars go into a file mounted read-only
into the container, and the command runs through `/bin/sh`, which exports them first: the
container's own environment, and so the committed image, never holds them.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

MOUNT_POINT = "/run/dockyard/env"


@contextmanager
def env_file(directory: Path, environment: Mapping[str, str]) -> Iterator[str]:
    """A file of `export K='v'` lines under `directory` (private to the server), as a bind
    `HOST:CONTAINER:ro` spec; removed on exit."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, path = tempfile.mkstemp(dir=directory, prefix="env-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for key, value in environment.items():
                f.write(f"export {key}={shlex.quote(value)}\n")
        # Readable inside the container whatever user the image runs as; the directory
        # keeps everyone else on the host out.
        os.chmod(path, 0o644)
        yield f"{path}:{MOUNT_POINT}:ro"
    finally:
        os.unlink(path)


def sourcing(argv: list[str]) -> list[str]:
    """`argv`, run by /bin/sh after it has exported the mounted file's vars."""
    return ["/bin/sh", "-c", f'. {MOUNT_POINT} && exec "$@"', "sh", *argv]
