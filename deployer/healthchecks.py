"""Deployment checks: a new container must answer before traffic moves to it.

app.json `healthchecks.web` takes Dokku's list of checks (`type` startup, `path`, `port`,
`attempts`, `timeout`, `wait`, `initialDelay`, `content`, `command`, and `status`, the one
HTTP status to expect); a single object is taken as a one-element list. A declared HTTP
check passes only on a 2xx or 3xx answer (or its `status`), after waiting its
`initialDelay`. Checks reach the container on its address in the app's network, at the
check's `port` or the app's `PORT`. Without declared checks the default is fast: the port
must answer an HTTP request with any status below 500, polled every 0.05 s for up to 6 s —
Dokku's default instead waits a fixed 10 s.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from docker.models.containers import Container

DEFAULT_ATTEMPTS = 120
DEFAULT_WAIT = 0.05
DEFAULT_TIMEOUT = 1.0
# Dokku's defaults for a check the app declares itself.
DECLARED_ATTEMPTS = 5
DECLARED_TIMEOUT = 5.0
DECLARED_WAIT = 5.0
SERVER_ERROR = 500
MAX_CHECKS_SECONDS = 900
MAX_RESPONSE = 1024 * 1024


class CheckFailed(Exception):
    pass


@dataclass(frozen=True)
class Check:
    name: str
    path: str | None = "/"
    command: list[str] | None = None
    content: str | None = None
    attempts: int = DEFAULT_ATTEMPTS
    timeout: float = DEFAULT_TIMEOUT
    wait: float = DEFAULT_WAIT
    initial_delay: float = 0.0
    port: int | None = None  # None: the process's PORT
    status: int | None = None  # None: any 2xx or 3xx (declared) / below 500 (default)
    declared: bool = True

    def passes(self, status: int) -> bool:
        if self.status is not None:
            return status == self.status
        if self.declared:
            return 200 <= status < 400
        return status < SERVER_ERROR

    def expected(self) -> str:
        if self.status is not None:
            return f"HTTP {self.status}"
        return "2xx or 3xx" if self.declared else "a status below 500"


DEFAULT_CHECK = Check(name="default", declared=False)


def checks_for(app_json: dict, process_type: str) -> list[Check]:
    """The startup checks app.json declares for a process type; the default for web."""
    declared = (app_json.get("healthchecks") or {}).get(process_type)
    if isinstance(declared, dict):
        declared = [declared]
    checks = []
    for i, item in enumerate(declared or []):
        if not isinstance(item, dict) or item.get("type", "startup") != "startup":
            continue
        command = item.get("command")
        if isinstance(command, str):
            command = ["/bin/sh", "-c", command]
        checks.append(
            Check(
                name=str(item.get("name") or f"check-{i + 1}"),
                path=None if command and not item.get("path") else str(item.get("path") or "/"),
                command=command,
                content=item.get("content"),
                attempts=int(_bounded(item, "attempts", DECLARED_ATTEMPTS, 1, 100)),
                timeout=_bounded(item, "timeout", DECLARED_TIMEOUT, 0.1, 60),
                wait=_bounded(item, "wait", DECLARED_WAIT, 0, 60),
                initial_delay=_bounded(item, "initialDelay", 0, 0, 600),
                port=_port(item.get("port")),
                status=_status(item.get("status")),
            )
        )
    total = sum(c.initial_delay + c.attempts * (c.timeout + c.wait) for c in checks)
    if total > MAX_CHECKS_SECONDS:
        # A deploy holds its app's lock while it checks: bounded, as every other wait.
        raise ValueError(
            f"the checks could take {total:.0f} s; at most {MAX_CHECKS_SECONDS} s in all"
        )
    if not checks and process_type == "web":
        return [DEFAULT_CHECK]
    return checks


def _bounded(item: dict, key: str, default: float, low: float, high: float) -> float:
    """A number from app.json within sane bounds: a deploy holds the app's lock while it
    waits, so a check must not be able to wait for ever (or for NaN seconds)."""
    value = item.get(key, default)
    if type(value) not in (int, float) or not low <= value <= high:
        raise ValueError(f"{key} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def _port(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 < value < 65536:
        raise ValueError(f"healthcheck port must be a port number, got {value!r}")
    return value


def _status(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 100 <= value < 600:
        raise ValueError(f"healthcheck status must be an HTTP status, got {value!r}")
    return value


def container_failed(container: Container) -> str | None:
    """Why the container cannot become healthy any more, or None while it may."""
    container.reload()
    state = container.attrs.get("State") or {}
    if state.get("Status") in ("exited", "dead") or state.get("Restarting"):
        return f"container exited with status {state.get('ExitCode')}"
    if container.attrs.get("RestartCount"):
        return f"container restarted {container.attrs['RestartCount']} time(s)"
    return None


def http_probe(host: str, port: int, path: str, timeout: float) -> tuple[int, bytes]:
    """One HTTP/1.0 GET; returns (status, body). Raises OSError/ValueError on no answer.
    `timeout` bounds the whole exchange, not each read: an app that drips its answer a
    byte at a time must not hold a deploy (and its lock) for days."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        request = f"GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: dockyard-checks\r\n\r\n"
        sock.sendall(request.encode("latin-1"))
        data = bytearray()
        while len(data) < MAX_RESPONSE:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete answer within {timeout:g} s")
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/"):
        raise ValueError("no HTTP response")
    return int(status_line[1]), body


def run_check(container: Container, check: Check, host: str, port: int | None) -> None:
    """Poll until the check passes; raise CheckFailed with the last reason otherwise.
    `host`/`port` reach the container (its address in the app's network, its PORT)."""
    if check.initial_delay:
        time.sleep(check.initial_delay)
    port = check.port or port
    where = f"GET {check.path} on port {port}"
    reason = "no attempt made"
    for attempt in range(check.attempts):
        if attempt:
            time.sleep(check.wait)
        dead = container_failed(container)
        if dead:
            raise CheckFailed(dead)
        try:
            if check.command:
                result = container.exec_run(check.command)
                if result.exit_code != 0:
                    reason = f"command exited with status {result.exit_code}"
                    continue
                output = result.output or b""
            else:
                if port is None:
                    raise CheckFailed("the process publishes no port to check")
                status, output = http_probe(host, port, check.path or "/", check.timeout)
                if not check.passes(status):
                    reason = f"{where} answered HTTP {status} (expected {check.expected()})"
                    continue
            if check.content and check.content.encode() not in output:
                what = "command" if check.command else where
                reason = f"{what} output lacks {check.content!r}"
                continue
            return
        except (OSError, ValueError) as exc:
            reason = f"{where}: no HTTP answer ({exc.__class__.__name__})"
    raise CheckFailed(f"{check.name}: {reason} after {check.attempts} attempts")


def wait_running(container: Container, settle: float = 0.2) -> None:
    """Non-web processes without checks: they must still be up shortly after start."""
    time.sleep(settle)
    dead = container_failed(container)
    if dead:
        raise CheckFailed(dead)
