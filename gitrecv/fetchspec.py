"""What a fetching client may ask for, parsed strictly before anything uses it.

Every argument of a clone or fetch request that is not a pkt-line frame is parsed here:
object ids, `deepen` depths, `deepen-since` times, `deepen-not` ref names, partial-clone
filter specs and the `GIT_PROTOCOL` value. Each parser accepts exactly the forms C git
sends and raises `RequestError` (a `GitProtocolError`, so the session ends with a clear
`ERR` line) for anything else. A ref name is checked with git's own rules before it is
ever looked up, so nothing a client sends reaches a path unchecked.

Filters (`--filter=…`, documented in git-rev-list(1)), with C git's meaning:

- `blob:none` omits every blob; `blob:limit=N[kmg]` omits blobs of N bytes or more;
- `tree:D` omits trees and blobs at depth D or more below the root tree (`tree:0`: only
  commits and tags);
- `object:type=T` sends only objects of type T;
- `combine:A+B` (each part URL-encoded) sends what every part sends.

Objects the client names itself (its wants) are always sent, as C git does; that is how
a partial clone fetches a missing blob later. `sparse:oid=` is refused with C git's own
message for a disallowed filter ("filter 'sparse:oid' not supported").
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from dulwich.errors import GitProtocolError
from dulwich.objects import ObjectID
from dulwich.refs import check_ref_format

from gitrecv.packed import BLOB, COMMIT, TAG, TREE

OID_HEX_LENGTH = 40
INFINITE_DEPTH = 0x7FFFFFFF  # what `git fetch --unshallow` sends as its depth
MAX_SPEC_LENGTH = 4096
MAX_REF_NAME_LENGTH = 1024
MAX_COMBINED_FILTERS = 16

FILTER_BLOB_NONE = "blob:none"
FILTER_BLOB_LIMIT = "blob:limit="
FILTER_TREE = "tree:"
FILTER_OBJECT_TYPE = "object:type="
FILTER_COMBINE = "combine:"
FILTER_SPARSE_OID = "sparse:oid="
FILTER_TYPES = {"blob": BLOB, "tree": TREE, "commit": COMMIT, "tag": TAG}
SIZE_SUFFIXES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MAX_BLOB_LIMIT = 2**63 - 1

_OID = re.compile(rb"[0-9a-f]{40}")
_DECIMAL = re.compile(r"[0-9]{1,19}")
_SIZE = re.compile(r"([0-9]{1,19})([kmgKMG]?)")
_PROTOCOL_ITEM = re.compile(r"[A-Za-z0-9-]+(?:=[A-Za-z0-9._-]*)?")
MAX_PROTOCOL_VALUE = 256
GIT_PROTOCOL_ENV = "GIT_PROTOCOL"  # the one client variable the SSH server passes on
PROTOCOL_V0, PROTOCOL_V1, PROTOCOL_V2 = 0, 1, 2
DEEPEN_NOT_PREFIXES = (b"", b"refs/", b"refs/tags/", b"refs/heads/", b"refs/remotes/")


class RequestError(GitProtocolError):
    """A malformed or refused request; its message is shown to the client as is."""


def parse_oid(value: bytes, what: str = "object id") -> ObjectID:
    """Exactly 40 lowercase hex digits (an object id as git sends it)."""
    if not _OID.fullmatch(value):
        raise RequestError(f"invalid {what}: {_shown(value)}")
    return ObjectID(value)


def parse_depth(value: bytes) -> int:
    """A `deepen` depth: a positive decimal number (git's --unshallow sends 2147483647)."""
    text = value.decode("ascii", "replace")
    if not _DECIMAL.fullmatch(text) or not 0 < int(text) <= INFINITE_DEPTH:
        raise RequestError(f"invalid deepen: {_shown(value)}")
    return int(text)


def parse_since(value: bytes) -> int:
    """A `deepen-since` time: seconds since the epoch, as a decimal number."""
    text = value.decode("ascii", "replace")
    if not _DECIMAL.fullmatch(text):
        raise RequestError(f"invalid deepen-since: {_shown(value)}")
    return int(text)


def deepen_not_candidates(value: bytes) -> list[bytes]:
    """The full ref names a `deepen-not` argument may mean, in git's order (`v1` may be
    `refs/tags/v1`…). Raises RequestError unless the name is one git could accept."""
    if not value or len(value) > MAX_REF_NAME_LENGTH or not value.isascii():
        raise RequestError(f"invalid deepen-not: {_shown(value)}")
    candidates = []
    for prefix in DEEPEN_NOT_PREFIXES:
        name = prefix + value
        if (name.startswith(b"refs/") and check_ref_format(name)) or name == b"HEAD":
            candidates.append(name)
    if not candidates:
        raise RequestError(f"invalid deepen-not: {_shown(value)}")
    return candidates


def protocol_version(value: str | None) -> int:
    """The version a `GIT_PROTOCOL` value asks for: the highest `version=N` item we speak
    (as C git reads it); 0 for anything else, including a malformed value."""
    if not value or len(value) > MAX_PROTOCOL_VALUE:
        return PROTOCOL_V0
    version = PROTOCOL_V0
    for item in value.split(":"):
        if not _PROTOCOL_ITEM.fullmatch(item):
            return PROTOCOL_V0
        key, _, number = item.partition("=")
        if key == "version" and number in ("1", "2"):
            version = max(version, int(number))
    return version


# -- filters ----------------------------------------------------------------------------


class ObjectFilter:
    """What a partial clone leaves out. `shows(type, depth)` says whether an object met at
    `depth` (the root tree is 0, its entries 1…) is sent; `enters(depth)` whether the walk
    goes into a tree at that depth at all; `size_limit` asks for blob sizes."""

    size_limit: int | None = None

    def shows(self, type_num: int, depth: int, size: int | None = None) -> bool:
        raise NotImplementedError

    def enters(self, depth: int) -> bool:
        return True

    def needs_depth(self) -> bool:
        return False

    def needs_size(self) -> bool:
        return self.size_limit is not None


@dataclass(frozen=True)
class BlobNone(ObjectFilter):
    def shows(self, type_num: int, depth: int, size: int | None = None) -> bool:
        return type_num != BLOB

    def __str__(self) -> str:
        return FILTER_BLOB_NONE


@dataclass(frozen=True)
class BlobLimit(ObjectFilter):
    limit: int

    @property
    def size_limit(self) -> int | None:  # type: ignore[override]
        return self.limit

    def shows(self, type_num: int, depth: int, size: int | None = None) -> bool:
        if type_num != BLOB:
            return True
        assert size is not None
        return size < self.limit

    def __str__(self) -> str:
        return f"{FILTER_BLOB_LIMIT}{self.limit}"


@dataclass(frozen=True)
class TreeDepth(ObjectFilter):
    depth: int

    def shows(self, type_num: int, depth: int, size: int | None = None) -> bool:
        return type_num not in (TREE, BLOB) or depth < self.depth

    def enters(self, depth: int) -> bool:
        return depth < self.depth

    def needs_depth(self) -> bool:
        return True

    def __str__(self) -> str:
        return f"{FILTER_TREE}{self.depth}"


@dataclass(frozen=True)
class ObjectType(ObjectFilter):
    type_num: int

    def shows(self, type_num: int, depth: int, size: int | None = None) -> bool:
        return type_num == self.type_num

    def __str__(self) -> str:
        name = {v: k for k, v in FILTER_TYPES.items()}[self.type_num]
        return f"{FILTER_OBJECT_TYPE}{name}"


@dataclass(frozen=True)
class Combined(ObjectFilter):
    parts: tuple[ObjectFilter, ...]

    @property
    def size_limit(self) -> int | None:  # type: ignore[override]
        limits = [p.size_limit for p in self.parts if p.size_limit is not None]
        return min(limits) if limits else None

    def shows(self, type_num: int, depth: int, size: int | None = None) -> bool:
        return all(p.shows(type_num, depth, size) for p in self.parts)

    def enters(self, depth: int) -> bool:
        return all(p.enters(depth) for p in self.parts)

    def needs_depth(self) -> bool:
        return any(p.needs_depth() for p in self.parts)

    def __str__(self) -> str:
        return FILTER_COMBINE + "+".join(urllib.parse.quote(str(p), safe="") for p in self.parts)


def parse_filter(value: bytes) -> ObjectFilter:
    """A filter spec as `git clone --filter=…` sends it."""
    if not value or len(value) > MAX_SPEC_LENGTH or not value.isascii():
        raise RequestError(f"invalid filter-spec '{_shown(value)}'")
    return _parse_filter(value.decode("ascii"), nested=False)


def _parse_filter(spec: str, nested: bool) -> ObjectFilter:
    if spec == FILTER_BLOB_NONE:
        return BlobNone()
    if spec.startswith(FILTER_BLOB_LIMIT):
        match = _SIZE.fullmatch(spec[len(FILTER_BLOB_LIMIT) :])
        if match:
            limit = int(match.group(1)) * SIZE_SUFFIXES[match.group(2).lower()]
            if limit <= MAX_BLOB_LIMIT:
                return BlobLimit(limit)
    elif spec.startswith(FILTER_TREE):
        depth = spec[len(FILTER_TREE) :]
        if _DECIMAL.fullmatch(depth) and int(depth) <= INFINITE_DEPTH:
            return TreeDepth(int(depth))
    elif spec.startswith(FILTER_OBJECT_TYPE):
        kind = spec[len(FILTER_OBJECT_TYPE) :]
        if kind in FILTER_TYPES:
            return ObjectType(FILTER_TYPES[kind])
    elif spec.startswith(FILTER_SPARSE_OID):
        raise RequestError("filter 'sparse:oid' not supported")
    elif spec.startswith(FILTER_COMBINE) and not nested:
        parts = spec[len(FILTER_COMBINE) :].split("+")
        if 1 < len(parts) <= MAX_COMBINED_FILTERS and all(parts):
            decoded = []
            for part in parts:
                try:
                    text = urllib.parse.unquote(part, errors="strict")
                except UnicodeDecodeError:
                    break
                if not text.isascii() or not text.isprintable():
                    break
                decoded.append(_parse_filter(text, nested=True))
            else:
                return Combined(tuple(decoded))
    raise RequestError(f"invalid filter-spec '{_shown(spec.encode())}'")


def _shown(value: bytes) -> str:
    """A client's bytes, safe to print in one line of an error."""
    text = value[:80].decode("ascii", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)
