"""Which objects a clone or fetch sends: the commit walk, shallow boundaries, filters.

Given the client's wants, the commits it has in common with us (from negotiation), its
shallow boundary and what it asked for (`deepen`, `deepen-since`, `deepen-not`,
`deepen-relative`, a filter), this module answers with C git's upload-pack semantics:

- commits: everything reachable from the wants that the client does not have. What the
  client has is walked from the common commits; its shallow commits count as having no
  parents, as in C git (they are registered as shallow for the whole walk);
- shallow: `deepen N` cuts history N commits below each want (min depth, the want being
  1), `deepen-relative` N below the client's current boundary, `deepen-since` keeps
  commits made at or after a time, `deepen-not` drops commits reachable from named refs;
  commits on the cut are reported `shallow`, client boundaries that move are reported
  `unshallow` and their parents are sent;
- trees and blobs: those of the sent commits, minus what the boundary commits the client
  has already hold, minus what the filter leaves out. Objects the client names itself are
  always sent;
- `include-tag`: annotated tags whose target is sent.

The result for a request without common commits (a clone, shallow or partial or not) is
cached per request under the repository (`ObjectListCache`). An object list names
immutable, content-addressed objects, so an entry never goes stale; the newest few are kept.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dulwich.objects import ObjectID, parse_tree

from gitrecv.fetchspec import INFINITE_DEPTH, ObjectFilter
from gitrecv.packed import BLOB, COMMIT, TAG, TREE, PackedObjects, PackReadError

_OID = re.compile(rb"[0-9a-f]{40}")
GITLINK_MODE = 0o160000
CACHE_DIR = "dockyard/upload-cache"
CACHE_MAGIC = b"dockyard object list 1\n"
CACHE_KEEP = 8  # object lists kept per repository, newest first
TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class CommitInfo:
    tree: ObjectID
    parents: tuple[ObjectID, ...]
    time: int


class CommitGraph:
    """Commits parsed on demand (tree, parents, committer time)."""

    def __init__(self, objects: PackedObjects) -> None:
        self.objects = objects
        self._commits: dict[ObjectID, CommitInfo | None] = {}

    def get(self, oid: ObjectID) -> CommitInfo | None:
        """The commit, or None when `oid` is not a commit we have."""
        if oid in self._commits:
            return self._commits[oid]
        info: CommitInfo | None = None
        try:
            type_num, raw = self.objects.raw(oid)
        except KeyError:
            type_num, raw = 0, b""
        if type_num == COMMIT:
            info = parse_commit(raw)
        self._commits[oid] = info
        return info

    def peel(self, oid: ObjectID) -> ObjectID:
        """Follow annotated tags to what they finally point at."""
        for _ in range(64):
            try:
                type_num, raw = self.objects.raw(oid)
            except KeyError:
                return oid
            if type_num != TAG:
                return oid
            oid = tag_target(raw)
        raise PackReadError("tag chain too long")


def parse_commit(raw: bytes) -> CommitInfo:
    end = raw.find(b"\n\n")
    tree: bytes | None = None
    parents: list[ObjectID] = []
    when = 0
    for line in (raw if end < 0 else raw[:end]).split(b"\n"):
        if line.startswith(b"tree "):
            tree = line[5:]
        elif line.startswith(b"parent "):
            parents.append(_checked(line[7:]))
        elif line.startswith(b"committer "):
            fields = line.rsplit(b">", 1)[-1].split()
            try:
                when = int(fields[0])
            except (IndexError, ValueError):
                when = 0
    if tree is None:
        raise PackReadError("commit without a tree")
    return CommitInfo(_checked(tree), tuple(parents), when)


def tag_target(raw: bytes) -> ObjectID:
    if not raw.startswith(b"object "):
        raise PackReadError("tag without an object")
    return _checked(raw[7 : raw.find(b"\n")])


_HEX_DIGITS = b"0123456789abcdef"


def _checked(oid: bytes) -> ObjectID:
    if len(oid) != 40 or oid.translate(None, _HEX_DIGITS):
        raise PackReadError(f"malformed object id in a stored object: {oid[:50]!r}")
    return ObjectID(oid)


# -- negotiation ------------------------------------------------------------------------


def ok_to_give_up(graph: CommitGraph, wants: Iterable[ObjectID], common: set[ObjectID]) -> bool:
    """C git's test for `ready`: every wanted commit reaches a common commit (searching no
    further back in time than the oldest common commit). Non-commit wants need nothing."""
    if not common:
        return False
    times = [c.time for c in (graph.get(h) for h in common) if c is not None]
    oldest = min(times) if times else 0
    for want in wants:
        start = graph.get(want)
        if start is None:
            continue
        pending = deque([want])
        known = {want}
        found = False
        while pending and not found:
            oid = pending.popleft()
            if oid in common:
                found = True
                break
            info = graph.get(oid)
            if info is None:
                continue
            for parent in info.parents:
                parent_info = graph.get(parent)
                if parent not in known and parent_info is not None and parent_info.time >= oldest:
                    known.add(parent)
                    pending.append(parent)
        if not found:
            return False
    return True


# -- shallow ----------------------------------------------------------------------------


@dataclass
class ShallowRequest:
    client_shallow: set[ObjectID] = field(default_factory=set)
    depth: int | None = None
    since: int | None = None
    not_commits: list[ObjectID] = field(default_factory=list)  # deepen-not, resolved
    relative: bool = False

    @property
    def by_rev_list(self) -> bool:
        return self.since is not None or bool(self.not_commits)

    @property
    def deepens(self) -> bool:
        return self.depth is not None or self.by_rev_list

    def key(self) -> str:
        return (
            f"shallow={','.join(sorted(s.decode() for s in self.client_shallow))};"
            f"depth={self.depth};since={self.since};relative={self.relative};"
            f"not={','.join(sorted(c.decode() for c in self.not_commits))}"
        )


@dataclass
class ShallowResult:
    shallow: set[ObjectID] = field(default_factory=set)  # new boundaries, told to the client
    unshallow: set[ObjectID] = field(default_factory=set)
    parentless: set[ObjectID] = field(default_factory=set)  # the walk stops at these
    extra_wants: list[ObjectID] = field(default_factory=list)


def compute_shallow(
    graph: CommitGraph, wants: Sequence[ObjectID], request: ShallowRequest
) -> ShallowResult:
    """New boundaries and unshallowed commits, as C git's upload-pack computes them."""
    client = {c for c in request.client_shallow if graph.get(c) is not None}
    result = ShallowResult()
    not_shallow: set[ObjectID] = set()
    if request.depth is not None:
        if request.depth == INFINITE_DEPTH and not request.relative:
            not_shallow = set(client)  # --unshallow: every boundary goes
        else:
            starts = sorted(client) if request.relative else list(wants)
            depth = request.depth + 1 if request.relative else request.depth
            shallow, not_shallow = _shallow_by_depth(graph, starts, depth)
            result.shallow = shallow - client
    elif request.by_rev_list:
        shallow, not_shallow = _shallow_by_rev_list(graph, wants, request)
        result.shallow = shallow - client
    result.unshallow = client & not_shallow
    for oid in sorted(result.unshallow):
        info = graph.get(oid)
        assert info is not None
        result.extra_wants.extend(info.parents)
    # The whole walk treats every boundary, old and new, as a root (C git registers them
    # all as shallow); the parents of unshallowed commits are wanted explicitly.
    result.parentless = client | result.shallow
    return result


def _shallow_by_depth(
    graph: CommitGraph, starts: Sequence[ObjectID], depth: int
) -> tuple[set[ObjectID], set[ObjectID]]:
    """Commits at exactly `depth` below the starts (min depth, starts at 1) and those above."""
    best: dict[ObjectID, int] = {}
    pending = deque((oid, 1) for oid in starts if graph.get(oid) is not None)
    shallow: set[ObjectID] = set()
    not_shallow: set[ObjectID] = set()
    while pending:
        oid, at = pending.popleft()
        if oid in best and best[oid] <= at:
            continue
        best[oid] = at
        info = graph.get(oid)
        if info is None:
            continue
        if at >= depth:
            continue
        for parent in info.parents:
            if graph.get(parent) is not None and (parent not in best or best[parent] > at + 1):
                pending.append((parent, at + 1))
    for oid, at in best.items():
        if at >= depth:
            shallow.add(oid)
        else:
            not_shallow.add(oid)
    return shallow, not_shallow


def _shallow_by_rev_list(
    graph: CommitGraph, wants: Sequence[ObjectID], request: ShallowRequest
) -> tuple[set[ObjectID], set[ObjectID]]:
    """deepen-since / deepen-not: commits reachable from the wants, not from the excluded
    refs, made at or after `since`; the cut is where a kept commit's parent is not kept."""
    excluded = _commit_closure(graph, request.not_commits, set()) if request.not_commits else set()
    kept: set[ObjectID] = set()
    seen: set[ObjectID] = set()
    stack = [w for w in wants if graph.get(w) is not None]
    while stack:
        oid = stack.pop()
        if oid in seen or oid in excluded:
            continue
        seen.add(oid)
        info = graph.get(oid)
        if info is None:
            continue
        if request.since is None or info.time >= request.since:
            kept.add(oid)
        stack.extend(info.parents)
    if not kept:
        from gitrecv.fetchspec import RequestError

        raise RequestError("no commits selected for shallow requests")
    shallow = set()
    for oid in kept:
        info = graph.get(oid)
        assert info is not None
        if any(p not in kept for p in info.parents):
            shallow.add(oid)
    return shallow, kept - shallow


def _commit_closure(
    graph: CommitGraph, tips: Iterable[ObjectID], parentless: set[ObjectID]
) -> set[ObjectID]:
    seen: set[ObjectID] = set()
    stack = list(tips)
    while stack:
        oid = stack.pop()
        if oid in seen:
            continue
        info = graph.get(oid)
        if info is None:
            continue
        seen.add(oid)
        if oid not in parentless:
            stack.extend(p for p in info.parents if p not in seen)
    return seen


# -- the object list --------------------------------------------------------------------


@dataclass
class ObjectList:
    """What to send, and what the client is known to have (thin-pack bases)."""

    objects: list[ObjectID]
    client_has: set[ObjectID] = field(default_factory=set)
    shallow: set[ObjectID] = field(default_factory=set)
    unshallow: set[ObjectID] = field(default_factory=set)


def list_objects(
    objects: PackedObjects,
    graph: CommitGraph,
    wants: Sequence[ObjectID],
    common: Iterable[ObjectID],
    shallow: ShallowResult,
    object_filter: ObjectFilter | None,
) -> ObjectList:
    """Everything the client lacks of what it asked for (see the module docstring)."""
    parentless = shallow.parentless
    has_commits = _commit_closure(graph, common, parentless)
    provided = set(wants)
    commits: list[ObjectID] = []
    roots: list[ObjectID] = []  # root trees of sent commits
    others: list[tuple[ObjectID, int]] = []  # provided trees/blobs/tags: (id, type)
    seen_commits: set[ObjectID] = set()
    boundary: set[ObjectID] = set()  # commits the client has, just below what we send
    stack = list(dict.fromkeys([*wants, *shallow.extra_wants]))
    while stack:
        oid = stack.pop()
        if oid in seen_commits:
            continue
        seen_commits.add(oid)
        if oid in has_commits:
            if oid not in provided:
                boundary.add(oid)
            continue
        type_num = objects.type_of(oid)
        if type_num is None:
            raise PackReadError(f"object {oid.decode()} is missing")
        if type_num == COMMIT:
            info = graph.get(oid)
            assert info is not None
            commits.append(oid)
            roots.append(info.tree)
            if oid not in parentless:
                stack.extend(info.parents)
        elif type_num == TAG:
            others.append((oid, TAG))
            stack.append(tag_target(objects.raw(oid)[1]))
        else:
            others.append((oid, type_num))

    client_has: set[ObjectID] = set(has_commits)
    for oid in boundary:
        info = graph.get(oid)
        if info is not None:
            _tree_closure(objects, info.tree, client_has)

    found: list[ObjectID] = []
    show_commits = object_filter is None or object_filter.shows(COMMIT, 0)
    for oid in commits:
        if show_commits or oid in provided:
            found.append(oid)
    for oid, type_num in others:
        if type_num in (TAG, BLOB):
            if oid in provided or object_filter is None or object_filter.shows(type_num, 0, 0):
                found.append(oid)
    trees = [oid for oid, type_num in others if type_num == TREE]
    if object_filter is None and not client_has:
        found.extend(_walk_all(objects, [*roots, *trees]))
    elif (
        not client_has
        and not object_filter.needs_depth()
        and object_filter.shows(TREE, 0)
        and not provided.intersection(roots)
    ):
        # A partial clone's usual case (blob:none, blob:limit): every tree, some blobs.
        found.extend(_walk_all(objects, roots, _blob_test(objects, object_filter)))
        found.extend(
            _filtered_trees_and_blobs(objects, [], trees, client_has, object_filter, provided)
        )
    else:
        found.extend(
            _filtered_trees_and_blobs(objects, roots, trees, client_has, object_filter, provided)
        )
    # An object named twice (a want that is also reached) goes once.
    return ObjectList(
        list(dict.fromkeys(found)), client_has, shallow.shallow, shallow.unshallow
    )


def _tree_closure(objects: PackedObjects, root: ObjectID, into: set[ObjectID]) -> None:
    stack = [root]
    while stack:
        oid = stack.pop()
        if oid in into:
            continue
        into.add(oid)
        try:
            type_num, raw = objects.raw(oid)
        except KeyError:
            continue
        if type_num != TREE:
            continue
        for _name, mode, child in parse_tree(raw, 20):
            if child in into or mode & 0o170000 == GITLINK_MODE:
                continue
            if stat.S_ISDIR(mode):
                stack.append(ObjectID(child))
            else:
                into.add(ObjectID(child))


def _filtered_trees_and_blobs(
    objects: PackedObjects,
    roots: Sequence[ObjectID],
    provided_trees: Sequence[ObjectID],
    client_has: set[ObjectID],
    object_filter: ObjectFilter | None,
    provided: set[ObjectID],
) -> list[ObjectID]:
    """Trees and blobs under `roots` (depth 0) and provided trees, with the filter applied.

    An object is revisited when it is met again closer to the root than before, so a
    depth filter shows it if any path to it is shallow enough (as C git does)."""
    found: list[ObjectID] = []
    shown: set[ObjectID] = set()
    best_depth: dict[ObjectID, int] = {}
    track_depth = object_filter is not None and object_filter.needs_depth()
    need_size = object_filter is not None and object_filter.needs_size()
    stack: list[tuple[ObjectID, int, bool]] = [(oid, 0, oid in provided) for oid in roots]
    stack.extend((oid, 0, True) for oid in provided_trees)
    stack.reverse()
    while stack:
        oid, depth, named = stack.pop()
        if oid in client_has and not named:
            continue
        previous = best_depth.get(oid)
        if previous is not None and (not track_depth or previous <= depth):
            continue
        best_depth[oid] = depth
        type_num, raw = objects.raw(oid)
        if type_num != TREE:
            raise PackReadError(f"{oid.decode()} is not a tree")
        if (named or object_filter is None or object_filter.shows(TREE, depth)) and (
            oid not in shown
        ):
            shown.add(oid)
            found.append(oid)
        if object_filter is not None and not object_filter.enters(depth) and not named:
            continue
        for _name, mode, child in parse_tree(raw, 20):
            child = ObjectID(child)
            if mode & 0o170000 == GITLINK_MODE or child in client_has:
                continue
            if stat.S_ISDIR(mode):
                before = best_depth.get(child)
                if before is None or (track_depth and before > depth + 1):
                    stack.append((child, depth + 1, child in provided))
                continue
            if child in shown:
                continue
            before = best_depth.get(child)
            if before is not None and (not track_depth or before <= depth + 1):
                continue
            best_depth[child] = depth + 1
            size = objects.size_of(child) if need_size else None
            if (
                child in provided
                or object_filter is None
                or object_filter.shows(BLOB, depth + 1, size)
            ):
                shown.add(child)
                found.append(child)
    return found


def _blob_test(objects: PackedObjects, object_filter: ObjectFilter) -> Callable[[bytes], bool]:
    if object_filter.needs_size():
        return lambda oid: object_filter.shows(BLOB, 1, objects.size_of(ObjectID(oid)))
    keep = object_filter.shows(BLOB, 1, 0)
    return lambda oid: keep


def _walk_all(
    objects: PackedObjects,
    roots: Sequence[ObjectID],
    keep_blob: Callable[[bytes], bool] | None = None,
) -> list[ObjectID]:
    """Every tree and blob under `roots`, or every tree and the blobs `keep_blob` keeps:
    the clone's hot path (no depth filter, nothing the client has to leave out)."""
    seen: set[bytes] = set()
    found: list[ObjectID] = []
    raw_of = objects.raw
    stack = list(roots)
    stack.reverse()
    while stack:
        oid = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        found.append(oid)
        type_num, raw = raw_of(oid)
        if type_num != TREE:
            raise PackReadError(f"{oid.decode()} is not a tree")
        for _name, mode, child in parse_tree(raw, 20):
            if child in seen or mode & 0o170000 == GITLINK_MODE:
                continue
            if mode & 0o040000 and not mode & 0o100000:  # a directory
                stack.append(child)
            else:
                seen.add(child)
                if keep_blob is None or keep_blob(child):
                    found.append(child)
    return found


# -- include-tag ------------------------------------------------------------------------


def tags_to_include(
    objects: PackedObjects,
    refs: Mapping[bytes, ObjectID],
    sending: set[ObjectID],
    client_has: set[ObjectID],
) -> list[ObjectID]:
    """Annotated tags (and the tags they point through) whose final target is sent."""
    extra: list[ObjectID] = []
    for ref, oid in sorted(refs.items()):
        if not ref.startswith(b"refs/tags/") or oid in sending or oid in client_has:
            continue
        chain = []
        target = oid
        for _ in range(64):
            if objects.type_of(target) != TAG:
                break
            chain.append(target)
            target = tag_target(objects.raw(target)[1])
        if chain and target in sending:
            extra.extend(t for t in chain if t not in sending and t not in client_has)
    return list(dict.fromkeys(extra))


# -- the cache --------------------------------------------------------------------------


class ObjectListCache:
    """Object lists of past clones, per request, under `<repo>/dockyard/upload-cache/`.

    Written whole to a temporary file and renamed into place, so a reader never sees half
    a list; the newest `CACHE_KEEP` are kept."""

    def __init__(self, controldir: str) -> None:
        self.path = Path(controldir) / CACHE_DIR

    @staticmethod
    def key(
        wants: Iterable[ObjectID], shallow: ShallowRequest, object_filter: ObjectFilter | None
    ) -> str:
        text = (
            f"wants={','.join(sorted(w.decode() for w in wants))};{shallow.key()};"
            f"filter={object_filter}"
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str) -> ObjectList | None:
        try:
            data = (self.path / key).read_bytes()
        except OSError:
            return None
        if not data.startswith(CACHE_MAGIC):
            return None
        header_end = data.find(b"\n\n")
        if header_end < 0:
            return None
        lists: dict[bytes, set[ObjectID]] = {b"shallow": set(), b"unshallow": set()}
        for line in data[len(CACHE_MAGIC) : header_end].split(b"\n"):
            kind, _, oid = line.partition(b" ")
            if kind not in lists or not _OID.fullmatch(oid):
                return None
            lists[kind].add(ObjectID(oid))
        body = data[header_end + 2 :]
        if len(body) % 40:
            return None
        objects = [ObjectID(body[i : i + 40]) for i in range(0, len(body), 40)]
        return ObjectList(objects, set(), lists[b"shallow"], lists[b"unshallow"])

    def put(self, key: str, result: ObjectList) -> None:
        lines = [b"shallow " + s for s in sorted(result.shallow)]
        lines += [b"unshallow " + s for s in sorted(result.unshallow)]
        data = CACHE_MAGIC + b"".join(line + b"\n" for line in lines) + b"\n"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=self.path)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.write(b"".join(result.objects))
                os.replace(tmp, self.path / key)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._prune()
        except OSError:
            pass  # a cache that cannot be written only costs the next clone its walk

    def _prune(self) -> None:
        entries = []
        for entry in self.path.iterdir():
            if entry.name.startswith(TMP_PREFIX):
                continue  # another request's list, being written
            try:
                entries.append((entry.stat().st_mtime_ns, entry))
            except OSError:
                continue
        entries.sort(reverse=True)
        for _mtime, entry in entries[CACHE_KEEP:]:
            entry.unlink(missing_ok=True)
