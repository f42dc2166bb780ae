"""Running nginx: test a config, start or adopt Dockyard's own master, reload it gracefully.

Dockyard's master is a daemon in its own session, started from the system binary with
`-p PREFIX -c CONF`; it outlives Dockyard, which adopts it on the next start (the pid file
names it, /proc confirms it is a master of *our* config). A reload is SIGHUP; we wait until
the master has started workers with the new configuration, so a caller that retires old
containers next knows no new request goes to them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import structlog

from dockyard.errors import DockyardError
from proxy.render import NginxPaths

log = structlog.get_logger("proxy.nginx")

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
TEST_TIMEOUT = 30.0
START_TIMEOUT = 10.0
RELOAD_TIMEOUT = 10.0
ORPHAN_QUIT_TIMEOUT = 5.0
POLL_INTERVAL = 0.02
TEMP_SUBDIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class NginxError(DockyardError):
    """nginx refused a configuration or could not be started; `message` is nginx's word."""


def nginx_binary() -> str:
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in NGINX_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    raise NginxError("nginx is not installed (apt-get install nginx)")


def _nginx_messages(output: str) -> str:
    """The lines that say what is wrong, without nginx's boilerplate."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    useful = [ln for ln in lines if "[emerg]" in ln or "[alert]" in ln or "[crit]" in ln]
    return "\n".join(useful or lines[-3:]) or "nginx failed without a message"


def _run_nginx(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    # Output goes to a file, not a pipe: a daemonizing nginx may keep an inherited pipe open.
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.run(
            [nginx_binary(), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            timeout=timeout,
            start_new_session=True,
        )
        out.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), "")


def _read_proc(pid: int, name: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return None


def _cmdline(pid: int) -> str:
    raw = _read_proc(pid, "cmdline") or b""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _ppid(pid: int) -> int | None:
    raw = _read_proc(pid, "stat")
    if raw is None:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    if len(fields) < 2 or fields[0] == b"Z":
        return None
    return int(fields[1])


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def children(pid: int) -> set[int]:
    listed = _read_proc(pid, f"task/{pid}/children")  # cheap, where the kernel offers it
    if listed is not None:
        return {int(p) for p in listed.split()}
    return {p for p in _all_pids() if _ppid(p) == pid}


def _alive(pid: int) -> bool:
    return _ppid(pid) is not None


def _retired(worker: int) -> bool:
    """An old worker has exited or stopped accepting: nginx retitles it in the same step in
    which it closes its listening sockets; it may still finish requests in flight."""
    return not _alive(worker) or "shutting down" in _cmdline(worker)


class NginxMaster:
    """Dockyard's own nginx master process under `paths.prefix`."""

    def __init__(self, paths: NginxPaths) -> None:
        self.paths = paths

    def prepare_dirs(self) -> None:
        self.paths.prefix.mkdir(parents=True, exist_ok=True, mode=0o700)
        for sub in (self.paths.error_log.parent, self.paths.certs_dir, self.paths.temp_dir):
            sub.mkdir(exist_ok=True, mode=0o700)
        for sub in TEMP_SUBDIRS:
            (self.paths.temp_dir / sub).mkdir(exist_ok=True, mode=0o700)
        self.paths.acme_challenge_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _base_args(self, conf: Path) -> list[str]:
        return ["-p", f"{self.paths.prefix}/", "-c", str(conf), "-e", str(self.paths.error_log)]

    def test(self, conf: Path) -> None:
        """`nginx -t` the whole configuration in `conf`; raise with nginx's message."""
        proc = _run_nginx([*self._base_args(conf), "-t", "-q"], TEST_TIMEOUT)
        if proc.returncode != 0:
            raise NginxError(
                "nginx refused the new configuration; the previous one keeps serving:\n"
                + _nginx_messages(proc.stdout)
            )

    def pid(self) -> int | None:
        """The running master of our config, or None (stale pid files are ignored)."""
        try:
            pid = int(self.paths.pid.read_text().strip())
        except (OSError, ValueError):
            return None
        cmd = _cmdline(pid)
        if "nginx: master process" in cmd and str(self.paths.conf) in cmd:
            return pid
        return None

    def _orphan_workers(self) -> list[int]:
        """Workers left behind by a master that was killed: they still hold our listening
        sockets (a new master could not bind) and our error log open, which is how we know
        them from any other nginx on the machine."""
        found = []
        target = str(self.paths.error_log)
        for pid in _all_pids():
            if not _cmdline(pid).startswith("nginx: worker process"):
                continue
            master = _ppid(pid)
            if master is not None and "nginx: master process" in _cmdline(master):
                continue
            fd_dir = Path(f"/proc/{pid}/fd")
            try:
                links = [os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)]
            except OSError:
                continue
            if target in links:
                found.append(pid)
        return found

    def _stop_orphans(self) -> None:
        orphans = self._orphan_workers()
        if not orphans:
            return
        log.warning("stopping orphaned nginx workers", pids=orphans)
        for pid in orphans:
            _signal(pid, signal.SIGQUIT)
        deadline = time.monotonic() + ORPHAN_QUIT_TIMEOUT
        while time.monotonic() < deadline and any(_alive(p) for p in orphans):
            time.sleep(POLL_INTERVAL)
        for pid in orphans:
            if _alive(pid):
                _signal(pid, signal.SIGKILL)

    def start(self) -> int:
        self._stop_orphans()
        self.paths.pid.unlink(missing_ok=True)
        proc = _run_nginx(self._base_args(self.paths.conf), START_TIMEOUT)
        if proc.returncode != 0:
            raise NginxError("nginx did not start:\n" + _nginx_messages(proc.stdout))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            pid = self.pid()
            if pid is not None:
                log.info("nginx started", pid=pid, prefix=str(self.paths.prefix))
                return pid
            time.sleep(POLL_INTERVAL)
        raise NginxError("nginx did not start:\n" + self.error_log_tail())

    def ensure_running(self) -> tuple[int, bool]:
        """(pid, started): adopt the running master, or start one."""
        pid = self.pid()
        if pid is not None:
            return pid, False
        return self.start(), True

    def reload(self) -> int:
        """Graceful reload; returns once only workers with the new configuration accept."""
        pid, started = self.ensure_running()
        if started:
            return pid
        before = children(pid)
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + RELOAD_TIMEOUT
        applied = False
        while time.monotonic() < deadline:
            applied = bool(children(pid) - before)
            if applied and all(_retired(p) for p in before):
                return pid
            if not _alive(pid):
                break
            time.sleep(POLL_INTERVAL)
        if applied:
            # New workers serve the new config; an old one is merely slow to let go.
            log.warning("old nginx workers still accepting after reload", pid=pid)
            return pid
        raise NginxError("nginx did not apply the new configuration:\n" + self.error_log_tail())

    def stop(self) -> None:
        """Graceful stop (SIGQUIT); used by tests and tooling, never by `dockyard serve`."""
        pid = self.pid()
        if pid is None:
            return
        _signal(pid, signal.SIGQUIT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(POLL_INTERVAL)
        if _alive(pid):
            _signal(pid, signal.SIGKILL)

    def reopen_logs(self) -> bool:
        """SIGUSR1: the master has its workers reopen the log files (after a rotation
        renamed them). False when no master of ours runs."""
        pid = self.pid()
        if pid is None:
            return False
        _signal(pid, signal.SIGUSR1)
        return True

    def error_log_tail(self, lines: int = 5) -> str:
        try:
            text = self.paths.error_log.read_text(errors="replace")
        except OSError:
            return "(no nginx error log)"
        return "\n".join(text.splitlines()[-lines:])


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class SystemNginx:
    """The machine's own nginx (mode `system`): we only test its config and reload it."""

    def test(self) -> None:
        proc = _run_nginx(["-t", "-q"], TEST_TIMEOUT)
        if proc.returncode != 0:
            raise NginxError(
                "nginx refused the new configuration; the previous one keeps serving:\n"
                + _nginx_messages(proc.stdout)
            )

    def reload(self) -> None:
        proc = _run_nginx(["-s", "reload"], TEST_TIMEOUT)
        if proc.returncode != 0:
            raise NginxError("the system nginx did not reload:\n" + _nginx_messages(proc.stdout))
