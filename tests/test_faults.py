"""Faults Dockyard must survive, each checked for "nothing lost": a reboot, `kill -9` of the
server during a push, a build and a deploy switch, nginx killed, the disk filling up during a
push, the Docker engine restarted during a deploy; and the scheduled housekeeping.

Real things throughout: `dockyard serve`, the OpenSSH client, the git CLI (its `fsck --strict`
judges the repos), the Docker engine and nginx.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxy.nginx import NginxMaster, children
from proxy.render import NginxPaths
from tests.conftest import (
    REPO_ROOT,
    DockyardServer,
    _provision,
    remove_server_leftovers,
    start_server,
    stop_server,
)

# Each instance writes its hostname and one config var where httpd serves them, so a request
# through the proxy tells which container answered and with which config.
START = "hostname > /www/host; echo $GREETING > /www/greeting; exec httpd -f -p $PORT -h /www"
APP_DOCKERFILE = f"""FROM dockyard-base/busybox:latest
COPY www /www
CMD ["/bin/sh", "-c", "{START}"]
"""
# The nonce keeps the engine's layer cache from skipping the sleep on a second run.
SLOW_BUILD_DOCKERFILE = APP_DOCKERFILE.replace(
    "COPY www", f"RUN sleep 3 # {uuid.uuid4().hex}\nCOPY www"
)
SLOW_CHECK_APP_JSON = json.dumps(
    {"healthchecks": {"web": [{"type": "startup", "path": "/", "initialDelay": 4}]}}
)


# ---------------------------------------------------------------- helpers
class Servers:
    """One data dir whose `dockyard serve` the test may kill and start again; whatever is
    running at the end is stopped and its apps and nginx removed."""

    def __init__(self, tmp: Path) -> None:
        self.data_dir, self.keys_dir, self.admin_key, self.user_key = _provision(tmp)
        self.current = self._start()

    def _start(self, **ports: int) -> DockyardServer:
        return start_server(self.data_dir, self.keys_dir, self.admin_key, self.user_key, **ports)

    def restart(self) -> DockyardServer:
        """Start `dockyard serve` again on the same ports (the old one must be gone)."""
        old = self.current
        assert old.process.poll() is not None, "stop or kill the server first"
        self.current = self._start(port=old.port, http_port=old.http_port)
        return self.current

    def kill9(self) -> None:
        self.current.process.send_signal(signal.SIGKILL)
        self.current.process.wait(timeout=10)

    def close(self) -> None:
        stop_server(self.current)
        remove_server_leftovers(self.current)


@pytest.fixture
def servers(tmp_path: Path, docker_engine) -> Iterator[Servers]:  # noqa: ANN001
    s = Servers(tmp_path)
    try:
        yield s
    finally:
        s.close()


def git(repo: Path, *args: str, env: dict[str, str] | None = None, check: bool = True):
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=check,
        timeout=180,
    )  # fmt: skip


def make_repo(path: Path, files: dict[str, str | bytes]) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "t@example.com")
    git(path, "config", "user.name", "t")
    return commit(path, files, "initial")


def commit(repo: Path, files: dict[str, str | bytes], message: str) -> Path:
    for name, content in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return repo


def app_files(version: str, dockerfile: str = APP_DOCKERFILE) -> dict[str, str | bytes]:
    return {"Dockerfile": dockerfile, "www/index.html": f"{version}\n"}


def push(srv: DockyardServer, repo: Path, app: str, ref: str = "main:main"):
    return git(repo, "push", srv.remote(app), ref, env=srv.git_env(), check=False)


def push_in_background(srv: DockyardServer, repo: Path, app: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["git", "-C", str(repo), "push", srv.remote(app), "main:main"],
        env=srv.git_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def ok(result) -> None:  # noqa: ANN001
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def get(srv: DockyardServer, app: str, path: str = "/") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": f"{app}.localhost"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def wait_until(what: str, predicate: Callable[[], object], timeout: float = 20) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def serves(srv: DockyardServer, app: str, body: str, path: str = "/") -> bool:
    try:
        status, text = get(srv, app, path)
    except OSError:
        return False
    return status == 200 and text.strip() == body


def wait_serving(
    srv: DockyardServer, app: str, body: str, timeout: float = 20, path: str = "/"
) -> None:
    try:
        wait_until(f"{app} to serve {body!r}", lambda: serves(srv, app, body, path), timeout)
    except AssertionError:
        raise AssertionError(f"{app} does not serve {body!r}: {get(srv, app, path)}") from None


def containers(docker_engine, srv: DockyardServer, app: str) -> list:  # noqa: ANN001
    labels = [f"dockyard.home={srv.data_dir}", f"dockyard.app={app}"]
    return docker_engine.containers.list(all=True, filters={"label": labels})


def repo_path(srv: DockyardServer, app: str) -> Path:
    return srv.data_dir / "repos" / f"{app}.git"


def assert_repo_clean(srv: DockyardServer, app: str, branch_at: str) -> None:
    repo = repo_path(srv, app)
    fsck = subprocess.run(
        ["git", "--git-dir", str(repo), "fsck", "--strict", "--no-dangling"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert (repo / "refs/heads/main").read_text().strip() == branch_at
    leftovers = [p.name for p in (repo / "objects").glob("tmp_pack_*")]
    leftovers += [p.name for p in (repo / "objects/pack").glob("tmp*")]
    assert leftovers == [], leftovers


def assert_lock_free(srv: DockyardServer, app: str) -> None:
    """The app lock is an flock: it died with the killed server. The new server's start-up
    reconcile and housekeeping take it for a moment; a stuck lock stays taken."""

    def free() -> bool:
        fd = os.open(srv.data_dir / "locks" / f"{app}.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    wait_until(f"{app}'s lock free", free, timeout=15)


def build_status(srv: DockyardServer, number: int) -> str:
    with sqlite3.connect(f"file:{srv.data_dir / 'state.db'}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT status FROM builds WHERE number = ?", (number,)).fetchone()[0]


def releases(srv: DockyardServer, app: str) -> list[dict]:
    result = srv.ssh("releases", app, "--format", "json")
    ok(result)
    return json.loads(result.stdout)


def deploy_first(servers: Servers, tmp_path: Path, app: str) -> tuple[Path, str]:
    repo = make_repo(tmp_path / app, app_files("v1"))
    ok(push(servers.current, repo, app))
    wait_serving(servers.current, app, "v1")
    return repo, git(repo, "rev-parse", "HEAD").stdout.strip()


def next_push_works(servers: Servers, repo: Path, app: str, body: str) -> None:
    """A fresh push goes through at once: no lock waits, the repo takes new objects."""
    commit(repo, app_files(body), body)
    started = time.monotonic()
    result = push(servers.current, repo, app)
    ok(result)
    assert time.monotonic() - started < 60
    wait_serving(servers.current, app, body)
    assert_repo_clean(servers.current, app, git(repo, "rev-parse", "HEAD").stdout.strip())


# ---------------------------------------------------------------- reboot
def test_reboot_brings_back_every_running_app(
    servers: Servers, tmp_path: Path, docker_engine
) -> None:  # noqa: ANN001
    srv = servers.current
    deploy_first(servers, tmp_path, "boot")
    ok(srv.ssh("config:set", "boot", "GREETING=ahoy"))
    ok(srv.ssh("ps:scale", "boot", "web=2"))
    wait_serving(srv, "boot", "ahoy", path="/greeting")
    before = {c.name: c.labels["dockyard.release"] for c in containers(docker_engine, srv, "boot")}
    # Let the retired containers of the config change go, so only the live ones remain.
    wait_until("old containers retired", lambda: len(containers(docker_engine, srv, "boot")) == 2)

    # The "reboot": Dockyard, nginx and every app container go down.
    stop_server(srv)
    NginxMaster(NginxPaths(prefix=srv.data_dir / "nginx")).stop()
    for c in containers(docker_engine, srv, "boot"):
        c.stop(timeout=1)
    assert not serves(srv, "boot", "ahoy", "/greeting")

    srv = servers.restart()
    wait_serving(srv, "boot", "ahoy", timeout=30, path="/greeting")
    assert serves(srv, "boot", "v1", "/index.html")
    live = [c for c in containers(docker_engine, srv, "boot") if c.status == "running"]
    assert sorted(c.name for c in live) == ["boot.web.1", "boot.web.2"]
    release = max(int(v) for v in before.values())
    assert {c.labels["dockyard.release"] for c in live} == {str(release)}
    hosts = {get(srv, "boot", "/host")[1].strip() for _ in range(12)}
    assert len(hosts) == 2, f"both instances serve through nginx, got {hosts}"


# ---------------------------------------------------------------- kill -9
def test_kill9_during_push_streaming(servers: Servers, tmp_path: Path) -> None:
    repo, good = deploy_first(servers, tmp_path, "kp")
    # Incompressible, so the pack takes a while on the wire; kept out of the build context.
    commit(repo, {"bulk.bin": os.urandom(60 * 1024 * 1024), ".dockerignore": "bulk.bin\n"}, "big")
    objects = repo_path(servers.current, "kp") / "objects"
    pusher = push_in_background(servers.current, repo, "kp")
    wait_until(
        "the pack to start arriving",
        lambda: any(p.stat().st_size > 1024 * 1024 for p in objects.glob("tmp_pack_*")),
    )
    servers.kill9()
    out, _ = pusher.communicate(timeout=30)
    assert pusher.returncode != 0, out
    assert list(objects.glob("tmp_pack_*")), "the kill left a half-received pack (test premise)"

    srv = servers.restart()
    wait_serving(srv, "kp", "v1")
    # The start-up housekeeping removes the half-received pack.
    wait_until("temporary pack removed", lambda: not list(objects.glob("tmp_pack_*")), 15)
    assert_repo_clean(srv, "kp", good)
    assert_lock_free(srv, "kp")
    next_push_works(servers, repo, "kp", "v2")


def test_kill9_during_build(servers: Servers, tmp_path: Path, docker_engine) -> None:  # noqa: ANN001
    repo, good = deploy_first(servers, tmp_path, "kb")
    commit(repo, app_files("slow", SLOW_BUILD_DOCKERFILE), "slow build")
    pusher = push_in_background(servers.current, repo, "kb")
    logs = servers.current.data_dir / "builds" / "kb"
    wait_until("the second build to start", lambda: (logs / "2.log").exists())
    wait_until("`RUN sleep 3` to run", lambda: "sleep 3" in (logs / "2.log").read_text())
    time.sleep(0.5)
    assert build_status(servers.current, 2) == "running"
    servers.kill9()
    pusher.communicate(timeout=30)
    assert pusher.returncode != 0

    srv = servers.restart()
    wait_serving(srv, "kb", "v1")
    builds = json.loads(srv.ssh("builds:list", "kb", "--format", "json").stdout)
    interrupted = next(b for b in builds if str(b["id"]) == "2")
    assert interrupted["status"] == "failed", builds
    assert "interrupted" in srv.ssh("builds:output", "kb", "2").stdout
    assert_repo_clean(srv, "kb", good)
    assert_lock_free(srv, "kb")
    next_push_works(servers, repo, "kb", "v2")


def test_kill9_during_deploy_switch(servers: Servers, tmp_path: Path, docker_engine) -> None:  # noqa: ANN001
    repo, good = deploy_first(servers, tmp_path, "kd")
    srv = servers.current
    commit(repo, {**app_files("v2"), "app.json": SLOW_CHECK_APP_JSON}, "slow check")
    pusher = push_in_background(srv, repo, "kd")
    wait_until(
        "the new container beside the old one",
        lambda: any(c.name == "kd.web.1.v2" for c in containers(docker_engine, srv, "kd")),
        timeout=60,
    )
    servers.kill9()
    pusher.communicate(timeout=30)
    assert pusher.returncode != 0

    srv = servers.restart()
    wait_until(
        "the aborted deploy's container removed",
        lambda: [c.name for c in containers(docker_engine, srv, "kd")] == ["kd.web.1"],
    )
    wait_serving(srv, "kd", "v1")
    history = {r["version"]: r for r in releases(srv, "kd")}
    assert history["v1"]["current"] and history["v2"]["status"] == "failed", history
    rev = srv.ssh("config:get", "kd", "GIT_REV")
    assert rev.stdout.strip() == good, "the config names the revision that runs"
    assert_repo_clean(srv, "kd", good)
    assert_lock_free(srv, "kd")
    next_push_works(servers, repo, "kd", "v3")


# ---------------------------------------------------------------- nginx
def test_nginx_killed_routing_restored(servers: Servers, tmp_path: Path) -> None:
    deploy_first(servers, tmp_path, "ng")
    srv = servers.current
    master = NginxMaster(NginxPaths(prefix=srv.data_dir / "nginx"))
    pid = master.pid()
    assert pid is not None
    for victim in (pid, *children(pid)):
        os.kill(victim, signal.SIGKILL)
    wait_until("nginx down", lambda: not serves(srv, "ng", "v1"), 5)
    wait_serving(srv, "ng", "v1", timeout=15)
    assert master.pid() not in (None, pid)


# ---------------------------------------------------------------- disk full
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs as the data dir: room for the server and one small app, not for a big
    push. (tmpfs mounts work here as root; a loop-mounted ext4 image would do the same.)"""
    mount = tmp_path / "data"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_during_push(small_disk: Path, tmp_path: Path, docker_engine) -> None:  # noqa: ANN001
    servers = Servers(tmp_path)
    assert servers.data_dir == small_disk
    try:
        repo, good = deploy_first(servers, tmp_path, "df")
        srv = servers.current
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        commit(repo, {"bulk.bin": os.urandom(free + 4 * 1024 * 1024)}, "too big")
        result = push(srv, repo, "df")
        assert result.returncode != 0
        assert "No space left on device" in result.stderr, result.stderr
        assert "remote:  !     " in result.stderr and "out of disk space" in result.stderr

        assert_repo_clean(srv, "df", good)
        with sqlite3.connect(srv.data_dir / "state.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        wait_serving(srv, "df", "v1")
        assert os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize >= free * 0.9

        git(repo, "reset", "-q", "--hard", "HEAD~1")
        next_push_works(servers, repo, "df", "v2")
    finally:
        servers.close()


# ---------------------------------------------------------------- housekeeping
def test_housekeeping_prunes_logs_and_images_and_gcs_repos(
    servers: Servers, tmp_path: Path, docker_engine
) -> None:  # noqa: ANN001
    srv = servers.current
    ok(srv.ssh("builder:set", "--global", "keep-releases", "2"))
    repo, _ = deploy_first(servers, tmp_path, "hk")
    for n in (2, 3):
        commit(repo, app_files(f"v{n}"), f"v{n}")
        ok(push(srv, repo, "hk"))
    wait_serving(srv, "hk", "v3")
    logs = sorted(p.name for p in (srv.data_dir / "builds" / "hk").glob("*.log"))
    assert logs == ["2.log", "3.log"]

    def tags() -> list[str]:
        images = docker_engine.images.list("dockyard/hk")
        return sorted(t for i in images for t in i.tags if t.startswith("dockyard/hk:"))

    # v1's image is pruned once its container has drained (retired after the switch).
    kept = ["dockyard/hk:2", "dockyard/hk:3", "dockyard/hk:latest"]
    wait_until("v1's image pruned", lambda: tags() == kept, timeout=30)

    packs = repo_path(srv, "hk") / "objects" / "pack"
    assert len(list(packs.glob("*.pack"))) == 3  # one per push
    ok(srv.ssh("git:set", "--global", "gc-interval", "1"))
    wait_until("the scheduled gc", lambda: len(list(packs.glob("*.pack"))) == 1, timeout=15)
    # The log line follows the repack's last step by a moment.
    wait_until("the gc logged", lambda: "repo gc" in srv.log(), timeout=10)
    assert_repo_clean(srv, "hk", git(repo, "rev-parse", "HEAD").stdout.strip())


# ---------------------------------------------------------------- docker engine restart
# Runs LAST (file order) and only here: it restarts the shared dockerd, which breaks any
# other test using the engine at that moment. It always leaves dockerd running.
#
# What the test needs from the engine, in order: to stop while a deploy is under way, to
# stay away until that deploy has met its absence (an engine call refused, or the check of a
# container the engine stopped: a dockerd back within seconds would let the check pass and
# the fault would not land), and to answer again. Each wait has a deadline from what bounds
# it, with a margin for a loaded 2-core machine:
# - dockerd's exit: dockerd bounds it itself, giving every container its stop timeout plus
#   5 s of grace (at least its shutdown timeout, 15 s unless configured), then waiting up to
#   10 s for its containerd; the bound is read from the engine before the signal. A dockerd
#   still there after bound and margin is killed, so the engine always comes back.
# - the push without an engine: the app's declared check (initialDelay, attempts × (timeout
#   + wait)) bounds the deploy's last step; engine calls fail at once without a socket.
# - the engine's start: scripts/start-dockerd.sh, given a longer wait than its default.
DOCKERD_GRACE = 5.0
DOCKERD_DEFAULT_SHUTDOWN = 15.0
DOCKERD_CONTAINERD_WAIT = 10.0
DEFAULT_STOP_TIMEOUT = 10.0
LOADED_MACHINE_MARGIN = 120.0
ENGINE_START_TIMEOUT = 180  # for scripts/start-dockerd.sh on a loaded machine


def _dockerd_pid() -> int:
    return int(Path("/var/run/docker.pid").read_text().strip())


def _dockerd_gone(pid: int) -> bool:
    """Exited (a zombie awaiting its reaper counts: it holds no socket and no lock)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].startswith("Z")


def _configured_shutdown_timeout(pid: int) -> float:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    for i, arg in enumerate(argv):
        if arg.startswith("--shutdown-timeout="):
            return float(arg.split("=", 1)[1])
        if arg == "--shutdown-timeout" and i + 1 < len(argv):
            return float(argv[i + 1])
    try:
        config = json.loads(Path("/etc/docker/daemon.json").read_text())
        return float(config.get("shutdown-timeout", DOCKERD_DEFAULT_SHUTDOWN))
    except (OSError, ValueError):
        return DOCKERD_DEFAULT_SHUTDOWN


def dockerd_exit_deadline(docker_engine, pid: int) -> float:  # noqa: ANN001
    """Seconds dockerd may take to exit after SIGTERM, by its own rules, plus the margin."""
    import docker.errors

    bound = _configured_shutdown_timeout(pid)
    for summary in docker_engine.api.containers(all=True):
        try:
            config = docker_engine.api.inspect_container(summary["Id"])["Config"]
        except docker.errors.NotFound:
            continue
        stop = config.get("StopTimeout")
        stop = DEFAULT_STOP_TIMEOUT if stop is None else float(stop)
        if stop < 0:  # waits for ever for this container: our margin is all we can give
            stop = 0
        bound = max(bound, stop + DOCKERD_GRACE)
    return bound + DOCKERD_CONTAINERD_WAIT + LOADED_MACHINE_MARGIN


def stop_dockerd(docker_engine, pid: int) -> None:  # noqa: ANN001
    """SIGTERM, then wait for the exit within dockerd's own bound; SIGKILL past it."""
    deadline = dockerd_exit_deadline(docker_engine, pid)
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    try:
        wait_until(f"dockerd {pid} to exit (bound {deadline:.0f} s)",
                   lambda: _dockerd_gone(pid), deadline)  # fmt: skip
    finally:
        if not _dockerd_gone(pid):
            os.kill(pid, signal.SIGKILL)
            wait_until(f"dockerd {pid} to die of SIGKILL", lambda: _dockerd_gone(pid), 30)
    print(f"dockerd {pid} exited {time.monotonic() - started:.1f} s after SIGTERM "
          f"(allowed {deadline:.0f} s)")  # fmt: skip


def start_dockerd() -> None:
    env = {**os.environ, "DOCKYARD_DOCKERD_TIMEOUT": str(ENGINE_START_TIMEOUT)}
    subprocess.run(["bash", str(REPO_ROOT / "scripts/start-dockerd.sh")], check=True,
                   env=env, timeout=ENGINE_START_TIMEOUT + 60)  # fmt: skip


def check_deadline(app_json: str) -> float:
    """How long the app's declared checks may take: initialDelay + attempts × (timeout +
    wait), from the deployer's own reading of app.json; plus the margin."""
    from deployer.healthchecks import checks_for

    checks = checks_for(json.loads(app_json), "web")
    worst = max(c.initial_delay + c.attempts * (c.timeout + c.wait) for c in checks)
    return worst + LOADED_MACHINE_MARGIN


def test_zz_docker_engine_restarted_during_deploy(
    servers: Servers, tmp_path: Path, docker_engine
) -> None:  # noqa: ANN001
    repo, good = deploy_first(servers, tmp_path, "de")
    srv = servers.current
    commit(repo, {**app_files("v2"), "app.json": SLOW_CHECK_APP_JSON}, "slow check")
    pusher = push_in_background(srv, repo, "de")
    wait_until(
        "the new container beside the old one",
        lambda: any(c.name == "de.web.1.v2" for c in containers(docker_engine, srv, "de")),
        timeout=120,
    )
    try:
        stop_dockerd(docker_engine, _dockerd_pid())
        out, _ = pusher.communicate(timeout=check_deadline(SLOW_CHECK_APP_JSON))
    finally:
        if pusher.poll() is None:
            pusher.kill()
            pusher.wait()
        start_dockerd()
    assert pusher.returncode != 0, out
    # Which step notices first depends on timing: the engine call failing, or the check of
    # a container the engine stopped; either way the push says the old release serves.
    assert "(deploy failed)" in out and "previous release keeps serving" in out, out

    # The old container comes back with the engine (restart policy) or by reconciliation,
    # and the failed one, brought back by its restart policy too, is not served.
    wait_serving(srv, "de", "v1", timeout=120)
    history = {r["version"]: r for r in releases(srv, "de")}
    assert history["v1"]["current"] and history["v2"]["status"] == "failed", history
    assert_repo_clean(srv, "de", good)
    next_push_works(servers, repo, "de", "v3")
