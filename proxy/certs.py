"""TLS certificates: read a certificate and key (two files, or Dokku's tar on stdin), check
that they parse and belong together, and keep them under nginx_dir/certs/APP-ID/ (0600)."""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtensionOID

from dockyard.errors import UsageError
from proxy.render import CertPaths
from proxy.store import CertInfo

MAX_PEM_BYTES = 1024 * 1024
MAX_TAR_MEMBERS = 16
CERT_SUFFIXES = (".crt", ".pem", ".cert")
KEY_SUFFIXES = (".key",)
CRT_NAME = "server.crt"
KEY_NAME = "server.key"


@dataclass(frozen=True)
class CertBundle:
    """A validated certificate chain (leaf first) and its private key, as PEM."""

    chain_pem: bytes
    key_pem: bytes
    info: CertInfo


def cert_paths(certs_dir: Path, slot: str) -> CertPaths:
    return CertPaths(crt=certs_dir / slot / CRT_NAME, key=certs_dir / slot / KEY_NAME)


def _name(name: x509.Name) -> str:
    return name.rfc4514_string()


def parse_bundle(crt_pem: bytes, key_pem: bytes) -> CertBundle:
    try:
        chain = x509.load_pem_x509_certificates(crt_pem)
    except ValueError:
        raise UsageError("The certificate is not a PEM-encoded X.509 certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise UsageError("The private key is not a PEM-encoded, unencrypted private key") from None
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if leaf.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise UsageError("The private key does not match the certificate")
    try:
        san = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        hostnames = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        hostnames = []
    info = CertInfo(
        subject=_name(leaf.subject),
        issuer=_name(leaf.issuer),
        hostnames=list(hostnames),
        not_before=leaf.not_valid_before_utc.isoformat(),
        not_after=leaf.not_valid_after_utc.isoformat(),
        fingerprint=leaf.fingerprint(hashes.SHA256()).hex(":"),
        self_signed=leaf.issuer == leaf.subject,
    )
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    # Re-encode the key so nothing but the key itself (comments, other blocks) is stored.
    key_out = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return CertBundle(chain_pem=chain_pem, key_pem=key_out, info=info)


def read_pem_file(path: str) -> bytes:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_PEM_BYTES:
            raise UsageError(f"{path} is larger than {MAX_PEM_BYTES} bytes")
        return p.read_bytes()
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror}") from None


def read_tar(stream: BinaryIO) -> tuple[bytes, bytes]:
    """(certificate, key) from a tar stream holding one *.crt and one *.key file, as
    `dokku certs:add APP < cert-key.tar` sends. Nothing is extracted to disk."""
    crt: bytes | None = None
    key: bytes | None = None
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for count, member in enumerate(tar):
                if count >= MAX_TAR_MEMBERS:
                    raise UsageError("The tar holds too many files")
                if not member.isfile():
                    continue
                if member.size > MAX_PEM_BYTES:
                    raise UsageError(f"{member.name} is larger than {MAX_PEM_BYTES} bytes")
                name = member.name.lower()
                if name.endswith(CERT_SUFFIXES) and crt is None:
                    crt = _member_bytes(tar, member)
                elif name.endswith(KEY_SUFFIXES) and key is None:
                    key = _member_bytes(tar, member)
    except tarfile.TarError:
        raise UsageError(
            "Expected a tar on stdin holding server.crt and server.key "
            "(certs:add APP < cert-key.tar)"
        ) from None
    if crt is None or key is None:
        raise UsageError("The tar must hold a certificate (*.crt) and a private key (*.key)")
    return crt, key


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(member)
    return f.read() if f is not None else b""


def write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def install(certs_dir: Path, slot: str, bundle: CertBundle) -> CertPaths:
    paths = cert_paths(certs_dir, slot)
    paths.crt.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(paths.crt, bundle.chain_pem)
    write_private(paths.key, bundle.key_pem)
    return paths


def snapshot(certs_dir: Path, slot: str) -> tuple[bytes, bytes] | None:
    """The installed files, to restore if a new pair is refused by nginx."""
    paths = cert_paths(certs_dir, slot)
    try:
        return paths.crt.read_bytes(), paths.key.read_bytes()
    except OSError:
        return None


def restore(certs_dir: Path, slot: str, saved: tuple[bytes, bytes] | None) -> None:
    if saved is None:
        remove(certs_dir, slot)
        return
    paths = cert_paths(certs_dir, slot)
    write_private(paths.crt, saved[0])
    write_private(paths.key, saved[1])


def remove(certs_dir: Path, slot: str) -> None:
    directory = certs_dir / slot
    for name in (CRT_NAME, KEY_NAME):
        (directory / name).unlink(missing_ok=True)
    try:
        directory.rmdir()
    except OSError:
        pass
