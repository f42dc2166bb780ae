"""Storing an incoming pack: dulwich's `add_thin_pack`, minus its third pass over the data,
and without inflating a second time the objects no delta is built on.

dulwich 1.2.21's `DiskObjectStore.add_thin_pack` reads the pack off the wire (inflating each
object to find where it ends), indexes it (resolving every delta to hash it), and then, once
the pack is in place, inflates and parses every object a third time to reject malformed
ones. That last pass was a third of a push's time in the profile. C git skips it too unless
`receive.fsckObjects` is set; every object is still hashed and the pack checksum verified.

dulwich's indexer inflates every object again after the copy (to hash it, and to resolve
deltas against it). `OnePassIndexer` hashes a whole (non-delta) object while the copy has
it inflated anyway, with the entry's CRC32 computed over the same bytes; only objects that
deltas are built on are inflated again, to resolve those deltas. Deltas are hashed as
before, after resolution. The entries are the ones dulwich's indexer produces
(tests/test_gitrecv_unit.py compares them).

The steps are dulwich's own (`PackStreamCopier`, `PackIndexer`, `extend_pack`,
`write_pack_index`), called in dulwich's order; the store's `_index_pack`,
`_get_pack_basepath` and `_add_cached_pack` helpers are used as `add_thin_pack` uses them
(pinned dulwich==1.2.21). The temporary pack is removed if anything fails.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator

from dulwich.file import GitFile
from dulwich.object_store import PACK_MODE, DiskObjectStore
from dulwich.pack import (
    DELTA_TYPES,
    Pack,
    PackData,
    PackIndexer,
    PackStreamCopier,
    UnpackedObject,
    extend_pack,
    write_pack_index,
)

TEMP_PACK_PREFIX = "tmp_pack_"


class OnePassIndexer(PackIndexer):
    """A `PackIndexer` that takes whole objects' entries from the copy pass."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self._whole: dict[int, tuple[bytes, int, int]] = {}

    def record(self, unpacked: UnpackedObject) -> None:
        super().record(unpacked)
        if unpacked.pack_type_num not in DELTA_TYPES:
            assert unpacked.offset is not None and unpacked.crc32 is not None
            self._whole[unpacked.offset] = (unpacked.sha(), unpacked.offset, unpacked.crc32)

    def _walk_all_chains(self) -> Iterator[tuple[bytes, int, int | None]]:
        for offset, type_num in self._full_ofs:
            entry = self._whole.get(offset)
            if entry is None or offset in self._pending_ofs or entry[0] in self._pending_ref:
                yield from self._follow_chain(offset, type_num, None)  # a delta base
            else:
                yield entry
        yield from self._walk_ref_chains()
        assert not self._pending_ofs, repr(self._pending_ofs)


class CrcPackStreamCopier(PackStreamCopier):
    """`PackStreamCopier` whose objects carry the CRC32 an index entry needs."""

    def verify(self, progress: Callable[..., None] | None = None) -> None:
        for unpacked in self.read_objects(compute_crc32=True):
            if self._delta_iter:
                self._delta_iter.record(unpacked)


def store_incoming_pack(
    store: DiskObjectStore,
    read_all: Callable[[int], bytes],
    read_some: Callable[[int], bytes],
) -> Pack | None:
    """Read a (possibly thin) pack from the wire into `store`; returns the stored pack, or
    None for a pack with no objects (a push that only moves refs), which is not kept."""
    fmt = store.object_format
    fd, path = tempfile.mkstemp(dir=store.path, prefix=TEMP_PACK_PREFIX)
    created: list[str] = []  # files this call put in place, removed again on failure
    try:
        with os.fdopen(fd, "w+b") as f:
            os.chmod(path, PACK_MODE)
            indexer = OnePassIndexer(f, fmt.hash_func, resolve_ext_ref=store.get_raw)
            copier = CrcPackStreamCopier(
                fmt.hash_func,
                read_all,
                read_some,
                f,
                delta_iter=indexer,  # type: ignore[arg-type]
            )
            copier.verify()
            if len(copier) == 0:
                # Kept, it would be a pack without objects, which pack readers do not expect.
                os.remove(path)
                return None
            f.flush()
            f.seek(0)
            with PackData(path, file=f, object_format=fmt) as data:
                indexer.set_pack_data(data)
                entries, ext_refs = store._index_pack(indexer, len(copier))
            # A thin pack's deltas may name bases the client knew we have: append them.
            pack_sha, extra_entries = extend_pack(
                f,
                ext_refs,
                get_raw=store.get_raw,
                compression_level=store.pack_compression_level,
                object_format=fmt,
            )
            f.flush()
        entries.extend(extra_entries)
        entries.sort()
        basename = store._get_pack_basepath(entries)
        name = os.path.basename(basename)[len("pack-") :].encode("ascii")
        for existing in store.packs:
            if existing.name() == name:
                os.remove(path)  # the same objects are already stored
                return existing
        # The index first: dulwich and git only see a pack once both files exist, so the
        # rename below makes it appear whole to a clone running meanwhile.
        with GitFile(basename + ".idx", "wb", mask=PACK_MODE) as index_file:
            write_pack_index(index_file, entries, pack_sha, version=store.pack_index_version)
        created.append(basename + ".idx")
        os.rename(path, basename + ".pack")
        created.append(basename + ".pack")
        pack = Pack(basename, object_format=fmt)
        pack.check_length_and_checksum()
    except BaseException:
        for leftover in (path, *created):
            if os.path.exists(leftover):
                os.remove(leftover)
        raise
    store._add_cached_pack(os.path.basename(basename), pack)
    return pack
