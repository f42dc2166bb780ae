"""Where each app's bare repository lives, and how it follows the app through renames.

A repo is `repos_dir/APP.git`. Each repo records which app it belongs to (app id and
creation time, since SQLite may reuse the id of a destroyed app) in its own config, so a
repo left behind by a rename or destroy that ran where the repos dir was not known (the
local CLI) is moved to its app or removed the next time its name is used, instead of
showing one app's code to another.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from dulwich.config import ConfigFile
from dulwich.repo import Repo

from dockyard.apps import App, AppStore
from dockyard.names import check_app_name

REPO_SUFFIX = ".git"
OWNER_SECTION = (b"dockyard",)
OWNER_KEY = b"app"
TEMP_PACK_PATTERNS = ("tmp_pack_*", "pack/tmp*")
# Lock files a killed server may leave; under the app lock nothing else can hold them.
STALE_LOCK_PATTERNS = ("*.lock", "refs/**/*.lock")

_LEADING_JUNK = re.compile(r"^(?:~/|/)+")


def app_name_from_repo_path(path: str) -> str:
    """`'/app.git'`, `'app'`, `'~/app.git'` → `app`, validated before it names any path."""
    name = _LEADING_JUNK.sub("", path.strip())
    if name.endswith(REPO_SUFFIX):
        name = name[: -len(REPO_SUFFIX)]
    return check_app_name(name)


def owner_token(app: App) -> bytes:
    return f"{app.id}@{app.created_at!r}".encode()


class RepoStore:
    """The bare repos of all apps. Mutating calls expect the app's lock to be held."""

    def __init__(self, repos_dir: Path, apps: AppStore) -> None:
        self.repos_dir = repos_dir
        self.apps = apps

    def path(self, name: str) -> Path:
        return self.repos_dir / f"{check_app_name(name)}{REPO_SUFFIX}"

    def find(self, app: App) -> Repo | None:
        """The app's repo if it is in place; read-only, so safe without the app's lock."""
        path = self.path(app.name)
        if path.is_dir() and _read_owner(path) == owner_token(app):
            return Repo(str(path))
        return None

    def open(self, app: App) -> Repo | None:
        """The app's repo, after moving a stray one into place; None if it has none yet."""
        path = self.path(app.name)
        if path.is_dir():
            token = _read_owner(path)
            if token == owner_token(app):
                return Repo(str(path))
            self._evict(path, token)
        stray = self._find_by_owner(owner_token(app))
        if stray is None:
            return None
        os.rename(stray, path)
        return Repo(str(path))

    def open_or_create(self, app: App) -> Repo:
        repo = self.open(app)
        if repo is not None:
            return repo
        self.repos_dir.mkdir(parents=True, exist_ok=True)
        # Built aside and renamed in, so a crash never leaves a half-made repo under the name.
        staging = Path(tempfile.mkdtemp(prefix=".new-", dir=self.repos_dir))
        try:
            repo = Repo.init_bare(str(staging))
            config = repo.get_config()
            config.set(OWNER_SECTION, OWNER_KEY, owner_token(app))
            config.write_to_path()
            repo.close()
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

    def _evict(self, path: Path, token: bytes | None) -> None:
        """Move a repo that belongs to another app to that app's name, or delete it."""
        owner = self._app_for_token(token)
        if owner is not None and not self.path(owner.name).exists():
            os.rename(path, self.path(owner.name))
        else:
            shutil.rmtree(path)

    def _app_for_token(self, token: bytes | None) -> App | None:
        if token is None:
            return None
        return next((a for a in self.apps.all() if owner_token(a) == token), None)

    def _find_by_owner(self, token: bytes) -> Path | None:
        if not self.repos_dir.is_dir():
            return None
        for candidate in self.repos_dir.glob(f"*{REPO_SUFFIX}"):
            if _read_owner(candidate) == token:
                return candidate
        return None


def _read_owner(path: Path) -> bytes | None:
    try:
        return ConfigFile.from_path(str(path / "config")).get(OWNER_SECTION, OWNER_KEY)
    except (OSError, KeyError, ValueError):
        return None


def remove_leftovers(repo: Repo) -> None:
    """Delete what an interrupted push leaves: temporary packs and stale lock files.

    Only called with the app's lock held, so nothing else is writing to this repo now.
    """
    objects = Path(repo.object_store.path)
    for pattern in TEMP_PACK_PATTERNS:
        for leftover in objects.glob(pattern):
            leftover.unlink(missing_ok=True)
    for pattern in STALE_LOCK_PATTERNS:
        for leftover in Path(repo.controldir()).glob(pattern):
            leftover.unlink(missing_ok=True)
