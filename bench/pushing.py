"""Helpers shared by the push benches: tiny app repos, timed pushes, serving checks.

A tiny app is a busybox Dockerfile serving one file; every push changes only that file, so
builds after the first reuse every cached layer but the last COPY. The clock of a
push-to-serving starts before `git push` and stops when the new body answers through
Dockyard's nginx (Host `APP.localhost`).
"""

from __future__ import annotations

import http.client
import subprocess
import time
from pathlib import Path

DOCKERFILE = """FROM dockyard-base/busybox:latest
COPY www /www
CMD ["/bin/sh", "-c", "exec httpd -f -p ${PORT:-5000} -h /www"]
"""
STEP_TIMEOUT = 180
POLL = 0.01


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def make_repo(path: Path, body: str) -> Path:
    path.mkdir(parents=True)
    (path / "Dockerfile").write_text(DOCKERFILE)
    (path / "www").mkdir()
    (path / "www" / "index.html").write_text(body + "\n")
    run("git", "init", "-q", "-b", "main", cwd=path)
    for key, value in (("user.name", "bench"), ("user.email", "bench@example.com")):
        run("git", "config", key, value, cwd=path)
    run("git", "add", "-A", cwd=path)
    run("git", "commit", "-qm", body, cwd=path)
    return path


def new_version(repo: Path, body: str) -> None:
    (repo / "www" / "index.html").write_text(body + "\n")
    run("git", "commit", "-qam", body, cwd=repo)


def answers(port: int, host: str, expected: str, address: str = "127.0.0.1") -> bool:
    """Does `address:port` answer 200 with `expected` in the body, asked for `host`?"""
    try:
        conn = http.client.HTTPConnection(address, port, timeout=2)
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        conn.close()
        return resp.status == 200 and expected in body
    except OSError:
        return False


def wait_serving(port: int, app: str, expected: str) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT
    while not answers(port, f"{app}.localhost", expected):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{app} never answered {expected!r}")
        time.sleep(POLL)


def push_to_serving(server, repo: Path, app: str, body: str) -> float:  # noqa: ANN001
    """Commit `body`, push it, wait until it answers; seconds from push to serving."""
    new_version(repo, body)
    start = time.perf_counter()
    run("git", "push", "-q", server.remote(app), "main:main", cwd=repo, env=server.git_env())
    wait_serving(server.http_port, app, body)
    return time.perf_counter() - start


def first_push(server, repo: Path, app: str, body: str) -> float:  # noqa: ANN001
    """The app's first push (it is created by it): seconds from push to serving."""
    start = time.perf_counter()
    run("git", "push", "-q", server.remote(app), "main:main", cwd=repo, env=server.git_env())
    wait_serving(server.http_port, app, body)
    return time.perf_counter() - start
