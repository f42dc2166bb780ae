"""Go, after heroku-buildpack-go.

Detected by `go.mod`, or by `.go` files at the root (the legacy GOPATH layout, with its
import path from `Godeps/Godeps.json`, `vendor/vendor.json` or `glide.yaml`). The version is
go.mod's `// +heroku goVersion goX.Y` comment, else its `go X.Y` line — a minimum: a newer
toolchain builds it. Every main package is installed into /app/bin, named as `go install`
names them (the module's last path element for the root package), which is what Procfiles
written for Heroku run; the root package's binary is the default web process. The image
that runs the app (the Procfile-only runtime) carries /app — code and binaries — not the
toolchain.
"""

from __future__ import annotations

import json
import re

from builder.errors import BuildFailed
from builder.languages.base import APP_DIR, BuildContext, Dockerfile, Language, Tree, VersionRequest

GO_LINE_RE = re.compile(r"(?m)^go\s+([0-9]+\.[0-9]+(?:\.[0-9]+)?)\s*$")
HEROKU_VERSION_RE = re.compile(r"(?m)^//\s*\+heroku\s+goVersion\s+go([0-9]+\.[0-9]+(?:\.[0-9]+)?)")
MODULE_RE = re.compile(r"(?m)^module\s+\"?([A-Za-z0-9._~/-]{1,200})\"?\s*$")
IMPORT_PATH_RE = re.compile(r"^[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$")
BUILD_STAGE = "gobuild"
GOPATH = "/go"


class Go(Language):
    name = "go"
    title = "Go"
    buildpack_names = ("go", "heroku-buildpack-go")
    runtime_stage = True

    def detect(self, tree: Tree) -> bool:
        return tree.has("go.mod") or any(n.endswith(".go") for n in tree.root_names)

    def version_request(self, tree: Tree) -> VersionRequest | None:
        mod = tree.text("go.mod")
        if mod is None:
            return None
        match = HEROKU_VERSION_RE.search(mod) or GO_LINE_RE.search(mod)
        return VersionRequest(f">={match.group(1)}", "go.mod") if match else None

    def build(self, df: Dockerfile, tree: Tree, ctx: BuildContext) -> None:
        """Written into the build stage (FROM the Go image); `runtime` copies the result."""
        # No toolchain downloads: the image's Go builds, whatever go.mod's `toolchain` says.
        df.env(GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-buildvcs=false")
        if tree.has("go.mod"):
            df.add(f"WORKDIR {APP_DIR}")
            # Modules to fetch (not vendored): fetched before the code arrives, trusting the
            # host's CAs; a module without requirements needs no network at all.
            fetch = _requires(tree.text("go.mod") or "") and not tree.has("vendor")
            ca = ctx.with_ca("SSL_CERT_FILE") if fetch else []
            if fetch:
                ctx.copy_ca(df)
                df.copy("go.mod", *(["go.sum"] if tree.has("go.sum") else []))
                df.run(*ca, "go", "mod", "download")
            df.add(f"COPY . {APP_DIR}")
            df.run(*ca, "env", f"GOBIN={APP_DIR}/bin", "go", "install", "./...")
            return
        path = _legacy_import_path(tree)
        df.env(GO111MODULE="off", GOPATH=GOPATH)
        df.add(f"COPY . {GOPATH}/src/{path}")
        df.add(f"COPY . {APP_DIR}")  # what runs keeps the code beside the binaries
        df.add(f"WORKDIR {GOPATH}/src/{path}")
        df.run("env", f"GOBIN={APP_DIR}/bin", "go", "install", "./...")

    def processes(self, tree: Tree) -> dict[str, str]:
        mod = tree.text("go.mod")
        if mod is not None:
            match = MODULE_RE.search(mod)
            path = match.group(1).rstrip("/") if match else ""
        else:
            path = _legacy_import_path(tree)
        parts = path.split("/")
        # `go install` names example.com/tool/v2's binary `tool`.
        if len(parts) > 1 and re.fullmatch(r"v[0-9]+", parts[-1]):
            parts.pop()
        name = parts[-1]
        return {"web": f"bin/{name}"} if name and _root_is_main(tree) else {}


def _requires(mod: str) -> bool:
    return bool(re.search(r"(?m)^\s*require\b", mod))


def _root_is_main(tree: Tree) -> bool:
    for name in sorted(tree.root_names):
        if name.endswith(".go") and not name.endswith("_test.go"):
            text = tree.text(name) or ""
            if re.search(r"(?m)^package\s+main\b", text):
                return True
    return False


def _legacy_import_path(tree: Tree) -> str:
    """Where a GOPATH-era app lives in GOPATH/src, as Heroku finds it."""
    candidates: list[str] = []
    godeps = tree.read_file("Godeps/Godeps.json")
    if godeps is not None:
        candidates.append(str(_json(godeps, "Godeps/Godeps.json").get("ImportPath", "")))
    vendor = tree.read_file("vendor/vendor.json")
    if vendor is not None:
        candidates.append(str(_json(vendor, "vendor/vendor.json").get("rootPath", "")))
    glide = tree.read_file("glide.yaml")
    if glide is not None:
        match = re.search(r"(?m)^package:\s*(\S+)\s*$", glide.decode("utf-8", "replace"))
        candidates.append(match.group(1) if match else "")
    for path in candidates:
        if path and IMPORT_PATH_RE.fullmatch(path) and ".." not in path.split("/"):
            return path
    return "app"


def _json(data: bytes, name: str) -> dict:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BuildFailed(f"{name} is not valid JSON: {exc}") from None
    return value if isinstance(value, dict) else {}
