"""builder/languages and builder/runtimes: detection, version files, and the Dockerfile each
language and lockfile generates. Pure: the runtime images come from a fake list of local
images, nothing is built here (tests/test_real_apps.py builds and deploys for real)."""

from __future__ import annotations

import json

import pytest

from builder import BuildFailed, runtimes
from builder.detect import make_tree, plan_build
from builder.languages.base import VersionRequest
from builder.runtimes import LocalImage

LOCAL = {
    "python": [LocalImage("py:3.11", "3.11.2"), LocalImage("py:3.13", "3.13.5")],
    "node": [LocalImage("node:18", "18.20.4"), LocalImage("node:20", "20.19.2")],
    "go": [LocalImage("go:1.19", "1.19.8"), LocalImage("go:1.24", "1.24.4")],
    "ruby": [LocalImage("ruby:3.1", "3.1.2")],
    "php": [LocalImage("php:8.2", "8.2.36")],
    "java": [LocalImage("java:17", "17.0.21.1")],
    "static": [LocalImage("busybox:1", "1.35.0")],
    "procfile": [LocalImage("debian:12", "12.15")],
}
CA = ".dockyard/ca.crt"


def plan(files: dict[str, str], procfile: dict[str, str] | None = None, **options):  # noqa: ANN003, ANN201
    tree = make_tree(lambda p: files[p].encode() if p in files else None, list(files))

    def find(lang, tree):  # noqa: ANN001, ANN202
        return runtimes.resolve(lang.name, lang.version_request(tree), None, LOCAL[lang.name])

    return plan_build(tree, procfile or {}, find, options.get("ca", CA), options.get("config"))


def lines_of(files: dict[str, str], procfile: dict[str, str] | None = None) -> list[str]:
    return plan(files, procfile).dockerfile.splitlines()


def runs(lines: list[str]) -> list[list[str]]:
    return [json.loads(line[4:]) for line in lines if line.startswith("RUN ")]


# --- detection order and .buildpacks ------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "kind"),
    [
        ({"Gemfile": "", "config.ru": "", "package.json": "{}"}, "ruby"),
        ({"package.json": "{}", "requirements.txt": ""}, "node"),
        ({"requirements.txt": "", "app.py": ""}, "python"),
        ({"pom.xml": "<project/>", "Procfile": "web: x"}, "java"),
        ({"composer.json": "{}"}, "php"),
        ({"index.php": "<?php"}, "php"),
        ({"go.mod": "module example.com/hello\n\ngo 1.19\n", "main.go": "package main\n"}, "go"),
        ({"main.go": "package main\n"}, "go"),
        ({".static": "", "index.html": ""}, "static"),
        ({"index.html": ""}, "static"),
        ({"index.html": "", "Procfile": "web: ./serve"}, "procfile"),
    ],
)
def test_detection_follows_heroku_order(files: dict[str, str], kind: str) -> None:
    procfile = {"web": "x"} if "Procfile" in files else None
    assert plan(files, procfile).kind == kind


def test_buildpacks_file_builds_languages_in_order_into_one_image() -> None:
    files = {
        ".buildpacks": "# frontend, then the app\nhttps://github.com/heroku/heroku-buildpack-nodejs.git\n"
        "heroku/python#v250\n",
        "package.json": '{"scripts": {"build": "node build.js"}}',
        "requirements.txt": "flask\n",
    }
    result = plan(files, {"web": "gunicorn app:app"})
    assert result.kind == "node+python"
    lines = result.dockerfile.splitlines()
    froms = [line for line in lines if line.startswith("FROM ")]
    assert froms == ["FROM node:20 AS build0", "FROM py:3.13"]
    assert "COPY --from=build0 /app /app" in lines
    assert lines.index("COPY --from=build0 /app /app") > lines.index("FROM py:3.13")
    assert ["npm", "run", "build"] in [r[-3:] for r in runs(lines)]
    assert lines[-1] == 'CMD ["/bin/sh", "-c", "gunicorn app:app"]'


@pytest.mark.parametrize("line", ["https://example.com/buildpack-elixir.git", "heroku/clojure"])
def test_unknown_buildpack_is_refused_by_name(line: str) -> None:
    with pytest.raises(BuildFailed, match="unknown buildpack"):
        plan({".buildpacks": line + "\n", "Procfile": "web: x"}, {"web": "x"})


def test_buildpacks_line_cannot_smuggle_anything() -> None:
    with pytest.raises(BuildFailed, match="is not a buildpack"):
        plan({".buildpacks": "heroku/python; rm -rf /\n"})


# --- runtime versions ---------------------------------------------------------------------


def test_python_version_files_pick_the_image() -> None:
    assert lines_of({".python-version": "3.11\n", "app.py": ""})[0] == "FROM py:3.11"
    assert (
        lines_of({"runtime.txt": "python-3.11.2\n", "requirements.txt": "", "app.py": ""})[0]
        == "FROM py:3.11"
    )
    assert lines_of({"requirements.txt": "", "app.py": ""})[0] == "FROM py:3.13"  # newest


def test_node_engines_range_picks_the_newest_matching_image() -> None:
    files = {"package.json": '{"engines": {"node": ">=18 <20"}}'}
    assert lines_of(files)[0] == "FROM node:18"
    files = {"package.json": '{"engines": {"node": "20.x"}}'}
    assert lines_of(files)[0] == "FROM node:20"


def test_go_version_is_a_minimum_and_the_binary_is_named_as_go_install_names_it() -> None:
    files = {
        "go.mod": "module example.com/tools/hello/v2\n\ngo 1.21\n",
        "main.go": "package main\n",
    }
    result = plan(files)
    lines = result.dockerfile.splitlines()
    assert lines[0] == "FROM go:1.24 AS gobuild"  # 1.19 is older than go.mod asks
    assert "FROM debian:12" in lines and "COPY --from=gobuild /app /app" in lines
    assert ["env", "GOBIN=/app/bin", "go", "install", "./..."] in [r[-5:] for r in runs(lines)]
    assert lines[-1] == 'CMD ["/bin/sh", "-c", "bin/hello"]'


def test_unavailable_version_names_what_was_asked_and_what_there_is() -> None:
    with pytest.raises(BuildFailed) as exc:
        runtimes.resolve("python", VersionRequest("3.2", "runtime.txt"), None, LOCAL["python"])
    assert "python 3.2 (asked for in runtime.txt)" in exc.value.message
    assert "3.11.2, 3.13.5" in exc.value.message or "3.13.5, 3.11.2" in exc.value.message
    assert "builder:set APP base-python" in exc.value.message


def test_official_image_when_nothing_local_satisfies() -> None:
    runtime = runtimes.resolve("python", VersionRequest("3.12", ".python-version"), None, [])
    assert runtime.image == "python:3.12-slim" and runtime.official
    runtime = runtimes.resolve("node", VersionRequest("^22.1", "package.json"), None, [])
    assert runtime.image == "node:22-slim"
    assert runtimes.resolve("go", None, "my/go:1", LOCAL["go"]).image == "my/go:1"


def test_version_strings_are_checked_before_use() -> None:
    with pytest.raises(BuildFailed, match="is not a version"):
        plan({".python-version": "3.12; rm -rf /\nFROM evil\n", "app.py": ""})


# --- dependency tools, one per lockfile ---------------------------------------------------


@pytest.mark.parametrize(
    ("files", "manifest_copy", "tool_step"),
    [
        ({"requirements.txt": "flask\n"}, "COPY requirements.txt /app/",
         ["-r", "requirements.txt"]),
        ({"pyproject.toml": "[project]\nname='x'\n", "uv.lock": ""},
         "COPY pyproject.toml uv.lock /app/",
         ["uv", "sync", "--locked", "--no-dev", "--no-install-project"]),
        ({"pyproject.toml": "[project]\nname='x'\n", "poetry.lock": ""},
         "COPY pyproject.toml poetry.lock /app/",
         ["--only", "main", "--no-interaction", "--no-root"]),
        ({"Pipfile": "[packages]\n", "Pipfile.lock": "{}"},
         "COPY Pipfile Pipfile.lock /app/", ["pipenv", "install", "--system", "--deploy"]),
    ],
)  # fmt: skip
def test_python_dependency_tools(
    files: dict[str, str], manifest_copy: str, tool_step: list[str]
) -> None:
    lines = lines_of({**files, "app.py": ""})
    steps = runs(lines)
    install = next(i for i, s in enumerate(steps) if s[-len(tool_step) :] == tool_step)
    assert lines.index(manifest_copy) < lines.index("COPY . /app")
    assert lines.index("COPY .dockyard/ca.crt /etc/dockyard/ca.crt") < lines.index(manifest_copy)
    install_line = next(
        line for line in lines if line.startswith("RUN ") and json.loads(line[4:]) == steps[install]
    )
    assert lines.index(install_line) < lines.index("COPY . /app")
    assert ["python3", "-m", "venv", "/opt/venv"] == steps[0]


@pytest.mark.parametrize(
    ("lockfile", "install"),
    [
        ("package-lock.json", ["npm", "ci", "--no-fund", "--no-audit"]),
        ("yarn.lock", ["yarn", "install", "--frozen-lockfile", "--non-interactive"]),
        ("pnpm-lock.yaml", ["pnpm", "install", "--frozen-lockfile"]),
        (None, ["npm", "install", "--no-fund", "--no-audit"]),
    ],
)
def test_node_package_managers_build_then_prune(lockfile: str | None, install: list[str]) -> None:
    manifest = {"dependencies": {"left-pad": "1"}, "scripts": {"build": "x", "start": "y"}}
    files = {"package.json": json.dumps(manifest), **({lockfile: ""} if lockfile else {})}
    lines = lines_of(files)
    steps = runs(lines)
    assert any(s[-len(install) :] == install and "NODE_ENV=development" in s for s in steps)
    build = next(i for i, s in enumerate(steps) if s[-2:] == ["run", "build"])
    prune = next(i for i, s in enumerate(steps) if "prune" in s or "--production" in s)
    assert build < prune
    assert lines[-1] == 'CMD ["/bin/sh", "-c", "npm start"]'


def test_ruby_php_java_steps_and_defaults() -> None:
    ruby = lines_of({"Gemfile": 'source "https://rubygems.org"\nruby "3.1.2"\n', "config.ru": ""})
    assert ruby[0] == "FROM ruby:3.1" and [
        "env",
        "SSL_CERT_FILE=/etc/dockyard/ca.crt",
        "bundle",
        "install",
        "--jobs",
        "4",
    ] in runs(ruby)
    assert "rackup" in ruby[-1]
    php = lines_of({"composer.json": '{"require": {"php": "^8.1"}}', "public": ""})
    assert php[0] == "FROM php:8.2" and any("composer" in s for s in sum(runs(php), []))
    assert php[-1] == 'CMD ["/bin/sh", "-c", "php -S 0.0.0.0:${PORT:-5000} -t public"]'
    java = lines_of({"pom.xml": "<project/>", "system.properties": "java.runtime.version=17\n"},
                    {"web": "java -jar target/app.jar"})  # fmt: skip
    assert java[0] == "FROM java:17" and [
        "env",
        "SSL_CERT_FILE=/etc/dockyard/ca.crt",
        "mvn",
        "-B",
        "-DskipTests",
        "package",
    ] in runs(java)


def test_java_without_a_procfile_web_process_is_refused_before_building() -> None:
    with pytest.raises(BuildFailed, match="Java app without a web process"):
        plan({"pom.xml": "<project/>"})


def test_django_gets_collectstatic_unless_disabled() -> None:
    files = {"requirements.txt": "Django==5.0\ngunicorn\n", "manage.py": ""}
    assert plan(files, {"web": "gunicorn x"}).after_build == [
        "python3", "manage.py", "collectstatic", "--noinput",
    ]  # fmt: skip
    no = plan(files, {"web": "gunicorn x"}, config={"DISABLE_COLLECTSTATIC": "1"})
    assert no.after_build is None
    assert plan({"requirements.txt": "flask\n", "manage.py": ""}, {"web": "x"}).after_build is None
