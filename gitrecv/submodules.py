"""Git submodules, fetched for the build as `git clone --recurse-submodules` would.

A pushed tree's gitlink entries name commits in other repositories; `.gitmodules` says
where they live. The build gets each submodule's tree at that commit, in its place.

Invariants (a push is untrusted input, and fetching is done by the server):
- Only `https://` and `http://` URLs are fetched (with a timeout, never following a
  redirect, never echoing what a server answered). Relative URLs (another
  repository on this server: another app's code), `file:`, `ssh:` and `git:` are refused
  with a message naming the submodule.
- The host must resolve to public addresses only, so a push cannot make the server reach
  its own network (SSRF); hosts an admin lists in `git:set --global
  submodule-private-hosts` (an internal git server) are exempt.
- Fetched repositories are cached per URL inside the app's own repository, so a push that
  keeps its submodules fetches nothing new; nothing is shared between apps.
- A submodule that cannot be fetched, or whose commit is not there, fails the push, naming
  the submodule, its URL and why. Nested submodules are not fetched.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import urllib3
from dulwich.client import HttpGitClient
from dulwich.config import ConfigFile, parse_submodules
from dulwich.errors import GitProtocolError, HangupException, NotGitRepository
from dulwich.objects import Commit
from dulwich.repo import Repo

from dockyard.errors import DockyardError

FETCH_TIMEOUT = 60.0
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
SCHEMES = ("https", "http")
MODULES_DIR = "dockyard/modules"


class SubmoduleError(DockyardError):
    """A submodule the build needs could not be had; the message names it."""


@dataclass(frozen=True)
class Submodule:
    name: str
    path: str
    url: str


def declared(gitmodules: bytes | None) -> dict[str, Submodule]:
    """`.gitmodules` entries by path."""
    if gitmodules is None:
        return {}
    try:
        config = ConfigFile.from_file(io.BytesIO(gitmodules))
        found = {}
        for path, url, name in parse_submodules(config):
            sub = Submodule(name.decode("utf-8", "replace"), path.decode("utf-8", "replace"),
                            url.decode("utf-8", "replace"))  # fmt: skip
            found[sub.path] = sub
    except (ValueError, KeyError) as exc:
        raise SubmoduleError(f".gitmodules cannot be read: {exc}") from None
    return found


def check_url(sub: Submodule, private_hosts: Iterable[str]) -> str:
    """The URL to fetch `sub` from, or SubmoduleError saying why it may not be fetched."""
    parts = urlsplit(sub.url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise SubmoduleError(
            f"Submodule {sub.path} ({sub.url}) cannot be fetched for the build: only https:// "
            "(or http://) URLs are fetched, not relative, local, ssh or git:// ones"
        )
    if parts.username or parts.password:
        raise SubmoduleError(f"Submodule {sub.path}: credentials in its URL are not used")
    host = parts.hostname
    if host in set(private_hosts):
        return sub.url
    try:
        infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise SubmoduleError(f"Submodule {sub.path} ({sub.url}): {host} does not resolve "
                             f"({exc.strerror})") from None  # fmt: skip
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise SubmoduleError(
                f"Submodule {sub.path} ({sub.url}): {host} is a private address ({address}); "
                "an admin can allow it: git:set --global submodule-private-hosts HOST"
            )
    return sub.url


class SubmoduleFetcher:
    """Fetches submodules into the app's repository's cache and hands back their commits."""

    def __init__(self, repo: Repo, gitmodules: bytes | None, private_hosts: Iterable[str]) -> None:
        self.repo = repo
        self.modules = declared(gitmodules)
        self.private_hosts = tuple(private_hosts)

    def commit(self, path: str, sha: bytes) -> tuple[Repo, Commit]:
        """The submodule at `path` (a gitlink to `sha`): its repository and commit."""
        sub = self.modules.get(path)
        if sub is None:
            raise SubmoduleError(f"Submodule {path} is not declared in .gitmodules")
        url = check_url(sub, self.private_hosts)
        cache = self._cache(url)
        if sha not in cache.object_store:
            self._fetch(sub, url, cache)
        if sha not in cache.object_store:
            raise SubmoduleError(
                f"Submodule {sub.path} ({sub.url}) has no commit {sha.decode()[:12]}: was it "
                "pushed there?"
            )
        commit = cache[sha]
        if not isinstance(commit, Commit):
            raise SubmoduleError(f"Submodule {sub.path}: {sha.decode()[:12]} is not a commit")
        return cache, commit

    def _cache(self, url: str) -> Repo:
        key = hashlib.sha256(url.encode()).hexdigest()[:24]
        path = Path(self.repo.path) / MODULES_DIR / f"{key}.git"
        if path.is_dir():
            return Repo(str(path))
        path.mkdir(parents=True, mode=0o700)
        return Repo.init_bare(str(path))

    def _fetch(self, sub: Submodule, url: str, cache: Repo) -> None:
        # No redirects: the address checked above is the only one the server talks to.
        pool = urllib3.PoolManager(
            retries=urllib3.Retry(total=1, redirect=False), ca_certs=CA_BUNDLE,
            cert_reqs="CERT_REQUIRED", timeout=FETCH_TIMEOUT,
        )  # fmt: skip
        client = HttpGitClient(url, pool_manager=pool, timeout=FETCH_TIMEOUT, quiet=True)
        try:
            client.fetch("", cache)
        except (GitProtocolError, NotGitRepository, HangupException):
            # Its text may quote what the server sent: never echoed to the pusher.
            raise SubmoduleError(
                f"Submodule {sub.path} ({sub.url}) could not be fetched: the server did not "
                "answer as a git server (redirects are not followed)"
            ) from None
        except Exception as exc:  # urllib3 and socket errors: their reason, never a body
            raise SubmoduleError(
                f"Submodule {sub.path} ({sub.url}) could not be fetched: "
                f"{type(exc).__name__}: {str(exc)[:200]}"
            ) from None
