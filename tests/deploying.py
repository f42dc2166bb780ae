"""Helpers for end-to-end tests that push apps: real git repos, pushes over real SSH, and
requests through the real nginx with Host `APP.localhost`."""

from __future__ import annotations

import http.client
import subprocess
import time
from pathlib import Path

from deployer.containers import list_containers
from tests.conftest import DockyardServer

BUSYBOX_DOCKERFILE = """FROM dockyard-base/busybox:latest
COPY www /www
CMD ["/bin/sh", "-c", "exec httpd -f -v -p $PORT -h /www"]
"""

PY_APP = r"""
import http.server, json, os, socket

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/env/"):
            body = os.environ.get(self.path[5:], "<unset>").encode("utf-8")
        else:
            body = json.dumps({"host": socket.gethostname(), "dyno": os.environ.get("DYNO"),
                               "version": open("VERSION").read().strip()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), Handler).serve_forever()
"""

PY_PROCFILE = "web: python3 app.py\nworker: sh -c 'while true; do sleep 1; done'\n"


def git(repo: Path, *args: str, env: dict[str, str] | None = None, check: bool = True):
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=check,
        timeout=180,
    )  # fmt: skip


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "t@example.com")
    git(path, "config", "user.name", "t")
    return commit(path, files, "initial")


def commit(repo: Path, files: dict[str, str], message: str) -> Path:
    for name, content in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return repo


def push(server: DockyardServer, repo: Path, app: str) -> subprocess.CompletedProcess:
    return git(repo, "push", server.remote(app), "main:main", env=server.git_env(), check=False)


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").stdout.strip()


def get(server: DockyardServer, app: str, path: str = "/") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": f"{app}.localhost"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def wait_for_body(server: DockyardServer, app: str, expected: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        try:
            status, body = get(server, app)
            if status == 200 and expected in body:
                return body
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{app} never answered with {expected!r}; last body {body!r}")


def ok(result) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def containers(docker_engine, app: str, live_only: bool = True, srv=None) -> list:
    labels = [f"dockyard.app={app}"]
    if srv is not None:
        labels.append(f"dockyard.home={srv.data_dir}")
    found = list_containers({"label": labels})
    if live_only:
        found = [c for c in found if c.name.count(".") == 2]
    return found


def busybox_repo(tmp_path: Path, name: str, body: str) -> Path:
    return make_repo(
        tmp_path / name, {"Dockerfile": BUSYBOX_DOCKERFILE, "www/index.html": body + "\n"}
    )


def python_repo(tmp_path: Path, name: str, version: str, extra: dict[str, str] | None = None):
    files = {
        "app.py": PY_APP, "Procfile": PY_PROCFILE, "requirements.txt": "",
        "VERSION": version + "\n", **(extra or {}),
    }  # fmt: skip
    return make_repo(tmp_path / name, files)
