"""gitrecv's parts on their own: repo names, sizes, the Source, progress lines, pack reuse."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest
from dulwich.repo import Repo

from dockyard.errors import UsageError
from gitrecv.fetchspec import (
    BlobLimit,
    BlobNone,
    Combined,
    ObjectType,
    RequestError,
    TreeDepth,
    deepen_not_candidates,
    parse_depth,
    parse_filter,
    parse_since,
    protocol_version,
)
from gitrecv.objectwalk import (
    CommitGraph,
    ObjectListCache,
    ShallowRequest,
    compute_shallow,
    list_objects,
)
from gitrecv.packed import BLOB, TREE, PackedObjects
from gitrecv.pktline import Marker, PktLineReader, SidebandSink
from gitrecv.properties import format_size, parse_size
from gitrecv.receive import ProgressChannel, PushTooLarge, SizeLimitedReader
from gitrecv.repos import app_name_from_repo_path
from gitrecv.source import GitSource
from gitrecv.upload import write_pack
from sshd.session import client_env

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "T",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "T",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def git(cwd: Path, *args: str, input: bytes | None = None) -> bytes:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, input=input, capture_output=True, check=True
    ).stdout


@pytest.mark.parametrize(
    "path", ["app", "/app", "app.git", "/app.git", "~/app.git", "//app.git", " app "]
)
def test_repo_path_forms_name_the_app(path: str) -> None:
    assert app_name_from_repo_path(path) == "app"


@pytest.mark.parametrize("path", ["../app", "a/b", "/srv/app.git", "App", "", ".git", "a b"])
def test_repo_paths_that_are_not_app_names_are_refused(path: str) -> None:
    with pytest.raises(UsageError):
        app_name_from_repo_path(path)


def test_sizes() -> None:
    assert parse_size("1048576") == 1024**2
    assert parse_size("512K") == 512 * 1024
    assert parse_size("100m") == 100 * 1024**2
    assert parse_size("2GiB") == 2 * 1024**3
    assert format_size(parse_size("100M")) == "100M"
    assert format_size(1500) == "1500"
    for bad in ("", "0", "-1", "12Q", "1.5G"):
        with pytest.raises(UsageError):
            parse_size(bad)


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    path = tmp_path / "w"
    git(tmp_path, "init", "-q", "-b", "main", str(path))
    (path / "dir" / "deep").mkdir(parents=True)
    (path / "dir" / "deep" / "file.txt").write_text("deep\n")
    (path / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (path / "run.sh").chmod(0o755)
    (path / "README").write_bytes(os.urandom(3000))
    os.symlink("dir/deep/file.txt", path / "link")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "one")
    return path


def test_source_reads_files_and_streams_a_faithful_tar(worktree: Path) -> None:
    revision = git(worktree, "rev-parse", "HEAD").decode().strip()
    repo = Repo(str(worktree))
    source = GitSource(repo, revision)
    assert source.revision == revision
    assert source.read_file("dir/deep/file.txt") == b"deep\n"
    assert source.read_file("/run.sh") == b"#!/bin/sh\necho hi\n"
    assert source.read_file("dir") is None
    assert source.read_file("missing") is None
    assert source.read_file("link") is None

    out = io.BytesIO()
    source.write_tar(out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"dir", "dir/deep", "dir/deep/file.txt", "run.sh", "README", "link"}
        assert members["dir"].isdir()
        assert members["run.sh"].mode == 0o755 and members["README"].mode == 0o644
        assert members["link"].issym() and members["link"].linkname == "dir/deep/file.txt"
        extracted = tar.extractfile("README")
        assert extracted is not None
        assert extracted.read() == (worktree / "README").read_bytes()


def test_progress_channel_sends_each_line_when_it_is_complete() -> None:
    sent: list[bytes] = []
    channel = ProgressChannel(sent.append)
    channel.write(b"one\ntw")
    assert sent == [b"one\n"]
    channel.write(b"o\nthree")
    assert sent == [b"one\n", b"two\n"]
    channel.flush()
    assert sent[-1] == b"three"


def test_progress_channel_drops_output_once_the_client_is_gone() -> None:
    from dockyard.bridge import ChannelClosed

    def closed(_: bytes) -> None:
        raise ChannelClosed("gone")

    channel = ProgressChannel(closed)
    channel.write(b"still deploying\n")  # must not raise: the deploy goes on
    assert channel.detached


def test_progress_reaches_the_sender_while_the_writer_is_still_working() -> None:
    arrivals: list[tuple[bytes, float]] = []
    channel = ProgressChannel(lambda data: arrivals.append((data, time.monotonic())))

    def pipeline() -> None:
        channel.write(b"-----> first\n")
        time.sleep(0.3)
        channel.write(b"-----> second\n")

    worker = threading.Thread(target=pipeline)
    worker.start()
    time.sleep(0.1)
    assert [data for data, _ in arrivals] == [b"-----> first\n"]
    worker.join()
    assert arrivals[1][1] - arrivals[0][1] >= 0.25


def test_size_limited_reader_counts_every_byte() -> None:
    stream = io.BytesIO(b"x" * 100)
    reader = SizeLimitedReader(stream.read, stream.read, limit=60)
    assert reader.read(50) == b"x" * 50
    with pytest.raises(PushTooLarge):
        reader.recv(20)


def _history(worktree: Path) -> Repo:
    """Several packs (deltas inside them) plus loose objects and an annotated tag."""
    for i in range(6):
        (worktree / "README").write_bytes((worktree / "README").read_bytes() + b"more %d\n" % i)
        git(worktree, "commit", "-q", "-am", f"c{i}")
        if i % 2:
            git(worktree, "repack", "-dq")  # a new pack with what is loose so far
    git(worktree, "tag", "-a", "-m", "t", "v1")
    return Repo(str(worktree))


def _index_pack(tmp_path: Path, data: bytes, *extra: str) -> str:
    target = tmp_path / f"target{len(list(tmp_path.glob('target*')))}.git"
    git(tmp_path, "init", "-q", "--bare", str(target))
    git(target, "index-pack", "--stdin", "--strict", *extra, input=data)
    return git(target, "count-objects", "-v").decode()


def test_reused_pack_is_valid_and_complete(worktree: Path, tmp_path: Path) -> None:
    repo = _history(worktree)
    assert len(list(repo.object_store.packs)) >= 2
    wants = [repo.refs[b"refs/heads/main"], repo.refs[b"refs/tags/v1"]]
    with PackedObjects(repo.object_store) as objects:
        graph = CommitGraph(objects)
        shallow = compute_shallow(graph, wants, ShallowRequest())
        oids = list_objects(objects, graph, wants, (), shallow, None).objects
        listed = git(worktree, "rev-list", "--objects", "--all").decode().splitlines()
        assert {o.decode() for o in oids} == {line.split()[0] for line in listed}
        out = io.BytesIO()
        assert write_pack(out.write, objects, oids) == len(oids)
    assert f"in-pack: {len(oids)}" in _index_pack(tmp_path, out.getvalue())


def test_subset_packs_move_deltas_and_thin_packs_name_their_bases(
    worktree: Path, tmp_path: Path
) -> None:
    """A fetch sends part of a pack: OFS_DELTA distances change, and deltas against what
    the client has become REF_DELTAs (thin) or whole objects (not thin). fast-import stores
    each new version of a file as a delta on the previous one, as a push's pack does."""
    from bench.make_repo import fast_import_stream

    del worktree
    worktree = tmp_path / "imported"
    git(tmp_path, "init", "-q", "-b", "main", str(worktree))
    git(worktree, "-c", "fastimport.unpackLimit=0", "fast-import", "--quiet",
        input=fast_import_stream(10, 200))  # fmt: skip
    repo = Repo(str(worktree))
    head = repo.refs[b"refs/heads/main"]
    old = git(worktree, "rev-parse", "HEAD~4").decode().strip().encode()
    with PackedObjects(repo.object_store) as objects:
        graph = CommitGraph(objects)
        shallow = compute_shallow(graph, [head], ShallowRequest())
        result = list_objects(objects, graph, [head], [old], shallow, None)
        expected = git(worktree, "rev-list", "--objects", "main", "^" + old.decode())
        assert {o.decode() for o in result.objects} == {
            line.split()[0] for line in expected.decode().splitlines()
        }
        thin, full = io.BytesIO(), io.BytesIO()
        write_pack(thin.write, objects, result.objects, client_has=result.client_has)
        write_pack(full.write, objects, result.objects)
    # Into a client that has `old`: the full pack needs nothing else, the thin one its
    # bases (which --fix-thin copies in); both leave a complete, fsck-clean repository.
    for name, data, extra in (("full", full, ()), ("thin", thin, ("--fix-thin",))):
        client = tmp_path / f"client-{name}.git"
        git(tmp_path, "init", "-q", "--bare", str(client))
        git(worktree, "push", "-q", str(client), f"{old.decode()}:refs/heads/main")
        git(client, "index-pack", "--stdin", *extra, input=data.getvalue())
        git(client, "update-ref", "refs/heads/main", head.decode())
        git(client, "fsck", "--strict")
    assert len(thin.getvalue()) < len(full.getvalue())


def test_filters_leave_out_what_they_say(worktree: Path) -> None:
    (worktree / "big.bin").write_bytes(os.urandom(5000))
    git(worktree, "add", "-A")
    git(worktree, "commit", "-q", "-m", "big")
    repo = Repo(str(worktree))
    head = repo.refs[b"refs/heads/main"]
    with PackedObjects(repo.object_store) as objects:
        graph = CommitGraph(objects)
        shallow = compute_shallow(graph, [head], ShallowRequest())

        def kinds(spec: bytes) -> dict[int, int]:
            oids = list_objects(objects, graph, [head], (), shallow, parse_filter(spec)).objects
            counts: dict[int, int] = {}
            for oid in oids:
                kind = objects.type_of(oid)
                assert kind is not None
                counts[kind] = counts.get(kind, 0) + 1
            return counts

        everything = kinds(b"blob:limit=1g")
        assert everything[BLOB] == 5 and everything[TREE] == 4  # 2 roots, dir, dir/deep
        assert BLOB not in kinds(b"blob:none")
        assert kinds(b"blob:limit=4k")[BLOB] == 4  # big.bin (5000 bytes) left out
        assert set(kinds(b"tree:0")) == {1}  # commits only
        assert kinds(b"tree:1") == {1: 2, 2: 2}  # and the root trees
        assert kinds(b"tree:2") == {1: 2, 2: 3, 3: 4}  # and what the roots hold
        assert set(kinds(b"object:type=blob")) == {1, BLOB}  # the wanted commit always goes
        assert kinds(b"combine:blob:none+tree:1") == {1: 2, 2: 2}
        assert objects.size_of(repo[b"HEAD"].tree) > 0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (b"blob:none", BlobNone()),
        (b"blob:limit=0", BlobLimit(0)),
        (b"blob:limit=10k", BlobLimit(10 * 1024)),
        (b"blob:limit=2M", BlobLimit(2 * 1024**2)),
        (b"tree:0", TreeDepth(0)),
        (b"tree:3", TreeDepth(3)),
        (b"object:type=tag", ObjectType(4)),
        (b"combine:blob%3Anone+tree%3A2", Combined((BlobNone(), TreeDepth(2)))),
    ],
)
def test_filter_specs(spec: bytes, expected: object) -> None:
    parsed = parse_filter(spec)
    assert parsed == expected
    assert parse_filter(str(parsed).encode()) == parsed


@pytest.mark.parametrize(
    "spec",
    [b"", b"blob", b"blob:limit=", b"blob:limit=1x", b"blob:limit=-1", b"tree:", b"tree:x",
     b"object:type=file", b"combine:blob:none", b"combine:", b"combine:a+b",
     b"combine:combine%3Ablob%3Anone+tree%3A0", b"sparse:path=x", b"blob:none\x00",
     b"combine:blob%3Anone+%ff", "blob:none\u00e9".encode()],
)  # fmt: skip
def test_malformed_filter_specs_are_refused(spec: bytes) -> None:
    with pytest.raises(RequestError, match="invalid filter-spec"):
        parse_filter(spec)


def test_sparse_filters_are_refused_as_c_git_does_when_disallowed() -> None:
    with pytest.raises(RequestError, match="filter 'sparse:oid' not supported"):
        parse_filter(b"sparse:oid=main:.sparse")


def test_shallow_arguments() -> None:
    assert parse_depth(b"1") == 1 and parse_depth(b"2147483647") == 2147483647
    assert parse_since(b"1700000000") == 1700000000
    for bad in (b"0", b"-1", b"2147483648", b"1.5", b" 1", b"", b"1e3"):
        with pytest.raises(RequestError, match="invalid deepen"):
            parse_depth(bad)
    for bad in (b"-1", b"now", b"", b"12345678901234567890"):
        with pytest.raises(RequestError, match="invalid deepen-since"):
            parse_since(bad)
    assert deepen_not_candidates(b"v1") == [
        b"refs/v1", b"refs/tags/v1", b"refs/heads/v1", b"refs/remotes/v1"
    ]
    assert deepen_not_candidates(b"refs/heads/main")[0] == b"refs/heads/main"
    for bad in (b"", b"../../etc/passwd", b"a..b", b"x\x00", b"a" * 2000, b"a b"):
        with pytest.raises(RequestError, match="invalid deepen-not"):
            deepen_not_candidates(bad)


def test_git_protocol_values() -> None:
    assert protocol_version("version=2") == 2
    assert protocol_version("version=1") == 1
    assert protocol_version("version=1:version=2") == 2
    assert protocol_version("version=2:object-format=sha1") == 2
    for value in (None, "", "version=3", "version=2;x", "version=2 x", "v" * 300, "ver sion"):
        assert protocol_version(value) == 0


def test_only_git_protocol_reaches_only_git_commands() -> None:
    env = {"GIT_PROTOCOL": "version=2", "LD_PRELOAD": "/x.so", "DOCKYARD_ROLE": "admin"}
    assert client_env(["git-upload-pack", "app"], env) == {"GIT_PROTOCOL": "version=2"}
    assert client_env(["git-receive-pack", "app"], env) == {"GIT_PROTOCOL": "version=2"}
    assert client_env(["apps:list"], env) == {}
    assert client_env([], env) == {}
    for bad in ("version=2;id", "version=2\n", "$(id)", "", "v" * 257):
        assert client_env(["git-upload-pack", "app"], {"GIT_PROTOCOL": bad}) == {}


def test_pkt_line_reader_is_strict() -> None:
    stream = io.BytesIO(b"0009hello0000000100020006a\n")
    reader = PktLineReader(stream.read)
    assert reader.read() == b"hello"
    assert [reader.read() for _ in range(3)] == [Marker.FLUSH, Marker.DELIM, Marker.RESPONSE_END]
    assert reader.read() == b"a"
    from dulwich.errors import GitProtocolError, HangupException

    with pytest.raises(HangupException):
        reader.read()
    for bad in (b"0003", b"fff1" + b"x" * 70000, b"zzzz", b"+004", b" 004"):
        with pytest.raises(GitProtocolError):
            PktLineReader(io.BytesIO(bad).read).read()


def test_sideband_sink_frames_large_and_small_writes() -> None:
    out = io.BytesIO()
    sink = SidebandSink(out.write, 1, 10)
    sink.write(b"abc")
    sink.write(memoryview(b"0123456789" * 3))
    sink.write(b"z")
    sink.flush()
    data = out.getvalue()
    payloads = []
    reader = PktLineReader(io.BytesIO(data).read)
    while True:
        try:
            packet = reader.read()
        except Exception:  # noqa: BLE001 (end of the stream)
            break
        assert isinstance(packet, bytes) and packet[0] == 1 and len(packet) <= 11
        payloads.append(packet[1:])
    assert b"".join(payloads) == b"abc" + b"0123456789" * 3 + b"z"


def test_object_list_cache_round_trip_and_pruning(tmp_path: Path) -> None:
    from gitrecv.objectwalk import CACHE_KEEP, ObjectList

    cache = ObjectListCache(str(tmp_path))
    oids = [b"%040x" % i for i in range(5)]
    entry = ObjectList(oids, set(), {oids[0]}, {oids[1]})  # type: ignore[arg-type]
    key = ObjectListCache.key(oids[:1], ShallowRequest(depth=1), BlobNone())  # type: ignore[arg-type]
    cache.put(key, entry)
    got = cache.get(key)
    assert got is not None
    assert (got.objects, got.shallow, got.unshallow) == (oids, {oids[0]}, {oids[1]})
    assert cache.get("0" * 64) is None
    (cache.path / "garbled").write_bytes(b"not a list")
    assert cache.get("garbled") is None
    for i in range(CACHE_KEEP + 3):
        cache.put(f"{i:064x}", entry)
    assert len(list(cache.path.iterdir())) == CACHE_KEEP


def test_incoming_pack_is_stored_whole_or_not_at_all(worktree: Path, tmp_path: Path) -> None:
    from gitrecv.packs import store_incoming_pack

    objects = git(worktree, "rev-list", "--objects", "--all")
    pack = git(worktree, "pack-objects", "--stdout", input=objects)
    target = Repo.init_bare(str(tmp_path / "t.git"), mkdir=True)
    store = target.object_store
    broken = io.BytesIO(pack[: len(pack) // 2])
    with pytest.raises(Exception):  # noqa: B017 (dulwich raises several types for a short pack)
        store_incoming_pack(store, broken.read, broken.read)
    leftovers = [p.name for p in Path(store.path).rglob("*") if p.is_file()]
    assert leftovers == []

    whole = io.BytesIO(pack)
    store_incoming_pack(store, whole.read, whole.read)
    head = git(worktree, "rev-parse", "HEAD").decode().strip()
    git(tmp_path / "t.git", "update-ref", "refs/heads/main", head)
    git(tmp_path / "t.git", "fsck", "--strict")


@pytest.mark.parametrize("deltas", [["--delta-base-offset"], []], ids=["ofs-deltas", "ref-deltas"])
def test_incoming_pack_index_is_c_gits_byte_for_byte(tmp_path: Path, deltas: list[str]) -> None:
    """Whole objects take their index entries from the copy pass (OnePassIndexer); the
    index must still be exactly what `git index-pack` writes, with delta chains (ofs and
    ref deltas) and bases that several deltas share; a thin pack on top is completed."""
    from gitrecv.packs import store_incoming_pack

    work = tmp_path / "w"
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    text = "".join(f"line {i} of a file that changes a little each time\n" for i in range(400))
    for n in range(12):
        text = text.replace(f"line {n * 7} ", f"line {n * 7} changed ")
        (work / "a.txt").write_text(text)
        (work / "b.txt").write_text(text[::-1])
        (work / f"new{n}.txt").write_text(f"{n}\n" * (n + 1))
        git(work, "add", "-A")
        git(work, "commit", "-qm", f"c{n}")
    objects = git(work, "rev-list", "--objects", "main~3")
    pack = git(work, "pack-objects", "--stdout", *deltas, input=objects)
    ours = Repo.init_bare(str(tmp_path / "ours.git"), mkdir=True)
    whole = io.BytesIO(pack)
    store_incoming_pack(ours.object_store, whole.read, whole.read)
    theirs = tmp_path / "theirs.git"
    git(tmp_path, "init", "-q", "--bare", str(theirs))
    git(theirs, "index-pack", "--stdin", input=pack)
    [our_idx] = (tmp_path / "ours.git" / "objects" / "pack").glob("*.idx")
    [their_idx] = (theirs / "objects" / "pack").glob("*.idx")
    assert our_idx.read_bytes() == their_idx.read_bytes()
    shown = git(theirs, "verify-pack", "-v", str(their_idx)).decode()
    assert "chain length = 2" in shown  # deltas on deltas were in the pack

    thin = git(work, "pack-objects", "--stdout", "--revs", "--thin", *deltas,
               input=b"main\n^main~3\n")  # fmt: skip
    rest = io.BytesIO(thin)
    stored = store_incoming_pack(ours.object_store, rest.read, rest.read)
    sent = int.from_bytes(thin[8:12], "big")
    assert stored is not None and len(stored) > sent  # the bases the thin pack left out
    tip = git(work, "rev-parse", "main").decode().strip()
    git(tmp_path / "ours.git", "update-ref", "refs/heads/main", tip)
    git(tmp_path / "ours.git", "fsck", "--strict")
