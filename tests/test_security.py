"""A hostile tenant, class by class (issue 10): each test is written as the attack — the
non-admin key `alice` against the admin's app `victim` — and asserts the refusal and that
nothing was lost or changed. Real server, real OpenSSH client, real git, real engine.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import asyncssh
import pytest

from dockyard.output import ERROR
from dockyard.services import Services
from dockyard.settings import Settings
from proxy.router import GLOBAL_DOMAIN
from tests.conftest import DockyardServer, make_key
from tests.deploying import busybox_repo, commit, containers, get, make_repo, ok, push
from tests.test_hostile import Snapshot

VICTIM = "victim"
ATTACKER_APP = "mallory-app"


@pytest.fixture(scope="module")
def srv(shared_server: DockyardServer, docker_engine, tmp_path_factory) -> DockyardServer:  # noqa: ANN001
    """The admin's `victim` (deployed, with a custom domain) and alice's own app."""
    tmp = tmp_path_factory.mktemp("security")
    ok(push(shared_server, busybox_repo(tmp, VICTIM, "victim-secret-page"), VICTIM))
    ok(shared_server.ssh("domains:add", VICTIM, "shop.example.com"))
    ok(shared_server.ssh("config:set", "--no-restart", VICTIM, "KEEP=me"))
    ok(shared_server.ssh("apps:create", ATTACKER_APP, key=shared_server.user_key))
    return shared_server


def as_alice(srv: DockyardServer, *words: str, input: str | None = None):  # noqa: ANN201
    return srv.ssh(*words, key=srv.user_key, input=input)


def refused_with(result, *needles: str) -> None:  # noqa: ANN001
    assert result.returncode != 0, result
    assert ERROR in result.stderr and "internal error" not in result.stderr, result.stderr
    assert any(n in result.stderr for n in needles), result.stderr


class VictimSnapshot(Snapshot):
    """Everything but the attacker's own build history (a refused build is recorded as its
    failed build)."""

    def __init__(self, srv: DockyardServer) -> None:
        super().__init__(srv)
        self.tables.pop("builds", None)

    def assert_unchanged(self, srv: DockyardServer) -> None:
        after = VictimSnapshot(srv)
        assert after.tables == self.tables
        assert after.refs[f"{VICTIM}.git"] == self.refs[f"{VICTIM}.git"]
        victim_serves(srv)


def victim_serves(srv: DockyardServer) -> None:
    assert get(srv, VICTIM) == (200, "victim-secret-page\n")


# --- 1. keys: one line stays one line, and options mean what OpenSSH says -----------------


@pytest.mark.parametrize("separator", ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85",
                                       "\u2028", "\u2029", "\x00"])  # fmt: skip
def test_a_handed_over_key_cannot_smuggle_a_second_line(
    srv: DockyardServer, tmp_path: Path, separator: str
) -> None:
    evil = make_key(tmp_path, "evil")
    good = make_key(tmp_path, "given")
    payload = (
        good.with_suffix(".pub").read_text().strip()
        + separator
        + 'environment="DOCKYARD_KEY=root2",environment="DOCKYARD_ROLE=admin" '
        + evil.with_suffix(".pub").read_text().strip()
    )
    before = (srv.data_dir / "authorized_keys").read_text()
    if separator != "\x00":  # execve refuses NUL in an argument; SSH carries it on stdin
        path = tmp_path / "handed-over.pub"
        path.write_text(payload)
        refused_with(srv.cli("ssh-keys:add", "given", str(path)), "Invalid ssh public key")
    refused_with(srv.ssh("ssh-keys:add", "given", input=payload), "Invalid ssh public key")
    assert (srv.data_dir / "authorized_keys").read_text() == before
    assert "root2" not in srv.ssh("ssh-keys:list").stdout


def test_a_stored_key_line_is_dockyards_own(srv: DockyardServer, tmp_path: Path) -> None:
    key = make_key(tmp_path, "carol")
    text = key.with_suffix(".pub").read_text().strip() + " some comment with DOCKYARD_ROLE=admin"
    ok(srv.ssh("ssh-keys:add", "carol", input=text))
    try:
        line = next(
            line for line in (srv.data_dir / "authorized_keys").read_text().splitlines()
            if "DOCKYARD_KEY=carol" in line
        )  # fmt: skip
        assert line.endswith(" carol") and "comment" not in line
        assert line.split()[1:3] == text.split()[:2]
    finally:
        ok(srv.ssh("ssh-keys:remove", "carol"))


def write_line(srv: DockyardServer, line: str) -> str:
    path = srv.data_dir / "authorized_keys"
    before = path.read_text()
    path.write_text(before + line + "\n")
    return before


@pytest.mark.parametrize(
    ("options", "logs_in"),
    [
        ('from="127.0.0.1"', True),
        ('from="10.0.0.0/8"', False),
        ('from="127.0.0.0/8,!127.0.0.1"', False),
        ('expiry-time="20000101"', False),
        ('expiry-time="29991231Z"', True),
        ('command="apps:list"', False),  # cannot be honoured: the whole line is refused
        ('environment="LD_PRELOAD=/tmp/x"', False),
        ("cert-authority", False),
    ],
)
def test_authorized_keys_options_are_honoured_or_the_line_refused(
    srv: DockyardServer, tmp_path: Path, options: str, logs_in: bool
) -> None:
    key = make_key(tmp_path, "handmade")
    before = write_line(srv, f"{options} {key.with_suffix('.pub').read_text().strip()}")
    try:
        result = srv.ssh("version", key=key)
        assert (result.returncode == 0) == logs_in, (options, result)
    finally:
        (srv.data_dir / "authorized_keys").write_text(before)


def test_restrict_and_no_pty_refuse_a_terminal(srv: DockyardServer, tmp_path: Path) -> None:
    key = make_key(tmp_path, "nopty")
    before = write_line(srv, f"restrict {key.with_suffix('.pub').read_text().strip()}")
    try:
        plain = srv.ssh("version", key=key)
        assert plain.returncode == 0
        tty = subprocess.run(
            [*srv.ssh_args(key, "-tt"), "version"], capture_output=True, timeout=30,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert tty.returncode != 0 and b"may not open a terminal" in tty.stdout + tty.stderr
    finally:
        (srv.data_dir / "authorized_keys").write_text(before)


# --- 2. builds: no way of naming another app's image works ---------------------------------


def victim_image(srv: DockyardServer) -> tuple[str, str]:
    import docker

    release = json.loads(srv.ssh("releases", VICTIM, "--format", "json").stdout)[0]
    image = docker.from_env().images.get(release["image"])
    return release["image"], image.id


HOSTILE_DOCKERFILES = {
    # The builder scopes ARGs: FROM sees the global IMG (the victim), not the stage's.
    "arg-scoping": "ARG IMG={victim}\nFROM dockyard-base/busybox:latest AS a\n"
    "ARG IMG=dockyard-base/busybox:latest\nFROM $IMG\n",
    "build-arg": "ARG IMG=dockyard-base/busybox:latest\nFROM $IMG\n",
    "copy-from": "FROM dockyard-base/busybox:latest\nCOPY --from={victim} /www /stolen\n",
    "copy-from-env": "FROM dockyard-base/busybox:latest\nENV SRC={victim}\n"
    "COPY --from=$SRC /www /stolen\n",
    "stage-alias": "FROM {victim} AS base\nFROM dockyard-base/busybox:latest\n"
    "COPY --from=base /www /stolen\n",
    "image-id": "FROM {victim_id}\n",
    "id-prefix": "FROM {victim_short}\n",
    "registry-prefix": "FROM docker.io/{victim}\n",
    "onbuild": "FROM dockyard-base/busybox:latest\nONBUILD COPY --from={victim} /www /x\n",
    "mount-from": "FROM dockyard-base/busybox:latest\n"
    "RUN --mount=type=bind,from={victim},target=/v cat /v/www/index.html\n",
}


@pytest.mark.parametrize("way", sorted(HOSTILE_DOCKERFILES))
def test_a_dockerfile_cannot_build_from_another_apps_image(
    srv: DockyardServer, tmp_path: Path, way: str
) -> None:
    tag, image_id = victim_image(srv)
    dockerfile = HOSTILE_DOCKERFILES[way].format(
        victim=tag, victim_id=image_id, victim_short=image_id[7:19]
    )
    app = f"thief-{way}"
    ok(as_alice(srv, "apps:create", app))
    if way == "build-arg":
        ok(as_alice(srv, "builder:set", app, "build-arg", f"IMG={tag}"))
    before = VictimSnapshot(srv)
    repo = make_repo(tmp_path / app, {"Dockerfile": dockerfile, "www/index.html": "mine\n"})
    result = push(srv, repo, app)
    assert result.returncode != 0 and "[remote rejected]" in result.stderr, result.stderr
    assert any(
        n in result.stderr for n in ("another app's image", "not an image name", "with a variable")
    ), result.stderr
    assert "victim-secret-page" not in result.stderr
    before.assert_unchanged(srv)
    victim_serves(srv)
    assert containers(None, app, srv=srv) == []


def test_builds_cannot_reach_the_hosts_own_services(srv: DockyardServer, tmp_path: Path) -> None:
    """A service listening on every address of the host: the default bridge reaches it (so
    the test is meaningful), a build does not."""
    import docker

    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    threading.Thread(target=lambda: [listener.accept()[0].close() for _ in range(8)],
                     daemon=True).start()  # fmt: skip
    client = docker.from_env()
    try:
        gateway = client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"]
        probe = f"timeout 3 nc {gateway} {port} </dev/null && echo REACHED || echo fenced"
        control = client.containers.run(
            "dockyard-base/busybox:latest", ["sh", "-c", probe], remove=True
        ).decode()
        assert "REACHED" in control
        dockerfile = f'FROM dockyard-base/busybox:latest\nRUN sh -c "{probe}"\nCMD ["true"]\n'
        repo = make_repo(tmp_path / "prober", {"Dockerfile": dockerfile})
        result = push(srv, repo, "prober")
        said = [line.removeprefix("remote:").strip() for line in result.stderr.splitlines()]
        assert "fenced" in said and "REACHED" not in said, result.stderr
    finally:
        listener.close()


# --- 3. hostnames: one hostname, one app --------------------------------------------------


@pytest.mark.parametrize(
    "domain",
    ["victim.localhost", "future-app.localhost", "localhost", "*.example.com",
     "shop.example.com", "*.shop.example.com", "login.shop.example.com",
     "www.victim.localhost", "www.future-app.localhost", "127.0.0.1", "10.0.0.1"],
)  # fmt: skip
def test_no_app_takes_another_apps_hostnames(srv: DockyardServer, domain: str) -> None:
    before = Snapshot(srv)
    for command in ("domains:add", "domains:set"):
        refused_with(
            as_alice(srv, command, ATTACKER_APP, domain),
            "already used by app",
            "is the address of app",
            "is under",
            "Only an admin key",
        )
    before.assert_unchanged(srv)
    victim_serves(srv)


def test_names_under_an_apps_own_address_are_its_own(srv: DockyardServer) -> None:
    ok(as_alice(srv, "domains:add", ATTACKER_APP, f"www.{ATTACKER_APP}.localhost"))
    ok(as_alice(srv, "domains:remove", ATTACKER_APP, f"www.{ATTACKER_APP}.localhost"))


def test_one_key_cannot_fill_the_server_with_apps_or_domains(
    srv: DockyardServer, tmp_path: Path
) -> None:
    many = [f"d{i}.mallory.example" for i in range(101)]
    before = Snapshot(srv)
    refused_with(as_alice(srv, "domains:add", ATTACKER_APP, *many), "at most 100")
    before.assert_unchanged(srv)
    owned = json.loads(as_alice(srv, "apps:list", "--format", "json").stdout)
    ok(srv.ssh("apps:set", "--global", "max-per-key", str(len(owned))))
    try:
        refused_with(as_alice(srv, "apps:create", "one-too-many"), "most one key may own")
        repo = busybox_repo(tmp_path, "one-too-many", "x")
        pushed = subprocess.run(
            ["git", "-C", str(repo), "push", srv.remote("one-too-many"), "main:main"],
            env=srv.git_env(srv.user_key), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert pushed.returncode != 0 and "most one key may own" in pushed.stderr, pushed.stderr
        ok(srv.ssh("apps:create", "admins-are-not-counted"))
        ok(srv.ssh("apps:destroy", "admins-are-not-counted", "--force"))
    finally:
        ok(srv.ssh("apps:set", "--global", "max-per-key"))
    assert "one-too-many" not in json.loads(srv.ssh("apps:list", "--format", "json").stdout)


def test_wildcards_over_apps_are_refused_even_for_admins(srv: DockyardServer) -> None:
    refused_with(srv.ssh("domains:add", ATTACKER_APP, "*.example.com"), "already used by app")


def test_an_app_name_or_global_domain_that_lands_on_a_domain_is_refused(
    srv: DockyardServer,
) -> None:
    ok(srv.ssh("domains:add", VICTIM, "blog.test-two.example", "shopx.test-two.example"))
    ok(srv.ssh("apps:create", "blog"))
    props = Services(Settings(data_dir=srv.data_dir)).properties
    try:
        # Under global domain test-two.example, app `blog` would answer at victim's domain.
        refused_with(srv.ssh("domains:set-global", "test-two.example"), "victim's domain")
        # As if the global domain had been set before that rule existed: no new app may
        # take a name whose address is victim's domain.
        props.set(None, GLOBAL_DOMAIN, "test-two.example")
        refused_with(as_alice(srv, "apps:create", "shopx"), "not available")
        refused_with(as_alice(srv, "apps:rename", ATTACKER_APP, "shopx"), "not available")
    finally:
        props.set(None, GLOBAL_DOMAIN, "")
        ok(srv.ssh("apps:destroy", "blog", "--force"))
        ok(srv.ssh("domains:remove", VICTIM, "blog.test-two.example", "shopx.test-two.example"))


# --- 4. fairness: one connection cannot starve everyone ----------------------------------


def test_a_session_flood_on_one_connection_cannot_starve_the_admin(srv: DockyardServer) -> None:
    import asyncio

    async def flood() -> tuple[int, int, float]:
        async with asyncssh.connect(
            "127.0.0.1", srv.port, username="alice", client_keys=[str(srv.user_key)],
            known_hosts=None,
        ) as conn:  # fmt: skip
            # Each waits on stdin that never comes: `certs:add APP` reads a tar from it.
            procs = []
            for _ in range(40):
                try:
                    procs.append(await conn.create_process(f"certs:add {ATTACKER_APP}"))
                except asyncssh.ChannelOpenError:
                    break
            await asyncio.sleep(1.0)
            refused = sum(1 for p in procs if p.exit_status not in (None,))
            started = time.monotonic()
            admin = await asyncio.to_thread(srv.ssh, "apps:list")
            waited = time.monotonic() - started
            assert admin.returncode == 0 and VICTIM in admin.stdout
            for p in procs:
                p.close()
            return len(procs), refused, waited

    opened, refused, waited = asyncio.run(flood())
    assert opened == 40 and refused >= 30  # at most 10 at once on one connection
    assert waited < 10, f"the admin's command waited {waited:.1f}s"


# --- 5. networks: apps reach each other only through the proxy ------------------------------


def test_one_app_cannot_reach_anothers_containers(srv: DockyardServer, tmp_path: Path) -> None:
    ok(push(srv, busybox_repo(tmp_path, "neighbour", "neighbour-page"), "neighbour"))
    victim = containers(None, VICTIM, srv=srv)[0]
    victim.reload()
    address = next(iter(victim.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    probe = f"timeout 3 wget -q -O- http://{address}:5000/ || echo unreachable"
    own = srv.ssh("run", VICTIM, "sh", "-c", probe)  # the app itself does reach it
    assert "victim-secret-page" in own.stdout, own
    other = srv.ssh("run", "neighbour", "sh", "-c", probe)
    assert "unreachable" in other.stdout and "victim-secret-page" not in other.stdout, other


# --- 6. limits: run gets the app's limits; pids are capped; one-offs are counted ----------


def test_run_gets_the_apps_limits_and_a_fork_bomb_hits_the_pids_cap(srv: DockyardServer) -> None:
    app = "limited"
    ok(srv.ssh("apps:create", app))
    repo = busybox_repo(srv.data_dir.parent / "limited-work", app, "limited")
    ok(push(srv, repo, app))
    ok(srv.ssh("resource:limit", app, "--memory", "64m", "--pids", "40"))
    memory = srv.ssh("run", app, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert memory.stdout.strip() == str(64 * 1024 * 1024), memory
    bomb = srv.ssh(
        "run", app, "sh", "-c", "i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done"
    )
    assert "can't fork" in bomb.stderr, bomb
    ok(srv.ssh("resource:set", "--global", "max-one-offs", "1"))
    try:
        holder = subprocess.Popen(
            [*srv.ssh_args(srv.admin_key), f"run {app} sleep 20"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            second = srv.ssh("run", app, "true")
            if second.returncode != 0:
                break
            time.sleep(0.3)
        refused_with(second, "one-off containers")
        holder.kill()
        holder.wait()
    finally:
        ok(srv.ssh("resource:set", "--global", "max-one-offs"))


# --- 8. settings: NaN and nonsense never get stored -----------------------------------------


@pytest.mark.parametrize(
    "words",
    [
        ("resource:limit", ATTACKER_APP, "--cpu", "nan"),
        ("resource:limit", ATTACKER_APP, "--cpu", "1e-12"),
        ("resource:limit", ATTACKER_APP, "--cpu", "inf"),
        ("resource:limit", ATTACKER_APP, "--memory=-1m"),
        ("resource:limit", ATTACKER_APP, "--pids", "0"),
        ("checks:set", ATTACKER_APP, "wait-to-retire", "nan"),
        ("checks:set", ATTACKER_APP, "wait-to-retire", "1e9"),
        ("ps:set", ATTACKER_APP, "restart-policy", "on-failure:x"),
        ("builder:set", ATTACKER_APP, "keep-releases", "0x10"),
        ("proxy:set", ATTACKER_APP, "hsts-max-age", "-5"),
        ("resource:limit", ATTACKER_APP, "--pids", "100000"),
        ("proxy:set", ATTACKER_APP, "client-max-body-size", "0"),
        ("proxy:set", ATTACKER_APP, "client-max-body-size", "50g"),
        ("ps:scale", ATTACKER_APP, "web=101"),
        ("ps:scale", ATTACKER_APP, "web=²"),
        ("builds:output", ATTACKER_APP, "²"),
        ("ps:scale", ATTACKER_APP, "web=" + "9" * 40),
        ("logs", ATTACKER_APP, "-n", "²"),
        ("logs", ATTACKER_APP, "-n", "9" * 40),
    ],
)
def test_numeric_settings_are_parsed_strictly(srv: DockyardServer, words: tuple[str, ...]) -> None:
    before = Snapshot(srv)
    refused_with(as_alice(srv, *words), "takes", "is one of", "Invalid", "invalid", "Only an admin")
    before.assert_unchanged(srv)


def test_app_reports_keep_server_wide_settings_from_tenants(srv: DockyardServer) -> None:
    ok(srv.ssh("git:set", "--global", "submodule-private-hosts", "git.internal.example"))
    try:
        as_admin = srv.ssh("git:report", ATTACKER_APP)
        assert "git.internal.example" in as_admin.stdout, as_admin
        tenant = as_alice(srv, "git:report", ATTACKER_APP, "--format", "json")
        ok(tenant)
        seen = tenant.stdout
        assert "git.internal.example" not in seen and "private" not in seen.lower(), seen
    finally:
        ok(srv.ssh("git:set", "--global", "submodule-private-hosts"))


def test_a_directory_nobody_made_is_not_taken_over(srv: DockyardServer) -> None:
    stray = srv.data_dir / "storage" / "left-by-hand"
    stray.mkdir(parents=True)
    (stray / "secret.txt").write_text("admin's")
    try:
        refused_with(as_alice(srv, "storage:ensure-directory", "left-by-hand"), "only an admin")
        refused_with(
            as_alice(srv, "storage:mount", ATTACKER_APP, f"{stray}:/stolen"), "storage:ensure"
        )
        assert (stray / "secret.txt").read_text() == "admin's"
    finally:
        shutil.rmtree(stray)


def test_a_dockerfile_cannot_swallow_the_owner_labels(srv: DockyardServer, tmp_path: Path) -> None:
    """A last line ending in `\\` would join Dockyard's LABEL step to the user's own, whose
    labels could then name another app."""
    app = "label-forger"
    ok(as_alice(srv, "apps:create", app))
    dockerfile = (
        f'FROM dockyard-base/busybox:latest\nLABEL dockyard.app="{VICTIM}" \\\n  x="y" \\\n'
    )
    repo = make_repo(tmp_path / app, {"Dockerfile": dockerfile})
    result = push(srv, repo, app)
    assert result.returncode != 0 and "ends in a continuation" in result.stderr, result.stderr
    import docker

    labelled = docker.from_env().images.list(filters={"label": f"dockyard.app={VICTIM}"})
    assert all(f"dockyard/{VICTIM}:" in " ".join(i.tags) for i in labelled if i.tags)
    ok(as_alice(srv, "apps:destroy", app, "--force"))


# --- 9. images: labelled, and destroy removes them ---------------------------------------


def test_images_carry_their_home_and_app_and_go_with_the_app(
    srv: DockyardServer, tmp_path: Path
) -> None:
    import docker

    client = docker.from_env()
    app = "ephemeral"
    repo = busybox_repo(tmp_path, app, "short-lived")
    ok(push(srv, repo, app))
    ok(push(srv, commit(repo, {"www/index.html": "v2\n"}, "v2"), app))
    mine = client.images.list(filters={"label": [f"dockyard.app={app}"]})
    assert mine and all(i.labels["dockyard.home"] == str(srv.data_dir) for i in mine)
    ok(srv.ssh("apps:destroy", app, "--force"))
    assert client.images.list(filters={"label": [f"dockyard.app={app}"]}) == []
    victim_serves(srv)


# --- 7. memory: a small push cannot stand for a huge object ------------------------------


def high_water_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_compressed_giant_is_refused_before_it_is_inflated(
    srv: DockyardServer, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "bomb", {"README": "small\n"})
    with open(repo / "zeros.bin", "wb") as f:
        f.truncate(300 * 1024 * 1024)  # 300 MB of zeros: a few hundred KB once compressed
    from tests.deploying import git

    git(repo, "add", "zeros.bin")
    git(repo, "commit", "-q", "-m", "bomb")
    ok(srv.ssh("git:set", "--global", "max-object-size", "20M"))
    try:
        before = high_water_kb(srv.process.pid)
        result = subprocess.run(
            ["git", "-C", str(repo), "push", srv.remote(ATTACKER_APP), "HEAD:refs/heads/other"],
            env=srv.git_env(srv.user_key), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode != 0
        assert "larger than the maximum object size" in result.stderr, result.stderr
        assert high_water_kb(srv.process.pid) - before < 60 * 1024  # never near 300 MB
    finally:
        ok(srv.ssh("git:set", "--global", "max-object-size"))


def test_a_delta_that_claims_a_huge_result_is_refused() -> None:
    import dulwich.pack

    from gitrecv.objectsize import ObjectTooLarge, object_size_limit

    # base size 1, result size 2**40: a few bytes standing for a terabyte.
    delta = bytes([0x01]) + bytes([0x80, 0x80, 0x80, 0x80, 0x80, 0x20]) + b"\x91\x00\x01"
    with object_size_limit(1024), pytest.raises(ObjectTooLarge):
        dulwich.pack.apply_delta(b"x", delta)


def test_logged_in_connections_of_one_key_are_capped(srv: DockyardServer) -> None:
    import asyncio

    async def flood() -> tuple[int, int]:
        kept, refused = [], 0
        for _ in range(40):
            try:
                conn = await asyncssh.connect(
                    "127.0.0.1", srv.port, username="alice", client_keys=[str(srv.user_key)],
                    known_hosts=None,
                )  # fmt: skip
                await conn.run("version", check=True)
                kept.append(conn)
            except (asyncssh.Error, OSError):
                refused += 1
        admin = await asyncio.to_thread(srv.ssh, "version")
        assert admin.returncode == 0, admin
        for conn in kept:
            conn.close()
        return len(kept), refused

    kept, refused = asyncio.run(flood())
    assert kept == 32 and refused == 8
