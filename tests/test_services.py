"""Services, storage and networks: real PostgreSQL and Redis containers (the local stand-ins
from scripts/build-service-images.sh), real `git push` over our SSH server, real nginx.

The end-to-end test follows one app's data through link, unlink, relink, a service restart,
a redeploy, a Dockyard restart, a service container that vanished, and a backup restored
onto a fresh data dir. The others are the attacks a hostile non-admin tenant would try.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployer.network import check_network_name
from deployer.storage import check_container_path, check_plain_path, parse_mount
from dockyard.errors import UsageError
from services.base import check_service_name
from services.commands import _parse_expose, check_image
from tests.conftest import (
    DockyardServer,
    remove_leftovers_of,
    remove_server_leftovers,
    start_server,
    stop_server,
)
from tests.deploying import busybox_repo, get, make_repo, ok, push

APP_SOURCE = (Path(__file__).parent / "svc_app.py").read_text()
IMAGES = {
    "postgres": "dockyard-services/postgres:15",
    "redis": "dockyard-services/redis:7",
    "mysql": "dockyard-services/mariadb:10.11",
}


# ---------------------------------------------------------------- helpers
def configure(srv: DockyardServer) -> None:
    ok(srv.ssh("builder:set", "--global", "base-python", "dockyard-base/python:3"))
    ok(srv.ssh("builder:set", "--global", "base-procfile", "dockyard-base/python:3"))
    for kind, image in IMAGES.items():
        ok(srv.ssh(f"{kind}:set", "--global", "image", image))


def app_repo(tmp_path: Path, name: str) -> Path:
    files = {"app.py": APP_SOURCE, "Procfile": "web: python3 app.py\n", "requirements.txt": ""}
    return make_repo(tmp_path / name, files)


def body(srv: DockyardServer, app: str, path: str, timeout: float = 20) -> str:
    """The app's answer at `path`, waiting through a redeploy that is still settling."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            status, last = get(srv, app, path)
            if status == 200:
                return last
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise AssertionError(f"{app}{path} never answered 200; last: {last!r}")


def refused(result, code: int | None = None, text: str = "") -> None:
    assert result.returncode != 0, f"expected a refusal:\n{result.stdout}\n{result.stderr}"
    if code is not None:
        assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stderr.startswith(" !     "), result.stderr
    assert text in result.stderr, result.stderr


@pytest.fixture(scope="module")
def srv(shared_server: DockyardServer, docker_engine) -> DockyardServer:
    configure(shared_server)
    return shared_server


# ---------------------------------------------------------------- unit
def test_names_images_and_addresses_are_checked() -> None:
    assert check_service_name("db-1") == "db-1"
    for bad in ("", "Db", "-x", "a.b", "a_b", "x" * 49, "a b", "../x", "a;b", "é"):
        with pytest.raises(UsageError):
            check_service_name(bad)
    for good in ("postgres:16", "redis", "dockyard-services/postgres:15",
                 "registry.example.com:5000/team/pg:16.1"):  # fmt: skip
        assert check_image(good) == good
    for bad in ("postgres:16 --privileged", "-v/:/x", "UPPER:1", "a:b:c", "x;y", ""):
        with pytest.raises(UsageError):
            check_image(bad)
    assert _parse_expose(None) == "127.0.0.1:0"
    assert _parse_expose("5433") == "127.0.0.1:5433"
    assert _parse_expose("0.0.0.0:5433") == "0.0.0.0:5433"
    for bad in ("host:1", "1.2.3.4:0", "99999", "1.2.3.4:x", "$(id):1"):
        with pytest.raises(UsageError):
            _parse_expose(bad)
    for bad in ("bridge", "host", "none", "a.b", "dockyard.app.x", "X", ""):
        with pytest.raises(UsageError):
            check_network_name(bad)


def test_mount_specs_refuse_escapes() -> None:
    assert parse_mount("/srv/x:/data") == ("/srv/x", "/data", False)
    assert parse_mount("name:/data:ro") == ("name", "/data", True)
    for bad in (
        "/srv/x:/", "/srv/x:/etc", "/srv/x:/proc/1", "/srv/x:/sys", "/srv/x:/dev/sda",
        "/srv/x:/usr", "/srv/x:relative", "/srv/x:/data/../etc", "/srv/x:/data:rw,z",
        "/srv/x:/data:ro:z", "/srv/x", ":/data", "/srv/x:/da ta", "/srv/x:/data\n",
        "/srv/x:/./data", "/srv/x:/data/",
    ):  # fmt: skip
        with pytest.raises(UsageError):
            parse_mount(bad)
    for bad in ("/a/../b", "/a//b", "a/b", "/a/./b", "/a b", "/a\x00b", "/a/", "/a,b"):
        with pytest.raises(UsageError):
            check_plain_path(bad, "host path")
    assert check_container_path("/var/lib/data") == "/var/lib/data"


# ---------------------------------------------------------------- end to end
def test_services_end_to_end(server: DockyardServer, docker_engine, tmp_path: Path) -> None:
    """Create, link, write and read through DATABASE_URL and REDIS_URL; unlink, relink; the
    rows survive a service restart, a redeploy, a Dockyard restart and a vanished service
    container; backup on this data dir and restore on a fresh one brings rows and storage
    files back."""
    srv = server
    configure(srv)
    app, pg, red = "svcapp", "e2epg", "e2ered"
    created = srv.ssh("postgres:create", pg)
    ok(created)
    assert f"=====> Postgres container created: {pg}" in created.stdout
    ok(srv.ssh("redis:create", red))
    dsn = srv.ssh("postgres:info", pg, "--dsn").stdout.strip()
    password = dsn.split(":")[2].split("@")[0]
    assert dsn == f"postgres://postgres:{password}@dokku-postgres-{pg}:5432/{pg}"
    assert len(password) == 32 and password not in created.stdout
    info = json.loads(srv.ssh("postgres:info", pg, "--format", "json").stdout)
    assert info["status"] == "running" and info["exposed-ports"] == "-"
    [container] = docker_engine.containers.list(filters={"label": "dockyard.service.name=" + pg})
    assert container.attrs["HostConfig"]["PortBindings"] in (None, {})  # no published port
    assert oct(os.stat(info["data-dir"]).st_mode & 0o777) == "0o700"

    repo = app_repo(tmp_path, app)
    ok(push(srv, repo, app))
    assert body(srv, app, "/env/DATABASE_URL") == "<unset>"
    linked = srv.ssh("postgres:link", pg, app)
    ok(linked)
    assert "DATABASE_URL:" in linked.stdout and f"Restarting app {app}" in linked.stdout
    assert password not in linked.stdout + linked.stderr
    assert body(srv, app, "/env/DATABASE_URL") == dsn
    assert body(srv, app, "/pg/DATABASE_URL/init") == "ok"
    for value in ("one", "two"):
        assert body(srv, app, f"/pg/DATABASE_URL/add/{value}") == "ok"
    assert body(srv, app, "/pg/DATABASE_URL/count") == "2"
    assert srv.ssh("postgres:linked", pg, app).returncode == 0
    assert srv.ssh("postgres:links", pg).stdout.split() == [app]
    assert srv.ssh("postgres:app-links", app).stdout.split() == [pg]

    ok(srv.ssh("redis:link", red, app))
    redis_url = srv.ssh("redis:info", red, "--dsn").stdout.strip()
    assert redis_url.startswith("redis://:") and redis_url.endswith(f"@dokku-redis-{red}:6379")
    assert body(srv, app, "/env/REDIS_URL") == redis_url
    assert body(srv, app, "/redis/REDIS_URL/set/greeting/hello") == "OK"

    # A second database of the same kind gets Dokku's colour alias; -q adds a query string.
    ok(srv.ssh("postgres:create", "e2epg2"))
    second = srv.ssh("postgres:link", "e2epg2", app, "-q", "sslmode=disable", "--no-restart")
    ok(second)
    assert "DOKKU_POSTGRES_AQUA_URL" in second.stdout and "Restarting" not in second.stdout
    aqua = srv.ssh("config:get", app, "DOKKU_POSTGRES_AQUA_URL").stdout.strip()
    assert aqua.endswith("/e2epg2?sslmode=disable")
    refused(srv.ssh("postgres:link", "e2epg2", app), text="Already linked as DOKKU_POSTGRES_AQUA")
    refused(srv.ssh("postgres:destroy", "e2epg2"), text="Cannot delete linked service")
    ok(srv.ssh("postgres:destroy", "e2epg2", "--force"))
    assert srv.ssh("config:get", app, "DOKKU_POSTGRES_AQUA_URL").returncode == 1
    gone = {"name": "dockyard_svc.postgres.e2epg2"}
    assert not docker_engine.containers.list(all=True, filters=gone)

    # unlink, relink: the URL goes and comes back, the rows are where they were.
    ok(srv.ssh("postgres:unlink", pg, app))
    assert body(srv, app, "/env/DATABASE_URL") == "<unset>"
    assert srv.ssh("postgres:linked", pg, app).returncode == 1
    ok(srv.ssh("postgres:link", pg, app))
    assert body(srv, app, "/pg/DATABASE_URL/count") == "2"

    # A service restart and a redeploy keep the data.
    ok(srv.ssh("postgres:restart", pg))
    assert body(srv, app, "/pg/DATABASE_URL/count") == "2"
    ok(srv.ssh("ps:rebuild", app))
    assert body(srv, app, "/pg/DATABASE_URL/count") == "2"
    assert body(srv, app, "/redis/REDIS_URL/get/greeting") == "hello"

    # connect without a terminal runs what stdin holds.
    result = srv.ssh("postgres:connect", pg, input="SELECT v FROM items ORDER BY v;\n")
    assert result.returncode == 0 and "one" in result.stdout and "two" in result.stdout, result

    # Persistent storage, mounted into the app.
    ok(srv.ssh("storage:ensure-directory", "svcfiles"))
    ok(srv.ssh("storage:mount", app, "svcfiles:/data"))
    listed = json.loads(srv.ssh("storage:list", app, "--format", "json").stdout)
    assert listed == [{"host_path": str(srv.data_dir / "storage" / "svcfiles"),
                       "container_path": "/data", "volume_options": ""}]  # fmt: skip
    ok(srv.ssh("ps:restart", app))
    assert body(srv, app, "/file/write/note.txt/kept") == "ok"
    assert (srv.data_dir / "storage" / "svcfiles" / "note.txt").read_text() == "kept"
    ok(srv.ssh("releases:rollback", app))  # mounts are app state: a rollback keeps them
    assert body(srv, app, "/file/read/note.txt") == "kept"

    # Passwords are in no log line and no event.
    events = srv.ssh("events", "--format", "json").stdout + srv.ssh("events").stdout
    assert password not in srv.log() and password not in events

    # A Dockyard restart leaves the service running; a vanished container is recreated.
    before = container.id
    stop_server(srv)
    container.reload()
    assert container.status == "running"
    srv2 = start_server(srv.data_dir, srv.keys_dir, srv.admin_key, srv.user_key,
                        port=srv.port, http_port=srv.http_port)  # fmt: skip
    try:
        assert body(srv2, app, "/pg/DATABASE_URL/count") == "2"
        assert docker_engine.containers.get(f"dockyard_svc.postgres.{pg}").id == before
        container.remove(force=True)
        deadline = time.monotonic() + 30
        while srv2.ssh("postgres:info", pg, "--status").stdout.strip() != "running":
            assert time.monotonic() < deadline, "the service container was not recreated"
            time.sleep(0.5)
        assert body(srv2, app, "/pg/DATABASE_URL/count", timeout=30) == "2"

        # Backup while serving; then this machine "dies" and a fresh one restores.
        archive = tmp_path / "backup.tar.gz"
        backed = srv2.cli("backup", str(archive))
        ok(backed)
        for part in (f"services/postgres/{pg}/", f"services/redis/{red}/", "storage/svcfiles"):
            assert part in backed.stdout, backed.stdout
    finally:
        stop_server(srv2)
        remove_server_leftovers(srv2)

    fresh = tmp_path / "fresh" / "data"
    fresh.parent.mkdir()
    env = {**os.environ}
    restored = subprocess.run(
        [sys.executable, "-m", "dockyard.cli", "--data-dir", str(fresh), "restore", str(archive)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert f"services/postgres/{pg}" in restored.stdout
    srv3 = start_server(fresh, srv.keys_dir, srv.admin_key, srv.user_key)
    try:
        ok(srv3.ssh("ps:rebuild", "--all"))
        assert body(srv3, app, "/pg/DATABASE_URL/count") == "2"
        assert body(srv3, app, "/redis/REDIS_URL/get/greeting") == "hello"
        assert body(srv3, app, "/file/read/note.txt") == "kept"
        assert srv3.ssh("postgres:info", pg, "--dsn").stdout.strip() == dsn
    finally:
        stop_server(srv3)
        remove_leftovers_of(fresh)


def test_a_hostile_tenant_is_refused(srv: DockyardServer, docker_engine, tmp_path: Path) -> None:
    """As the non-admin key `alice`: no link, connect, export or info on someone else's
    service, no mount of a host path or of another key's directory, no expose, no image of
    her choosing, no attaching to another key's network; and nothing she types reaches a
    shell, a path or the engine unchecked."""
    alice = srv.user_key
    ok(srv.ssh("redis:create", "adm-red"))
    ok(srv.ssh("apps:create", "adm-app"))
    ok(srv.ssh("apps:create", "alice-app", key=alice))

    for verb_args in (("link", "adm-red", "alice-app"), ("connect", "adm-red"),
                      ("export", "adm-red"), ("info", "adm-red", "--dsn"),
                      ("destroy", "adm-red", "--force"), ("unlink", "adm-red", "alice-app"),
                      ("stop", "adm-red"), ("logs", "adm-red")):  # fmt: skip
        result = srv.ssh(f"redis:{verb_args[0]}", *verb_args[1:], key=alice, input="PING\n")
        refused(result, 13, "belongs to another key")
        assert "adm-red" not in result.stdout
    refused(srv.ssh("redis:import", "adm-red", key=alice, input="REDIS"), 13)
    assert "adm-red" not in srv.ssh("redis:list", key=alice).stdout
    assert json.loads(srv.ssh("redis:list", "--format", "json", key=alice).stdout) == []

    # Her own service: she may link it to her app, not to another key's app; not expose it.
    ok(srv.ssh("redis:create", "alice-red", key=alice))
    refused(srv.ssh("redis:link", "alice-red", "adm-app", key=alice), 13)
    ok(srv.ssh("redis:link", "alice-red", "alice-app", "--no-restart", key=alice))
    refused(srv.ssh("redis:expose", "alice-red", key=alice), 13, "Only an admin")
    refused(srv.ssh("redis:create", "evil", "--image", "dockyard-base/busybox:latest",
                    key=alice), 13)  # fmt: skip
    refused(srv.ssh("redis:set", "--global", "image", "x", key=alice), 13)
    assert [s["name"] for s in json.loads(
        srv.ssh("redis:list", "--format", "json", key=alice).stdout)] == ["alice-red"]

    # Hostile words: refused before they reach a name, a path, a URL or the engine.
    for args in (("redis:create", "x;rm -rf /"), ("redis:create", "../../etc"),
                 ("redis:create", "a" * 60), ("redis:link", "alice-red", "alice-app", "-a", "X;Y"),
                 ("redis:link", "alice-red", "alice-app", "-q", "a b"),
                 ("redis:link", "alice-red", "alice-app", "-q", "x\nFOO=bar"),
                 ("redis:info", "alice-red", "--format", "yaml")):  # fmt: skip
        refused(srv.ssh(*args, key=alice))
    assert not [n for n in docker_engine.networks.list() if ";" in n.name or ".." in n.name]

    # Storage: only directories Dockyard made for her, only whole, never a host path.
    ok(srv.ssh("storage:ensure-directory", "adm-dir"))
    ok(srv.ssh("storage:ensure-directory", "alice-dir", key=alice))
    storage = srv.data_dir / "storage"
    for spec, text in (
        ("/etc:/x", "Only directories made by storage:ensure-directory"),
        ("/:/x", "Only directories"),
        (f"{storage}/adm-dir:/x", "belongs to another key"),
        ("adm-dir:/x", "belongs to another key"),
        (f"{storage}/alice-dir/../adm-dir:/x", "Invalid host path"),
        (f"{storage}/alice-dir/sub:/x", "Only directories"),
        (f"{srv.data_dir}/state.db:/x", "Only directories"),
        ("alice-dir:/", "system directory"),
        ("alice-dir:/etc", "system directory"),
        ("alice-dir:/x:rw,z", "Invalid mount"),
        ("alice-dir:/x:/y", "Invalid mount option"),
        ("no-such-dir:/x", "does not exist"),
    ):
        refused(srv.ssh("storage:mount", "alice-app", spec, key=alice), text=text)
    refused(srv.ssh("storage:ensure-directory", "adm-dir", key=alice), 13)
    refused(srv.ssh("storage:mount", "adm-app", "alice-dir:/x", key=alice), 13)
    ok(srv.ssh("storage:mount", "alice-app", "alice-dir:/data", key=alice))
    assert "adm-dir" not in srv.ssh("storage:list-directories", key=alice).stdout

    # A link planted where her directory was does not redirect the mount at the next start.
    repo = busybox_repo(tmp_path, "alice-app", "alice")
    ok(push_as(srv, repo, "alice-app", alice))
    target = storage / "alice-dir"
    os.rename(target, storage / "alice-dir.moved")
    os.symlink("/etc", target)
    try:
        result = srv.ssh("ps:restart", "alice-app", key=alice)
        refused(result, text="is not a plain directory")
    finally:
        target.unlink()
        os.rename(storage / "alice-dir.moved", target)

    # Networks: hers only, never Docker's own or a dotted name, never someone else's.
    ok(srv.ssh("network:create", "adm-net"))
    refused(srv.ssh("network:set", "alice-app", "attach-post-deploy", "adm-net", key=alice), 13)
    refused(srv.ssh("network:destroy", "adm-net", "--force", key=alice), 13)
    for bad in ("bridge", "host", "dockyard.app.adm-app", "a.b"):
        refused(srv.ssh("network:create", bad, key=alice))
    assert srv.ssh("network:list", "--format", "json", key=alice).stdout.strip() == "[]"

    # The admin may expose, on 127.0.0.1 unless told otherwise; the port answers there.
    exposed = srv.ssh("redis:expose", "adm-red")
    ok(exposed)
    port = int(exposed.stdout.strip().rsplit(":", 1)[1])
    assert "127.0.0.1" in exposed.stdout
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(100).startswith(b"-NOAUTH")
    ok(srv.ssh("redis:unexpose", "adm-red"))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    for name in ("adm-red", "alice-red"):
        ok(srv.ssh("redis:destroy", name, "--force"))


def push_as(srv: DockyardServer, repo: Path, app: str, key: Path):
    from tests.deploying import git

    return git(repo, "push", srv.remote(app), "main:main", env=srv.git_env(key), check=False)


def test_only_linked_apps_reach_a_service_and_networks_join_apps(
    srv: DockyardServer, docker_engine, tmp_path: Path
) -> None:
    """Another app's container cannot reach the service, by name or by address; apps on a
    shared `network:create`d network reach each other, and only then."""
    ok(srv.ssh("postgres:create", "iso-pg"))
    for app in ("iso-a", "iso-b"):
        ok(push(srv, app_repo(tmp_path, app), app))
    ok(srv.ssh("postgres:link", "iso-pg", "iso-a"))
    ip = srv.ssh("postgres:info", "iso-pg", "--internal-ip").stdout.strip()
    assert ip
    assert body(srv, "iso-a", "/probe/dokku-postgres-iso-pg/5432") == "open"
    assert body(srv, "iso-a", "/pg/DATABASE_URL/init") == "ok"
    assert body(srv, "iso-b", "/probe/dokku-postgres-iso-pg/5432").startswith("closed")
    assert body(srv, "iso-b", f"/probe/{ip}/5432").startswith("closed")
    # A one-off of the other app is no closer.
    probe = f"import socket; socket.create_connection(('{ip}', 5432), timeout=3)"
    assert srv.ssh("run", "iso-b", "python3", "-c", probe).returncode != 0

    assert body(srv, "iso-a", "/probe/iso-b.web.1/5000").startswith("closed")
    ok(srv.ssh("network:create", "iso-net"))
    for app in ("iso-a", "iso-b"):
        ok(srv.ssh("network:set", app, "attach-post-deploy", "iso-net"))
        ok(srv.ssh("ps:restart", app))
    # By name after a redeploy (the container joined as iso-b.web.1.vN and was renamed), and
    # by the process type's alias, as on Dokku.
    assert body(srv, "iso-a", "/probe/iso-b.web.1/5000") == "open"
    assert body(srv, "iso-a", "/probe/iso-b.web/5000") == "open"
    report = json.loads(srv.ssh("network:report", "iso-a", "--format", "json").stdout)
    assert report["network-attach-post-deploy"] == ["iso-net"]
    info = json.loads(srv.ssh("network:info", "iso-net", "--format", "json").stdout)
    assert info["attached-apps"] == ["iso-a", "iso-b"]
    refused(srv.ssh("network:destroy", "iso-net"), text="--force")
    ok(srv.ssh("network:destroy", "iso-net", "--force"))
    assert not docker_engine.networks.list(names=["iso-net"])

    # apps:destroy unlinks; the service stays, unlinked.
    ok(srv.ssh("apps:destroy", "iso-a", "--force"))
    assert srv.ssh("postgres:links", "iso-pg").stdout.strip() == ""
    ok(srv.ssh("postgres:destroy", "iso-pg", "--force"))
    assert not docker_engine.networks.list(names=["dockyard.svc.postgres.iso-pg"])


def test_a_removed_key_gives_up_its_services_directories_and_networks(tmp_path: Path) -> None:
    import dockyard.cli  # noqa: F401  (every stage registers its tables and hooks)
    from deployer.network import NetworkStore
    from deployer.storage import StorageStore
    from dockyard.services import Services
    from dockyard.settings import Settings
    from services.base import ServiceStore
    from services.kinds import KINDS

    dockyard.cli._load_stages()
    services = Services(Settings(data_dir=tmp_path / "data"))
    ServiceStore(services.state).create(KINDS["redis"], "cache", "alice", "redis:7")
    StorageStore(services).add_dir("files", "alice")
    NetworkStore(services).add("net", "alice")
    services.forget_key("alice")
    assert ServiceStore(services.state).find("redis", "cache").owner == "removed:alice"
    assert StorageStore(services).dir_owner("files") == "removed:alice"
    assert NetworkStore(services).find("net")["owner"] == "removed:alice"


def test_archive_extraction_stays_inside(tmp_path: Path) -> None:
    """A storage archive that plants a link and then writes through it, or names a path
    outside, is refused; ownership of plain files is kept."""
    import io
    import tarfile

    from dockyard.commands.backup import extract_checked
    from dockyard.errors import DockyardError

    def archive(*members: tuple[str, str, bytes]) -> tarfile.TarFile:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            for name, kind, data in members:
                info = tarfile.TarInfo(name)
                if kind == "sym":
                    info.type, info.linkname = tarfile.SYMTYPE, data.decode()
                    t.addfile(info)
                elif kind == "dev":
                    info.type = tarfile.CHRTYPE
                    t.addfile(info)
                else:
                    info.size, info.uid, info.mode = len(data), 4321, 0o4755
                    t.addfile(info, io.BytesIO(data))
        buf.seek(0)
        return tarfile.open(fileobj=buf)

    outside = tmp_path / "outside"
    outside.mkdir()
    for members in (
        [("escape", "sym", str(outside).encode()), ("escape/pwned", "file", b"x")],
        [("../pwned", "file", b"x")],
        [("/tmp/pwned", "file", b"x")],
        [("null", "dev", b"")],
    ):
        dest = tmp_path / f"dest{len(list(tmp_path.iterdir()))}"
        dest.mkdir()
        with pytest.raises(DockyardError):
            extract_checked(archive(*members), dest, links=True)
    assert list(outside.iterdir()) == []
    dest = tmp_path / "ok"
    dest.mkdir()
    extract_checked(archive(("a/b.txt", "file", b"hi"), ("l", "sym", b"a/b.txt")), dest,
                    links=True)  # fmt: skip
    assert (dest / "l").read_text() == "hi"
    assert (dest / "a" / "b.txt").stat().st_uid == 4321
    assert not (dest / "a" / "b.txt").stat().st_mode & 0o4000


def test_mysql_and_terminal_connect_and_missing_images(
    srv: DockyardServer, docker_engine, tmp_path: Path
) -> None:
    """MySQL/MariaDB through the same commands; `ssh -t … connect` gets the client on a
    terminal; an image that cannot be pulled is refused clearly and leaves nothing behind."""
    ok(srv.ssh("mysql:create", "my-db"))
    ok(srv.ssh("apps:create", "my-app"))
    ok(srv.ssh("mysql:link", "my-db", "my-app", "--no-restart", "-a", "primary"))
    url = srv.ssh("config:get", "my-app", "PRIMARY_URL").stdout.strip()
    assert url == srv.ssh("mysql:info", "my-db", "--dsn").stdout.strip()
    assert url.startswith("mysql://mysql:") and url.endswith("@dokku-mysql-my-db:3306/my_db")
    sql = "CREATE TABLE t (v varchar(10)); INSERT INTO t VALUES ('kept'); SELECT v FROM t;\n"
    result = srv.ssh("mysql:connect", "my-db", input=sql)
    assert result.returncode == 0 and "kept" in result.stdout, result
    dump = subprocess.run([*srv.ssh_args(srv.admin_key), "mysql:export my-db"],
                          capture_output=True, timeout=60).stdout  # fmt: skip
    assert b"INSERT INTO `t`" in dump
    ok(srv.ssh("mysql:connect", "my-db", input="DROP TABLE t;\n"))
    ok(srv.ssh("mysql:import", "my-db", input=dump))
    assert "kept" in srv.ssh("mysql:connect", "my-db", input="SELECT v FROM t;\n").stdout

    # On a terminal (ssh -t) the client is interactive: psql's prompt, its answer, its exit.
    ok(srv.ssh("postgres:create", "tty-pg"))
    interactive = subprocess.run(
        [*srv.ssh_args(srv.admin_key, "-tt"), "postgres:connect tty-pg"],
        input=b"SELECT 6 * 7 AS answer;\n\\q\n", capture_output=True, timeout=60,
    )  # fmt: skip
    assert interactive.returncode == 0, interactive
    assert b"tty_pg=#" in interactive.stdout and b"42" in interactive.stdout, interactive
    ok(srv.ssh("postgres:destroy", "tty-pg", "--force"))
    ok(srv.ssh("redis:create", "tty-red"))
    refused(srv.ssh("redis:logs", "no-such"), 20, "does not exist")
    assert "Ready to accept connections" in srv.ssh("redis:logs", "tty-red").stdout

    missing = srv.ssh("postgres:create", "pull-test", "--image", "dockyard-test/none:1")
    refused(missing, text="Cannot pull image dockyard-test/none:1")
    assert "scripts/build-service-images.sh" in missing.stderr
    assert "pull-test" not in srv.ssh("postgres:list").stdout
    assert not docker_engine.networks.list(names=["dockyard.svc.postgres.pull-test"])
    for args in (("mysql:destroy", "my-db", "-f"), ("redis:destroy", "tty-red", "-f")):
        ok(srv.ssh(*args))
    assert srv.ssh("config:get", "my-app", "PRIMARY_URL").returncode == 1
