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
from gitrecv.properties import format_size, parse_size
from gitrecv.receive import ProgressChannel, PushTooLarge, SizeLimitedReader
from gitrecv.repos import app_name_from_repo_path
from gitrecv.source import GitSource
from gitrecv.upload import reachable_objects, write_reused_pack

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


def test_reused_pack_is_valid_and_complete(worktree: Path, tmp_path: Path) -> None:
    """Several packs (deltas inside them) plus loose objects, written as one pack."""
    for i in range(6):
        (worktree / "README").write_bytes((worktree / "README").read_bytes() + b"more %d\n" % i)
        git(worktree, "commit", "-q", "-am", f"c{i}")
        if i % 2:
            git(worktree, "repack", "-dq")  # a new pack with what is loose so far
    git(worktree, "tag", "-a", "-m", "t", "v1")
    repo = Repo(str(worktree))
    store = repo.object_store
    assert len(list(store.packs)) >= 2
    wants = [repo.refs[b"refs/heads/main"], repo.refs[b"refs/tags/v1"]]
    oids = reachable_objects(store, wants, {})
    listed = git(worktree, "rev-list", "--objects", "--all").decode().splitlines()
    assert {o.decode() for o in oids} == {line.split()[0] for line in listed}

    out = io.BytesIO()
    assert write_reused_pack(out.write, store, oids) == len(oids)
    target = tmp_path / "target.git"
    git(tmp_path, "init", "-q", "--bare", str(target))
    git(target, "index-pack", "--stdin", "--strict", input=out.getvalue())
    count = git(target, "count-objects", "-v").decode()
    assert f"in-pack: {len(oids)}" in count


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
