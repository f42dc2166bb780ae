"""`doctor`: check what Dockyard depends on, say what is wrong and how to fix it.

The core checks the engine, nginx, free disk (under the data dir and under the engine's
own root, where builds put their layers), permissions and the clock. Stages add what only
they can judge with `register_check`: the front door and the proxy check the addresses the
*running* server listens on (recorded in state when it started, never this process's
defaults), the builder which kinds of app can build here, the proxy the global domain's
resolution (with `check_domain_resolution` below) and failing certificate renewals.

Invariants: every finding that is not ok says how to fix it; `doctor` exits non-zero when
any finding is not ok; no check changes anything, and none waits longer than a few seconds
(network probes are bounded by `PROBE_TIMEOUT`).
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import os
import secrets
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dockyard.access import Access
from dockyard.context import Context
from dockyard.registry import CommandParser, command
from dockyard.services import Services

MIN_FREE_BYTES = 2 * 1024**3
# Under the engine's root a build needs room for its base image's layers (the runtime images
# are 0.1-0.5 GB each), the new image, and the build cache.
MIN_FREE_ENGINE_BYTES = 4 * 1024**3
MAX_CLOCK_SKEW = 5.0
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    message: str
    fix: str = ""


def check_engine(services: Services) -> Finding:
    import docker

    try:
        client = docker.from_env(timeout=10)
        info = client.info()
    except Exception as exc:  # the SDK raises several unrelated types for "no engine"
        fix = "start it: bash scripts/start-dockerd.sh (or systemctl start docker)"
        return Finding("docker", False, f"Docker engine not reachable: {exc}", fix)
    return Finding("docker", True, f"engine {info.get('ServerVersion', '?')} answers")


def check_clock(services: Services) -> Finding:
    import docker

    try:
        engine_time = docker.from_env(timeout=10).info().get("SystemTime", "")
    except Exception:  # reported by check_engine already
        return Finding("clock", True, "not compared (no engine)")
    from datetime import datetime

    try:
        theirs = datetime.fromisoformat(engine_time[:26].rstrip("Z") + "+00:00").timestamp()
    except ValueError:
        return Finding("clock", True, f"engine time {engine_time!r} not parsed")
    skew = abs(time.time() - theirs)
    if skew > MAX_CLOCK_SKEW:
        return Finding("clock", False, f"clock differs from the engine's by {skew:.1f} s",
                       "enable time sync (systemd-timesyncd or chrony)")  # fmt: skip
    return Finding("clock", True, f"in step with the engine ({skew:.2f} s)")


def check_nginx(services: Services) -> Finding:
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if nginx is None:
        return Finding("nginx", False, "nginx is not installed", "apt-get install nginx")
    proc = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10)
    return Finding("nginx", proc.returncode == 0, proc.stderr.strip() or "nginx found")


def port_state(host: str, port: int) -> str:
    """"free", "in use" or "needs root": can this process bind `host:port` right now?"""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except PermissionError:
            return "needs root"
        except OSError:
            return "in use"
    return "free"


def connect_address(host: str) -> str:
    """Where to connect to reach a server listening on `host` (a wildcard means loopback)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def probe(host: str, port: int, send: bytes = b"", read: int = 0,
          timeout: float = PROBE_TIMEOUT) -> bytes | None:  # fmt: skip
    """Connect to `host:port` (a wildcard address means this machine), send `send`, and
    return up to `read` bytes of the answer; None when nothing accepts the connection."""
    try:
        with socket.create_connection((connect_address(host), port), timeout=timeout) as conn:
            if send:
                conn.sendall(send)
            data = b""
            while len(data) < read:
                try:
                    chunk = conn.recv(read - len(data))
                except (TimeoutError, ConnectionError):
                    break  # it accepted: what it said so far is the answer
                if not chunk:
                    break
                data += chunk
                if send and b"\r\n\r\n" in data:
                    break  # an HTTP head is enough
                if not send and b"\n" in data:
                    break  # a banner line is enough
            return data
    except OSError:
        return None


def format_listen(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _free(path: Path, label: str, minimum: int, fix: str) -> Finding:
    usage = shutil.disk_usage(path)
    free_gib = usage.free / 1024**3
    if usage.free < minimum:
        return Finding("disk", False, f"only {free_gib:.1f} GiB free {label} ({path}); "
                       f"builds need {minimum / 1024**3:.0f} GiB", fix)  # fmt: skip
    return Finding("disk", True, f"{free_gib:.1f} GiB free {label} ({path})")


def check_disk(services: Services) -> list[Finding]:
    """Free space where builds write: the data dir (build contexts, logs, repos) and the
    engine's root (layers, images, build cache)."""
    found = [_free(services.settings.data_dir, "under the data dir", MIN_FREE_BYTES,
                   "free space: docker image prune, repo:gc, remove old build logs")]  # fmt: skip
    try:
        import docker

        root = docker.from_env(timeout=10).info().get("DockerRootDir") or ""
    except Exception:  # no engine: reported by check_engine
        return found
    path = Path(root)
    if root and path.is_dir() and path.stat().st_dev != services.settings.data_dir.stat().st_dev:
        found.append(_free(path, "for the Docker engine", MIN_FREE_ENGINE_BYTES,
                           "free space: docker image prune, docker builder prune"))  # fmt: skip
    elif root and path.is_dir():
        fix = "free space: docker image prune, docker builder prune, repo:gc"
        label = "under the data dir and the engine's root"
        found = [_free(services.settings.data_dir, label, MIN_FREE_ENGINE_BYTES, fix)]
    return found


# --- the global domain: does anything.DOMAIN reach this machine? ---------------------------


def host_addresses() -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address of this machine's interfaces (in this network namespace): the kernel's
    local IPv4 routes and its IPv6 interface table, loopback included."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"),
    }  # fmt: skip
    try:
        last = ""
        for line in Path("/proc/net/fib_trie").read_text().splitlines():
            text = line.strip()
            if text.startswith(("|--", "+--")):
                last = text[3:].strip().split()[0]
            elif text.startswith("/32 host LOCAL") and last:
                found.add(ipaddress.ip_address(last))
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            found.add(ipaddress.ip_address(":".join(raw[i:i + 4] for i in range(0, 32, 4))))
    except (OSError, ValueError, IndexError):
        pass
    return found


def primary_address() -> str | None:
    """The source address of this machine's default route (no packet is sent), or None."""
    for family, target in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((target, 9))
                address = s.getsockname()[0]
        except OSError:
            continue
        if not ipaddress.ip_address(address).is_loopback:
            return address
    return None


def resolve(name: str, timeout: float = PROBE_TIMEOUT) -> list[str]:
    """The addresses `name` resolves to through this machine's resolver; raises OSError
    (socket.gaierror, or TimeoutError after `timeout`)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        future = pool.submit(socket.getaddrinfo, name, None, 0, socket.SOCK_STREAM)
        try:
            infos = future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"no answer from the resolver within {timeout:.0f} s") from None
    finally:
        pool.shutdown(wait=False)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def wildcard_advice(domain: str) -> str:
    here = primary_address() or "THIS-SERVER'S-ADDRESS"
    record = "AAAA" if ":" in here else "A"
    return (
        f"add a wildcard DNS record, *.{domain} {record} {here} (the address clients reach "
        f"this server at), or use a wildcard DNS service: --domain {here}.sslip.io"
    )


def check_domain_resolution(
    domain: str,
    reaches_us: Callable[[str], bool] | None = None,
    resolver: Callable[[str], list[str]] = resolve,
    local: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address] | None = None,
) -> Finding:
    """Does `anything.DOMAIN` lead to this machine? A random label proves a wildcard record,
    not one name. An address of this machine's interfaces is a yes; any other address is a
    yes only if `reaches_us(address)` confirms it (a server behind NAT sees its public
    address on no interface, but its nginx answers there)."""
    if domain == "localhost" or domain.endswith(".localhost"):
        note = (
            f"global domain {domain}: apps answer at APP.{domain} on this machine only; give "
            "them a public name with dockyard init --domain DOMAIN (its wildcard points here)"
        )
        return Finding("domain", True, note)
    name = f"dockyard-check-{secrets.token_hex(4)}.{domain}"
    try:
        addresses = resolver(name)
    except OSError as exc:
        return Finding("domain", False, f"{name} does not resolve ({exc}): apps cannot be "
                       f"reached at APP.{domain}", wildcard_advice(domain))  # fmt: skip
    mine = set(host_addresses() if local is None else local)
    ours = [a for a in addresses if _address(a) in mine]
    if ours:
        return Finding("domain", True, f"*.{domain} resolves to this machine "
                       f"({', '.join(addresses)})")  # fmt: skip
    for address in addresses:
        if reaches_us is not None and reaches_us(address):
            note = (
                f"*.{domain} resolves to {address}, which reaches this server's nginx (an "
                "address of this server behind NAT)"
            )
            return Finding("domain", True, note)
    shown = ", ".join(sorted(str(a) for a in mine if not a.is_loopback)) or "loopback only"
    return Finding("domain", False, f"*.{domain} resolves to {', '.join(addresses)}, not to "
                   f"this machine (its addresses: {shown}), and HTTP there does not reach "
                   "this server", wildcard_advice(domain))  # fmt: skip


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def check_permissions(services: Services) -> list[Finding]:
    found = []
    s = services.settings
    private = (s.authorized_keys, s.host_keys_dir, s.state_db)
    for path, strict in ((s.data_dir, False), *((p, True) for p in private)):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        bad = st.st_mode & (stat.S_IWOTH | stat.S_IWGRP)
        if strict:
            bad |= st.st_mode & stat.S_IROTH
        if st.st_uid != os.geteuid():
            found.append(Finding("permissions", False, f"{path} is owned by uid {st.st_uid}",
                                 f"chown {os.geteuid()} {path}"))  # fmt: skip
        elif bad:
            mode = stat.filemode(st.st_mode)
            found.append(Finding("permissions", False, f"{path} is open to others ({mode})",
                                 f"chmod go-rwx {path}"))  # fmt: skip
    if not found:
        found.append(Finding("permissions", True, "data dir private to its owner"))
    return found


Check = Callable[[Services], "Finding | list[Finding]"]
CHECKS: list[Check] = [
    check_engine, check_nginx, check_disk, check_permissions, check_clock,
]  # fmt: skip


def register_check(check: Check) -> Check:
    """Stages add what only they can judge: the listen addresses of the running server
(sshd, proxy), which kinds of app can build (builder), the global domain and certificate
renewals (proxy)."""
    CHECKS.append(check)
    return check


@command("doctor", "Check the engine, nginx, listen addresses, images, domain, disk and more",
         "[--format json]", access=Access.ADMIN)  # fmt: skip
def doctor(ctx: Context, argv: list[str]) -> int:
    parser = CommandParser("doctor")
    parser.add_format()
    args = parser.parse_args(argv)
    findings: list[Finding] = []
    for check in CHECKS:
        result = check(ctx.services)
        findings.extend(result if isinstance(result, list) else [result])
    problems = [f for f in findings if not f.ok]
    if args.format == "json":
        ctx.out.json([f.__dict__ for f in findings])
    else:
        ctx.out.heading("Dockyard doctor")
        for f in findings:
            ctx.out.detail(f"{'ok ' if f.ok else 'BAD'} {f.check}: {f.message}")
        for f in problems:
            ctx.out.error(f"{f.check}: {f.message}" + (f" — fix: {f.fix}" if f.fix else ""))
    return 1 if problems else 0
