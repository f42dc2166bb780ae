"""`doctor`: check what Dockyard depends on, say what is wrong and how to fix it."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from dockyard.access import Access
from dockyard.context import Context
from dockyard.registry import CommandParser, command
from dockyard.services import Services

MIN_FREE_BYTES = 2 * 1024**3
MAX_CLOCK_SKEW = 5.0


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


def _port_state(host: str, port: int) -> str:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except PermissionError:
            return "needs root"
        except OSError:
            return "in use"
    return "free"


def check_ports(services: Services) -> list[Finding]:
    s = services.settings
    found = []
    for label, (host, port) in (("ssh", s.ssh_listen), ("http", s.http_listen),
                                ("https", s.https_listen)):  # fmt: skip
        state = _port_state(host, port)
        ok = state in ("free", "in use")  # in use is fine when it is Dockyard itself
        msg = f"{label} {host}:{port} is {state}"
        if state == "in use":
            msg += " (fine if Dockyard or its nginx holds it)"
        found.append(Finding(f"port {label}", ok, msg, "" if ok else "run as root or pick a port"))
    return found


def check_disk(services: Services) -> Finding:
    usage = shutil.disk_usage(services.settings.data_dir)
    free_gib = usage.free / 1024**3
    if usage.free < MIN_FREE_BYTES:
        fix = "free space: docker image prune, repo:gc, remove old build logs"
        return Finding("disk", False, f"only {free_gib:.1f} GiB free under the data dir", fix)
    return Finding("disk", True, f"{free_gib:.1f} GiB free")


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
    check_engine, check_nginx, check_ports, check_disk, check_permissions, check_clock,
]  # fmt: skip


def register_check(check: Check) -> Check:
    """Stages add what only they can judge (the proxy: failing certificate renewals)."""
    CHECKS.append(check)
    return check


@command("doctor", "Check the engine, nginx, ports, disk, permissions and clock",
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
