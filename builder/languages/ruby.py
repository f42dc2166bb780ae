"""Ruby, after heroku-buildpack-ruby.

Detected by `Gemfile`. The version comes from the Gemfile's `ruby "X.Y.Z"` line, else
`.ruby-version`. Gems are installed with Bundler (without the development and test groups)
before the code arrives. Rack apps (`config.ru`) run with `rackup`, Rails apps with
`bin/rails server`, by default.
"""

from __future__ import annotations

import re

from builder.languages.base import APP_DIR, BuildContext, Dockerfile, Language, Tree, VersionRequest

GEMFILE_RUBY_RE = re.compile(r"""(?m)^\s*ruby\s+["']([0-9]+\.[0-9]+(?:\.[0-9]+)?)["']""")
RUBY_VERSION_RE = re.compile(r"^(?:ruby-)?([0-9]+\.[0-9]+(?:\.[0-9]+)?)$")


class Ruby(Language):
    name = "ruby"
    title = "Ruby"
    buildpack_names = ("ruby", "heroku-buildpack-ruby")
    env = {
        "BUNDLE_WITHOUT": "development:test", "BUNDLE_PATH": "/usr/local/bundle",
        "RACK_ENV": "production", "RAILS_ENV": "production",
    }  # fmt: skip

    def detect(self, tree: Tree) -> bool:
        return tree.has("Gemfile")

    def version_request(self, tree: Tree) -> VersionRequest | None:
        match = GEMFILE_RUBY_RE.search(tree.text("Gemfile") or "")
        if match:
            return VersionRequest(match.group(1), "Gemfile")
        pinned = (tree.text(".ruby-version") or "").strip()
        match = RUBY_VERSION_RE.fullmatch(pinned)
        return VersionRequest(match.group(1), ".ruby-version") if match else None

    def build(self, df: Dockerfile, tree: Tree, ctx: BuildContext) -> None:
        ctx.copy_ca(df)
        df.copy("Gemfile", *(["Gemfile.lock"] if tree.has("Gemfile.lock") else []))
        df.run(*ctx.with_ca("SSL_CERT_FILE"), "bundle", "install", "--jobs", "4")
        df.add(f"COPY . {APP_DIR}")

    def processes(self, tree: Tree) -> dict[str, str]:
        if tree.has("bin") and tree.read_file("bin/rails") is not None:
            return {"web": "bin/rails server -b 0.0.0.0 -p ${PORT:-5000}"}
        if tree.has("config.ru"):
            return {"web": "bundle exec rackup config.ru -o 0.0.0.0 -p ${PORT:-5000}"}
        return {}
