"""Who is looking: one-time sign-in links, sessions and read-only API tokens.

Invariants:
- Every secret is 32 random bytes (`secrets.token_urlsafe`), shown once to its owner and
  stored only as its SHA-256. Nothing here logs a secret or its hash, and a secret never sits
  in a URL that reaches a server: the sign-in link carries it in the fragment (`/login#…`),
  which browsers do not send; the page's script posts it.
- A sign-in link works once and only before it expires: redeeming is one conditional UPDATE
  (`used_at IS NULL AND expires_at > now`), so two concurrent redemptions cannot both win.
- A session or token names a key, never a role. Who that key is (admin or not) is read from
  `authorized_keys` on every request, so removing or demoting a key takes effect at once;
  access decisions are `dockyard.access`'s, made by the callers with this identity.
- Sessions expire after `session-ttl` from sign-in (no sliding renewal); tokens after
  `token-ttl` days. `revoke_all` ends sessions, links and tokens of one key or of every key.
- CSRF tokens are an HMAC of the session's own secret: they need no storage, differ per
  session, and cannot be made without the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from dashboard import tables  # noqa: F401  (the dashboard's tables)
from dashboard.properties import LOGIN_TTL, SESSION_TTL, TOKEN_TTL
from dockyard.access import Identity
from dockyard.errors import NotFound
from dockyard.services import Services, on_forget_key
from dockyard.state import StateStore

SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
TOKEN_PREFIX = "dyt_"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def identity_of(services: Services, key_name: str) -> Identity | None:
    """The key as `authorized_keys` says now, or None if it is gone or expired (its
    `expiry-time=`): a session or token never outlives what the key may do over SSH."""
    try:
        entry = services.keys.get(key_name)
    except NotFound:
        return None
    expires = entry.policy.expires_at
    if expires is not None and time.time() >= expires:
        return None
    return Identity(name=entry.name, is_admin=entry.is_admin)


def capped_expiry(services: Services, key_name: str, wanted: float) -> float:
    """`wanted`, or the key's own expiry if that comes first."""
    try:
        expires = services.keys.get(key_name).policy.expires_at
    except NotFound:
        return time.time()
    return wanted if expires is None else min(wanted, expires)


@dataclass(frozen=True)
class Session:
    secret: str  # the cookie's value; only its digest is stored
    identity: Identity
    expires_at: float

    @property
    def csrf(self) -> str:
        return csrf_token(self.secret)


def csrf_token(session_secret: str) -> str:
    return hmac.new(session_secret.encode(), b"dockyard-dashboard-csrf", "sha256").hexdigest()


def csrf_ok(session_secret: str, offered: str) -> bool:
    return offered.isascii() and hmac.compare_digest(csrf_token(session_secret), offered)


class AuthStore:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.state: StateStore = services.state

    # Sign-in links
    def issue_login(self, key_name: str) -> tuple[str, float]:
        """A new one-time secret for `key_name` and when it expires."""
        secret = new_secret()
        now = time.time()
        expires = capped_expiry(
            self.services, key_name, now + LOGIN_TTL.get(self.services.properties, None)
        )
        with self.state.transaction() as conn:
            conn.execute(
                "INSERT INTO dashboard_logins (hash, key_name, created_at, expires_at) "
                "VALUES (?, ?, ?, ?)",
                (digest(secret), key_name, now, expires),
            )
        return secret, expires

    def redeem_login(self, secret: str) -> Session | None:
        """A new session for the link's key, or None: unknown, used, expired, or its key
        gone. The link is spent whatever the outcome after it matched."""
        if not SECRET_RE.fullmatch(secret):
            return None
        now = time.time()
        with self.state.transaction() as conn:
            row = conn.execute(
                "UPDATE dashboard_logins SET used_at = ? "
                "WHERE hash = ? AND used_at IS NULL AND expires_at > ? RETURNING key_name",
                (now, digest(secret), now),
            ).fetchone()
        if row is None:
            return None
        identity = identity_of(self.services, row["key_name"])
        if identity is None:
            return None
        session_secret = new_secret()
        wanted = now + SESSION_TTL.get(self.services.properties, None)
        expires = capped_expiry(self.services, identity.name, wanted)
        with self.state.transaction() as conn:
            conn.execute(
                "INSERT INTO dashboard_sessions (hash, key_name, created_at, expires_at) "
                "VALUES (?, ?, ?, ?)",
                (digest(session_secret), identity.name, now, expires),
            )
        return Session(session_secret, identity, expires)

    # Sessions
    def session(self, secret: str) -> Session | None:
        if not SECRET_RE.fullmatch(secret):
            return None
        row = self.state.query_one(
            "SELECT key_name, expires_at FROM dashboard_sessions WHERE hash = ? AND expires_at > ?",
            (digest(secret), time.time()),
        )
        if row is None:
            return None
        identity = identity_of(self.services, row["key_name"])
        return Session(secret, identity, row["expires_at"]) if identity else None

    def end_session(self, secret: str) -> None:
        with self.state.transaction() as conn:
            conn.execute("DELETE FROM dashboard_sessions WHERE hash = ?", (digest(secret),))

    # API tokens (read-only)
    def issue_token(self, key_name: str) -> tuple[str, float]:
        secret = new_secret()
        now = time.time()
        wanted = now + TOKEN_TTL.get(self.services.properties, None) * 86400
        expires = capped_expiry(self.services, key_name, wanted)
        with self.state.transaction() as conn:
            conn.execute(
                "INSERT INTO dashboard_tokens (hash, key_name, created_at, expires_at) "
                "VALUES (?, ?, ?, ?)",
                (digest(secret), key_name, now, expires),
            )
        return TOKEN_PREFIX + secret, expires

    def token(self, presented: str) -> Identity | None:
        secret = presented.removeprefix(TOKEN_PREFIX)
        if secret == presented or not SECRET_RE.fullmatch(secret):
            return None
        row = self.state.query_one(
            "SELECT key_name FROM dashboard_tokens WHERE hash = ? AND expires_at > ?",
            (digest(secret), time.time()),
        )
        return identity_of(self.services, row["key_name"]) if row else None

    # Revocation and housekeeping
    def revoke_all(self, key_name: str | None) -> dict[str, int]:
        """End the sessions, unused links and tokens of one key, or of every key (None);
        returns how many of each were still usable."""
        where, params = ("", ()) if key_name is None else (" AND key_name = ?", (key_name,))
        counts = {}
        now = time.time()
        with self.state.transaction() as conn:
            for table, usable in (
                ("dashboard_sessions", "expires_at > ?"),
                ("dashboard_logins", "expires_at > ? AND used_at IS NULL"),
                ("dashboard_tokens", "expires_at > ?"),
            ):
                counts[table.removeprefix("dashboard_")] = conn.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE {usable}{where}",  # noqa: S608
                    (now, *params),
                ).fetchone()[0]
                conn.execute(f"DELETE FROM {table} WHERE 1 = 1{where}", params)  # noqa: S608
        return counts

    def prune(self) -> int:
        """Drop expired rows (used links are kept until they expire, so a reuse is refused
        as used, not as unknown — either way refused)."""
        now = time.time()
        removed = 0
        with self.state.transaction() as conn:
            for table in ("dashboard_sessions", "dashboard_logins", "dashboard_tokens"):
                cur = conn.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now,))  # noqa: S608
                removed += cur.rowcount
        return removed


@on_forget_key
def _forget_key(state: StateStore, key_name: str, new_owner: str) -> None:
    """A removed key's sessions, links and tokens go with it, so a later key added under
    the same name inherits none of them."""
    for table in ("dashboard_sessions", "dashboard_logins", "dashboard_tokens"):
        state.conn.execute(f"DELETE FROM {table} WHERE key_name = ?", (key_name,))  # noqa: S608
