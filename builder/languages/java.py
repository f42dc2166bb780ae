"""Java, after heroku-buildpack-java (Maven) and heroku-buildpack-gradle.

Detected by `pom.xml` (Maven) or `build.gradle`/`build.gradle.kts` (Gradle). The version
comes from `system.properties`' `java.runtime.version`. Maven runs `package` without
tests (through `./mvnw` when the app carries the wrapper), Gradle runs `build` without
tests (through `./gradlew` when present). Java apps name their web process in a Procfile
(`web: java -jar target/app.jar`), as on Heroku.
"""

from __future__ import annotations

import re

from builder.languages.base import APP_DIR, BuildContext, Dockerfile, Language, Tree, VersionRequest

JAVA_VERSION_RE = re.compile(r"(?m)^\s*java\.runtime\.version\s*=\s*([0-9]+(?:\.[0-9]+)*)\s*$")


class Java(Language):
    name = "java"
    title = "Java"
    buildpack_names = ("java", "jvm", "gradle", "heroku-buildpack-java", "heroku-buildpack-gradle")

    def detect(self, tree: Tree) -> bool:
        return any(tree.has(n) for n in ("pom.xml", "build.gradle", "build.gradle.kts"))

    def version_request(self, tree: Tree) -> VersionRequest | None:
        match = JAVA_VERSION_RE.search(tree.text("system.properties") or "")
        return VersionRequest(match.group(1), "system.properties") if match else None

    def build(self, df: Dockerfile, tree: Tree, ctx: BuildContext) -> None:
        df.add(f"COPY . {APP_DIR}")
        ca = ctx.with_ca("SSL_CERT_FILE")
        if tree.has("pom.xml"):
            maven = ["./mvnw"] if tree.has("mvnw") else ["mvn"]
            df.run(*ca, *maven, "-B", "-DskipTests", "package")
        else:
            gradle = ["./gradlew"] if tree.has("gradlew") else ["gradle"]
            df.run(*ca, *gradle, "build", "-x", "test", "--no-daemon")
