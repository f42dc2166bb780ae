"""Connections: authentication, identity and limits.

Identity is decided after authentication succeeds, from the key that actually signed.
asyncssh also calls `validate_public_key` for keys that are only offered (the query step),
so that method only answers "is this key known"; it remembers the entry it matched, and
`auth_completed` — which asyncssh calls right after verifying a signature made with the
last validated key — turns that into the connection's identity. Client environment
variables and the SSH user name play no part.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncssh
import structlog

from dockyard.access import Identity
from dockyard.keys import KeyEntry
from dockyard.registry import Services
from sshd.hostkeys import load_or_create_host_keys
from sshd.session import handle_process
from sshd.tcp import acknowledge_promptly

log = structlog.get_logger("dockyard.sshd")

IDENTITY_INFO = "dockyard_identity"


@dataclass(frozen=True)
class FrontDoorLimits:
    login_timeout: float = 30.0  # seconds to finish authentication
    keepalive_interval: float = 30.0  # seconds between keepalives on an idle connection
    keepalive_count_max: int = 4  # unanswered keepalives before we hang up
    max_connections: int = 512  # all connections, authenticated or not
    max_unauthenticated: int = 64  # connections still in key exchange or authentication


class ConnectionTable:
    """Counts connections; when too many are unauthenticated, the oldest of those is dropped,
    so a flood of idle connections cannot keep a real user from logging in."""

    def __init__(self, limits: FrontDoorLimits) -> None:
        self.limits = limits
        self.connections: set[FrontDoorConnection] = set()
        self.unauthenticated: dict[FrontDoorConnection, float] = {}

    def admit(self, conn: FrontDoorConnection) -> bool:
        if len(self.connections) >= self.limits.max_connections:
            return False
        if len(self.unauthenticated) >= self.limits.max_unauthenticated:
            oldest = min(self.unauthenticated, key=self.unauthenticated.__getitem__)
            log.warning("unauthenticated cap reached; dropping oldest", peer=oldest.peer)
            oldest.drop()
        self.connections.add(conn)
        self.unauthenticated[conn] = time.monotonic()
        return True

    def authenticated(self, conn: FrontDoorConnection) -> None:
        self.unauthenticated.pop(conn, None)

    def forget(self, conn: FrontDoorConnection) -> None:
        self.connections.discard(conn)
        self.unauthenticated.pop(conn, None)


class FrontDoorConnection(asyncssh.SSHServer):
    def __init__(self, services: Services, table: ConnectionTable) -> None:
        self.services = services
        self.table = table
        self.conn: asyncssh.SSHServerConnection | None = None
        self.peer = "?"
        self._last_validated: KeyEntry | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        acknowledge_promptly(conn)
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.peer = f"{peer[0]}:{peer[1]}"
        if not self.table.admit(self):
            log.warning("connection cap reached; refusing", peer=self.peer)
            conn.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.table.forget(self)

    def drop(self) -> None:
        self.table.forget(self)
        if self.conn is not None:
            self.conn.close()

    def begin_auth(self, username: str) -> bool:
        return True  # always authenticate; the user name itself is ignored

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        entry = self.services.keys.identify(key)
        self._last_validated = entry
        if entry is None:
            log.info("unknown key refused", peer=self.peer, fingerprint=key.get_fingerprint())
        return entry is not None

    def auth_completed(self) -> None:
        entry = self._last_validated
        if entry is None or self.conn is None:
            # Only a signed public key can get here; anything else is a bug: fail closed.
            log.error("authenticated without a validated key; dropping", peer=self.peer)
            self.drop()
            return
        identity = Identity(name=entry.name, is_admin=entry.is_admin)
        self.conn.set_extra_info(**{IDENTITY_INFO: identity})
        self.table.authenticated(self)
        log.info("login", peer=self.peer, user=identity.name, admin=identity.is_admin)


async def start_server(
    services: Services, limits: FrontDoorLimits | None = None
) -> asyncssh.SSHAcceptor:
    limits = limits or FrontDoorLimits()
    host, port = services.settings.ssh_listen
    table = ConnectionTable(limits)
    host_keys = await asyncio.to_thread(load_or_create_host_keys, services.settings.host_keys_dir)

    async def process_factory(process: asyncssh.SSHServerProcess) -> None:
        identity = process.get_extra_info("connection").get_extra_info(IDENTITY_INFO)
        if identity is None:  # no session without an identity decided at auth_completed
            process.exit(255)
            return
        await handle_process(services, identity, process)

    acceptor = await asyncssh.create_server(
        lambda: FrontDoorConnection(services, table),
        host,
        port,
        server_host_keys=host_keys,
        process_factory=process_factory,
        encoding=None,
        login_timeout=limits.login_timeout,
        keepalive_interval=limits.keepalive_interval,
        keepalive_count_max=limits.keepalive_count_max,
        compression_algs=["none"],
        allow_scp=False,
        agent_forwarding=False,
        x11_forwarding=False,
        reuse_address=True,
        # Public keys only: no GSSAPI, even if the gssapi module is installed one day.
        gss_host=None,
    )
    log.info("ssh listening", host=host, port=port)
    return acceptor
