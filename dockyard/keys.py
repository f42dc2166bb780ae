"""SSH keys: `DATA_DIR/authorized_keys` in OpenSSH syntax is the source of truth.

A key Dockyard added carries its name and role as options, e.g.

    environment="DOCKYARD_KEY=alice",environment="DOCKYARD_ROLE=admin",restrict,pty \
        ssh-ed25519 AAAA… alice

A line added by hand without them is a non-admin key named by its fingerprint. The file is
re-read whenever it changes on disk, so hand edits apply on the next login.

Invariants:
- A line Dockyard writes is exactly its own options, the key's type and base64, and the
  key's name as comment: nothing of the text a user handed over (its comment, options, any
  control character) reaches the file. Keys with anything but printable text are refused.
- The file is read as OpenSSH reads it: lines end at `\n` only.
- Options are honoured as OpenSSH honours them where they mean something here — `from=`
  (client address patterns and CIDRs), `expiry-time=`, `restrict`/`pty`/`no-pty` (a
  terminal for `ssh -t`) — or are harmless here (forwarding is never offered). A line with
  any other option (`command=`, `principals=`, `cert-authority`, `tunnel=`, `permitopen=`,
  an `environment=` that is not Dockyard's…) is refused and logged, never half-honoured.
"""

from __future__ import annotations

import base64
import fcntl
import fnmatch
import ipaddress
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
import structlog

from dockyard.errors import Conflict, NotFound, UsageError
from dockyard.names import check_key_name

NAME_OPTION = "DOCKYARD_KEY"
ROLE_OPTION = "DOCKYARD_ROLE"
ADMIN_ROLE = "admin"
_KEY_TYPE_RE = re.compile(r"^(ssh-|ecdsa-|sk-)")
MAX_KEY_TEXT = 16384
log = structlog.get_logger("dockyard.keys")


@dataclass(frozen=True)
class KeyPolicy:
    """What a line's options allow: where from, until when, and a terminal or not."""

    from_patterns: tuple[str, ...] = ()  # empty: from anywhere
    expires_at: float | None = None  # epoch seconds; None: never
    pty: bool = True

    def allows(self, address: str, now: float) -> bool:
        if self.expires_at is not None and now >= self.expires_at:
            return False
        return not self.from_patterns or address_matches(address, self.from_patterns)


@dataclass(frozen=True)
class KeyEntry:
    name: str
    is_admin: bool
    key: asyncssh.SSHKey
    line: str
    policy: KeyPolicy = KeyPolicy()

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
    in_quotes, escaped = False, False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\" and in_quotes:
            escaped = True
        elif ch == '"':
            in_quotes = not in_quotes
        elif ch in " \t" and not in_quotes:
            return line[:i], line[i:].strip()
    return line, ""


# Options that restrict nothing Dockyard offers (it never forwards anything, runs no rc).
HARMLESS_OPTIONS = frozenset({
    "no-port-forwarding", "no-agent-forwarding", "no-x11-forwarding", "no-user-rc",
    "port-forwarding", "agent-forwarding", "x11-forwarding", "user-rc",
})  # fmt: skip
OUR_ENVIRONMENT = frozenset({NAME_OPTION, ROLE_OPTION})
OPTION_RE = re.compile(r'([A-Za-z0-9-]+)(?:="((?:[^"\\]|\\.)*)")?(?:,|$)')


class UnsupportedOption(ValueError):
    pass


def parse_options(options: str) -> tuple[dict[str, str], KeyPolicy]:
    """Dockyard's `environment=` values and the policy the options make; raises
    UnsupportedOption for anything Dockyard cannot honour."""
    env: dict[str, str] = {}
    patterns: tuple[str, ...] = ()
    expires: float | None = None
    restricted, pty = False, None
    pos = 0
    while pos < len(options):
        match = OPTION_RE.match(options, pos)
        if match is None or match.end() == pos:
            raise UnsupportedOption(f"malformed options near {options[pos:pos + 20]!r}")
        pos = match.end()
        name, value = match.group(1).lower(), match.group(2)
        value = None if value is None else re.sub(r"\\(.)", r"\1", value)
        if name == "environment" and value is not None and "=" in value:
            key, _, val = value.partition("=")
            if key not in OUR_ENVIRONMENT:
                raise UnsupportedOption(f"environment={key} (only {NAME_OPTION}, {ROLE_OPTION})")
            env[key] = val
        elif name == "from" and value:
            patterns = tuple(p.strip() for p in value.split(",") if p.strip())
        elif name == "expiry-time" and value:
            expires = parse_expiry(value)
        elif name == "restrict" and value is None:
            restricted = True
        elif name in ("pty", "no-pty") and value is None:
            pty = name == "pty"
        elif name in HARMLESS_OPTIONS and value is None:
            continue
        else:
            raise UnsupportedOption(f"option {name!r} is not supported")
    allow_pty = pty if pty is not None else not restricted
    return env, KeyPolicy(patterns, expires, allow_pty)


EXPIRY_RE = re.compile(r"^(\d{8})(\d{4}(\d{2})?)?(Z)?$")


def parse_expiry(value: str) -> float:
    """OpenSSH's `YYYYMMDD[HHMM[SS]][Z]`: local time, or UTC with `Z`."""
    match = EXPIRY_RE.fullmatch(value)
    if match is None:
        raise UnsupportedOption(f"expiry-time {value!r} is not YYYYMMDD[HHMM[SS]][Z]")
    text = match.group(1) + (match.group(2) or "0000") + ("" if match.group(3) else "00")
    try:
        moment = datetime.strptime(text, "%Y%m%d%H%M%S")
    except ValueError:
        raise UnsupportedOption(f"expiry-time {value!r} is not a date") from None
    if match.group(4):
        return moment.replace(tzinfo=UTC).timestamp()
    return moment.timestamp()


def address_matches(address: str, patterns: tuple[str, ...]) -> bool:
    """OpenSSH's `from=` on an address: a negated match refuses, else any match allows."""
    allowed = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if _pattern_matches(address, pattern[1:] if negated else pattern):
            if negated:
                return False
            allowed = True
    return allowed


def _pattern_matches(address: str, pattern: str) -> bool:
    if "/" in pattern:
        try:
            return ipaddress.ip_address(address) in ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            return False
    return fnmatch.fnmatchcase(address, pattern)


def parse_public_key(text: str) -> asyncssh.SSHKey:
    """Parse one OpenSSH public key line (`type base64 [comment]`, no options). Anything
    that is not printable text is refused: a key line must stay one line."""
    text = text.strip()
    if not text or len(text) > MAX_KEY_TEXT or not text.isprintable():
        raise UsageError("Invalid ssh public key")
    if not _KEY_TYPE_RE.match(text):
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


def key_text(key: asyncssh.SSHKey) -> str:
    """`type base64`, without any comment the key came with."""
    algorithm = key.get_algorithm()
    return f"{algorithm} {base64.b64encode(key.public_data).decode('ascii')}"


@dataclass(frozen=True)
class RefusedLine:
    number: int
    reason: str


def parse_authorized_keys(text: str) -> tuple[list[KeyEntry], list[RefusedLine]]:
    entries, refused = [], []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r").strip()
        if not line or line.startswith("#"):
            continue
        options, keytext = _split_options(line)
        try:
            key = asyncssh.import_public_key(keytext)
        except (asyncssh.KeyImportError, ValueError):
            # A malformed hand-edited line must not lock everyone else out.
            refused.append(RefusedLine(number, "not a public key"))
            continue
        try:
            env, policy = parse_options(options)
        except UnsupportedOption as exc:
            refused.append(RefusedLine(number, str(exc)))
            continue
        name = env.get(NAME_OPTION) or key.get_fingerprint("sha256")
        entries.append(KeyEntry(name, env.get(ROLE_OPTION) == ADMIN_ROLE, key, line, policy))
    return entries, refused


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
                entries, refused = parse_authorized_keys(self.path.read_text(errors="replace"))
                for line in refused:
                    log.warning("authorized_keys line refused", line=line.number,
                                reason=line.reason)  # fmt: skip
                self._cache, self._cache_stamp = entries, stamp
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
            options += ["restrict", "pty"]
            line = f"{','.join(options)} {key_text(key)} {name}"
            self._rewrite(self._lines() + [line])
        return self.get(name)

    def upgrade(self) -> int:
        """Lines Dockyard wrote before it honoured `restrict` said `restrict` to mean "no
        forwarding" and still allowed a terminal: give them `pty`, as it writes lines now.
        Returns how many lines changed; hand-written lines are left as they are."""
        with self._locked():
            lines, changed = [], 0
            for line in self._lines():
                options, keytext = _split_options(line.strip())
                names = [o.split("=", 1)[0] for o in re.findall(r'[a-z-]+(?:="[^"]*")?', options)]
                ours = f'environment="{NAME_OPTION}=' in options
                if ours and "restrict" in names and "pty" not in names and "no-pty" not in names:
                    line = f"{options},pty {keytext}"
                    changed += 1
                lines.append(line)
            if changed:
                self._rewrite(lines)
        return changed

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
