"""SSH keys: `DATA_DIR/authorized_keys` in OpenSSH syntax is the source of truth.

A key Dockyard added carries its name and role as options, e.g.

    environment="DOCKYARD_KEY=alice",environment="DOCKYARD_ROLE=admin",restrict ssh-ed25519 AAAA…

A line added by hand without them is a non-admin key named by its fingerprint. The file is
re-read whenever it changes on disk, so hand edits apply on the next login.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from dockyard.errors import Conflict, NotFound, UsageError
from dockyard.names import check_key_name

NAME_OPTION = "DOCKYARD_KEY"
ROLE_OPTION = "DOCKYARD_ROLE"
ADMIN_ROLE = "admin"
_KEY_TYPE_RE = re.compile(r"^(ssh-|ecdsa-|sk-)")


@dataclass(frozen=True)
class KeyEntry:
    name: str
    is_admin: bool
    key: asyncssh.SSHKey
    line: str

    @property
    def fingerprint(self) -> str:
        return self.key.get_fingerprint("sha256")

    @property
    def public_key(self) -> str:
        return self.key.export_public_key("openssh").decode().strip()

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "public-key": self.public_key,
            "admin": self.is_admin,
        }


def _split_options(line: str) -> tuple[str, str]:
    """Split an authorized_keys line into (options, "type base64 [comment]")."""
    if _KEY_TYPE_RE.match(line):
        return "", line
    in_quotes = False
    for i, ch in enumerate(line):
        if ch == '"':
            in_quotes = not in_quotes
        elif ch in " \t" and not in_quotes:
            return line[:i], line[i:].strip()
    return line, ""


def _parse_options(options: str) -> dict[str, str]:
    """Return the environment="K=V" options; other options are kept in the line untouched."""
    env: dict[str, str] = {}
    for match in re.finditer(r'environment="([^"=]+)=([^"]*)"', options):
        env[match.group(1)] = match.group(2)
    return env


def parse_public_key(text: str) -> asyncssh.SSHKey:
    """Parse one OpenSSH public key line (options are not allowed here)."""
    text = text.strip()
    if not text or "\n" in text or not _KEY_TYPE_RE.match(text):
        raise UsageError("Invalid ssh public key")
    try:
        return asyncssh.import_public_key(text)
    except (asyncssh.KeyImportError, ValueError):
        raise UsageError("Invalid ssh public key") from None


def public_keys(text: str) -> list[str]:
    """The public keys of a `.pub` or `authorized_keys` text, options stripped ("type base64
    [comment]" each); certificate authorities and lines that are not keys are skipped."""
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        options, keytext = _split_options(line)
        if "cert-authority" in options or not keytext:
            continue
        try:
            parse_public_key(keytext)
        except UsageError:
            continue
        found.append(keytext)
    return found


def parse_authorized_keys(text: str) -> list[KeyEntry]:
    entries = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        options, keytext = _split_options(line)
        try:
            key = asyncssh.import_public_key(keytext)
        except (asyncssh.KeyImportError, ValueError):
            continue  # a malformed hand-edited line must not lock everyone else out
        env = _parse_options(options)
        name = env.get(NAME_OPTION) or key.get_fingerprint("sha256")
        entries.append(KeyEntry(name, env.get(ROLE_OPTION) == ADMIN_ROLE, key, line))
    return entries


class KeyStore:
    """Reads and edits authorized_keys; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cache_stamp: tuple[int, int, int] | None = None
        self._cache: list[KeyEntry] = []
        self._mutex = threading.Lock()

    def entries(self) -> list[KeyEntry]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._mutex:
            if stamp != self._cache_stamp:
                self._cache = parse_authorized_keys(self.path.read_text(errors="replace"))
                self._cache_stamp = stamp
            return list(self._cache)

    def identify(self, key: asyncssh.SSHKey) -> KeyEntry | None:
        data = key.public_data
        for entry in self.entries():
            if entry.key.public_data == data:
                return entry
        return None

    def get(self, name: str) -> KeyEntry:
        for entry in self.entries():
            if entry.name == name:
                return entry
        raise NotFound(f"No ssh key named {name}")

    def add(self, name: str, public_key: str, admin: bool = False) -> KeyEntry:
        check_key_name(name)
        key = parse_public_key(public_key)
        with self._locked():
            existing = self.entries()
            # Names first, over all entries, so the message does not depend on file order.
            if any(entry.name == name for entry in existing):
                raise Conflict("Duplicate ssh key name")
            if any(entry.key.public_data == key.public_data for entry in existing):
                raise Conflict("Duplicate ssh public key specified")
            options = [f'environment="{NAME_OPTION}={name}"']
            if admin:
                options.append(f'environment="{ROLE_OPTION}={ADMIN_ROLE}"')
            options.append("restrict")
            keytext = key.export_public_key("openssh").decode().strip()
            line = f"{','.join(options)} {keytext} {name}"
            self._rewrite(self._lines() + [line])
        return self.get(name)

    def remove(self, name: str) -> KeyEntry:
        with self._locked():
            entry = self.get(name)
            self._rewrite([line for line in self._lines() if line.strip() != entry.line])
        return entry

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def _rewrite(self, lines: list[str]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(".authorized_keys.lock"), "w") as lockfile:
            fcntl.flock(lockfile, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lockfile, fcntl.LOCK_UN)
