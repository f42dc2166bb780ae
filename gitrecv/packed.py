"""Reading a repository's packs directly: the index as a table, objects by offset.

dulwich's object store answers `get_raw(sha)` well for one object at a time, but a clone
reads every commit and tree: through dulwich that was most of a clone's server time
(a lookup across packs, a fresh delta-chain resolution and several Python layers per
object). `PackedObjects` reads what a clone needs straight from the pack files:

- each pack's `.idx` (version 2) is read in one go into a table of offsets, CRC32s and
  object ids (`PackTable`); the `.pack` is memory-mapped;
- an object's type and size are read from its header without inflating it (a delta's type
  is its base's, found by following the chain of headers);
- commits, trees and tags are inflated once each; delta bases met on the way are kept for
  the duration of one request, so a chain is never resolved twice;
- anything the packs do not hold (a loose object) is asked of dulwich.

Packs never change once written (git and dulwich only add and delete them), so a
`PackTable` is kept per pack file in a small process-wide cache.
"""

from __future__ import annotations

import binascii
import mmap
import os
import struct
import threading
import zlib
from collections import OrderedDict

from dulwich.object_store import PackBasedObjectStore
from dulwich.objects import ObjectID

try:  # dulwich's compiled helper; its pure-Python twin is the fallback
    from dulwich._pack import apply_delta as _apply_delta
except ImportError:  # pragma: no cover
    from dulwich.pack import apply_delta as _apply_delta

OFS_DELTA = 6
REF_DELTA = 7
COMMIT, TREE, BLOB, TAG = 1, 2, 3, 4
DELTA_TYPES = (OFS_DELTA, REF_DELTA)
MSB = 0x80
IDX_V2_SIGNATURE = b"\xfftOc"
IDX_V2_VERSION = 2
IDX_FANOUT_ENTRIES = 256
IDX_HEADER_SIZE = 8 + 4 * IDX_FANOUT_ENTRIES
LARGE_OFFSET_FLAG = 0x80000000
PACK_HEADER_SIZE = 12
PACK_TRAILER_SIZE = 20
OID_LENGTH = 20
MAX_DELTA_CHAIN = 10_000  # a longer chain is a damaged or hostile pack
TABLE_CACHE_SIZE = 64  # packs whose tables stay parsed in memory


class PackReadError(Exception):
    """A pack or its index is not what its header says."""


class PackTable:
    """One pack's index as a table: hex id → offset, offset → hex id, extents, CRCs."""

    def __init__(self, index_path: str, pack_size: int) -> None:
        with open(index_path, "rb") as f:
            idx = f.read()
        if idx[:4] != IDX_V2_SIGNATURE or struct.unpack(">I", idx[4:8])[0] != IDX_V2_VERSION:
            raise PackReadError(f"{index_path}: not a version 2 pack index")
        (count,) = struct.unpack(">I", idx[IDX_HEADER_SIZE - 4 : IDX_HEADER_SIZE])
        names_at = IDX_HEADER_SIZE
        crcs_at = names_at + OID_LENGTH * count
        offsets_at = crcs_at + 4 * count
        large_at = offsets_at + 4 * count
        names = idx[names_at:crcs_at]
        hexnames = binascii.hexlify(names)
        ids = [ObjectID(hexnames[i : i + 40]) for i in range(0, 40 * count, 40)]
        crcs = struct.unpack(f">{count}I", idx[crcs_at:offsets_at])
        offsets = list(struct.unpack(f">{count}I", idx[offsets_at:large_at]))
        for i, offset in enumerate(offsets):
            if offset & LARGE_OFFSET_FLAG:
                at = large_at + 8 * (offset & ~LARGE_OFFSET_FLAG)
                offsets[i] = struct.unpack(">Q", idx[at : at + 8])[0]
        self.count = count
        self.offset: dict[ObjectID, int] = dict(zip(ids, offsets, strict=True))
        self.id_at: dict[int, ObjectID] = dict(zip(offsets, ids, strict=True))
        self.crc_at: dict[int, int] = dict(zip(offsets, crcs, strict=True))
        ordered = sorted(offsets)
        # The last object ends where the trailer begins.
        self.end_at: dict[int, int] = dict(
            zip(ordered, [*ordered[1:], pack_size - PACK_TRAILER_SIZE], strict=True)
        )


_tables: OrderedDict[tuple[str, int, int], PackTable] = OrderedDict()
_tables_lock = threading.Lock()


def pack_table(index_path: str, pack_size: int) -> PackTable:
    """The parsed table of one pack, cached by path, size and mtime (packs are immutable)."""
    st = os.stat(index_path)
    key = (index_path, st.st_size, st.st_mtime_ns)
    with _tables_lock:
        table = _tables.get(key)
        if table is not None:
            _tables.move_to_end(key)
            return table
    table = PackTable(index_path, pack_size)
    with _tables_lock:
        _tables[key] = table
        while len(_tables) > TABLE_CACHE_SIZE:
            _tables.popitem(last=False)
    return table


class PackFile:
    """One pack: its table and its bytes (memory-mapped)."""

    def __init__(self, basename: str) -> None:
        self.basename = basename
        self.name = os.path.basename(basename)
        with open(basename + ".pack", "rb") as f:
            self.data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self.table = pack_table(basename + ".idx", len(self.data))
        except BaseException:
            self.data.close()
            raise

    def header(self, offset: int) -> tuple[int, int, int, int | ObjectID | None]:
        """(type, size, where the compressed data starts, delta base: an offset for an
        OFS_DELTA, an id for a REF_DELTA, else None)."""
        data = self.data
        pos = offset
        byte = data[pos]
        type_num = (byte >> 4) & 7
        size = byte & 0x0F
        shift = 4
        while byte & MSB:
            pos += 1
            byte = data[pos]
            size |= (byte & 0x7F) << shift
            shift += 7
        pos += 1
        if type_num == OFS_DELTA:
            byte = data[pos]
            distance = byte & 0x7F
            while byte & MSB:
                pos += 1
                byte = data[pos]
                distance = ((distance + 1) << 7) | (byte & 0x7F)
            pos += 1
            if distance <= 0 or distance > offset:
                raise PackReadError(f"{self.name}: bad delta base offset at {offset}")
            return type_num, size, pos, offset - distance
        if type_num == REF_DELTA:
            base = ObjectID(binascii.hexlify(data[pos : pos + OID_LENGTH]))
            return type_num, size, pos + OID_LENGTH, base
        return type_num, size, pos, None

    def inflate(self, start: int, offset: int) -> bytes:
        return zlib.decompress(self.data[start : self.table.end_at[offset]])

    def close(self) -> None:
        self.data.close()


class PackedObjects:
    """Every pack of a store, opened for one request. Not thread-safe; close when done."""

    def __init__(self, store: PackBasedObjectStore) -> None:
        self.store = store
        self.packs: list[PackFile] = []
        try:
            for pack in store.packs:
                self.packs.append(PackFile(pack._basename))
        except BaseException:
            self.close()
            raise
        self._raw: dict[tuple[int, int], tuple[int, bytes]] = {}
        self._type: dict[tuple[int, int], int] = {}

    def close(self) -> None:
        for pack in self.packs:
            pack.close()
        self.packs = []
        self._raw.clear()

    def __enter__(self) -> PackedObjects:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def locate(self, oid: ObjectID) -> tuple[int, int] | None:
        """(pack number, offset) of the first pack holding `oid`, as dulwich's lookups do."""
        for pack_no, pack in enumerate(self.packs):
            offset = pack.table.offset.get(oid)
            if offset is not None:
                return pack_no, offset
        return None

    def __contains__(self, oid: ObjectID) -> bool:
        return self.locate(oid) is not None or self._loose_type(oid) is not None

    def _loose_type(self, oid: ObjectID) -> int | None:
        try:
            return self.store.get_raw(oid)[0]
        except KeyError:
            return None

    def type_of(self, oid: ObjectID) -> int | None:
        """The object's type, from headers only; None if the store lacks it."""
        where = self.locate(oid)
        if where is None:
            return self._loose_type(oid)
        return self._type_at(*where)

    def _type_at(self, pack_no: int, offset: int) -> int:
        chain: list[tuple[int, int]] = []
        while True:
            known = self._type.get((pack_no, offset))
            if known is not None:
                break
            type_num, _size, _start, base = self.packs[pack_no].header(offset)
            chain.append((pack_no, offset))
            if type_num == OFS_DELTA:
                assert isinstance(base, int)
                offset = base
            elif type_num == REF_DELTA:
                assert isinstance(base, bytes)
                where = self.locate(ObjectID(base))
                if where is None:
                    known = self._loose_type(ObjectID(base))
                    if known is None:
                        raise PackReadError(f"missing delta base {base.decode()}")
                    break
                pack_no, offset = where
            else:
                known = type_num
                break
            if len(chain) > MAX_DELTA_CHAIN:
                raise PackReadError("delta chain too long")
        for key in chain:
            self._type[key] = known
        return known

    def size_of(self, oid: ObjectID) -> int:
        """The object's inflated size, reading at most a delta's first bytes."""
        where = self.locate(oid)
        if where is None:
            return len(self.store.get_raw(oid)[1])
        pack = self.packs[where[0]]
        type_num, size, start, _base = pack.header(where[1])
        if type_num not in DELTA_TYPES:
            return size
        # A delta starts with the base's size and then the result's, as varints.
        head = zlib.decompressobj().decompress(pack.data[start : pack.table.end_at[where[1]]], 32)
        pos = 0
        for _ in range(2):
            value, shift = 0, 0
            while True:
                if pos >= len(head):
                    raise PackReadError("truncated delta header")
                byte = head[pos]
                pos += 1
                value |= (byte & 0x7F) << shift
                shift += 7
                if not byte & MSB:
                    break
        return value

    def raw(self, oid: ObjectID) -> tuple[int, bytes]:
        """(type, inflated content). Everything inflated stays cached until `close`."""
        where = self.locate(oid)
        if where is None:
            type_num, raw = self.store.get_raw(oid)  # loose, or KeyError
            return type_num, raw
        return self._raw_at(*where)

    def _raw_at(self, pack_no: int, offset: int) -> tuple[int, bytes]:
        hit = self._raw.get((pack_no, offset))
        if hit is not None:
            return hit
        chain: list[tuple[PackFile, int, int, tuple[int, int]]] = []
        while True:
            pack = self.packs[pack_no]
            type_num, _size, start, base = pack.header(offset)
            if type_num not in DELTA_TYPES:
                result = (type_num, pack.inflate(start, offset))
                self._raw[(pack_no, offset)] = result
                break
            chain.append((pack, offset, start, (pack_no, offset)))
            if len(chain) > MAX_DELTA_CHAIN:
                raise PackReadError("delta chain too long")
            if type_num == OFS_DELTA:
                assert isinstance(base, int)
                offset = base
            else:
                assert isinstance(base, bytes)
                where = self.locate(ObjectID(base))
                if where is None:
                    result = self.store.get_raw(ObjectID(base))
                    break
                pack_no, offset = where
            hit = self._raw.get((pack_no, offset))
            if hit is not None:
                result = hit
                break
        for pack, delta_offset, start, key in reversed(chain):
            target = _apply_delta(result[1], pack.inflate(start, delta_offset))
            if not isinstance(target, bytes):
                target = b"".join(target)
            result = (result[0], target)
            self._raw[key] = result
        return result
