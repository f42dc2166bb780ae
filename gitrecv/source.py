"""A pushed revision as the pipeline sees it: files to read and a tree to tar up.

Submodules (gitlinks) are filled in from their own repositories when the source has a
`SubmoduleFetcher` (gitrecv.submodules); without one they are left out, as before."""

from __future__ import annotations

import io
import stat
import tarfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo

from gitrecv.submodules import SubmoduleFetcher

DIR_MODE = 0o755
FILE_MODE = 0o644
EXEC_MODE = 0o755
GITLINK_MODE = 0o160000  # a submodule entry
GITMODULES = ".gitmodules"
SubmoduleFetcherFactory = Callable[[Repo, "bytes | None"], SubmoduleFetcher]


class GitSource:
    """The tree of one commit in a bare repo (implements `dockyard.pipeline.Source`)."""

    def __init__(
        self, repo: Repo, revision: str, submodules: SubmoduleFetcherFactory | None = None
    ) -> None:
        commit = repo[revision.encode("ascii")]
        if not isinstance(commit, Commit):
            raise ValueError(f"{revision} is not a commit")
        self.repo = repo
        self.revision = revision
        self._commit = commit
        self._submodules = submodules

    def close(self) -> None:
        self.repo.close()

    def read_file(self, path: str) -> bytes | None:
        parts = [p for p in path.encode("utf-8", "surrogateescape").split(b"/") if p]
        obj: object = self.repo[self._commit.tree]
        for part in parts:
            if not isinstance(obj, Tree) or part not in obj:
                return None
            mode, sha = obj[part]
            if stat.S_ISLNK(mode) or mode == GITLINK_MODE:
                return None
            obj = self.repo[sha]
        return obj.data if isinstance(obj, Blob) else None

    def write_tar(self, fileobj: BinaryIO) -> None:
        """Stream the tree as tar, one blob in memory at a time, modes and symlinks kept."""
        # The commit time as every mtime keeps archives (and image layers) reproducible.
        mtime = self._commit.commit_time
        fetcher = (
            self._submodules(self.repo, self.read_file(GITMODULES)) if self._submodules else None
        )
        with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for repo, path, mode, sha in self._entries(self.repo, self._commit.tree, b"", fetcher):
                info = tarfile.TarInfo(path.decode("utf-8", "surrogateescape"))
                info.mtime = mtime
                info.uid = info.gid = 0
                if mode is None:
                    info.type = tarfile.DIRTYPE
                    info.mode = DIR_MODE
                    tar.addfile(info)
                    continue
                data = repo[sha].as_raw_string()
                if stat.S_ISLNK(mode):
                    info.type = tarfile.SYMTYPE
                    info.linkname = data.decode("utf-8", "surrogateescape")
                    info.mode = 0o777
                    tar.addfile(info)
                else:
                    info.mode = EXEC_MODE if mode & 0o111 else FILE_MODE
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))

    def _entries(
        self, repo: Repo, tree_id: bytes, prefix: bytes, fetcher: SubmoduleFetcher | None
    ) -> Iterator[tuple[Repo, bytes, int | None, bytes]]:
        """(repo, path, mode, sha) depth-first; directories come with mode None before their
        content; a submodule's files come from its own repository."""
        tree = repo[tree_id]
        assert isinstance(tree, Tree)
        for entry in tree.iteritems():
            path = prefix + entry.path
            if entry.mode == GITLINK_MODE:
                if fetcher is None or repo is not self.repo:  # nested submodules: not fetched
                    continue
                name = path.decode("utf-8", "surrogateescape")
                sub_repo, commit = fetcher.commit(name, entry.sha)
                yield self.repo, path, None, entry.sha
                yield from self._entries(sub_repo, commit.tree, path + b"/", fetcher)
            elif stat.S_ISDIR(entry.mode):
                yield repo, path, None, entry.sha
                yield from self._entries(repo, entry.sha, path + b"/", fetcher)
            else:
                yield repo, path, entry.mode, entry.sha
