"""ACME (RFC 8555) through certbot's `acme` library: account, order, HTTP-01, finalize, revoke.

Invariants:
- JWS signing, nonces and message encoding are the library's (`acme.client.ClientV2` over
  `ClientNetwork`); this module only sequences its calls. We poll with our own short,
  growing intervals (the library's helpers sleep a whole second before every poll), using
  the library's POST-as-GET.
- Everything here blocks on the network. Commands call it on their worker thread; the
  server's background work goes through the bridge (`dockyard.bridge.run_blocking`), never
  on the event loop.
- It knows no Dockyard state: it is handed the accounts directory, the challenge directory
  and plain values, all validated by the caller.
- A token from the ACME server reaches a path only after matching base64url (RFC 8555
  §8.1); every token file published for an order is removed when the order ends, however
  it ends.
- Keys are written 0600 (account key, certificate key); the account key is created once
  per (directory URL, email) and kept, so renewals use the same account. Revocation is
  signed with the certificate's own key, so it works whichever account ordered it.
- Errors are `AcmeError`s whose message is fit for ` !     `: an ACME problem's type and
  detail (length-bounded, control characters removed) or what failed on the network,
  never a response body, so a directory URL cannot be used to read what another service
  answers.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import josepy as jose
import requests
from acme import challenges, client, crypto_util, messages
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dockyard.errors import DockyardError
from proxy.certs import write_private

USER_AGENT = "dockyard-acme"
NETWORK_TIMEOUT = 30  # seconds, per HTTP request to the ACME server
ORDER_TIMEOUT = 120.0  # seconds for one whole order: validation and issuance
POLL_FIRST = 0.05
POLL_MAX = 2.0
ACCOUNT_KEY = "account.key"
ACCOUNT_INFO = "account.json"
LOCK_FILE = ".lock"
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,256}$")
MAX_MESSAGE = 400
REVOCATION_UNSPECIFIED = 0


class AcmeError(DockyardError):
    """The ACME exchange failed; the message says where and why."""


class ValidationFailed(AcmeError):
    """The ACME server could not validate some names (their HTTP-01 answers were wrong or
    unreachable)."""


@dataclass(frozen=True)
class Endpoint:
    """An ACME directory and the CA bundle to trust for it (None: the system's)."""

    directory_url: str
    ca_bundle: Path | None = None


@dataclass(frozen=True)
class Issued:
    chain_pem: bytes  # leaf first, then the intermediates the server sent
    key_pem: bytes


@dataclass
class Account:
    client: client.ClientV2
    key: jose.JWK
    uri: str
    endpoint: Endpoint


def clean(text: object, limit: int = MAX_MESSAGE) -> str:
    """One line of printable text from whatever a server said, cut to `limit`."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _problem(error: messages.Error) -> str:
    code = (error.typ or "").removeprefix(messages.ERROR_PREFIX)
    parts = [clean(error.detail or error.title or code or "no detail given")]
    if code:
        parts.append(f"({clean(code, 60)})")
    return " ".join(parts)


@contextmanager
def _errors(what: str, endpoint: Endpoint) -> Iterator[None]:
    """Turn what the library and requests raise into AcmeError with a safe message."""
    url = endpoint.directory_url
    try:
        yield
    except AcmeError:
        raise
    except messages.Error as exc:
        raise AcmeError(f"{what}: the ACME server said: {_problem(exc)}") from None
    except requests.exceptions.SSLError:
        hint = "" if endpoint.ca_bundle else " (a private ACME server needs server-ca-file)"
        raise AcmeError(
            f"{what}: the TLS certificate of {url} is not trusted{hint}"
        ) from None
    except requests.exceptions.Timeout:
        raise AcmeError(f"{what}: {url} did not answer within {NETWORK_TIMEOUT} s") from None
    except requests.exceptions.ConnectionError:
        raise AcmeError(f"{what}: cannot connect to {url}") from None
    except requests.exceptions.RequestException as exc:
        raise AcmeError(f"{what}: request to {url} failed ({type(exc).__name__})") from None
    except acme_errors.TimeoutError:
        raise AcmeError(f"{what}: the ACME server did not finish in time") from None
    except (acme_errors.Error, jose.DeserializationError, ValueError, KeyError, TypeError):
        # A non-ACME answer (a web page, a proxy's error): say so, never echo it.
        raise AcmeError(f"{what}: {url} did not answer as an ACME server") from None


# ---------------------------------------------------------------- files


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def new_private_key_pem() -> bytes:
    """A P-256 key (fast to make, accepted by every ACME CA and by nginx), PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip


def account_id(directory_url: str, email: str) -> str:
    """The directory name of the account for this ACME server and contact."""
    return hashlib.sha256(f"{directory_url}\n{email}".encode()).hexdigest()[:24]


def _account_key(directory: Path) -> jose.JWK:
    path = directory / ACCOUNT_KEY
    with _locked(directory):
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            pem = new_private_key_pem()
            write_private(path, pem)
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise AcmeError(f"{path} is not an EC private key; move it away to make a new one")
    return jose.JWKEC(key=key)


class Webroot:
    """Where nginx serves HTTP-01 answers from: one file per token."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, token: str) -> Path:
        if not TOKEN_RE.fullmatch(token):
            raise AcmeError("The ACME server sent a challenge token that is not base64url")
        return self.directory / token

    def publish(self, token: str, key_authorization: str) -> None:
        path = self.path(token)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{token}.tmp")
        # Readable by nginx workers (tokens are public by design: the CA fetches them).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(key_authorization)
        os.replace(tmp, path)

    def withdraw(self, token: str) -> None:
        self.path(token).unlink(missing_ok=True)

    def remove_stale(self, older_than: float) -> int:
        """Token files left by a process that died mid-order."""
        removed = 0
        cutoff = time.time() - older_than
        for entry in self.directory.glob("*") if self.directory.is_dir() else []:
            try:
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
            except OSError:
                continue
        return removed


# ---------------------------------------------------------------- protocol


def _verify(endpoint: Endpoint) -> bool | str:
    # requests takes a CA bundle path where the library's signature says bool.
    return str(endpoint.ca_bundle) if endpoint.ca_bundle else True


def open_account(accounts_dir: Path, endpoint: Endpoint, email: str) -> Account:
    """The account for (directory, email), registered if the server does not know its key.

    newAccount is sent every time: for a known key the server answers with the existing
    account's URL (RFC 8555 §7.3.1), so an account the server forgot (pebble forgets at
    every restart) is simply made again."""
    directory = accounts_dir / account_id(endpoint.directory_url, email)
    key = _account_key(directory)
    net = client.ClientNetwork(
        key, alg=jose.ES256, user_agent=USER_AGENT, timeout=NETWORK_TIMEOUT,
        verify_ssl=_verify(endpoint),  # type: ignore[arg-type]
    )  # fmt: skip
    with _errors("Reading the ACME directory", endpoint):
        acme = client.ClientV2(client.ClientV2.get_directory(endpoint.directory_url, net), net)
    registration = messages.NewRegistration.from_data(
        email=email or None, terms_of_service_agreed=True
    )
    with _errors("Registering the ACME account", endpoint):
        try:
            uri = acme.new_account(registration).uri
        except acme_errors.ConflictError as known:
            uri = known.location
            net.account = messages.RegistrationResource(uri=uri, body=messages.Registration())
    info = {"directory": endpoint.directory_url, "email": email, "uri": uri}
    write_private(directory / ACCOUNT_INFO, json.dumps(info, indent=2).encode())
    return Account(client=acme, key=key, uri=uri, endpoint=endpoint)


def _post_as_get(account: Account, url: str, **kwargs: object) -> requests.Response:
    acme = account.client
    return acme.net.post(url, None, new_nonce_url=acme.directory["newNonce"], **kwargs)


def _pause(step: float, deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise acme_errors.TimeoutError()
    time.sleep(min(step, remaining))
    return min(step * 2, POLL_MAX)


def _validation_errors(authz: messages.AuthorizationResource) -> str:
    name = authz.body.identifier.value
    found = [_problem(c.error) for c in authz.body.challenges if c.error is not None]
    return f"{name}: {'; '.join(found) or f'authorization {authz.body.status}'}"


def _wait_authorizations(
    account: Account, order: messages.OrderResource, deadline: float
) -> None:
    failed = []
    for authz in order.authorizations:
        step = POLL_FIRST
        while authz.body.status in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
            step = _pause(step, deadline)
            authz, _ = account.client.poll(authz)
        if authz.body.status != messages.STATUS_VALID:
            failed.append(_validation_errors(authz))
    if failed:
        raise ValidationFailed("Validation failed for " + " | ".join(failed))


def _finalize(account: Account, order: messages.OrderResource, deadline: float) -> str:
    order = account.client.begin_finalization(order)
    body = order.body
    step = POLL_FIRST
    while body.status != messages.STATUS_VALID or not body.certificate:
        if body.status == messages.STATUS_INVALID:
            detail = _problem(body.error) if body.error else "no reason given"
            raise AcmeError(f"The ACME server refused to issue the certificate: {detail}")
        step = _pause(step, deadline)
        body = messages.Order.from_json(_post_as_get(account, order.uri).json())
    return _post_as_get(account, body.certificate).content.decode("ascii")


def issue(
    account: Account, names: list[str], webroot: Webroot, timeout: float = ORDER_TIMEOUT
) -> Issued:
    """A certificate for `names` with a new key, proven by HTTP-01 through `webroot`."""
    deadline = time.monotonic() + timeout
    key_pem = new_private_key_pem()
    csr_pem = crypto_util.make_csr(key_pem, names)
    published: list[str] = []
    with _errors("Ordering the certificate", account.endpoint):
        try:
            order = account.client.new_order(csr_pem)
            answers = []
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # validated recently for this account: nothing to prove
                http01 = [c for c in authz.body.challenges
                          if isinstance(c.chall, challenges.HTTP01)]  # fmt: skip
                if not http01:
                    raise AcmeError(
                        f"The ACME server offers no http-01 challenge for "
                        f"{clean(authz.body.identifier.value, 255)}"
                    )
                response, validation = http01[0].response_and_validation(account.key)
                token = http01[0].chall.encode("token")
                webroot.publish(token, validation)
                published.append(token)
                answers.append((http01[0], response))
            for challenge, response in answers:
                account.client.answer_challenge(challenge, response)
            _wait_authorizations(account, order, deadline)
            chain = _finalize(account, order, deadline)
        finally:
            for token in published:
                webroot.withdraw(token)
    return Issued(chain_pem=chain.encode("ascii"), key_pem=key_pem)


def revoke(endpoint: Endpoint, chain_pem: bytes, key_pem: bytes) -> bool:
    """Revoke the leaf of `chain_pem`, signing with the certificate's own key (RFC 8555
    §7.6), so it works whichever account ordered it. False when it already was revoked."""
    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise AcmeError("Only certificates with an EC key (as Dockyard makes them) are revoked")
    net = client.ClientNetwork(
        jose.JWKEC(key=key), alg=jose.ES256, user_agent=USER_AGENT, timeout=NETWORK_TIMEOUT,
        verify_ssl=_verify(endpoint),  # type: ignore[arg-type]
    )  # fmt: skip
    with _errors("Revoking the certificate", endpoint):
        acme = client.ClientV2(client.ClientV2.get_directory(endpoint.directory_url, net), net)
        try:
            acme.revoke(leaf, REVOCATION_UNSPECIFIED)
        except messages.Error as exc:
            if (exc.typ or "").endswith(":alreadyRevoked"):
                return False
            raise
    return True
