"""Static sites, after Dokku's static buildpack: a `.static` file, or an `index.html` at
the root of an app with no Procfile and no other language. Served by busybox's httpd on
`PORT`."""

from __future__ import annotations

from builder.languages.base import APP_DIR, Language, Tree


class Static(Language):
    name = "static"
    title = "static"
    buildpack_names = ("static", "buildpack-nginx", "heroku-buildpack-static")

    def detect(self, tree: Tree) -> bool:
        return tree.has(".static") or (tree.has("index.html") and not tree.has("Procfile"))

    def processes(self, tree: Tree) -> dict[str, str]:
        return {"web": f'exec httpd -f -p "${{PORT:-5000}}" -h {APP_DIR}'}


class ProcfileOnly(Language):
    """Nothing to build: the Procfile's commands run on a plain Debian image."""

    name = "procfile"
    title = "Procfile"

    def detect(self, tree: Tree) -> bool:
        return tree.has("Procfile")
