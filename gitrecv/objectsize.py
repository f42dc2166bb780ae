"""A ceiling on the size of any one object a push may carry, enforced while it is read.

dulwich inflates every object of an incoming pack in memory (to hash it), and resolves every
delta in memory (to hash its result), so a tiny pack can stand for a huge object: 1 MB of
zeros compressed, or a few bytes of delta that copy a base a million times. The object
header states an object's size, and a delta's header its result's size, before any of it
is inflated; this module refuses an object above the ceiling at that point, so a push costs
at most about one ceiling of memory, whatever its pack claims.

It wraps dulwich 1.2.21's module-level `read_zlib_chunks` (which `unpack_object` calls
with the header's size) and `apply_delta` (which delta resolution calls), pinned like the
rest of `gitrecv`'s use of dulwich's internals. The ceiling is per thread and only set
around a push's pack (`object_size_limit`); elsewhere nothing changes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dulwich.pack

_limit = threading.local()
_read_zlib_chunks = dulwich.pack.read_zlib_chunks
_apply_delta = dulwich.pack.apply_delta


class ObjectTooLarge(Exception):
    """An object in the pack is larger than the ceiling."""


def _ceiling() -> int | None:
    return getattr(_limit, "max_bytes", None)


def _refuse(size: int, limit: int) -> ObjectTooLarge:
    return ObjectTooLarge(
        f"an object of {size} bytes is larger than the maximum object size ({limit} bytes)"
    )


def _guarded_read_zlib_chunks(read_some, unpacked, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    limit = _ceiling()
    if limit is not None and unpacked.decomp_len is not None and unpacked.decomp_len > limit:
        raise _refuse(unpacked.decomp_len, limit)
    return _read_zlib_chunks(read_some, unpacked, *args, **kwargs)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while pos < len(data):
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            break
    return value, pos


def _guarded_apply_delta(src_buf, delta):  # noqa: ANN001, ANN202
    limit = _ceiling()
    if limit is not None:
        raw = delta if isinstance(delta, bytes) else b"".join(delta)
        _, pos = _varint(raw, 0)  # the base's size
        target, _ = _varint(raw, pos)  # the result's size
        if target > limit:
            raise _refuse(target, limit)
        delta = raw
    return _apply_delta(src_buf, delta)


dulwich.pack.read_zlib_chunks = _guarded_read_zlib_chunks
dulwich.pack.apply_delta = _guarded_apply_delta


@contextmanager
def object_size_limit(max_bytes: int) -> Iterator[None]:
    previous = _ceiling()
    _limit.max_bytes = max_bytes
    try:
        yield
    finally:
        _limit.max_bytes = previous
