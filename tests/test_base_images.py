"""The local base images scripts/setup.sh leaves on the machine (scripts/build-base-images.sh).

They are the contract the builder selects by: name, and the labels dockyard.runtime,
dockyard.runtime.version (what the runtime itself reports) and dockyard.runtime.suite. A
missing image is a failure, never a skip. Every container runs with `--network none`: the
runtimes and the offline builds below must work without one.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

import pytest

HOST_SUITE = "bookworm"


@dataclass(frozen=True)
class Image:
    name: str
    runtime: str
    suite: str
    # Prints the runtime's own version report (to be parsed by `version_re`), then checks
    # that the runtime and its tools run.
    script: str
    version_re: str


IMAGES = [
    Image(
        "dockyard-base/busybox:latest", "static", HOST_SUITE,
        "busybox | head -n1; command -v httpd >/dev/null", r"BusyBox v(\S+) ",
    ),
    Image(
        "dockyard-base/debian:bookworm", "procfile", "bookworm",
        "cat /etc/debian_version; test -s /etc/ssl/certs/ca-certificates.crt", r"^(12\.\d+)$",
    ),
    Image(
        "dockyard-base/debian:trixie", "procfile", "trixie",
        "cat /etc/debian_version; test -s /etc/ssl/certs/ca-certificates.crt", r"^(13(\.\d+)?)$",
    ),
    *(
        Image(
            f"dockyard-base/python:{tag}", "python", suite,
            "python3 --version; python3 -m venv /tmp/venv && /tmp/venv/bin/pip --version",
            rf"^Python ({re.escape(tag)}\.\d+)$",
        )
        for tag, suite in (("3.11", "bookworm"), ("3.13", "trixie"))
    ),
    *(
        Image(
            f"dockyard-base/node:{tag}", "node", suite,
            "node --version; npm --version", rf"^v({tag}\.\d+\.\d+)$",
        )
        for tag, suite in (("18", "bookworm"), ("20", "trixie"))
    ),
    *(
        Image(
            f"dockyard-base/go:{tag}", "go", suite,
            "go version", rf"^go version go({re.escape(tag)}(\.\d+)?) ",
        )
        for tag, suite in (("1.19", "bookworm"), ("1.24", "trixie"))
    ),
    Image(
        "dockyard-base/ruby:3.1", "ruby", "bookworm",
        "ruby --version; bundle --version", r"^ruby (3\.1\.\d+)",
    ),
    Image(
        "dockyard-base/php:8.2", "php", "bookworm",
        "php -r 'echo \"PHP \", PHP_VERSION, PHP_EOL;'; composer --version",
        r"^PHP (8\.2\.\d+)",
    ),
    Image(
        "dockyard-base/java:17", "java", "bookworm",
        "java -version 2>&1; mvn -v", r'^openjdk version "(17[0-9.]*)"',
    ),
]  # fmt: skip


def run(client, image: str, script: str, timeout: float = 120) -> str:
    """Run `sh -c SCRIPT` in a fresh container without a network; stdout and stderr."""
    container = client.containers.run(
        image, ["sh", "-c", "set -e\n" + script], network_mode="none", detach=True
    )
    try:
        result = container.wait(timeout=timeout)
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    assert result["StatusCode"] == 0, f"{image}: exit {result['StatusCode']}\n{output}"
    return output


def inspect(client, name: str):
    import docker.errors

    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{name} is missing; run scripts/setup.sh (scripts/build-base-images.sh)")


@pytest.mark.parametrize("spec", IMAGES, ids=[i.name for i in IMAGES])
def test_image_labels_and_runtime(docker_engine, spec: Image) -> None:
    image = inspect(docker_engine, spec.name)
    config = image.attrs["Config"]
    labels = config.get("Labels") or {}
    assert labels.get("dockyard.runtime") == spec.runtime
    assert labels.get("dockyard.runtime.suite") == spec.suite
    # The builder sets WORKDIR /app itself; the image runs as root.
    assert not config.get("WorkingDir")
    assert config.get("User", "") in ("", "root", "0")
    assert not config.get("Entrypoint")

    output = run(docker_engine, spec.name, "id -u; " + spec.script)
    lines = output.splitlines()
    assert lines[0] == "0", output
    reported = next((m.group(1) for line in lines if (m := re.search(spec.version_re, line))), None)
    assert reported, f"{spec.name}: no version matching {spec.version_re!r} in:\n{output}"
    assert labels.get("dockyard.runtime.version") == reported, output


def test_debian_bases_environment(docker_engine) -> None:
    for suite in ("bookworm", "trixie"):
        env = inspect(docker_engine, f"dockyard-base/debian:{suite}").attrs["Config"]["Env"]
        assert "LANG=C.UTF-8" in env
        assert any(e.startswith("PATH=") and "/usr/bin" in e for e in env)


def test_python3_aliases_are_the_3_11_image(docker_engine) -> None:
    target = inspect(docker_engine, "dockyard-base/python:3.11").id
    for alias in ("dockyard-base/python:3", "dockyard-base/python:latest"):
        assert inspect(docker_engine, alias).id == target, alias


def test_images_are_found_by_label(docker_engine) -> None:
    """How the builder finds them: by label, one image per runtime and version line."""
    found = {
        tag
        for image in docker_engine.images.list(filters={"label": "dockyard.runtime"})
        for tag in image.tags
        if tag.startswith("dockyard-base/")
    }
    assert {i.name for i in IMAGES} <= found


# ------------------------------------------------------------ offline builds ---
# What the builder will do with these images, without any network: the no-dependency
# project shapes that must build.


def test_go_builds_offline(docker_engine) -> None:
    for tag in ("1.19", "1.24"):
        script = textwrap.dedent("""\
            mkdir -p /app && cd /app
            printf 'module example.com/hello\\n\\ngo 1.19\\n' > go.mod
            printf 'package main\\n\\nimport "fmt"\\n\\nfunc main() { fmt.Println("hi go") }\\n' \\
                > main.go
            GOTOOLCHAIN=local go build -o hello .
            ./hello
        """)  # fmt: skip
        assert run(docker_engine, f"dockyard-base/go:{tag}", script).strip() == "hi go"


def test_bundle_install_offline(docker_engine) -> None:
    script = textwrap.dedent("""\
        mkdir -p /app && cd /app
        echo 'source "https://rubygems.org"' > Gemfile
        bundle install
        test -s Gemfile.lock
    """)
    assert "Bundle complete!" in run(docker_engine, "dockyard-base/ruby:3.1", script)


def test_composer_install_offline_and_php_serves(docker_engine) -> None:
    script = textwrap.dedent("""\
        mkdir -p /app && cd /app
        echo '{"require": {"php": ">=8.1"}}' > composer.json
        echo '<?php echo "hello php\\n";' > index.php
        composer install --no-interaction
        test -f vendor/autoload.php
        php -S 0.0.0.0:8080 -t /app >/tmp/php.log 2>&1 &
        for i in $(seq 50); do
            php -r '$b=@file_get_contents("http://127.0.0.1:8080/");echo $b;exit($b===false?1:0);' \
                && exit 0
            sleep 0.1
        done
        cat /tmp/php.log; exit 1
    """)
    assert "hello php" in run(docker_engine, "dockyard-base/php:8.2", script)


POM = """\
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>example</groupId>
  <artifactId>hello</artifactId>
  <version>1.0</version>
  <packaging>jar</packaging>
  <properties>
    <maven.compiler.release>17</maven.compiler.release>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>
  </properties>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-jar-plugin</artifactId>
        <configuration>
          <archive><manifest><mainClass>Main</mainClass></manifest></archive>
        </configuration>
      </plugin>
    </plugins>
  </build>
</project>
"""

MAIN_JAVA = """\
public class Main {
    public static void main(String[] args) {
        System.out.println("hello java");
    }
}
"""


def test_maven_packages_a_runnable_jar_offline(docker_engine) -> None:
    """No plugin versions in the pom: Debian's /usr/share/maven-repo relocates Maven's
    default-binding versions to the ones it ships (see scripts/images/java/settings.xml)."""
    script = textwrap.dedent(f"""\
        mkdir -p /app/src/main/java && cd /app
        cat > pom.xml <<'EOF'
        {textwrap.indent(POM, "        ").lstrip()}
        EOF
        cat > src/main/java/Main.java <<'EOF'
        {textwrap.indent(MAIN_JAVA, "        ").lstrip()}
        EOF
        mvn -B -o clean package >/tmp/mvn.log 2>&1 || {{ cat /tmp/mvn.log; exit 1; }}
        java -jar target/hello-1.0.jar
    """)
    output = run(docker_engine, "dockyard-base/java:17", script, timeout=300)
    assert output.strip() == "hello java", output
