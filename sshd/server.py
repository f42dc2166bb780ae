"""Connections: authentication, identity and limits.

Identity is decided after authentication succeeds, from the key that actually signed.
asyncssh also calls `validate_public_key` for keys that are only offered (the query step),
so that method only answers "is this key known"; it remembers the entry it matched, and
`auth_completed` — which asyncssh calls right after verifying a signature made with the
last validated key — turns that into the connection's identity. Client environment
variables and the SSH user name play no part.

Refused keys cost the client: after `max_auth_attempts` of them the connection is cut, and
a source address that keeps offering unknown keys waits longer for each refusal (up to
`max_refusal_delay`). A known key is never delayed, so an admin behind the same address
still gets in. A connection that ends without logging in after offering a key leaves one
`login:refused` event.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import asyncssh
import structlog

from dockyard.access import Identity
from dockyard.bridge import MAX_WORKERS, run_blocking
from dockyard.keys import KeyEntry
from dockyard.output import ERROR
from dockyard.services import Services
from sshd.checks import record_listen
from sshd.hostkeys import load_or_create_host_keys
from sshd.session import handle_process
from sshd.tcp import acknowledge_promptly

log = structlog.get_logger("dockyard.sshd")

IDENTITY_INFO = "dockyard_identity"
POLICY_INFO = "dockyard_key_policy"  # what the key's authorized_keys options allow
# More than an SSH banner (at most 255 bytes): the client has begun its key exchange.
KEY_EXCHANGE_STARTED_BYTES = 256
# How far an unauthenticated connection got, least first (see ConnectionTable).
PROGRESS_BANNER_AT_MOST, PROGRESS_KEY_EXCHANGE, PROGRESS_AUTHENTICATING = 0, 1, 2


@dataclass(frozen=True)
class FrontDoorLimits:
    login_timeout: float = 30.0  # seconds to finish authentication
    keepalive_interval: float = 30.0  # seconds between keepalives on an idle connection
    keepalive_count_max: int = 4  # unanswered keepalives before we hang up
    max_connections: int = 512  # all connections, authenticated or not
    max_unauthenticated: int = 64  # connections still in key exchange or authentication
    max_auth_attempts: int = 6  # refused keys per connection before we hang up (as OpenSSH)
    refusal_window: float = 60.0  # seconds a refused key counts against its source address
    refusals_before_delay: int = 10  # refusals per address in the window before delays begin
    max_refusal_delay: float = 2.0  # seconds; the delay doubles per refusal up to this
    max_connections_per_key: int = 32  # logged-in connections of one non-admin key
    admin_connection_reserve: int = 32  # connections non-admin keys can never take
    # Commands running at once: each holds a worker thread while it runs or waits on stdin.
    max_sessions_per_connection: int = 10
    max_sessions_per_key: int = 16  # non-admin keys, over all their connections
    admin_reserve: int = 32  # workers non-admin keys can never take (admins get them)
    stdin_idle_timeout: float = 300.0  # a command waiting on a silent client gives up


class SessionBudget:
    """Who may start one more command: a non-admin key at most `max_sessions_per_key` at
    once, any connection at most `max_sessions_per_connection`, and non-admin keys together
    never so many that fewer than `admin_reserve` workers are left — so no tenant, however
    many sessions it opens, can make an admin's command wait for a worker."""

    def __init__(self, limits: FrontDoorLimits, workers: int) -> None:
        self.limits = limits
        self.workers = workers
        self.per_key: dict[str, int] = {}
        self.per_connection: dict[int, int] = {}
        self.non_admin = 0

    def admit(self, identity: Identity, connection: object) -> str | None:
        """None when admitted (call `release` after), else why not."""
        conn_id = id(connection)
        if self.per_connection.get(conn_id, 0) >= self.limits.max_sessions_per_connection:
            return (f"Too many commands at once on this connection "
                    f"(at most {self.limits.max_sessions_per_connection})")  # fmt: skip
        if not identity.is_admin:
            if self.per_key.get(identity.name, 0) >= self.limits.max_sessions_per_key:
                return (f"Too many commands at once for key {identity.name} "
                        f"(at most {self.limits.max_sessions_per_key})")  # fmt: skip
            if self.non_admin >= self.workers - self.limits.admin_reserve:
                return "The server is busy; try again shortly"
            self.per_key[identity.name] = self.per_key.get(identity.name, 0) + 1
            self.non_admin += 1
        self.per_connection[conn_id] = self.per_connection.get(conn_id, 0) + 1
        return None

    def release(self, identity: Identity, connection: object) -> None:
        conn_id = id(connection)
        left = self.per_connection.get(conn_id, 1) - 1
        if left:
            self.per_connection[conn_id] = left
        else:
            self.per_connection.pop(conn_id, None)
        if not identity.is_admin:
            left = self.per_key.get(identity.name, 1) - 1
            if left:
                self.per_key[identity.name] = left
            else:
                self.per_key.pop(identity.name, None)
            self.non_admin -= 1


class ConnectionTable:
    """Counts connections; when too many are unauthenticated, one of those is dropped, so a
    flood of idle connections cannot keep a real user from logging in.

    The one dropped is the oldest of those that have made the least progress: first those
    that sent no more than a banner (a real client sends its key exchange right after it),
    then those still in key exchange, then those authenticating. A flood of idle connections
    that reconnects as fast as it is dropped therefore evicts itself, not the admin whose
    handshake is under way."""

    def __init__(self, limits: FrontDoorLimits) -> None:
        self.limits = limits
        self.connections: set[FrontDoorConnection] = set()
        self.unauthenticated: dict[FrontDoorConnection, float] = {}
        # Non-admin keys' logged-in connections, by key: one tenant may not fill the table.
        self.tenants: dict[FrontDoorConnection, str] = {}

    def admit(self, conn: FrontDoorConnection) -> bool:
        if len(self.connections) >= self.limits.max_connections:
            return False
        if len(self.unauthenticated) >= self.limits.max_unauthenticated:
            victim = self._eviction_victim()
            log.warning("unauthenticated cap reached; dropping one", peer=victim.peer)
            victim.drop()
        self.connections.add(conn)
        self.unauthenticated[conn] = time.monotonic()
        return True

    def _eviction_victim(self) -> FrontDoorConnection:
        def least_progress_then_oldest(conn: FrontDoorConnection) -> tuple[int, float]:
            return conn.progress(), self.unauthenticated[conn]

        return min(self.unauthenticated, key=least_progress_then_oldest)

    def authenticated(self, conn: FrontDoorConnection, identity: Identity) -> str | None:
        """Count a login; for a non-admin key, refuse it (returns why) past its own cap, or
        when non-admin keys together would leave no room for new logins and admins."""
        self.unauthenticated.pop(conn, None)
        if identity.is_admin:
            return None
        mine = sum(1 for name in self.tenants.values() if name == identity.name)
        if mine >= self.limits.max_connections_per_key:
            return f"Too many connections for key {identity.name}"
        room = (self.limits.max_connections - self.limits.max_unauthenticated
                - self.limits.admin_connection_reserve)  # fmt: skip
        if len(self.tenants) >= room:
            return "The server is busy; try again shortly"
        self.tenants[conn] = identity.name
        return None

    def forget(self, conn: FrontDoorConnection) -> None:
        self.connections.discard(conn)
        self.unauthenticated.pop(conn, None)
        self.tenants.pop(conn, None)


class RefusalTracker:
    """Refused keys per source address within a sliding window, and the delay they earn.

    Memory is bounded: at most `MAX_ADDRESSES` addresses are remembered, the least recently
    refused forgotten first."""

    MAX_ADDRESSES = 4096

    def __init__(self, limits: FrontDoorLimits) -> None:
        self.limits = limits
        self._refusals: OrderedDict[str, deque[float]] = OrderedDict()

    def refused(self, address: str) -> float:
        """Count one refusal from `address`; return the seconds to wait before answering."""
        now = time.monotonic()
        times = self._refusals.pop(address, None) or deque()
        times.append(now)
        while times and times[0] < now - self.limits.refusal_window:
            times.popleft()
        # One entry per refusal is enough to count; more would only grow under a flood.
        while len(times) > self.limits.refusals_before_delay + 32:
            times.popleft()
        self._refusals[address] = times
        while len(self._refusals) > self.MAX_ADDRESSES:
            self._refusals.popitem(last=False)
        excess = len(times) - self.limits.refusals_before_delay
        if excess <= 0:
            return 0.0
        return min(self.limits.max_refusal_delay, 0.05 * 2 ** min(excess, 16))

    def succeeded(self, address: str) -> None:
        self._refusals.pop(address, None)


# Background event writes; kept referenced so they are not collected half-way.
_pending_writes: set[asyncio.Future[None]] = set()


def _record_in_background(services: Services, actor: str, kind: str, detail: str) -> None:
    try:
        write = asyncio.ensure_future(
            run_blocking(services.state.record_event, actor, kind, None, detail)
        )
    except RuntimeError:  # no running loop (the server is shutting down)
        return
    _pending_writes.add(write)
    write.add_done_callback(_forget_write)


def _forget_write(write: asyncio.Future[None]) -> None:
    _pending_writes.discard(write)
    if not write.cancelled() and write.exception() is not None:
        log.warning("event not recorded", error=str(write.exception()))


class FrontDoorConnection(asyncssh.SSHServer):
    def __init__(
        self,
        services: Services,
        table: ConnectionTable,
        refusals: RefusalTracker | None = None,
    ) -> None:
        self.services = services
        self.table = table
        self.refusals = refusals or RefusalTracker(table.limits)
        self.conn: asyncssh.SSHServerConnection | None = None
        self.peer = "?"
        self.address = "?"
        self.auth_started = False
        self.bytes_received = 0
        self.identity: Identity | None = None
        self._last_validated: KeyEntry | None = None
        self._refused_fingerprints: list[str] = []

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        acknowledge_promptly(conn)
        self._count_received_bytes(conn)
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.address = str(peer[0])
        self.peer = f"{peer[0]}:{peer[1]}"
        if not self.table.admit(self):
            log.warning("connection cap reached; refusing", peer=self.peer)
            conn.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.table.forget(self)
        if self.identity is None and self._refused_fingerprints:
            fingerprint = self._refused_fingerprints[-1]
            offered = len(self._refused_fingerprints)
            detail = f"{self.peer} {fingerprint}" + (
                f" (+{offered - 1} more keys)" if offered > 1 else ""
            )
            _record_in_background(self.services, fingerprint, "login:refused", detail)

    def _count_received_bytes(self, conn: asyncssh.SSHServerConnection) -> None:
        received = getattr(conn, "data_received", None)
        if received is None:
            return  # not a transport-backed connection (unit tests' stand-ins)

        # As in sshd.tcp: asyncio looks `data_received` up on the protocol for every read.
        def data_received(data: bytes, datatype: Any = None) -> None:
            self.bytes_received += len(data)
            received(data, datatype)

        conn.data_received = data_received  # type: ignore[method-assign]

    def progress(self) -> int:
        if self.auth_started:
            return PROGRESS_AUTHENTICATING
        if self.bytes_received > KEY_EXCHANGE_STARTED_BYTES:
            return PROGRESS_KEY_EXCHANGE
        return PROGRESS_BANNER_AT_MOST

    def drop(self) -> None:
        self.table.forget(self)
        if self.conn is not None:
            self.conn.close()

    def begin_auth(self, username: str) -> bool:
        self.auth_started = True
        return True  # always authenticate; the user name itself is ignored

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool | Awaitable[bool]:
        """True for a known key. A refusal is answered at once, or, when the source address
        has earned a delay, by an awaitable that answers after it (asyncssh awaits it)."""
        entry = self.services.keys.identify(key)
        if entry is not None and not entry.policy.allows(self.address, time.time()):
            # authorized_keys' from= / expiry-time= say no: as if the key were unknown.
            log.info("key refused by its options", peer=self.peer, user=entry.name)
            entry = None
        self._last_validated = entry
        if entry is not None:
            return True
        fingerprint = key.get_fingerprint("sha256")
        self._refused_fingerprints.append(fingerprint)
        log.info("unknown key refused", peer=self.peer, fingerprint=fingerprint)
        if len(self._refused_fingerprints) >= self.table.limits.max_auth_attempts:
            log.warning("too many refused keys; hanging up", peer=self.peer)
            if self.conn is not None:
                self.conn.disconnect(
                    asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                    "Too many authentication failures",
                )
        delay = self.refusals.refused(self.address)
        return self._refuse_after(delay) if delay else False

    @staticmethod
    async def _refuse_after(delay: float) -> bool:
        await asyncio.sleep(delay)
        return False

    def auth_completed(self) -> None:
        entry = self._last_validated
        if entry is None or self.conn is None:
            # Only a signed public key can get here; anything else is a bug: fail closed.
            log.error("authenticated without a validated key; dropping", peer=self.peer)
            self.drop()
            return
        identity = Identity(name=entry.name, is_admin=entry.is_admin)
        refusal = self.table.authenticated(self, identity)
        if refusal is not None:
            log.warning("login refused", peer=self.peer, user=identity.name, reason=refusal)
            self.conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, refusal)
            return
        self.identity = identity
        self.conn.set_extra_info(**{IDENTITY_INFO: identity, POLICY_INFO: entry.policy})
        self.refusals.succeeded(self.address)
        log.info("login", peer=self.peer, user=identity.name, admin=identity.is_admin)


async def start_server(
    services: Services, limits: FrontDoorLimits | None = None
) -> asyncssh.SSHAcceptor:
    limits = limits or FrontDoorLimits()
    host, port = services.settings.ssh_listen
    table = ConnectionTable(limits)
    refusals = RefusalTracker(limits)
    budget = SessionBudget(limits, MAX_WORKERS)
    host_keys = await asyncio.to_thread(load_or_create_host_keys, services.settings.host_keys_dir)
    upgraded = await asyncio.to_thread(services.keys.upgrade)
    if upgraded:
        log.info("authorized_keys lines given pty (restrict is honoured now)", lines=upgraded)

    async def process_factory(process: asyncssh.SSHServerProcess) -> None:
        conn = process.get_extra_info("connection")
        identity = conn.get_extra_info(IDENTITY_INFO)
        if identity is None:  # no session without an identity decided at auth_completed
            process.exit(255)
            return
        policy = conn.get_extra_info(POLICY_INFO)
        if process.get_terminal_type() is not None and not (policy and policy.pty):
            process.stderr.write(f"{ERROR}This key may not open a terminal (its authorized_keys "
                                 "line says restrict or no-pty); run without -t\n".encode())
            process.exit(1)
            return
        refusal = budget.admit(identity, conn)
        if refusal is not None:
            log.warning("session refused", user=identity.name, reason=refusal)
            process.stderr.write(f"{ERROR}{refusal}\n".encode())
            process.exit(1)
            return
        try:
            await handle_process(services, identity, process, limits.stdin_idle_timeout)
        finally:
            budget.release(identity, conn)

    acceptor = await asyncssh.create_server(
        lambda: FrontDoorConnection(services, table, refusals),
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
    # What a local `doctor` checks: the address this server really listens on.
    await run_blocking(record_listen, services, (host, port))
    log.info("ssh listening", host=host, port=port)
    return acceptor
