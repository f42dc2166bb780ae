"""`git-upload-pack` with dulwich, sending stored pack data as is.

dulwich's `UploadPackHandler` negotiates well but then writes the pack by inflating every
object and deflating it again (and parsing each one on the way): on a 35 MB repository that
was most of a clone's time. Here the negotiation stays dulwich's, and the pack is written by
`write_reused_pack`, which copies each object's compressed bytes straight from the pack
that stores it (C git calls this pack reuse), checked against the index's CRC32:

- whole objects and REF_DELTAs are copied byte for byte;
- an OFS_DELTA whose base is sent too gets a new header (the distance to the base changes)
  and its compressed delta copied;
- anything else (a loose object, a delta whose base is not sent, a CRC mismatch) is sent
  whole, inflated and deflated by dulwich, so the pack never depends on what the client has.

Partial clone (`filter`) is not advertised, so git falls back to a full clone.
"""

from __future__ import annotations

import binascii
import hashlib
import mmap
import stat
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from dulwich.object_store import PackBasedObjectStore
from dulwich.objects import S_ISGITLINK, Commit, ObjectID, Tag, Tree, hex_to_sha, parse_tree
from dulwich.pack import OFS_DELTA, REF_DELTA, Pack, pack_object_header
from dulwich.protocol import CAPABILITY_FILTER, CAPABILITY_NO_DONE
from dulwich.server import UploadPackHandler, _ProtocolGraphWalker

PACK_SIGNATURE = b"PACK"
PACK_VERSION = 2
PACK_TRAILER_SIZE = 20  # the SHA-1 of everything before it
SEND_BUFFER = 65515 * 4  # a few side-band packets per write to the channel
MSB = 0x80


class BufferedSink:
    """Gathers small writes into large ones: one channel write per few packets."""

    def __init__(self, write: Callable[[bytes], object], size: int = SEND_BUFFER) -> None:
        self._write = write
        self._size = size
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= self._size:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self._write(bytes(self._buf))
            self._buf.clear()


@dataclass(frozen=True)
class StoredEntry:
    """Where one object's bytes sit in a pack file."""

    pack_no: int
    offset: int
    end: int
    crc32: int | None


class PackLocator:
    """Every packed object's pack, offset, extent and CRC, read from the pack indexes."""

    def __init__(self, packs: Sequence[Pack]) -> None:
        self.packs = list(packs)
        self.entries: dict[bytes, StoredEntry] = {}
        self.sha_at: list[dict[int, bytes]] = []
        self.maps: list[mmap.mmap] = []
        for pack_no, pack in enumerate(self.packs):
            rows = sorted(pack.index.iterentries(), key=lambda row: row[1])
            with open(pack._data_path, "rb") as f:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self.maps.append(data)
            # The last object ends at the trailer; a pack without objects has no ends.
            ends = [row[1] for row in rows[1:]] + [len(data) - PACK_TRAILER_SIZE] * bool(rows)
            offsets = {}
            for (sha, offset, crc), end in zip(rows, ends, strict=True):
                # An object in two packs: keep the first, as dulwich's lookups do.
                self.entries.setdefault(sha, StoredEntry(pack_no, offset, end, crc))
                offsets[offset] = sha
            self.sha_at.append(offsets)

    def close(self) -> None:
        for data in self.maps:
            data.close()


def _parse_header(data: mmap.mmap, offset: int) -> tuple[int, int, int | None]:
    """(type, length of the type+size header, OFS_DELTA base offset or None)."""
    pos = offset
    byte = data[pos]
    type_num = (byte >> 4) & 7
    while byte & MSB:
        pos += 1
        byte = data[pos]
    pos += 1
    size_header_len = pos - offset
    if type_num != OFS_DELTA:
        return type_num, size_header_len, None
    byte = data[pos]
    distance = byte & 0x7F
    while byte & MSB:
        pos += 1
        byte = data[pos]
        distance = ((distance + 1) << 7) | (byte & 0x7F)
    return type_num, size_header_len, offset - distance


def _ofs_distance(distance: int) -> bytes:
    out = [distance & 0x7F]
    distance >>= 7
    while distance:
        distance -= 1
        out.append(MSB | (distance & 0x7F))
        distance >>= 7
    return bytes(reversed(out))


def write_reused_pack(
    write: Callable[[bytes], object],
    store: PackBasedObjectStore,
    object_ids: Iterable[ObjectID],
) -> int:
    """Write a pack holding `object_ids`, reusing stored compressed data. Returns the count."""
    oids = list(dict.fromkeys(object_ids))
    locator = PackLocator(list(store.packs))
    try:
        packed: list[tuple[StoredEntry, bytes]] = []
        whole: list[bytes] = []
        for oid in oids:
            raw = hex_to_sha(oid)
            entry = locator.entries.get(raw)
            if entry is None:
                whole.append(raw)
            else:
                packed.append((entry, raw))
        # Pack order keeps every OFS_DELTA after its base, as the format requires.
        packed.sort(key=lambda item: (item[0].pack_no, item[0].offset))
        # Everything listed is in the pack, reused or whole: a REF_DELTA may name any of it.
        sending = {hex_to_sha(oid) for oid in oids}

        digest = hashlib.sha1()

        def emit(data: bytes) -> None:
            digest.update(data)
            write(data)

        emit(PACK_SIGNATURE + struct.pack(">II", PACK_VERSION, len(oids)))
        position = 12
        written_at: dict[bytes, int] = {}
        for entry, raw in packed:
            chunk = _reuse(locator, entry, sending, written_at, position)
            if chunk is None:
                whole.append(raw)
                continue
            written_at[raw] = position
            emit(chunk)
            position += len(chunk)
        for raw in whole:
            type_num, body = store.get_raw(raw)
            header = pack_object_header(type_num, None, len(body), store.object_format)
            chunk = bytes(header) + zlib.compress(body)
            emit(chunk)
            position += len(chunk)
        write(digest.digest())
        return len(oids)
    finally:
        locator.close()


def _reuse(
    locator: PackLocator,
    entry: StoredEntry,
    sending: set[bytes],
    written_at: dict[bytes, int],
    position: int,
) -> bytes | None:
    """The object's bytes for the new pack, or None when it must be sent whole."""
    data = locator.maps[entry.pack_no]
    stored = data[entry.offset : entry.end]
    if entry.crc32 is not None and binascii.crc32(stored) != entry.crc32:
        return None  # damaged on disk: let dulwich read (and check) it the slow way
    type_num, size_header_len, base_offset = _parse_header(data, entry.offset)
    if type_num == REF_DELTA:
        base = bytes(data[entry.offset + size_header_len : entry.offset + size_header_len + 20])
        return stored if base in sending else None
    if type_num != OFS_DELTA:
        return stored
    assert base_offset is not None
    base = locator.sha_at[entry.pack_no].get(base_offset)
    if base is None or base not in written_at:
        return None
    body_start = entry.offset + size_header_len + len(_ofs_distance(entry.offset - base_offset))
    return (
        bytes(stored[:size_header_len])
        + _ofs_distance(position - written_at[base])
        + bytes(data[body_start : entry.end])
    )


def reachable_objects(
    store: PackBasedObjectStore, wants: Iterable[ObjectID], tagged: dict[ObjectID, ObjectID]
) -> list[ObjectID]:
    """Every object reachable from `wants`, for a clone (the client has nothing).

    dulwich's MissingObjectFinder builds a parsed object for every commit and tree; this walk
    reads their raw text and parses only what it follows (trees with dulwich's C parser), and
    never reads a blob. `tagged` (peeled → tag) adds the tags `include-tag` asks for."""
    seen: set[bytes] = set()
    found: list[ObjectID] = []
    stack = list(wants)
    while stack:
        sha = stack.pop()
        if sha in seen:
            continue
        seen.add(sha)
        found.append(sha)
        type_num, raw = store.get_raw(sha)
        if type_num == Commit.type_num:
            for line in raw[: raw.find(b"\n\n")].split(b"\n"):
                if line.startswith((b"tree ", b"parent ")):
                    stack.append(ObjectID(line.split(b" ", 1)[1]))
        elif type_num == Tree.type_num:
            for _name, mode, child in parse_tree(raw, store.object_format.oid_length):
                if child in seen or S_ISGITLINK(mode):
                    continue
                if stat.S_ISDIR(mode):
                    stack.append(ObjectID(child))
                else:
                    seen.add(child)
                    found.append(ObjectID(child))
        elif type_num == Tag.type_num:
            stack.append(ObjectID(raw[len(b"object ") : raw.find(b"\n")]))
    found.extend(tag for peeled, tag in tagged.items() if peeled in seen and tag not in seen)
    return found


class ReusingUploadPackHandler(UploadPackHandler):
    """dulwich's upload-pack negotiation, with `write_reused_pack` writing the pack."""

    def capabilities(self) -> list[bytes]:
        return [c for c in super().capabilities() if c != CAPABILITY_FILTER]

    def handle(self) -> None:
        # The negotiation below is dulwich 1.2.21's `UploadPackHandler.handle`, unchanged
        # except that the filter branch is gone (not advertised).
        self._processing_have_lines = True
        graph_walker = _ProtocolGraphWalker(
            self, self.repo.object_store, self.repo.get_peeled, self.repo.refs.get_symrefs
        )
        wants: list[ObjectID] = []

        def wants_wrapper(refs: dict, depth: int | None = None) -> list[ObjectID]:
            wants.extend(graph_walker.determine_wants(refs, depth))
            return wants

        missing_objects = self.repo.find_missing_objects(
            wants_wrapper, graph_walker, self.progress, get_tagged=self.get_tagged
        )
        if len(wants) == 0 or missing_objects is None:
            return
        if not missing_objects.remote_has and not graph_walker.shallow:
            object_ids = reachable_objects(self.repo.object_store, wants, self.get_tagged())
        else:
            object_ids = [oid for oid, _hint in missing_objects]
        if not graph_walker.handle_done(
            not self.has_capability(CAPABILITY_NO_DONE), self._done_received
        ):
            return
        self._start_pack_send_phase()
        self.progress(f"counting objects: {len(object_ids)}, done.\n".encode("ascii"))
        sink = BufferedSink(self.write_pack_data)
        write_reused_pack(sink.write, self.repo.object_store, object_ids)
        sink.flush()
        self.proto.write_pkt_line(None)
