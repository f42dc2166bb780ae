"""Node.js, after heroku-buildpack-nodejs.

Detected by `package.json`. The version comes from `engines.node` (an npm range:
`18.x`, `>=18 <21`, `^20`). The package manager is the one whose lockfile is there:
`pnpm-lock.yaml` (pnpm), `yarn.lock` (yarn), `package-lock.json` or
`npm-shrinkwrap.json` (`npm ci`), else `npm install`. Dependencies, dev ones included, are
installed before the code arrives; then `heroku-postbuild` or else `build` runs if the
package defines it, and dev dependencies are pruned. `start` (or `server.js`) is the
default web process (npm runs `node server.js` when the package defines no `start`).
"""

from __future__ import annotations

from builder.languages.base import APP_DIR, BuildContext, Dockerfile, Language, Tree, VersionRequest

NPM_CA = ("NODE_EXTRA_CA_CERTS", "npm_config_cafile")


class Node(Language):
    name = "node"
    title = "Node.js"
    buildpack_names = ("nodejs", "node", "heroku-buildpack-nodejs")
    env = {"NODE_ENV": "production", "NPM_CONFIG_UPDATE_NOTIFIER": "false"}

    def detect(self, tree: Tree) -> bool:
        return tree.has("package.json")

    def version_request(self, tree: Tree) -> VersionRequest | None:
        engines = self._manifest(tree).get("engines") or {}
        node = engines.get("node") if isinstance(engines, dict) else None
        return (
            VersionRequest(node.strip(), "package.json engines.node")
            if isinstance(node, str) and node.strip()
            else None
        )

    def build(self, df: Dockerfile, tree: Tree, ctx: BuildContext) -> None:
        manifest = self._manifest(tree)
        scripts = manifest.get("scripts") if isinstance(manifest.get("scripts"), dict) else {}
        manager = _manager(tree)
        has_deps = bool(manifest.get("dependencies") or manifest.get("devDependencies"))
        ca = ctx.with_ca(*NPM_CA)
        if has_deps:
            ctx.copy_ca(df)
            df.copy("package.json", *manager.lockfiles(tree))
            if manager.tool != "npm":
                df.run(*ca, "npm", "install", "--global", "--no-fund", "--no-audit", manager.tool)
            # Dev dependencies too: the build step usually needs them (NODE_ENV would drop them).
            df.run(*ca, "env", "NODE_ENV=development", *manager.install(tree))
        df.add(f"COPY . {APP_DIR}")
        build_script = next((s for s in ("heroku-postbuild", "build") if s in scripts), None)
        if build_script:
            df.run(*ca, manager.tool, "run", build_script)
        if has_deps:
            df.run(*ca, *manager.prune())

    def processes(self, tree: Tree) -> dict[str, str]:
        # npm's own default for `start` is `node server.js`.
        return {"web": "npm start"}

    def _manifest(self, tree: Tree) -> dict:
        return tree.json("package.json") or {}


class _Manager:
    tool = "npm"

    def lockfiles(self, tree: Tree) -> list[str]:
        return [n for n in ("package-lock.json", "npm-shrinkwrap.json") if tree.has(n)]

    def install(self, tree: Tree) -> list[str]:
        if self.lockfiles(tree):
            return ["npm", "ci", "--no-fund", "--no-audit"]
        return ["npm", "install", "--no-fund", "--no-audit"]

    def prune(self) -> list[str]:
        return ["npm", "prune", "--omit=dev", "--no-fund", "--no-audit"]


class _Yarn(_Manager):
    tool = "yarn"

    def lockfiles(self, tree: Tree) -> list[str]:
        return ["yarn.lock"]

    def install(self, tree: Tree) -> list[str]:
        return ["yarn", "install", "--frozen-lockfile", "--non-interactive"]

    def prune(self) -> list[str]:
        return ["yarn", "install", "--frozen-lockfile", "--production", "--non-interactive"]


class _Pnpm(_Manager):
    tool = "pnpm"

    def lockfiles(self, tree: Tree) -> list[str]:
        return ["pnpm-lock.yaml"]

    def install(self, tree: Tree) -> list[str]:
        return ["pnpm", "install", "--frozen-lockfile"]

    def prune(self) -> list[str]:
        return ["pnpm", "prune", "--prod"]


def _manager(tree: Tree) -> _Manager:
    if tree.has("pnpm-lock.yaml"):
        return _Pnpm()
    if tree.has("yarn.lock"):
        return _Yarn()
    return _Manager()
