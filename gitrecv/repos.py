"""Where each app's bare repository lives: `repos_dir/APP.git`."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from dulwich.repo import Repo

from dockyard.apps import App
from dockyard.names import check_app_name

REPO_SUFFIX = ".git"
TEMP_PACK_PATTERNS = ("tmp_pack_*", "pack/tmp*")
# Lock files a killed server may leave; under the app lock nothing else can hold them.
STALE_LOCK_PATTERNS = ("*.lock", "refs/**/*.lock")
# Object lists a killed clone was writing (gitrecv/objectwalk.py's cache).
STALE_CACHE_PATTERNS = ("dockyard/upload-cache/.tmp-*",)

_LEADING_JUNK = re.compile(r"^(?:~/|/)+")


def app_name_from_repo_path(path: str) -> str:
    """`'/app.git'`, `'app'`, `'~/app.git'` → `app`, validated before it names any path."""
    name = _LEADING_JUNK.sub("", path.strip())
    if name.endswith(REPO_SUFFIX):
        name = name[: -len(REPO_SUFFIX)]
    return check_app_name(name)


class RepoStore:
    """The bare repos of all apps. Mutating calls expect the app's lock to be held."""

    def __init__(self, repos_dir: Path) -> None:
        self.repos_dir = repos_dir

    def path(self, name: str) -> Path:
        return self.repos_dir / f"{check_app_name(name)}{REPO_SUFFIX}"

    def find(self, app: App) -> Repo | None:
        """The app's repo, or None before its first push; read-only, so safe unlocked."""
        path = self.path(app.name)
        return Repo(str(path)) if path.is_dir() else None

    def open_or_create(self, app: App) -> Repo:
        repo = self.find(app)
        if repo is not None:
            return repo
        self.repos_dir.mkdir(parents=True, exist_ok=True)
        # Built aside and renamed in, so a crash never leaves a half-made repo under the name.
        staging = Path(tempfile.mkdtemp(prefix=".new-", dir=self.repos_dir))
        try:
            Repo.init_bare(str(staging)).close()
            os.rename(staging, self.path(app.name))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return Repo(str(self.path(app.name)))

    def move(self, old: str, new: str) -> None:
        source, target = self.path(old), self.path(new)
        if source.is_dir() and not target.exists():
            os.rename(source, target)

    def remove(self, name: str) -> None:
        shutil.rmtree(self.path(name), ignore_errors=True)


def remove_leftovers(repo: Repo) -> None:
    """Delete what an interrupted push leaves: temporary packs and stale lock files.

    Only called with the app's lock held, so nothing else is writing to this repo now.
    """
    objects = Path(repo.object_store.path)
    for pattern in TEMP_PACK_PATTERNS:
        for leftover in objects.glob(pattern):
            leftover.unlink(missing_ok=True)
    for pattern in (*STALE_LOCK_PATTERNS, *STALE_CACHE_PATTERNS):
        for leftover in Path(repo.controldir()).glob(pattern):
            leftover.unlink(missing_ok=True)
