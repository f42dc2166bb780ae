"""Let's Encrypt's test ACME server on loopback, for tests and benches: Debian's `pebble`
with `pebble-challtestsrv` as its DNS (every name resolves to 127.0.0.1 unless told
otherwise), on free ports.

- pebble ships no certificate for its own API: one is made here (SAN localhost and
  127.0.0.1); Dockyard is told to trust it with `letsencrypt:set --global server-ca-file`.
- The issuing root is new at every pebble start: `root_pem` is fetched from the management
  port's `/roots/0` once pebble answers; clients verify served chains against it.
- pebble validates HTTP-01 at `http_port` of the name's address, so Dockyard's nginx must
  listen there.
- PEBBLE_VA_NOSLEEP and PEBBLE_WFE_NONCEREJECT=0 make it fast and deterministic, and
  PEBBLE_AUTHZREUSE=0 makes every order prove its names again (a renewal is validated
  through nginx, not waved through on an earlier authorization).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

START_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PebbleMissing(RuntimeError):
    pass


@dataclass
class Pebble:
    workdir: Path
    directory_url: str
    api_ca_file: Path  # the API's own certificate: what Dockyard's server-ca-file names
    root_pem: Path  # the issuing root of this run, for curl --cacert
    http_port: int
    management_port: int
    dns_management_port: int
    processes: list[subprocess.Popen] = field(default_factory=list)

    def _post(self, port: int, path: str, body: dict) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 (loopback)
            resp.read()

    def add_a(self, host: str, address: str) -> None:
        """Make `host` resolve to `address` for pebble (unroutable names in tests)."""
        self._post(self.dns_management_port, "/add-a", {"host": host, "addresses": [address]})

    def cert_status(self, serial_hex: str) -> str:
        context = ssl.create_default_context(cafile=str(self.api_ca_file))
        url = f"https://127.0.0.1:{self.management_port}/cert-status-by-serial/{serial_hex}"
        with urllib.request.urlopen(url, context=context, timeout=10) as resp:  # noqa: S310
            return json.loads(resp.read())["Status"]

    def log(self) -> str:
        parts = []
        for name in ("pebble.log", "challtestsrv.log"):
            try:
                parts.append((self.workdir / name).read_text(errors="replace")[-4000:])
            except OSError:
                pass
        return "\n".join(parts)


def _api_certificate(workdir: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble test API")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = workdir / "api.crt", workdir / "api.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )  # fmt: skip
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def _wait_https(url: str, cafile: Path, procs: list[subprocess.Popen], workdir: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(cafile))
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"pebble exited early:\n{(workdir / 'pebble.log').read_text()}")
        try:
            with urllib.request.urlopen(url, context=context, timeout=2) as resp:  # noqa: S310
                return resp.read()
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"pebble did not answer at {url}")


def start_pebble(
    workdir: Path, http_port: int | None = None, dns_address: str | None = None
) -> Pebble:
    """Start challtestsrv and pebble; raise PebbleMissing when the package is not installed.
    `dns_address` (HOST:PORT) is where challtestsrv answers DNS, a free loopback port unless
    given (a resolv.conf can only name port 53)."""
    binaries = {name: shutil.which(name) for name in ("pebble", "pebble-challtestsrv")}
    missing = [name for name, path in binaries.items() if path is None]
    if missing:
        raise PebbleMissing(
            f"{' '.join(missing)} not installed: apt-get install pebble (scripts/setup.sh does)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    api_crt, api_key = _api_certificate(workdir)
    http_port = http_port or _free_port()
    listen, management, tls, dns, dns_management = (_free_port() for _ in range(5))
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{listen}",
            "managementListenAddress": f"127.0.0.1:{management}",
            "certificate": str(api_crt),
            "privateKey": str(api_key),
            "httpPort": http_port,
            "tlsPort": tls,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (workdir / "pebble.json").write_text(json.dumps(config))
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
           "PEBBLE_AUTHZREUSE": "0"}  # fmt: skip
    pebble = Pebble(
        workdir=workdir,
        directory_url=f"https://127.0.0.1:{listen}/dir",
        api_ca_file=api_crt,
        root_pem=workdir / "root.pem",
        http_port=http_port,
        management_port=management,
        dns_management_port=dns_management,
    )
    try:
        with open(workdir / "challtestsrv.log", "wb") as log:
            pebble.processes.append(subprocess.Popen(
                [binaries["pebble-challtestsrv"], "-dns01", dns_address or f"127.0.0.1:{dns}",
                 "-http01", "", "-https01", "", "-tlsalpn01", "",
                 "-management", f"127.0.0.1:{dns_management}",
                 # IPv4 only: nginx listens on 127.0.0.1, and an AAAA answer of ::1 would
                 # send validation to an address where nothing listens.
                 "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            ))  # fmt: skip
        with open(workdir / "pebble.log", "wb") as log:
            pebble.processes.append(subprocess.Popen(
                [binaries["pebble"], "-config", str(workdir / "pebble.json"),
                 "-dnsserver", dns_address or f"127.0.0.1:{dns}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            ))  # fmt: skip
        _wait_https(pebble.directory_url, api_crt, pebble.processes, workdir)
        root = _wait_https(
            f"https://127.0.0.1:{management}/roots/0", api_crt, pebble.processes, workdir
        )
        pebble.root_pem.write_bytes(root)
        _wait_dns(pebble)
    except BaseException:
        stop_pebble(pebble)
        raise
    return pebble


def _wait_dns(pebble: Pebble) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            pebble.add_a("dns-ready.test", "127.0.0.1")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def stop_pebble(pebble: Pebble) -> None:
    for proc in pebble.processes:
        if proc.poll() is None:
            proc.terminate()
    for proc in pebble.processes:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
