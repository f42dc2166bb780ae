"""Push-to-serving for a Python app with dependencies, no Dockerfile, against `docker build`
+ `docker run` of the very Dockerfile and context Dockyard generates for it.

Two cases, interleaved with their baselines in every round:
- first push: requirements.txt changed (a nonce comment), so the dependency layer is
  rebuilt: pip downloads and installs Flask and its dependencies from PyPI;
- second push: only app.py changed, so the dependency layer comes from the cache.

The clock starts before `git push` (or `docker build`) and stops when the new code answers,
through Dockyard's nginx (Host `APP.localhost`) or on the baseline container's own port.
The baseline builds the same generated Dockerfile with the same files and the host's CA
bundle in its context, so both do the same work; it skips only what Dockyard adds
(release record, checks, proxy switch, the push's own round trips).

    .venv/bin/python bench/bench_build.py [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_deploy import run, serve_baseline, wait_until  # noqa: E402
from tests.conftest import _provision, remove_leftovers_of, start_server, stop_server  # noqa: E402

APP = "pydeps"
BASELINE_IMAGE = "dockyard-bench/pydeps:latest"
BASELINE_CONTAINER = "dockyard-bench-pydeps"
REQUIREMENTS = "flask>=3,<4\n"
APP_PY = """import os
from flask import Flask
app = Flask(__name__)
@app.get("/")
def index():
    return {body!r}
app.run(host="0.0.0.0", port=int(os.environ.get("PORT", "5000")))
"""
FILES = {"Procfile": "web: python3 app.py\n", "requirements.txt": REQUIREMENTS}


def write_app(root: Path, body: str, nonce: str) -> None:
    for name, text in FILES.items():
        (root / name).write_text(text)
    (root / "requirements.txt").write_text(f"# {nonce}\n{REQUIREMENTS}")
    (root / "app.py").write_text(APP_PY.format(body=body))


def generated_dockerfile(root: Path) -> str:
    """What Dockyard's builder generates for this tree, with this host's runtime images."""
    from builder import runtimes
    from builder.build import engine
    from builder.detect import make_tree, plan_build

    names = [p.name for p in root.iterdir() if not p.name.startswith(".")]
    tree = make_tree(lambda p: (root / p).read_bytes() if (root / p).is_file() else None, names)

    def find(lang, tree):  # noqa: ANN001, ANN202
        local = runtimes.local_images(engine.images_labelled, lang.name)
        return runtimes.resolve(lang.name, lang.version_request(tree), None, local)

    procfile = {"web": "python3 app.py"}
    return plan_build(tree, procfile, find, ".dockyard/ca.crt").dockerfile or ""


def dockyard_push(server, repo: Path, body: str, nonce: str) -> float:  # noqa: ANN001
    write_app(repo, body, nonce)
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", body, cwd=repo)
    start = time.perf_counter()
    proc = subprocess.run(
        ["git", "push", "-q", server.remote(APP), "main:main"], cwd=repo, env=server.git_env(),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    wait_until(server.http_port, f"{APP}.localhost", body)
    return time.perf_counter() - start


def baseline_build(context: Path, body: str, nonce: str) -> float:
    write_app(context, body, nonce)
    start = time.perf_counter()
    subprocess.run(
        ["docker", "build", "-q", "-t", BASELINE_IMAGE, "-f", ".dockyard/Dockerfile", "."],
        cwd=context, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    serve_baseline(BASELINE_IMAGE, BASELINE_CONTAINER, body)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dockyard-bench-build-"))
    data_dir, keys_dir, admin_key, user_key = _provision(tmp)
    server = start_server(data_dir, keys_dir, admin_key, user_key)
    repo, context = tmp / "repo", tmp / "context"
    repo.mkdir()
    (context / ".dockyard").mkdir(parents=True)
    write_app(repo, "warm-up", "warm-up")
    (context / ".dockyard" / "Dockerfile").write_text(generated_dockerfile(repo))
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", context / ".dockyard" / "ca.crt")
    run("git", "init", "-q", "-b", "main", cwd=repo)
    for key, value in (("user.name", "bench"), ("user.email", "bench@example.com")):
        run("git", "config", key, value, cwd=repo)
    print("conditions: Python app (Flask from PyPI), local runtime image; candidate: git push "
          "over SSH to serving through nginx; baseline: docker build of the same generated "
          "Dockerfile and context + docker run, serving on its own port")  # fmt: skip
    cold_d, cold_b, warm_d, warm_b = [], [], [], []
    try:
        for i in range(args.runs):
            nonce = f"{time.time()}-{i}"
            cold_d.append(dockyard_push(server, repo, f"d-cold-{i}", f"d-{nonce}"))
            cold_b.append(baseline_build(context, f"b-cold-{i}", f"b-{nonce}"))
            warm_d.append(dockyard_push(server, repo, f"d-warm-{i}", f"d-{nonce}"))
            warm_b.append(baseline_build(context, f"b-warm-{i}", f"b-{nonce}"))
            print(f"round {i + 1}: first push {cold_d[-1]:.2f} s vs {cold_b[-1]:.2f} s; "
                  f"second push {warm_d[-1]:.2f} s vs {warm_b[-1]:.2f} s")  # fmt: skip
        for label, d, b in (("first push (dependencies installed)", cold_d, cold_b),
                            ("second push (dependency layer cached)", warm_d, warm_b)):  # fmt: skip
            md, mb = statistics.median(d), statistics.median(b)
            print(f"{label}: dockyard {md:.2f} s, docker build+run {mb:.2f} s, "
                  f"ratio {md / mb:.2f}")
    finally:
        stop_server(server)
        subprocess.run(["docker", "rm", "-f", BASELINE_CONTAINER], capture_output=True)
        remove_leftovers_of(data_dir)
        subprocess.run(["docker", "rmi", "-f", BASELINE_IMAGE], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
