"""builder/: pure parsing and detection, and real builds against the Docker engine.

The source is an in-memory fake (a dict of files); the engine, the images and the
containers are real, built only from the local base images.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

import builder
from builder import runtimes
from builder.build import image_tags, remove_app_images
from builder.context import make_context
from builder.detect import LOOKED_FOR, make_tree, plan_build
from builder.properties import BASE_IMAGES, BUILD_ARG
from dockyard.access import LOCAL_ADMIN
from dockyard.context import Context
from dockyard.output import Output
from dockyard.registry import dispatch
from dockyard.services import Services
from dockyard.settings import Settings

BUSYBOX = "dockyard-base/busybox:latest"
PYTHON = "dockyard-base/python:3"
LOCAL_BASES = {"python": PYTHON, "node": PYTHON, "static": BUSYBOX, "procfile": BUSYBOX}


class FakeSource:
    """A `dockyard.pipeline.Source` over a dict of paths to bytes."""

    def __init__(self, files: dict[str, str | bytes], revision: str | None = None) -> None:
        self.files = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
        self.revision = revision or uuid.uuid4().hex + "abcdefgh"

    def read_file(self, path: str) -> bytes | None:
        return self.files.get(path)

    def write_tar(self, fileobj) -> None:  # noqa: ANN001
        with tarfile.open(fileobj=fileobj, mode="w|") as tar:
            for name, data in sorted(self.files.items()):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))


def reader(files: dict[str, str]):  # noqa: ANN201
    return lambda path: files[path].encode() if path in files else None


def detect(read, bases: dict[str, str], procfile: dict[str, str], ca: str | None, files=None):  # noqa: ANN001, ANN201
    """The plan for a dict of files, with runtime images from `bases` (no engine)."""
    names = list(files) if files is not None else list(read.__closure__[0].cell_contents)
    tree = make_tree(read, names)

    def find(lang, tree):  # noqa: ANN001, ANN202
        return runtimes.resolve(lang.name, lang.version_request(tree), bases.get(lang.name), [])

    return plan_build(tree, procfile, find, ca)


# ---------------------------------------------------------------- Procfile, app.json


def test_procfile_parses_types_skipping_comments_and_blank_lines() -> None:
    text = b"# processes\n\nweb: python3 -m http.server $PORT\nworker:  run.sh --x: y\n"
    assert builder.parse_procfile(text) == {
        "web": "python3 -m http.server $PORT",
        "worker": "run.sh --x: y",
    }
    assert builder.parse_procfile(None) == {}


@pytest.mark.parametrize(
    ("text", "needle"),
    [(b"Web: x\n", "invalid process type 'Web'"), (b"web x\n", "line 1"), (b"web:\n", "line 1")],
)
def test_procfile_refuses_malformed_lines(text: bytes, needle: str) -> None:
    with pytest.raises(builder.BuildFailed, match=needle):
        builder.parse_procfile(text)


def test_app_json_absent_valid_and_malformed() -> None:
    assert builder.parse_app_json(None) == {}
    assert builder.parse_app_json(b'{"healthchecks": {"web": []}}') == {"healthchecks": {"web": []}}
    with pytest.raises(builder.BuildFailed, match="app.json is not valid JSON"):
        builder.parse_app_json(b"{nope")
    with pytest.raises(builder.BuildFailed, match="JSON object"):
        builder.parse_app_json(b"[1]")


# ---------------------------------------------------------------- detector


def test_own_dockerfile_wins_over_every_marker() -> None:
    files = {"Dockerfile": "FROM x", "requirements.txt": "", "index.html": "", "Procfile": ""}
    plan = detect(reader(files), LOCAL_BASES, {}, ".dockyard/ca.crt")
    assert plan.kind == "dockerfile" and plan.dockerfile is None


def test_python_installs_requirements_before_copying_the_code() -> None:
    files = {"requirements.txt": "flask==3.0\n", "Procfile": "web: gunicorn app:app"}
    procfile = {"web": "gunicorn app:app"}
    plan = detect(reader(files), LOCAL_BASES, procfile, ".dockyard/ca.crt")
    lines = plan.dockerfile.splitlines()
    assert lines[0] == f"FROM {PYTHON}" and "WORKDIR /app" in lines
    copy_req = lines.index("COPY requirements.txt /app/")
    install = next(i for i, line in enumerate(lines) if "pip" in line)
    copy_all = lines.index("COPY . /app")
    assert copy_req < install < copy_all
    assert "PIP_CERT=/etc/dockyard/ca.crt" in lines[install]
    assert lines.index("COPY .dockyard/ca.crt /etc/dockyard/ca.crt") < install
    assert "EXPOSE 5000" in lines and any(line.startswith("ENV PORT=5000") for line in lines)
    assert lines[-1] == 'CMD ["/bin/sh", "-c", "gunicorn app:app"]'
    assert plan.needs_ca


def test_python_empty_requirements_installs_nothing_and_needs_no_ca() -> None:
    files = {"requirements.txt": "# nothing\n\n", "app.py": "print(1)"}
    plan = detect(reader(files), LOCAL_BASES, {}, ".dockyard/ca.crt")
    assert "pip" not in plan.dockerfile and not plan.needs_ca
    assert plan.dockerfile.splitlines()[-1] == 'CMD ["/bin/sh", "-c", "python3 app.py"]'


def test_python_pyproject_dependencies_are_a_cached_exec_form_layer() -> None:
    pyproject = (
        '[project]\nname = "x"\nversion = "1"\n'
        'dependencies = ["requests>=2; os_name == \\"posix\\""]\n'
    )
    files = {"pyproject.toml": pyproject, "app.py": ""}
    lines = detect(reader(files), LOCAL_BASES, {}, None).dockerfile.splitlines()
    deps = next(i for i, line in enumerate(lines) if "requests" in line)
    assert lines[deps].startswith('RUN ["python3", "-m", "pip"')
    assert json.loads(lines[deps][4:])[-1] == 'requests>=2; os_name == "posix"'
    assert lines.index("COPY pyproject.toml /app/") < deps < lines.index("COPY . /app")
    assert "--no-deps" in lines[lines.index("COPY . /app") + 1]
    assert not any("ca.crt /etc" in line for line in lines)  # no host bundle: none copied


def test_python_without_web_process_or_app_py_is_refused() -> None:
    with pytest.raises(builder.BuildFailed, match="Procfile"):
        detect(reader({"requirements.txt": ""}), LOCAL_BASES, {}, None)


def test_node_installs_from_lockfile_before_copying_the_code() -> None:
    files = {"package.json": '{"dependencies": {"express": "4"}}', "package-lock.json": "{}"}
    lines = detect(reader(files), LOCAL_BASES, {}, ".dockyard/ca.crt").dockerfile.splitlines()
    install = next(i for i, line in enumerate(lines) if '"npm", "ci"' in line)
    assert lines.index("COPY package.json package-lock.json /app/") < install
    assert install < lines.index("COPY . /app")
    assert lines[-1] == 'CMD ["/bin/sh", "-c", "npm start"]'


def test_static_site_and_procfile_only_app() -> None:
    static = detect(reader({"index.html": "hi"}), LOCAL_BASES, {}, None)
    assert static.kind == "static" and "httpd -f -p" in static.dockerfile
    assert f"FROM {BUSYBOX}" in static.dockerfile
    files = {"index.html": "hi", "Procfile": "web: ./serve"}
    plan = detect(reader(files), LOCAL_BASES, {"web": "./serve"}, None)
    assert plan.kind == "procfile"
    assert plan.dockerfile.splitlines()[-1] == 'CMD ["/bin/sh", "-c", "./serve"]'


def test_unmatched_app_names_what_was_looked_for() -> None:
    with pytest.raises(builder.BuildFailed) as exc:
        detect(reader({"README.md": "hi"}), LOCAL_BASES, {}, None)
    for marker in LOOKED_FOR:
        assert marker in exc.value.message


def test_base_image_setting_cannot_inject_dockerfile_lines() -> None:
    with pytest.raises(builder.BuildFailed, match="Invalid image reference"):
        detect(reader({"index.html": ""}), {"static": "x\nRUN evil"}, {}, None)


def test_context_applies_dockerignore_and_never_overwrites_user_files(tmp_path: Path) -> None:
    files = {
        "index.html": "hi",
        ".dockyard/Dockerfile": "mine",
        "secret.key": "s",
        "logs/a.log": "x",
        ".dockerignore": "secret.key\nlogs\n",
    }
    ctx = make_context(
        FakeSource(files),
        lambda ca, names: detect(reader(files), LOCAL_BASES, {}, ca, names),
        tmp_path,
    )
    with tarfile.open(fileobj=ctx.fileobj, mode="r:") as tar:
        names = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    ctx.close()
    assert "secret.key" not in names and "logs/a.log" not in names
    assert names[".dockyard/Dockerfile"] == b"mine"
    assert ctx.dockerfile == ".dockyard-1/Dockerfile"
    assert names[ctx.dockerfile].startswith(b"FROM dockyard-base/busybox")


# ---------------------------------------------------------------- against the engine


@pytest.fixture
def services(tmp_path: Path, docker_engine) -> Services:  # noqa: ANN001
    for image in (BUSYBOX, PYTHON):
        docker_engine.images.get(image)  # fails loudly when the base images are missing
    svc = Services(Settings(data_dir=tmp_path / "data"))
    for kind, image in (
        ("python", PYTHON),
        ("node", PYTHON),
        ("static", BUSYBOX),
        ("procfile", BUSYBOX),
    ):
        BASE_IMAGES[kind].set(svc.properties, None, image)
    return svc


@pytest.fixture
def app(services: Services):  # noqa: ANN201
    name = f"bt-{uuid.uuid4().hex[:10]}"
    yield services.apps.create(name, owner="admin")
    for current in (name, *(a.name for a in services.apps.all())):
        remove_app_images(current, str(services.settings.data_dir))


def capture() -> tuple[Output, io.BytesIO]:
    buf = io.BytesIO()
    return Output(buf, buf), buf


def run_command(services: Services, *argv: str) -> tuple[int, str]:
    buf = io.BytesIO()
    ctx = Context(services, LOCAL_ADMIN, io.BytesIO(), buf, buf, Output(buf, buf), local=True)
    status = dispatch(ctx, list(argv))
    return status, buf.getvalue().decode()


def run_image(docker_engine, image: str) -> str:  # noqa: ANN001
    return docker_engine.containers.run(image, remove=True).decode()


DOCKERFILE_APP = {
    "Dockerfile": (
        f"FROM {BUSYBOX}\nARG GREETING=unset\nCOPY hello.txt /hello.txt\n"
        'RUN echo "greeting=$GREETING"\nEXPOSE 8080\nCMD ["cat", "/hello.txt"]\n'
    ),
    "hello.txt": "hello from dockyard\n",
    "Procfile": "web: cat /hello.txt\n",
    "app.json": '{"healthchecks": {"web": [{"path": "/"}]}}',
}


def test_dockerfile_app_builds_with_build_args_and_runs(services, app, docker_engine) -> None:  # noqa: ANN001
    assert run_command(services, "builder:set", app.name, "build-arg", "GREETING=hi there")[0] == 0
    out, buf = capture()
    built = builder.build_image(services, app, FakeSource(DOCKERFILE_APP), out)
    text = buf.getvalue().decode()
    assert text.startswith(f"-----> Building {app.name} from Dockerfile\n")
    assert "       greeting=hi there\n" in text  # streamed as detail lines
    assert built.tag == f"dockyard/{app.name}:{built.build_id}" and built.build_id == "1"
    assert built.exposed_ports == [8080]
    assert built.procfile == {"web": "cat /hello.txt"}
    assert built.app_json["healthchecks"]["web"][0]["path"] == "/"
    assert run_image(docker_engine, built.tag) == "hello from dockyard\n"
    latest = docker_engine.images.get(f"dockyard/{app.name}:latest")
    assert latest.id == built.image_id
    log = (services.settings.builds_dir / app.name / "1.log").read_text()
    assert "greeting=hi there" in log

    status, listing = run_command(services, "builds:list", app.name, "--format", "json")
    rows = json.loads(listing)
    assert status == 0 and rows[0]["id"] == "1" and rows[0]["status"] == "succeeded"
    assert rows[0]["duration"] is not None and rows[0]["kind"] == "dockerfile"
    status, output = run_command(services, "builds:output", app.name)
    assert status == 0 and "greeting=hi there" in output
    status, report = run_command(services, "builder:report", app.name, "--format", "json")
    report = json.loads(report)
    assert report["builder-build-args"] == ["GREETING"] and "hi there" not in json.dumps(report)
    assert report["builder-base-python"] == PYTHON
    run_command(services, "builder:set", app.name, "build-arg", "GREETING=")
    assert BUILD_ARG.get(services.properties, app) == {}


def test_python_app_runs_procfile_web_and_reuses_the_install_layer(
    services, app, docker_engine
) -> None:  # noqa: ANN001
    files = {
        "requirements.txt": "",
        "Procfile": "web: python3 main.py\n",
        "main.py": "print('python web v1', flush=True)\n",
    }
    built = builder.build_image(services, app, FakeSource(files), capture()[0])
    assert run_image(docker_engine, built.tag) == "python web v1\n"
    config = docker_engine.images.get(built.tag).attrs["Config"]
    assert config["Cmd"] == ["/bin/sh", "-c", "python3 main.py"]
    assert config["WorkingDir"] == "/app" and "PORT=5000" in config["Env"]
    assert built.exposed_ports == [5000]

    files["main.py"] = "print('python web v2', flush=True)\n"
    out, buf = capture()
    second = builder.build_image(services, app, FakeSource(files), out)
    lines = buf.getvalue().decode().splitlines()
    copy_req = next(i for i, line in enumerate(lines) if "COPY requirements.txt" in line)
    assert lines[copy_req + 1].strip() == "---> Using cache"
    assert run_image(docker_engine, second.tag) == "python web v2\n"
    assert second.build_id == "2" and second.image_id != built.image_id


def test_static_site_is_served_by_busybox_httpd(services, app, docker_engine) -> None:  # noqa: ANN001
    files = {"index.html": "<h1>static dockyard</h1>\n"}
    built = builder.build_image(services, app, FakeSource(files), capture()[0])
    container = docker_engine.containers.run(
        built.tag, detach=True, ports={"5000/tcp": ("127.0.0.1", None)}
    )
    try:
        container.reload()
        port = container.ports["5000/tcp"][0]["HostPort"]
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    body = resp.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert body == "<h1>static dockyard</h1>\n"
    finally:
        container.remove(force=True)


def test_failing_build_raises_after_streaming_and_logging(services, app) -> None:  # noqa: ANN001
    files = {"Dockerfile": f"FROM {BUSYBOX}\nRUN echo about-to-fail && false\n"}
    out, buf = capture()
    with pytest.raises(builder.BuildFailed, match="returned a non-zero code: 1"):
        builder.build_image(services, app, FakeSource(files), out)
    assert "       about-to-fail\n" in buf.getvalue().decode()
    log = (services.settings.builds_dir / app.name / "1.log").read_text()
    assert "about-to-fail" in log and "Build failed" in log
    status, listing = run_command(services, "builds:list", app.name, "--format", "json")
    assert json.loads(listing)[0]["status"] == "failed"
    assert image_tags(app.name) == []


def test_unmatched_app_and_missing_base_are_refused(services, app) -> None:  # noqa: ANN001
    with pytest.raises(builder.BuildFailed, match="Procfile"):
        builder.build_image(services, app, FakeSource({"README.md": "hi"}), capture()[0])
    BASE_IMAGES["static"].set(services.properties, app, "example.invalid/nonexistent:1")
    # Refused before any pull: the registry does not resolve; the message names the setting.
    pulling = "example.invalid/nonexistent:1.*does not resolve.*base-static"
    with pytest.raises(builder.BuildFailed, match=pulling):
        builder.build_image(services, app, FakeSource({"index.html": "x"}), capture()[0])
    statuses = json.loads(run_command(services, "builds:list", app.name, "--format", "json")[1])
    assert [r["status"] for r in statuses] == ["failed", "failed"]


def test_prune_keeps_the_given_releases_and_rename_destroy_follow(
    services, app, docker_engine
) -> None:  # noqa: ANN001
    files = {"Dockerfile": f"FROM {BUSYBOX}\nCOPY v.txt /v.txt\n"}
    tags = []
    for n in range(3):
        files["v.txt"] = f"v{n}"
        tags.append(builder.build_image(services, app, FakeSource(files), capture()[0]).tag)
    assert builder.keep_releases(services, app) == 5
    assert run_command(services, "builder:set", "--global", "keep-releases", "3")[0] == 0
    assert run_command(services, "builder:set", app.name, "keep-releases", "2")[0] == 0
    assert builder.keep_releases(services, app) == 2
    run_command(services, "builder:set", app.name, "keep-releases")
    assert builder.keep_releases(services, app) == 3
    status, text = run_command(services, "builder:set", app.name, "keep-releases", "0")
    assert status != 0 and "at least 1" in text
    removed = builder.prune_images(services, app.name, {tags[2]})
    assert removed == sorted(tags[:2])
    left = sorted(tag for tag, _ in image_tags(app.name))
    assert left == sorted([tags[2], f"dockyard/{app.name}:latest"])

    new = f"{app.name}-x"
    services.rename_app(app.name, new)
    assert image_tags(app.name) == []
    assert sorted(t for t, _ in image_tags(new)) == [f"dockyard/{new}:3", f"dockyard/{new}:latest"]
    assert (services.settings.builds_dir / new / "3.log").is_file()
    # A tag recorded under the old name still protects its retagged image.
    assert builder.prune_images(services, new, {tags[2]}) == []
    services.destroy_app(new)
    assert image_tags(new) == []
    assert not (services.settings.builds_dir / new).exists()


def test_image_references_are_read_as_the_builder_reads_them() -> None:
    from builder import BuildFailed
    from builder.isolation import image_references

    def refs(dockerfile: str, **build_args: str) -> list[str]:
        return image_references(dockerfile, build_args)

    assert refs("FROM dockyard-base/busybox:latest AS base\nCOPY --from=base / /\n") == [
        "dockyard-base/busybox:latest"
    ]
    assert refs("FROM a AS one\nFROM b\nCOPY --from=0 / /\nCOPY --from=one / /") == ["a", "b"]
    assert refs("FROM busybox\nCOPY --from=dockyard/v:1 /app /x") == ["busybox", "dockyard/v:1"]
    assert refs("FROM busybox\nRUN --mount=type=bind,from=dockyard/v,target=/v true")[1] == (
        "dockyard/v"
    )
    assert refs("FROM busybox\nONBUILD COPY --from=dockyard/v / /")[1] == "dockyard/v"
    # The tricks a text match misses:
    assert refs("FROM \\\n# a comment inside the continuation\n  dockyard/v") == ["dockyard/v"]
    assert refs("FROM \\\n\n  dockyard/v") == ["dockyard/v"]
    assert refs("FROM ${NOPE:-dockyard/v}") == ["dockyard/v"]
    assert refs("ARG X=1\nFROM ${X:+dockyard/v}") == ["dockyard/v"]
    assert refs('ARG X="dockyard/v"\nFROM $X') == ["dockyard/v"]
    assert refs("ARG A=1 B=dockyard/v\nFROM ${B}") == ["dockyard/v"]
    assert refs("ARG BASE=busybox\nFROM $BASE", BASE="dockyard/v") == ["dockyard/v"]
    with pytest.raises(BuildFailed, match="escape"):
        refs("# escape=`\nFROM busybox")


def test_a_build_may_not_reach_another_apps_image(docker_engine) -> None:
    from builder import BuildFailed, engine
    from builder.isolation import check_image_sources

    victim = f"dockyard/victim-{uuid.uuid4().hex[:8]}"
    secret = b"FROM dockyard-base/busybox:latest\nRUN echo secret > /secret\n"
    image, _ = docker_engine.images.build(fileobj=io.BytesIO(secret), tag=f"{victim}:1", rm=True)
    try:

        def check(*refs: str) -> None:
            check_image_sources(refs, "web", engine.resolve_image, engine.app_images)

        check("dockyard-base/busybox:latest", "dockyard/web:3", "nothing-here:latest")
        for ref in (f"{victim}:1", f"docker.io/{victim}:1", f"index.docker.io/{victim}:1"):
            with pytest.raises(BuildFailed, match="another app's image"):
                check(ref)
        # Another name for the same image is still the other app's image.
        image.tag("innocent-looking", "1")
        try:
            with pytest.raises(BuildFailed, match="another app's image"):
                check("innocent-looking:1")
        finally:
            docker_engine.images.remove("innocent-looking:1")
        with pytest.raises(BuildFailed, match="prefix of an image id"):
            check(image.id.split(":")[1][:12])
    finally:
        docker_engine.images.remove(f"{victim}:1")


def test_a_retire_prunes_nothing_while_a_push_of_the_app_holds_its_lock(
    services, app, docker_engine
) -> None:  # noqa: ANN001
    """A push between its build and its release: the new image is not yet any release's,
    so the previous deploy's after-retire prune must leave it alone (it once deleted it)."""
    from deployer.image_pruning import prune_images_unless_busy
    from dockyard.locks import app_lock

    files = {"Dockerfile": f"FROM {BUSYBOX}\nCOPY v.txt /v.txt\n", "v.txt": "building"}
    tag = builder.build_image(services, app, FakeSource(files), capture()[0]).tag
    with app_lock(services.settings.locks_dir, app.name):
        prune_images_unless_busy(services, app)
        assert tag in {t for t, _ in image_tags(app.name)}
    prune_images_unless_busy(services, app)  # no release keeps it, nobody builds: pruned
    assert tag not in {t for t, _ in image_tags(app.name)}
