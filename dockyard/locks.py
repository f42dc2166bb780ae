"""Per-app locks, held across a push or a deploy so changes to one app never interleave.

An flock on `DATA_DIR/locks/APP.lock` works across processes (the server and a local CLI)
and is released by the kernel when its holder dies, so a `kill -9` never leaves a stuck
lock behind. flock is per open file, so threads of one process also exclude each other.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dockyard.errors import DockyardError
from dockyard.names import check_app_name


class AppBusy(DockyardError):
    """Another push or deploy held the app's lock for the whole timeout."""


@contextmanager
def app_lock(locks_dir: Path, app: str, timeout: float = 600.0) -> Iterator[None]:
    check_app_name(app)
    busy = f"App {app} is busy with another push or deploy; try again later"
    with file_lock(locks_dir / f"{app}.lock", timeout, busy):
        yield


@contextmanager
def file_lock(path: Path, timeout: float, busy: str) -> Iterator[None]:
    """An exclusive flock on `path` (made 0600 if missing), waited for up to `timeout`
    seconds, then `AppBusy(busy)`. `path` must already be made of checked names."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AppBusy(busy) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
