"""PHP, after heroku-buildpack-php.

Detected by `composer.json` or `index.php`. The version comes from composer.json's
`require.php` constraint. Composer installs the dependencies (without dev ones) before the
code arrives. The default web process is PHP's built-in server on `PORT`, serving `public/`
when the app has one (Laravel, Symfony) and the root otherwise — one process per
container, so scale with `ps:scale web=N` rather than expecting PHP-FPM's pool.
"""

from __future__ import annotations

from builder.languages.base import APP_DIR, BuildContext, Dockerfile, Language, Tree, VersionRequest


class Php(Language):
    name = "php"
    title = "PHP"
    buildpack_names = ("php", "heroku-buildpack-php")
    env = {"COMPOSER_ALLOW_SUPERUSER": "1", "COMPOSER_NO_INTERACTION": "1"}

    def detect(self, tree: Tree) -> bool:
        return tree.has("composer.json") or tree.has("index.php")

    def version_request(self, tree: Tree) -> VersionRequest | None:
        composer = tree.json("composer.json") if tree.has("composer.json") else None
        require = (composer or {}).get("require")
        php = require.get("php") if isinstance(require, dict) else None
        return (
            VersionRequest(php.strip(), "composer.json require.php")
            if isinstance(php, str) and php.strip()
            else None
        )

    def build(self, df: Dockerfile, tree: Tree, ctx: BuildContext) -> None:
        if tree.has("composer.json"):
            ctx.copy_ca(df)
            df.copy("composer.json", *(["composer.lock"] if tree.has("composer.lock") else []))
            df.run(*ctx.with_ca("SSL_CERT_FILE"), "composer", "install", "--no-dev",
                   "--no-scripts", "--no-autoloader", "--prefer-dist")  # fmt: skip
            df.add(f"COPY . {APP_DIR}")
            df.run("composer", "dump-autoload", "--no-dev", "--optimize")
            return
        df.add(f"COPY . {APP_DIR}")

    def processes(self, tree: Tree) -> dict[str, str]:
        root = "public" if tree.has("public") else "."
        return {"web": f"php -S 0.0.0.0:${{PORT:-5000}} -t {root}"}
