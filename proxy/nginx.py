"""Running nginx: test a config, start or adopt Dockyard's own master, reload it gracefully.

Dockyard's master is a daemon in its own session, started from the system binary with
`-p PREFIX -c CONF`; it outlives Dockyard, which adopts it on the next start (the pid file
names it, /proc confirms it is a master of *our* config). A reload is SIGHUP; we wait until
the master has started workers with the new configuration and the old ones stopped
accepting, so a caller knows every new connection sees the new configuration.

`Frontend` is what the Router needs of an nginx: where an app's file goes, testing one app's
file alone, installing the shared part, reloading. Its two kinds (own master, system nginx)
are chosen once. Reloads asked for together run once (`Coalesced`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from dockyard.errors import DockyardError
from proxy.render import Listen, NginxPaths

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


class Coalesced:
    """Run `action` for many callers at once: a caller returns after one run that started
    after its call, so a reload asked for by several deploys together happens once."""

    def __init__(self, action: Callable[[], object]) -> None:
        self._action = action
        self._cond = threading.Condition()
        self._asked = 0
        self._running = False
        self._outcomes: list[tuple[int, BaseException | None]] = []

    def __call__(self) -> None:
        with self._cond:
            self._asked += 1
            ticket = self._asked
            while True:
                for covered, error in self._outcomes:
                    if covered >= ticket:
                        if error is not None:
                            raise error
                        return
                if not self._running:
                    break
                self._cond.wait()
            self._running = True
            covered = self._asked
        error: BaseException | None = None
        try:
            self._action()
        except BaseException as exc:  # handed to every caller this run covered
            error = exc
        with self._cond:
            self._running = False
            self._outcomes = [*self._outcomes[-15:], (covered, error)]
            self._cond.notify_all()
        if error is not None:
            raise error


class Frontend:
    """Where one routed app's file lives and how the nginx that serves it is tested and
    reloaded. Two kinds, chosen once per Router: Dockyard's own master (`OwnNginx`) and
    the machine's nginx (`SystemNginxFrontend`, mode `system`)."""

    kind = ""

    def app_file(self, app: str) -> Path:
        raise NotImplementedError

    def app_files(self) -> dict[str, Path]:
        """Every app file present, by app name."""
        raise NotImplementedError

    def prepare(self) -> None:
        raise NotImplementedError

    def test_app(self, app: str, text: str) -> Path:
        """Write `text` beside the app's file and test it alone; returns the tested file,
        ready for `os.replace` onto `app_file(app)`. Raises NginxError with nginx's words."""
        raise NotImplementedError

    def install_main(self, text: str) -> bool:
        """Test and install the shared part; True if it changed."""
        raise NotImplementedError

    def reload(self) -> None:
        raise NotImplementedError

    def is_serving(self) -> bool:
        raise NotImplementedError

    def shared_text(self, listen: Listen) -> str:
        """The part every app's file relies on (the main config, or the common file)."""
        raise NotImplementedError

    def start(self, changed: bool) -> int | None:
        """At Dockyard's start, after the files were brought up to date (`changed`: some
        text differs from what nginx runs): make nginx serve them, touching a running
        nginx only if something changed."""
        raise NotImplementedError

    def watch(self, changed: bool) -> None:
        """The watchdog's step after the files were brought up to date."""
        raise NotImplementedError


def _write_private_text(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class OwnNginx(Frontend):
    """Dockyard's own master: `nginx.conf` includes `apps/*.conf`."""

    kind = "dockyard"
    _reloads: dict[Path, Coalesced] = {}
    _reloads_lock = threading.Lock()

    def __init__(self, paths: NginxPaths) -> None:
        self.paths = paths
        self.master = NginxMaster(paths)
        with self._reloads_lock:
            self._reload = self._reloads.setdefault(paths.prefix, Coalesced(self._reload_now))

    def app_file(self, app: str) -> Path:
        return self.paths.apps_dir / f"{app}.conf"

    def app_files(self) -> dict[str, Path]:
        try:
            found = list(self.paths.apps_dir.glob("*.conf"))
        except OSError:
            return {}
        return {p.name[: -len(".conf")]: p for p in found}

    def prepare(self) -> None:
        self.master.prepare_dirs()
        for sub in (self.paths.apps_dir, self.paths.test_dir):
            sub.mkdir(exist_ok=True, mode=0o700)

    def test_app(self, app: str, text: str) -> Path:
        from proxy.render import render_test_config

        target = self.app_file(app)
        tmp = target.with_name(f".{target.name}.new")  # outside the include's *.conf
        wrapper = self.paths.test_dir / f"{app}.conf"
        _write_private_text(tmp, text)
        _write_private_text(wrapper, render_test_config(self.paths, tmp))
        try:
            self.master.test(wrapper)
        except NginxError:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            wrapper.unlink(missing_ok=True)
        return tmp

    def install_main(self, text: str) -> bool:
        conf = self.paths.conf
        if read_text(conf) == text:
            return False
        tmp = conf.with_name(conf.name + ".new")
        _write_private_text(tmp, text)
        try:
            self.master.test(tmp)
        except NginxError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, conf)
        return True

    def _reload_now(self) -> None:
        # The flock keeps a local CLI's reload and the server's from interleaving signals.
        lock = self.paths.prefix / ".signal.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.master.reload()
        finally:
            os.close(fd)

    def reload(self) -> None:
        self._reload()

    def is_serving(self) -> bool:
        return self.master.pid() is not None

    def shared_text(self, listen: Listen) -> str:
        from proxy.render import render_main_config

        return render_main_config(self.paths, listen)

    def start(self, changed: bool) -> int | None:
        pid, started = self.master.ensure_running()
        if changed and not started:
            pid = self.master.reload()
        log.info("nginx ready", pid=pid, adopted=not started, reloaded=changed and not started)
        return pid

    def watch(self, changed: bool) -> None:
        if self.master.pid() is None:
            self.master.start()  # it died: start it with the files as they are now
        elif changed:
            self.reload()


class SystemNginxFrontend(Frontend):
    """The machine's nginx: `dockyard.conf` (shared) and `dockyard-APP.conf` in its
    conf.d; it runs and restarts on its own, we test and reload it."""

    kind = "system"
    PREFIX = "dockyard-"
    COMMON = "dockyard.conf"  # outside the per-app pattern: no app name collides with it

    def __init__(self, conf_dir: Path, paths: NginxPaths) -> None:
        self.conf_dir = conf_dir
        self.paths = paths  # for scratch files of `nginx -t` of one app
        self.nginx = SystemNginx()
        self._reload = Coalesced(self.nginx.reload)

    def app_file(self, app: str) -> Path:
        return self.conf_dir / f"{self.PREFIX}{app}.conf"

    def app_files(self) -> dict[str, Path]:
        try:
            found = list(self.conf_dir.glob(f"{self.PREFIX}*.conf"))
        except OSError:
            return {}
        return {p.name[len(self.PREFIX) : -len(".conf")]: p for p in found}

    def prepare(self) -> None:
        NginxMaster(self.paths).prepare_dirs()
        self.paths.test_dir.mkdir(exist_ok=True, mode=0o700)

    def test_app(self, app: str, text: str) -> Path:
        from proxy.render import render_test_config

        target = self.app_file(app)
        scratch = self.paths.test_dir / f"{app}.conf.new"
        wrapper = self.paths.test_dir / f"{app}.conf"
        _write_private_text(scratch, text)
        _write_private_text(wrapper, render_test_config(self.paths, scratch))
        try:
            NginxMaster(self.paths).test(wrapper)
        except NginxError:
            scratch.unlink(missing_ok=True)
            raise
        finally:
            wrapper.unlink(missing_ok=True)
        tmp = target.with_name(f".{target.name}.new")
        tmp.write_text(text)
        scratch.unlink(missing_ok=True)
        return tmp

    def install_main(self, text: str) -> bool:
        common = self.conf_dir / self.COMMON
        before = read_text(common) if common.exists() else None
        if before == text:
            return False
        common.write_text(text)
        try:
            self.nginx.test()
        except NginxError:
            if before is None:
                common.unlink(missing_ok=True)
            else:
                common.write_text(before)
            raise
        return True

    def reload(self) -> None:
        self._reload()

    def is_serving(self) -> bool:
        return True

    def shared_text(self, listen: Listen) -> str:
        from proxy.render import render_upgrade_map

        return render_upgrade_map()

    def start(self, changed: bool) -> int | None:
        if changed:
            self.reload()
        return None

    def watch(self, changed: bool) -> None:
        # The system nginx is the system's to keep running; we only reload it when one of
        # our files had to be put right.
        if changed:
            self.reload()
