"""Ordinary apps without a Dockerfile, pushed as a Heroku or Dokku user would: real git over
real SSH, the builder's detection, runtime images found by version (the local ones that
scripts/setup.sh builds from Debian packages), real containers, traffic through nginx.

No `builder:set` anywhere: a fresh data dir on a machine set up by scripts/setup.sh must
build every one of these.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import DockyardServer
from tests.deploying import containers, get, git, make_repo, ok, push, wait_for_body

PY_SERVER = """
import http.server, os, sys
ROOT = sys.argv[1] if len(sys.argv) > 1 else "."
class H(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=ROOT, **k)
http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
"""


@pytest.fixture(scope="module")
def srv(shared_server: DockyardServer, docker_engine) -> DockyardServer:  # noqa: ANN001
    return shared_server


def deploy(srv: DockyardServer, tmp_path: Path, app: str, files: dict[str, str]) -> str:
    result = push(srv, make_repo(tmp_path / app, files), app)
    ok(result)
    return result.stderr


# --- Python -------------------------------------------------------------------------------

DJANGO_FILES = {
    "requirements.txt": "Django>=4.2,<6\nwhitenoise>=6,<7\n",
    ".python-version": "3.11\n",
    "Procfile": "web: python3 manage.py runserver 0.0.0.0:$PORT --noreload --insecure\n",
    "manage.py": (
        "import os, sys\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'site_conf')\n"
        "from django.core.management import execute_from_command_line\n"
        "execute_from_command_line(sys.argv)\n"
    ),
    "site_conf.py": (
        "import os\n"
        "SECRET_KEY = os.environ['SECRET_KEY']  # a config var: collectstatic needs it too\n"
        "DEBUG = False\nALLOWED_HOSTS = ['*']\nROOT_URLCONF = 'site_conf'\n"
        "INSTALLED_APPS = ['django.contrib.staticfiles']\n"
        "MIDDLEWARE = ['whitenoise.middleware.WhiteNoiseMiddleware']\n"
        "STATIC_URL = '/static/'\nSTATIC_ROOT = 'staticfiles'\nSTATICFILES_DIRS = ['assets']\n"
        "from django.http import HttpResponse\nfrom django.urls import path\n"
        "urlpatterns = [path('', lambda r: HttpResponse('django says hi'))]\n"
    ),
    "assets/site.css": "body { color: rebeccapurple }\n",
}


def test_django_app_serves_static_files_after_collectstatic(
    srv: DockyardServer, tmp_path: Path
) -> None:
    app = "djangoapp"
    ok(srv.ssh("apps:create", app))
    ok(srv.ssh("config:set", "--no-restart", app, "SECRET_KEY=not-so-secret"))
    output = deploy(srv, tmp_path, app, DJANGO_FILES)
    assert "Building djangoapp from detected python app" in output
    assert "Running python3 manage.py collectstatic --noinput" in output
    wait_for_body(srv, app, "django says hi", timeout=30)
    assert get(srv, app, "/static/site.css") == (200, "body { color: rebeccapurple }\n")
    image = json.loads(srv.ssh("releases", app, "--format", "json").stdout)[0]["image"]
    env = containers_env(srv, app)
    assert "SECRET_KEY=not-so-secret" in env  # the running container has it…
    assert "SECRET_KEY" not in image_env(image)  # …the image collectstatic left does not


def containers_env(srv: DockyardServer, app: str) -> list[str]:
    live = containers(None, app, srv=srv)
    return live[0].attrs["Config"]["Env"]


def image_env(image: str) -> str:
    import docker

    return " ".join(docker.from_env().images.get(image).attrs["Config"]["Env"] or [])


def test_unavailable_python_version_is_refused_at_once(srv: DockyardServer, tmp_path: Path) -> None:
    files = {"runtime.txt": "python-3.2.1\n", "requirements.txt": "", "app.py": ""}
    result = push(srv, make_repo(tmp_path / "oldpy", files), "oldpy")
    assert result.returncode != 0 and "[remote rejected]" in result.stderr
    assert "python 3.2.1 (asked for in runtime.txt) is not available" in result.stderr
    assert "3.11.2" in result.stderr and "builder:set APP base-python" in result.stderr
    # A version the official images have but no registry can deliver here: the pull fails.
    files = {".python-version": "3.12\n", "requirements.txt": "", "app.py": ""}
    result = push(srv, make_repo(tmp_path / "py312", files), "py312")
    assert result.returncode != 0
    assert "Cannot get python 3.12 (asked for in .python-version)" in result.stderr
    assert "pulling python:3.12-slim failed" in result.stderr


# --- Node, Go, static, Procfile -------------------------------------------------------------


def test_node_app_with_engines_range_and_build_script(srv: DockyardServer, tmp_path: Path) -> None:
    package = {
        "name": "nodeapp",
        "engines": {"node": ">=18 <20"},
        "scripts": {"build": "node build.js", "start": "node server.js"},
        "dependencies": {"ms": "2.1.3"},
    }
    files = {
        "package.json": json.dumps(package),
        "build.js": "require('fs').writeFileSync('built.txt', 'built at build time')\n",
        "server.js": (
            "const ms = require('ms'), fs = require('fs');\n"
            "require('http').createServer((q, r) => r.end(`${process.version} "
            "${fs.readFileSync('built.txt')} ${ms('2h')}`)).listen(process.env.PORT);\n"
        ),
    }
    output = deploy(srv, tmp_path, "nodeapp", files)
    assert "detected node app" in output
    body = wait_for_body(srv, "nodeapp", "built at build time", timeout=30)
    assert body.startswith("v18.") and body.endswith("7200000")


def test_go_app_runs_the_binary_named_after_its_module(srv: DockyardServer, tmp_path: Path) -> None:
    files = {
        "go.mod": "module example.com/greeter\n\ngo 1.19\n",
        "main.go": (
            'package main\n\nimport (\n\t"fmt"\n\t"net/http"\n\t"os"\n\t"runtime"\n)\n\n'
            'func main() {\n\thttp.HandleFunc("/", func(w http.ResponseWriter, r '
            '*http.Request) {\n\t\tfmt.Fprintf(w, "go says hi %s", runtime.Version())\n\t})\n'
            '\thttp.ListenAndServe(":"+os.Getenv("PORT"), nil)\n}\n'
        ),
    }
    output = deploy(srv, tmp_path, "goapp", files)
    assert "detected go app" in output
    body = wait_for_body(srv, "goapp", "go says hi", timeout=30)
    assert "go1.24" in body  # the newest local Go that go.mod's `go 1.19` allows


def test_static_site_and_procfile_only_app(srv: DockyardServer, tmp_path: Path) -> None:
    deploy(srv, tmp_path, "staticapp", {"index.html": "<h1>static</h1>\n"})
    wait_for_body(srv, "staticapp", "<h1>static</h1>")
    # A Procfile-only app ships its own server: here a static busybox.
    app_dir = tmp_path / "binapp"
    files = {"Procfile": "web: ./busybox httpd -f -p $PORT -h www\n", "www/index.html": "bin\n"}
    repo = make_repo(app_dir, files)
    shutil.copy("/bin/busybox", repo / "busybox")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "binary")
    result = push(srv, repo, "binapp")
    ok(result)
    assert "detected procfile app" in result.stderr
    wait_for_body(srv, "binapp", "bin")


def test_buildpacks_file_builds_node_then_python_into_one_image(
    srv: DockyardServer, tmp_path: Path
) -> None:
    files = {
        ".buildpacks": "https://github.com/heroku/heroku-buildpack-nodejs.git\n"
        "https://github.com/heroku/heroku-buildpack-python.git\n",
        "package.json": json.dumps({"scripts": {"build": "node build.js"}}),
        "build.js": (
            "require('fs').mkdirSync('public', {recursive: true});\n"
            "require('fs').writeFileSync('public/index.html', 'assets by node, served by python')\n"
        ),
        "requirements.txt": "",
        "server.py": PY_SERVER,
        "Procfile": "web: python3 server.py public\n",
    }
    output = deploy(srv, tmp_path, "multiapp", files)
    assert "detected node+python app" in output
    wait_for_body(srv, "multiapp", "assets by node, served by python", timeout=30)


# --- app.json: formation, cron, run -----------------------------------------------------------


def test_app_json_formation_cron_and_procfile_commands(srv: DockyardServer, tmp_path: Path) -> None:
    app = "workerapp"
    files = {
        "requirements.txt": "",
        "Procfile": (
            "worker: sh -c 'while true; do sleep 1; done'\n"
            "console: python3 -c 'import sys; print(\"console\", *sys.argv[1:])'\n"
        ),
        "app.json": (
            "{\n  // Dokku's own sample apps carry comments\n"
            '  "formation": {"worker": {"quantity": 2}},\n'
            "  /* every minute */\n"
            '  "cron": [{"command": "echo cron-ran", "schedule": "* * * * *"}]\n}\n'
        ),
    }
    pushed = time.time()
    deploy(srv, tmp_path, app, files)
    workers = [c for c in containers(None, app, srv=srv) if ".worker." in c.name]
    assert sorted(c.name for c in workers) == [f"{app}.worker.1", f"{app}.worker.2"]
    scale = json.loads(srv.ssh("ps:scale", app, "--format", "json").stdout)
    assert {"process_type": "worker", "quantity": 2} in scale
    # `run APP console ARGS` runs the Procfile entry, with the arguments after it.
    ran = srv.ssh("run", app, "console", "one", "two words")
    assert ran.returncode == 0 and ran.stdout == "console one two words\n", ran
    listed = json.loads(srv.ssh("cron:list", app, "--format", "json").stdout)
    assert [(e["schedule"], e["command"]) for e in listed] == [("* * * * *", "echo cron-ran")]
    cron_id = listed[0]["id"]
    manual = srv.ssh("cron:run", app, cron_id)
    assert manual.returncode == 0 and manual.stdout == "cron-ran\n"
    # The scheduler starts it by itself within the next minute boundary.
    deadline = pushed + 75
    while time.time() < deadline:
        entry = json.loads(srv.ssh("cron:list", app, "--format", "json").stdout)[0]
        if entry["last-status"] == "succeeded":
            break
        time.sleep(1)
    else:
        raise AssertionError(f"the cron entry never ran by itself: {entry}")
    ok(srv.ssh("cron:suspend", app, cron_id))
    assert json.loads(srv.ssh("cron:list", app, "--format", "json").stdout)[0]["suspended"]


# --- Ruby, PHP, Java: runtimes from Debian, no dependencies to fetch ---------------------------


def test_ruby_php_and_java_apps(srv: DockyardServer, tmp_path: Path) -> None:
    ruby = {
        "Gemfile": 'source "https://rubygems.org"\n',
        "Procfile": "web: ruby server.rb\n",
        "server.rb": (
            "require 'socket'\nserver = TCPServer.new('0.0.0.0', ENV.fetch('PORT').to_i)\n"
            'loop do\n  c = server.accept\n  while (l = c.gets) && l != "\\r\\n"; end\n'
            '  body = "ruby #{RUBY_VERSION}"\n'
            '  c.print "HTTP/1.1 200 OK\\r\\nContent-Length: #{body.bytesize}\\r\\n'
            'Connection: close\\r\\n\\r\\n#{body}"\n  c.close\nend\n'
        ),
    }
    php = {
        "composer.json": '{"require": {"php": ">=8.1"}}',
        "index.php": "<?php echo 'php ', PHP_VERSION;\n",
    }
    java = {
        "pom.xml": (
            '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
            "  <modelVersion>4.0.0</modelVersion>\n  <groupId>example</groupId>\n"
            "  <artifactId>hello</artifactId>\n  <version>1</version>\n"
            "  <properties><maven.compiler.source>17</maven.compiler.source>"
            "<maven.compiler.target>17</maven.compiler.target></properties>\n</project>\n"
        ),
        "system.properties": "java.runtime.version=17\n",
        "Procfile": "web: java -cp target/hello-1.jar Main\n",
        "src/main/java/Main.java": (
            "import com.sun.net.httpserver.HttpServer;\nimport java.net.InetSocketAddress;\n"
            "public class Main { public static void main(String[] a) throws Exception {\n"
            "  HttpServer s = HttpServer.create(new InetSocketAddress("
            'Integer.parseInt(System.getenv("PORT"))), 0);\n'
            '  s.createContext("/", x -> { byte[] b = ("java " + Runtime.version()).getBytes();\n'
            "    x.sendResponseHeaders(200, b.length); x.getResponseBody().write(b);\n"
            "    x.close(); });\n"
            "  s.start(); } }\n"
        ),
    }
    for app, files, marker in (
        ("rubyapp", ruby, "ruby 3.1"),
        ("phpapp", php, "php 8.2"),
        ("javaapp", java, "java 17"),
    ):
        output = deploy(srv, tmp_path, app, files)
        assert f"detected {app[:-3]} app" in output
        wait_for_body(srv, app, marker, timeout=60)


# --- git submodules ---------------------------------------------------------------------------


@pytest.fixture
def git_http(tmp_path: Path):  # noqa: ANN201
    """A smart-HTTP git server (dulwich's) on 127.0.0.1 serving `lib.git`."""
    import threading

    from dulwich.repo import Repo
    from dulwich.server import DictBackend
    from dulwich.web import WSGIRequestHandlerLogger, WSGIServerLogger, make_server, make_wsgi_chain

    lib = make_repo(tmp_path / "lib", {"greeting.txt": "hello from a submodule\n"})
    bare = tmp_path / "lib.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(lib), str(bare)], check=True)
    app = make_wsgi_chain(DictBackend({"/lib.git": Repo(str(bare))}))
    server = make_server("127.0.0.1", 0, app, WSGIServerLogger, WSGIRequestHandlerLogger)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/lib.git"
    finally:
        server.shutdown()
        server.server_close()


def test_submodules_are_fetched_for_the_build(
    srv: DockyardServer, tmp_path: Path, git_http: str
) -> None:
    repo = make_repo(tmp_path / "subapp", {
        "requirements.txt": "", "server.py": PY_SERVER, "Procfile": "web: python3 server.py lib\n",
    })  # fmt: skip
    git(repo, "-c", "protocol.allow=always", "submodule", "add", "-q", git_http, "lib")
    git(repo, "commit", "-q", "-m", "with a submodule")
    # 127.0.0.1 is private: a push may not make the server fetch from there…
    refused = push(srv, repo, "subapp")
    assert refused.returncode != 0 and "is a private address" in refused.stderr, refused.stderr
    # …unless an admin says that host is an internal git server.
    ok(srv.ssh("git:set", "--global", "submodule-private-hosts", "127.0.0.1"))
    try:
        ok(push(srv, repo, "subapp"))
        wait_for_body(srv, "subapp", "greeting.txt", timeout=30)
        assert get(srv, "subapp", "/greeting.txt") == (200, "hello from a submodule\n")
        # A submodule whose server is gone: the push says which one could not be fetched.
        git(repo, "-c", "protocol.allow=always", "submodule", "add", "-q", git_http, "lib2")
        git(repo, "config", "-f", ".gitmodules", "submodule.lib2.url",
            "http://127.0.0.1:9/gone.git")  # fmt: skip
        git(repo, "commit", "-q", "-am", "a second submodule, unreachable")
        gone = push(srv, repo, "subapp")
        assert gone.returncode != 0, gone.stderr
        assert "Submodule lib2 (http://127.0.0.1:9/gone.git) could not be fetched" in gone.stderr
        assert get(srv, "subapp", "/greeting.txt") == (200, "hello from a submodule\n")
    finally:
        ok(srv.ssh("git:set", "--global", "submodule-private-hosts"))


# --- app.json: checks, predeploy, postdeploy; rollback keeps the scale ------------------------


def test_app_json_checks_and_deploy_scripts(srv: DockyardServer, tmp_path: Path) -> None:
    app = "scripted"
    base = {
        "requirements.txt": "", "server.py": PY_SERVER,
        "Procfile": "web: python3 server.py\nworker: sleep 3600\n",
    }  # fmt: skip
    # A declared check passes only on 2xx/3xx: a 404 is a failure that says so.
    checked = {**base, "app.json": json.dumps(
        {"healthchecks": {"web": [{"path": "/missing", "attempts": 20, "wait": 0.2}]}}
    )}  # fmt: skip
    repo = make_repo(tmp_path / app, checked)
    refused = push(srv, repo, app)
    assert refused.returncode != 0, refused.stderr
    assert "answered HTTP 404 (expected 2xx or 3xx)" in refused.stderr, refused.stderr
    assert "on port 5000" in refused.stderr
    # predeploy's files stay in the image; a failing postdeploy does not undo the switch.
    scripts = {"scripts": {"dokku": {
        "predeploy": "echo made-by-predeploy > predeployed.txt",
        "postdeploy": "echo postdeploy-ran; exit 3",
    }}}  # fmt: skip
    files = {**base, "app.json": json.dumps(scripts)}
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "scripts")
    result = push(srv, repo, app)
    ok(result)
    assert "postdeploy-ran" in result.stderr
    assert "v2 is deployed and serving" in result.stderr, result.stderr
    assert get(srv, app, "/predeployed.txt") == (200, "made-by-predeploy\n")
    # Scale the worker, roll back: the release goes back, the scale stays.
    ok(srv.ssh("ps:scale", app, "worker=2"))
    (repo / "server.py").write_text(PY_SERVER + "\n# v3\n")
    git(repo, "commit", "-q", "-am", "v3")
    ok(push(srv, repo, app))
    ok(srv.ssh("releases:rollback", app))
    scale = json.loads(srv.ssh("ps:scale", app, "--format", "json").stdout)
    assert {"process_type": "worker", "quantity": 2} in scale
    workers = [c for c in containers(None, app, srv=srv) if ".worker." in c.name]
    assert len(workers) == 2
