"""Push-to-serving time for a cached Dockerfile app, against `docker build` + `docker run`.

A real `dockyard serve` (temp data dir, loopback ports) receives real `git push`es over our
SSH server; each run changes only the served file, so every Dockerfile layer but the last
COPY comes from the cache. The clock starts before `git push` and stops when the new body
answers through Dockyard's nginx (Host `bench.localhost`): build, release, health checks,
proxy switch and the push's own round trips are all inside.

The baseline, in the same run on the same context: `docker build` + `docker run -p
127.0.0.1::5000`, stopped when the new body answers on the container's own port (no
checks, no proxy, no zero-downtime overlap). Runs alternate Dockyard/baseline.

    .venv/bin/python bench/bench_deploy.py [--runs 5]
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import _provision, remove_leftovers_of, start_server, stop_server  # noqa: E402

APP = "bench"
TARGET_SECONDS = 3.0
DOKKU_DEFAULT_WAIT = 10.0
DOCKERFILE = """FROM dockyard-base/busybox:latest
COPY www /www
CMD ["/bin/sh", "-c", "exec httpd -f -p ${PORT:-5000} -h /www"]
"""
BASELINE_IMAGE = "dockyard-bench/baseline:latest"
BASELINE_CONTAINER = "dockyard-bench-baseline"
POLL = 0.01
STEP_TIMEOUT = 60


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def answers(port: int, host: str, expected: str) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        body = resp.read().decode()
        conn.close()
        return resp.status == 200 and expected in body
    except OSError:
        return False


def wait_until(port: int, host: str, expected: str) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT
    while not answers(port, host, expected):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{expected!r} never answered on port {port}")
        time.sleep(POLL)


def write_version(repo: Path, body: str) -> None:
    (repo / "www").mkdir(exist_ok=True)
    (repo / "www" / "index.html").write_text(body + "\n")


def dockyard_run(server, repo: Path, body: str) -> float:
    write_version(repo, body)
    run("git", "commit", "-qam", body, cwd=repo)
    start = time.perf_counter()
    run("git", "push", "-q", server.remote(APP), "main:main", cwd=repo, env=server.git_env())
    wait_until(server.http_port, f"{APP}.localhost", body)
    return time.perf_counter() - start


def baseline_run(context: Path, body: str) -> float:
    write_version(context, body)
    start = time.perf_counter()
    run("docker", "build", "-q", "-t", BASELINE_IMAGE, str(context))
    serve_baseline(BASELINE_IMAGE, BASELINE_CONTAINER, body)
    return time.perf_counter() - start


def serve_baseline(image: str, name: str, body: str) -> None:
    """(Re)start the baseline container on a 127.0.0.1 port and wait for `body` there."""
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    run("docker", "run", "-d", "--name", name, "-p", "127.0.0.1::5000", image)
    port = int(run("docker", "port", name, "5000/tcp").split(":")[-1])
    wait_until(port, "localhost", body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dockyard-bench-deploy-"))
    data_dir, keys_dir, admin_key, user_key = _provision(tmp)
    server = start_server(data_dir, keys_dir, admin_key, user_key)
    repo, context = tmp / "repo", tmp / "context"
    for d in (repo, context):
        d.mkdir()
        (d / "Dockerfile").write_text(DOCKERFILE)
        write_version(d, "warm-up")
    run("git", "init", "-q", "-b", "main", cwd=repo)
    for key, value in (("user.name", "bench"), ("user.email", "bench@example.com")):
        run("git", "config", key, value, cwd=repo)
    try:
        run("git", "add", "-A", cwd=repo)
        run("git", "commit", "-qm", "warm-up", cwd=repo)
        # Warm both caches: the first deploy and the first build pull nothing but still
        # create the base layers.
        dockyard_run(server, repo, "warm-up-dockyard")
        baseline_run(context, "warm-up-baseline")
        dockyard, baseline = [], []
        for i in range(args.runs):
            dockyard.append(dockyard_run(server, repo, f"dockyard-{i}-{time.time()}"))
            baseline.append(baseline_run(context, f"baseline-{i}-{time.time()}"))
            print(f"run {i + 1}: dockyard push-to-serving {dockyard[-1]:.3f} s, "
                  f"docker build+run {baseline[-1]:.3f} s")  # fmt: skip
        d, b = statistics.median(dockyard), statistics.median(baseline)
        print(
            f"median push-to-serving (git push → new code through nginx): {d:.3f} s "
            f"(target <= {TARGET_SECONDS:.1f} s: {'met' if d <= TARGET_SECONDS else 'MISSED'})"
        )
        print(f"median docker build + docker run, direct container port: {b:.3f} s")
        print(f"ratio dockyard/baseline: {d / b:.2f}x; Dokku's default checks alone wait "
              f"{DOKKU_DEFAULT_WAIT:.0f} s")  # fmt: skip
    finally:
        stop_server(server)
        subprocess.run(["docker", "rm", "-f", BASELINE_CONTAINER], capture_output=True)
        remove_leftovers_of(data_dir)
        subprocess.run(["docker", "rmi", "-f", BASELINE_IMAGE], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
