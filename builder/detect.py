"""Which Dockerfile builds an app: its own, or one generated from what its root contains.

`detect` is a pure function of the files at the revision and the configured base images.
Generated Dockerfiles copy the dependency manifest first and install from it before the
rest of the code arrives, so a push that leaves the manifest alone reuses the install
layer from the cache. Process commands come from the Procfile `web` entry, run with
`/bin/sh -c` as Heroku does; the language default applies only without one.

Python apps: `requirements.txt` wins over `pyproject.toml`. Without a Procfile `web`, an
`app.py` at the root is run with `python3 app.py`; with neither (and no other process
type), the build fails and says so, rather than produce an image that serves nothing.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass

from builder.errors import BuildFailed

DOCKERFILE = "Dockerfile"
REQUIREMENTS = "requirements.txt"
PYPROJECT = "pyproject.toml"
PACKAGE_JSON = "package.json"
NODE_LOCKFILES = ("package-lock.json", "npm-shrinkwrap.json")
INDEX_HTML = "index.html"
PROCFILE = "Procfile"
PYTHON_DEFAULT_SCRIPT = "app.py"
LOOKED_FOR = (DOCKERFILE, REQUIREMENTS, PYPROJECT, PACKAGE_JSON, INDEX_HTML, PROCFILE)

APP_DIR = "/app"
DEFAULT_PORT = 5000
# Where the host's CA bundle lands in the image, for the dependency install step only.
IMAGE_CA_PATH = "/etc/dockyard/ca.crt"

# A Docker image reference; anything else could smuggle lines into a generated FROM.
IMAGE_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")

ReadFile = Callable[[str], "bytes | None"]


class Kind:
    DOCKERFILE = "dockerfile"
    PYTHON = "python"
    NODE = "node"
    STATIC = "static"
    PROCFILE = "procfile"


@dataclass(frozen=True)
class BaseImages:
    python: str = "python:3.12-slim"
    node: str = "node:20-slim"
    # busybox's httpd applet serves a static site with the same CMD as the local busybox.
    static: str = "busybox:stable"
    procfile: str = "debian:bookworm-slim"


@dataclass(frozen=True)
class BuildPlan:
    kind: str
    dockerfile: str | None  # None: the app's own Dockerfile builds it
    base_image: str | None = None
    needs_ca: bool = False  # the context must carry the host CA bundle at `ca_path`


def check_image_ref(ref: str) -> str:
    if not IMAGE_REF_RE.fullmatch(ref):
        raise BuildFailed(f"Invalid image reference {ref!r}")
    return ref


def detect(
    read_file: ReadFile, bases: BaseImages, procfile: dict[str, str], ca_path: str | None
) -> BuildPlan:
    """The build plan for a tree; `ca_path` is where the context would hold the host CA
    bundle (None when the host has none: installs then use the image's own trust store)."""
    if read_file(DOCKERFILE) is not None:
        return BuildPlan(Kind.DOCKERFILE, None)
    requirements = read_file(REQUIREMENTS)
    pyproject = read_file(PYPROJECT)
    if requirements is not None or pyproject is not None:
        return _python(read_file, bases.python, requirements, pyproject, procfile, ca_path)
    package_json = read_file(PACKAGE_JSON)
    if package_json is not None:
        return _node(read_file, bases.node, package_json, procfile, ca_path)
    if read_file(INDEX_HTML) is not None and read_file(PROCFILE) is None:
        return _static(bases.static, procfile)
    if read_file(PROCFILE) is not None:
        return _procfile_only(bases.procfile, procfile)
    raise BuildFailed(
        "Unable to detect how to build this app: none of "
        + ", ".join(LOOKED_FOR)
        + " was found at the root of the repository"
    )


class _Dockerfile:
    """Accumulates generated Dockerfile lines; exec-form arrays are JSON, never a shell."""

    def __init__(self, base: str, env: dict[str, str] | None = None) -> None:
        self.lines = [f"FROM {check_image_ref(base)}", f"WORKDIR {APP_DIR}"]
        env = {"PORT": str(DEFAULT_PORT), **(env or {})}
        self.lines.append("ENV " + " ".join(f"{k}={v}" for k, v in env.items()))
        self.app_copied = False

    def add(self, line: str) -> None:
        self.lines.append(line)

    def run_exec(self, argv: list[str]) -> None:
        self.add("RUN " + json.dumps(argv))

    def copy_app(self) -> None:
        self.add(f"COPY . {APP_DIR}")
        self.app_copied = True

    def finish(self, cmd: list[str] | None) -> str:
        if not self.app_copied:
            self.copy_app()
        self.add(f"EXPOSE {DEFAULT_PORT}")
        if cmd:
            self.add("CMD " + json.dumps(cmd))
        return "\n".join(self.lines) + "\n"


def _web_cmd(procfile: dict[str, str]) -> list[str] | None:
    web = procfile.get("web")
    return ["/bin/sh", "-c", web] if web else None


def _with_ca(env: dict[str, str], ca_path: str | None) -> list[str]:
    """`env K=V … ` prefix that trusts the host CA bundle for one RUN step only."""
    if ca_path is None:
        return []
    return ["env", *(f"{k}={IMAGE_CA_PATH}" for k in env)]


def _has_requirements(data: bytes) -> bool:
    for line in data.decode("utf-8", "replace").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return True
    return False


def _pyproject_dependencies(data: bytes) -> list[str] | None:
    """`[project] dependencies`, or None when the file does not declare them statically."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BuildFailed(f"pyproject.toml is not valid TOML: {exc}") from None
    project = doc.get("project")
    if not isinstance(project, dict) or "dependencies" in project.get("dynamic", []):
        return None
    deps = project.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise BuildFailed("pyproject.toml: [project] dependencies must be a list of strings")
    return deps


PIP_CA_ENV = {"PIP_CERT": IMAGE_CA_PATH, "SSL_CERT_FILE": IMAGE_CA_PATH}
PIP_INSTALL = [
    "python3", "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
    "--root-user-action=ignore",
]  # fmt: skip


def _python(
    read_file: ReadFile,
    base: str,
    requirements: bytes | None,
    pyproject: bytes | None,
    procfile: dict[str, str],
    ca_path: str | None,
) -> BuildPlan:
    cmd = _web_cmd(procfile)
    if cmd is None and read_file(PYTHON_DEFAULT_SCRIPT) is not None:
        cmd = ["python3", PYTHON_DEFAULT_SCRIPT]
    if cmd is None and not procfile:
        raise BuildFailed(
            "Python app without a Procfile `web` process or an app.py: add a Procfile "
            "with a line such as `web: python3 server.py`"
        )
    df = _Dockerfile(base, {"PYTHONUNBUFFERED": "1"})
    ca = _with_ca(PIP_CA_ENV, ca_path)
    needs_ca = False
    install_project = False
    if requirements is not None:
        df.add(f"COPY {REQUIREMENTS} {APP_DIR}/")
        if _has_requirements(requirements):
            needs_ca = True
            install = [*ca, *PIP_INSTALL, "-r", REQUIREMENTS]
        else:
            install = []
    else:
        assert pyproject is not None
        df.add(f"COPY {PYPROJECT} {APP_DIR}/")
        deps = _pyproject_dependencies(pyproject)
        install = [*ca, *PIP_INSTALL, *deps] if deps else []
        needs_ca = True
        install_project = True
    if needs_ca and ca_path is not None:
        df.add(f"COPY {ca_path} {IMAGE_CA_PATH}")
    if install:
        df.run_exec(install)
    if install_project:
        # Dependencies are already in a cached layer; this step installs only the project.
        df.copy_app()
        df.run_exec([*ca, *PIP_INSTALL, "--no-deps", "."])
    return BuildPlan(Kind.PYTHON, df.finish(cmd), base, needs_ca and ca_path is not None)


def _node(
    read_file: ReadFile,
    base: str,
    package_json: bytes,
    procfile: dict[str, str],
    ca_path: str | None,
) -> BuildPlan:
    try:
        manifest = json.loads(package_json.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BuildFailed(f"package.json is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise BuildFailed("package.json must contain a JSON object")
    df = _Dockerfile(base, {"NODE_ENV": "production"})
    lockfile = next((f for f in NODE_LOCKFILES if read_file(f) is not None), None)
    df.add(f"COPY {PACKAGE_JSON} {lockfile + ' ' if lockfile else ''}{APP_DIR}/")
    needs_ca = bool(manifest.get("dependencies"))
    if needs_ca:
        ca_env = {"NODE_EXTRA_CA_CERTS": IMAGE_CA_PATH, "npm_config_cafile": IMAGE_CA_PATH}
        if ca_path is not None:
            df.add(f"COPY {ca_path} {IMAGE_CA_PATH}")
        npm = ["npm", "ci"] if lockfile else ["npm", "install"]
        df.run_exec([*_with_ca(ca_env, ca_path), *npm])
    cmd = _web_cmd(procfile) or ["npm", "start"]
    return BuildPlan(Kind.NODE, df.finish(cmd), base, needs_ca and ca_path is not None)


STATIC_CMD = ["/bin/sh", "-c", f'exec httpd -f -p "${{PORT:-{DEFAULT_PORT}}}" -h {APP_DIR}']


def _static(base: str, procfile: dict[str, str]) -> BuildPlan:
    cmd = _web_cmd(procfile) or STATIC_CMD
    return BuildPlan(Kind.STATIC, _Dockerfile(base).finish(cmd), base)


def _procfile_only(base: str, procfile: dict[str, str]) -> BuildPlan:
    return BuildPlan(Kind.PROCFILE, _Dockerfile(base).finish(_web_cmd(procfile)), base)
