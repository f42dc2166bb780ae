"""Python, after heroku-buildpack-python.

Detected by `requirements.txt`, `pyproject.toml`, `Pipfile`, `setup.py`, `uv.lock`,
`poetry.lock` or `.python-version`. The version comes from `.python-version`, else
`runtime.txt` (`python-3.12.4`), else `Pipfile.lock`'s `python_version`. Dependencies go
into a virtualenv at /opt/venv (Debian's and the official images' system Python stay
untouched), installed by the tool the lockfile names: uv (`uv.lock`), Poetry
(`poetry.lock`), Pipenv (`Pipfile`), else pip. The dependency files are copied and
installed before the code, so a push that leaves them alone reuses the install layer.
Django apps (manage.py and Django among the dependencies) get `collectstatic` with the
app's config, unless `DISABLE_COLLECTSTATIC` is set.
"""

from __future__ import annotations

import re
import tomllib

from builder.errors import BuildFailed
from builder.languages.base import (
    APP_DIR,
    BuildContext,
    Dockerfile,
    Language,
    Tree,
    VersionRequest,
)

VENV = "/opt/venv"
PIP_CA = ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
PIP = ["python3", "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check"]
DETECT_FILES = (
    "requirements.txt", "pyproject.toml", "Pipfile", "setup.py", "uv.lock", "poetry.lock",
    ".python-version",
)  # fmt: skip
RUNTIME_TXT_RE = re.compile(r"^python-([0-9]+\.[0-9]+(?:\.[0-9]+)?)$")
DEFAULT_SCRIPT = "app.py"


class Python(Language):
    name = "python"
    title = "Python"
    buildpack_names = ("python", "heroku-buildpack-python")
    env = {"PYTHONUNBUFFERED": "1", "VIRTUAL_ENV": VENV, "PATH": f"{VENV}/bin:$PATH"}

    def detect(self, tree: Tree) -> bool:
        return any(tree.has(n) for n in DETECT_FILES)

    def version_request(self, tree: Tree) -> VersionRequest | None:
        pinned = tree.text(".python-version")
        if pinned is not None:
            for line in pinned.splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    return VersionRequest(line.removeprefix("python-"), ".python-version")
        runtime = tree.text("runtime.txt")
        if runtime is not None:
            match = RUNTIME_TXT_RE.fullmatch(runtime.strip())
            if not match:
                raise BuildFailed(f"runtime.txt: expected python-X.Y.Z, got {runtime.strip()!r}")
            return VersionRequest(match.group(1), "runtime.txt")
        lock = tree.json("Pipfile.lock") if tree.has("Pipfile.lock") else None
        requires = ((lock or {}).get("_meta") or {}).get("requires") or {}
        if isinstance(requires.get("python_version"), str):
            return VersionRequest(requires["python_version"], "Pipfile.lock")
        return None

    def build(self, df: Dockerfile, tree: Tree, ctx: BuildContext) -> None:
        df.run("python3", "-m", "venv", VENV)
        ca = ctx.with_ca(*PIP_CA)
        installer = _installer(tree)
        before = installer.dependency_steps(tree) if installer else []
        after = installer.project_steps(tree) if installer else []
        if before or after:
            ctx.copy_ca(df)
        if installer:
            df.copy(*installer.manifests(tree))
        for step in before:
            df.run(*ca, *step)
        df.add(f"COPY . {APP_DIR}")
        for step in after:
            df.run(*ca, *step)

    def processes(self, tree: Tree) -> dict[str, str]:
        if tree.has(DEFAULT_SCRIPT):
            return {"web": f"python3 {DEFAULT_SCRIPT}"}
        return {}

    def after_build(self, tree: Tree, ctx: BuildContext) -> list[str] | None:
        if not tree.has("manage.py") or ctx.config.get("DISABLE_COLLECTSTATIC"):
            return None
        if not _mentions_django(tree):
            return None
        return ["python3", "manage.py", "collectstatic", "--noinput"]


class _Installer:
    """One dependency tool: which files it reads, and its steps before and after the
    app's code arrives."""

    def manifests(self, tree: Tree) -> list[str]:
        raise NotImplementedError

    def dependency_steps(self, tree: Tree) -> list[list[str]]:
        return []

    def project_steps(self, tree: Tree) -> list[list[str]]:
        return []


class _Pip(_Installer):
    def manifests(self, tree: Tree) -> list[str]:
        return ["requirements.txt"]

    def dependency_steps(self, tree: Tree) -> list[list[str]]:
        if not _has_requirements(tree.text("requirements.txt") or ""):
            return []
        return [[*PIP, "-r", "requirements.txt"]]


class _PyProject(_Installer):
    """A pyproject.toml (or setup.py) without a lockfile: its declared dependencies first,
    then the project itself without them."""

    def manifests(self, tree: Tree) -> list[str]:
        return [n for n in ("pyproject.toml", "setup.py") if tree.has(n)][:1]

    def dependency_steps(self, tree: Tree) -> list[list[str]]:
        deps = _pyproject_dependencies(tree.text("pyproject.toml"))
        return [[*PIP, *deps]] if deps else []

    def project_steps(self, tree: Tree) -> list[list[str]]:
        return [[*PIP, "--no-deps", "."]]


class _Uv(_Installer):
    def manifests(self, tree: Tree) -> list[str]:
        return ["pyproject.toml", "uv.lock"]

    def dependency_steps(self, tree: Tree) -> list[list[str]]:
        sync = ["env", f"UV_PROJECT_ENVIRONMENT={VENV}", "uv", "sync", "--locked", "--no-dev"]
        return [[*PIP, "uv"], [*sync, "--no-install-project"]]

    def project_steps(self, tree: Tree) -> list[list[str]]:
        return [["env", f"UV_PROJECT_ENVIRONMENT={VENV}", "uv", "sync", "--locked", "--no-dev"]]


class _Poetry(_Installer):
    def manifests(self, tree: Tree) -> list[str]:
        return ["pyproject.toml", "poetry.lock"]

    def dependency_steps(self, tree: Tree) -> list[list[str]]:
        install = ["env", "POETRY_VIRTUALENVS_CREATE=false", "poetry", "install", "--only",
                   "main", "--no-interaction", "--no-root"]  # fmt: skip
        return [[*PIP, "poetry"], install]


class _Pipenv(_Installer):
    def manifests(self, tree: Tree) -> list[str]:
        return [n for n in ("Pipfile", "Pipfile.lock") if tree.has(n)]

    def dependency_steps(self, tree: Tree) -> list[list[str]]:
        locked = ["--deploy"] if tree.has("Pipfile.lock") else ["--skip-lock"]
        return [[*PIP, "pipenv"], ["pipenv", "install", "--system", *locked]]


def _installer(tree: Tree) -> _Installer | None:
    if tree.has("uv.lock"):
        return _Uv()
    if tree.has("poetry.lock"):
        return _Poetry()
    if tree.has("Pipfile"):
        return _Pipenv()
    if tree.has("requirements.txt"):
        return _Pip()
    if tree.has("pyproject.toml") or tree.has("setup.py"):
        return _PyProject()
    return None


def _has_requirements(text: str) -> bool:
    return any(line.strip() and not line.strip().startswith("#") for line in text.splitlines())


def _pyproject_dependencies(text: str | None) -> list[str]:
    """`[project] dependencies`; none when the file has none or declares them dynamic."""
    if text is None:
        return []
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BuildFailed(f"pyproject.toml is not valid TOML: {exc}") from None
    project = doc.get("project")
    if not isinstance(project, dict) or "dependencies" in project.get("dynamic", []):
        return []
    deps = project.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise BuildFailed("pyproject.toml: [project] dependencies must be a list of strings")
    return deps


DJANGO_RE = re.compile(r"(?im)(^\s*|[\"'])django\b")


def _mentions_django(tree: Tree) -> bool:
    for name in ("requirements.txt", "Pipfile", "pyproject.toml", "uv.lock", "poetry.lock"):
        text = tree.text(name) if tree.has(name) else None
        if text and DJANGO_RE.search(text):
            return True
    return False
