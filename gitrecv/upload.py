"""`git-upload-pack` (clone and fetch): protocol v0/v1 and v2, written for Dockyard.

dulwich 1.2.21 serves protocol v0 only, walks every object through its generic object
store, re-compresses the pack and rejects `filter`; this module keeps C git's wire
behaviour and does the work in bulk:

- **Protocols.** v2 when the client's `GIT_PROTOCOL` asks for it (`ls-refs`, `fetch`),
  else v0 (v1 when asked, which is v0 after a `version 1` line). Every line a client sends
  is parsed strictly (`gitrecv/pktline.py`, `gitrecv/fetchspec.py`); a malformed or refused
  request gets an `ERR` line naming the problem and ends the session.
- **What is advertised is what is served.** v0: multi_ack(_detailed), no-done, side-band
  (-64k), thin-pack, ofs-delta, include-tag, no-progress, shallow, deepen-since,
  deepen-not, deepen-relative, filter, allow-tip/reachable-sha1-in-want. v2: `ls-refs`
  (unborn), `fetch=shallow filter`. Features we do not advertise (ref-in-want,
  packfile-uris, sideband-all, wait-for-done, server options) are refused if sent anyway;
  git does not send them.
- **Wants.** A want must be an advertised tip or reachable from one (this is how a partial
  clone fetches a missing blob later); anything else is `not our ref`.
- **Which objects.** `gitrecv/objectwalk.py`, from the packs read directly
  (`gitrecv/packed.py`); a clone's object list is cached per request.
- **The pack.** Objects are copied compressed, straight from the stored packs, in pack
  order (every OFS_DELTA after its base), checked against the index's CRC32; runs of
  adjacent objects go as one block. An OFS_DELTA whose base moved gets a new header; one
  whose base is not sent goes as a REF_DELTA when the client has the base and asked for a
  thin pack, else whole; anything else (loose, damaged, a base the client lacks) is sent
  whole, inflated and deflated again. The pack never depends on what the client lacks.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dulwich.errors import GitProtocolError, HangupException
from dulwich.objects import ZERO_SHA, ObjectID
from dulwich.refs import Ref
from dulwich.repo import Repo

from gitrecv.fetchspec import (
    PROTOCOL_V1,
    PROTOCOL_V2,
    ObjectFilter,
    RequestError,
    deepen_not_candidates,
    parse_depth,
    parse_filter,
    parse_oid,
    parse_since,
)
from gitrecv.objectwalk import (
    CommitGraph,
    ObjectList,
    ObjectListCache,
    ShallowRequest,
    ShallowResult,
    compute_shallow,
    list_objects,
    ok_to_give_up,
    tags_to_include,
)
from gitrecv.packed import DELTA_TYPES, OFS_DELTA, REF_DELTA, PackedObjects, PackReadError
from gitrecv.pktline import (
    BAND_DATA,
    BAND_ERROR,
    BAND_PROGRESS,
    DELIM,
    ERR_PREFIX,
    FLUSH,
    SIDEBAND_64K_PAYLOAD,
    SIDEBAND_PAYLOAD,
    Marker,
    PktLineReader,
    SidebandSink,
    line,
    pkt,
)

AGENT = b"dockyard/0.1"
OBJECT_FORMAT = b"sha1"
HEAD = Ref(b"HEAD")
PEELED_SUFFIX = b"^{}"
CAPABILITIES_REF = b"capabilities^{}"
PACK_SIGNATURE = b"PACK"
PACK_VERSION = 2
MSB = 0x80

# v0 capabilities (the first ref line), in C git's order.
CAP_MULTI_ACK = b"multi_ack"
CAP_MULTI_ACK_DETAILED = b"multi_ack_detailed"
CAP_THIN_PACK = b"thin-pack"
CAP_SIDE_BAND = b"side-band"
CAP_SIDE_BAND_64K = b"side-band-64k"
CAP_OFS_DELTA = b"ofs-delta"
CAP_SHALLOW = b"shallow"
CAP_DEEPEN_SINCE = b"deepen-since"
CAP_DEEPEN_NOT = b"deepen-not"
CAP_DEEPEN_RELATIVE = b"deepen-relative"
CAP_NO_PROGRESS = b"no-progress"
CAP_INCLUDE_TAG = b"include-tag"
CAP_ALLOW_TIP = b"allow-tip-sha1-in-want"
CAP_ALLOW_REACHABLE = b"allow-reachable-sha1-in-want"
CAP_NO_DONE = b"no-done"
CAP_FILTER = b"filter"
V0_CAPABILITIES = (
    CAP_MULTI_ACK, CAP_THIN_PACK, CAP_SIDE_BAND, CAP_SIDE_BAND_64K, CAP_OFS_DELTA,
    CAP_SHALLOW, CAP_DEEPEN_SINCE, CAP_DEEPEN_NOT, CAP_DEEPEN_RELATIVE, CAP_NO_PROGRESS,
    CAP_INCLUDE_TAG, CAP_MULTI_ACK_DETAILED, CAP_ALLOW_TIP, CAP_ALLOW_REACHABLE, CAP_NO_DONE,
)  # fmt: skip
CLIENT_VALUE_CAPS = (b"agent=", b"session-id=")

# v0 request lines
WANT = b"want "
HAVE = b"have "
SHALLOW = b"shallow "
DEEPEN = b"deepen "
DEEPEN_SINCE = b"deepen-since "
DEEPEN_NOT = b"deepen-not "
DEEPEN_RELATIVE = b"deepen-relative"
FILTER = b"filter "
DONE = b"done"

# v2
V2_COMMAND = b"command="
V2_LS_REFS = b"ls-refs"
V2_FETCH = b"fetch"
V2_ADVERTISEMENT = (
    b"version 2",
    b"agent=" + AGENT,
    b"ls-refs=unborn",
    b"fetch=shallow filter",
    b"object-format=" + OBJECT_FORMAT,
)
V2_REQUEST_CAPABILITIES = (b"agent=", b"session-id=", b"object-format=")
LS_REFS_SYMREFS = b"symrefs"
LS_REFS_PEEL = b"peel"
LS_REFS_UNBORN = b"unborn"
LS_REFS_PREFIX = b"ref-prefix "
MAX_REF_PREFIXES = 65536
FETCH_FLAGS = (b"thin-pack", b"no-progress", b"include-tag", b"ofs-delta")
SECTION_ACKNOWLEDGMENTS = b"acknowledgments"
SECTION_SHALLOW_INFO = b"shallow-info"
SECTION_PACKFILE = b"packfile"
MAX_WANTS = 1_000_000
MAX_HAVES = 1_000_000


@dataclass
class FetchRequest:
    """One fetch: what the client wants and has, and how it wants the pack."""

    wants: list[ObjectID] = field(default_factory=list)
    haves: list[ObjectID] = field(default_factory=list)
    shallow: ShallowRequest = field(default_factory=ShallowRequest)
    object_filter: ObjectFilter | None = None
    done: bool = False
    thin_pack: bool = False
    ofs_delta: bool = False
    include_tag: bool = False
    no_progress: bool = False
    sideband_payload: int | None = None  # None: the pack goes without side-band

    def set_deepen(self, depth: int) -> None:
        if self.shallow.by_rev_list:
            raise RequestError(
                "deepen and deepen-since (or deepen-not) cannot be used together"
            )
        self.shallow.depth = depth

    def check_deepen(self) -> None:
        if self.shallow.depth is not None and self.shallow.by_rev_list:
            raise RequestError(
                "deepen and deepen-since (or deepen-not) cannot be used together"
            )


class Negotiation:
    """Which of the client's haves we share, and whether we can stop asking (`ready`)."""

    def __init__(self, objects: PackedObjects, graph: CommitGraph, wants: list[ObjectID]):
        self.objects = objects
        self.graph = graph
        self.wants = wants
        self.common: list[ObjectID] = []
        self._common_set: set[ObjectID] = set()
        self._ready = False

    def have(self, oid: ObjectID) -> bool:
        """Record a have; True if we have that object too."""
        if oid in self._common_set:
            return True
        if self.objects.type_of(oid) is None:
            return False
        self.common.append(oid)
        self._common_set.add(oid)
        return True

    def ready(self) -> bool:
        if not self._ready:
            self._ready = ok_to_give_up(self.graph, self.wants, self._common_set)
        return self._ready


class UploadPack:
    """One `git-upload-pack` session over a byte stream (one instance per session)."""

    def __init__(
        self,
        repo: Repo,
        read: Callable[[int], bytes],
        write: Callable[[bytes], object],
        version: int = 0,
    ) -> None:
        self.repo = repo
        self.reader = PktLineReader(read)
        self._write = write
        self.version = version
        self.objects: PackedObjects | None = None
        self._refs: dict[Ref, ObjectID] | None = None
        self._reachable: set[ObjectID] | None = None
        self.cache = ObjectListCache(repo.controldir())
        self.sent_objects = 0
        self.multi_ack = 0  # v0: 0 single ack, 1 multi_ack, 2 multi_ack_detailed
        self.no_done = False

    # -- entry ------------------------------------------------------------------------

    def serve(self) -> None:
        try:
            self.objects = PackedObjects(self.repo.object_store)
            if self.version == PROTOCOL_V2:
                self._serve_v2()
            else:
                self._serve_v0()
        except RequestError as exc:
            self._send_error(str(exc))
            raise
        except PackReadError as exc:
            self._send_error(f"the repository cannot be read: {exc}")
            raise GitProtocolError(str(exc)) from exc
        finally:
            if self.objects is not None:
                self.objects.close()

    def _send_error(self, message: str) -> None:
        try:
            self._write(pkt(ERR_PREFIX + message.encode("utf-8", "replace")[:1000] + b"\n"))
        except Exception:  # noqa: BLE001, S110 (the client may be gone already)
            pass

    def _read(self) -> bytes | Marker:
        return self.reader.read()

    def refs(self) -> dict[Ref, ObjectID]:
        if self._refs is None:
            refs = {}
            for ref, oid in self.repo.get_refs().items():
                if oid != ZERO_SHA and (ref == HEAD or ref.startswith(b"refs/")):
                    refs[Ref(ref)] = ObjectID(oid)
            self._refs = refs
        return self._refs

    def peeled(self, ref: Ref) -> ObjectID | None:
        try:
            peeled = self.repo.get_peeled(ref)
        except KeyError:
            return None
        oid = self.refs().get(ref)
        return ObjectID(peeled) if peeled is not None and peeled != oid else None

    def symrefs(self) -> dict[Ref, Ref]:
        return {Ref(k): Ref(v) for k, v in self.repo.refs.get_symrefs().items()}

    # -- v0 ---------------------------------------------------------------------------

    def _serve_v0(self) -> None:
        out = []
        if self.version == PROTOCOL_V1:
            out.append(line(b"version 1"))
        out.extend(self._advertisement_v0())
        self._write(b"".join(out))
        request = self._read_request_v0()
        if request is None:
            return
        self._check_wants(request.wants, advertised_only=False)
        assert self.objects is not None
        graph = CommitGraph(self.objects)
        shallow = self._resolve_shallow(graph, request)
        if request.shallow.deepens:
            self._write(self._shallow_lines(shallow) + FLUSH)
        negotiation = Negotiation(self.objects, graph, request.wants)
        if not self._negotiate_v0(request, negotiation):
            return
        self._send_pack(request, negotiation.common, shallow, graph)

    def _advertisement_v0(self) -> list[bytes]:
        refs = self.refs()
        symrefs = self.symrefs()
        caps = list(V0_CAPABILITIES)
        head_target = symrefs.get(HEAD)
        if head_target is not None and head_target in refs:
            caps.append(b"symref=HEAD:" + head_target)
        caps += [CAP_FILTER, b"object-format=" + OBJECT_FORMAT, b"agent=" + AGENT]
        ordered = ([HEAD] if HEAD in refs else []) + sorted(r for r in refs if r != HEAD)
        lines = []
        if not ordered:
            lines.append(line(ZERO_SHA + b" " + CAPABILITIES_REF + b"\0" + b" ".join(caps)))
        for i, ref in enumerate(ordered):
            text = refs[ref] + b" " + ref
            if i == 0:
                text += b"\0" + b" ".join(caps)
            lines.append(line(text))
            peeled = self.peeled(ref)
            if peeled is not None and ref != HEAD:
                lines.append(line(peeled + b" " + ref + PEELED_SUFFIX))
        lines.append(FLUSH)
        return lines

    def _read_request_v0(self) -> FetchRequest | None:
        first = self._read()
        if first is Marker.FLUSH:
            return None  # the client only wanted the refs (`git ls-remote`)
        if not isinstance(first, bytes) or not first.startswith(WANT):
            raise RequestError(f"expected a want line, got {_shown(first)}")
        words = first.split(b" ")
        caps = set(words[2:])
        for cap in caps:
            if not cap or not all(0x21 <= c < 0x7F for c in cap):
                raise RequestError(f"invalid capability {_shown(cap)}")
        request = FetchRequest(
            thin_pack=CAP_THIN_PACK in caps,
            ofs_delta=CAP_OFS_DELTA in caps,
            include_tag=CAP_INCLUDE_TAG in caps,
            no_progress=CAP_NO_PROGRESS in caps,
        )
        if CAP_SIDE_BAND_64K in caps:
            request.sideband_payload = SIDEBAND_64K_PAYLOAD
        elif CAP_SIDE_BAND in caps:
            request.sideband_payload = SIDEBAND_PAYLOAD
        self.multi_ack = (
            2 if CAP_MULTI_ACK_DETAILED in caps else 1 if CAP_MULTI_ACK in caps else 0
        )
        self.no_done = CAP_NO_DONE in caps and self.multi_ack == 2
        request.shallow.relative = CAP_DEEPEN_RELATIVE in caps
        filter_allowed = CAP_FILTER in caps
        request.wants.append(parse_oid(words[1], "want"))
        while True:
            packet = self._read()
            if packet is Marker.FLUSH:
                break
            if not isinstance(packet, bytes):
                raise RequestError(f"unexpected {_shown(packet)} in the request")
            if packet.startswith(FILTER) and filter_allowed:
                if request.object_filter is not None:
                    raise RequestError("more than one filter line")
                request.object_filter = parse_filter(packet[len(FILTER) :])
            else:
                self._request_line(request, packet, v2=False)
        request.check_deepen()
        return request

    def _request_line(self, request: FetchRequest, packet: bytes, v2: bool) -> None:
        """The lines v0 and v2 share: want, shallow and the deepen family."""
        if packet.startswith(WANT):
            if len(request.wants) >= MAX_WANTS:
                raise RequestError("too many wants")
            request.wants.append(parse_oid(packet[len(WANT) :], "want"))
        elif packet.startswith(SHALLOW):
            request.shallow.client_shallow.add(parse_oid(packet[len(SHALLOW) :], "shallow"))
        elif packet.startswith(DEEPEN):
            request.set_deepen(parse_depth(packet[len(DEEPEN) :]))
        elif packet.startswith(DEEPEN_SINCE):
            request.shallow.since = parse_since(packet[len(DEEPEN_SINCE) :])
        elif packet.startswith(DEEPEN_NOT):
            self._deepen_not(request, packet[len(DEEPEN_NOT) :])
        elif v2 and packet == DEEPEN_RELATIVE:
            request.shallow.relative = True
        else:
            raise RequestError(f"unexpected line: {_shown(packet)}")

    def _deepen_not(self, request: FetchRequest, value: bytes) -> None:
        refs = self.refs()
        found = [name for name in deepen_not_candidates(value) if name in refs]
        if not found:
            raise RequestError(f"deepen-not is not a ref: {_shown(value)}")
        if len(found) > 1:
            raise RequestError(f"ambiguous deepen-not: {_shown(value)}")
        assert self.objects is not None
        request.shallow.not_commits.append(CommitGraph(self.objects).peel(refs[Ref(found[0])]))

    def _negotiate_v0(self, request: FetchRequest, negotiation: Negotiation) -> bool:
        """C git's get_common_commits: True when the pack is to be sent."""
        multi_ack = self.multi_ack
        got_common = got_other = sent_ready = False
        last = b""
        haves = 0
        while True:
            packet = self._read()
            if packet is Marker.FLUSH:
                out = []
                if multi_ack == 2 and got_common and not got_other and negotiation.ready():
                    sent_ready = True
                    out.append(line(b"ACK " + last + b" ready"))
                if not negotiation.common or multi_ack:
                    out.append(line(b"NAK"))
                if self.no_done and sent_ready:
                    out.append(line(b"ACK " + last))
                    self._write(b"".join(out))
                    return True
                self._write(b"".join(out))
                got_common = got_other = False
                continue
            if isinstance(packet, bytes) and packet.startswith(HAVE):
                haves += 1
                if haves > MAX_HAVES:
                    raise RequestError("too many haves")
                oid = parse_oid(packet[len(HAVE) :], "have")
                if not negotiation.have(oid):
                    got_other = True
                    if multi_ack and negotiation.ready():
                        if multi_ack == 2:
                            sent_ready = True
                            self._write(line(b"ACK " + oid + b" ready"))
                        else:
                            self._write(line(b"ACK " + oid + b" continue"))
                    continue
                got_common = True
                last = oid
                if multi_ack == 2:
                    self._write(line(b"ACK " + oid + b" common"))
                elif multi_ack:
                    self._write(line(b"ACK " + oid + b" continue"))
                elif len(negotiation.common) == 1:
                    self._write(line(b"ACK " + oid))
                continue
            if packet == DONE:
                if negotiation.common:
                    if multi_ack:
                        self._write(line(b"ACK " + last))
                    return True
                self._write(line(b"NAK"))
                return True
            raise RequestError(f"expected a have line, got {_shown(packet)}")

    # -- v2 ---------------------------------------------------------------------------

    def _serve_v2(self) -> None:
        self._write(b"".join(line(text) for text in V2_ADVERTISEMENT) + FLUSH)
        while True:
            try:
                packet = self._read()
            except HangupException:
                return  # the client closed the connection after its last command
            if packet is Marker.FLUSH:
                return  # the client says it is done
            if not isinstance(packet, bytes) or not packet.startswith(V2_COMMAND):
                raise RequestError(f"expected a command, got {_shown(packet)}")
            command = packet[len(V2_COMMAND) :]
            if command not in (V2_LS_REFS, V2_FETCH):
                raise RequestError(f"invalid command '{_shown(command)}'")
            args = self._read_v2_arguments()
            if command == V2_LS_REFS:
                self._ls_refs(args)
            else:
                self._fetch_v2(args)

    def _read_v2_arguments(self) -> list[bytes]:
        while True:  # capabilities, up to the delimiter (or straight to the flush)
            packet = self._read()
            if packet is Marker.DELIM:
                break
            if packet is Marker.FLUSH:
                return []
            if not isinstance(packet, bytes) or not packet.startswith(V2_REQUEST_CAPABILITIES):
                raise RequestError(f"unknown capability '{_shown(packet)}'")
            if packet.startswith(b"object-format=") and packet != b"object-format=sha1":
                raise RequestError("mismatched object format: this server speaks sha1")
        args = []
        while True:
            packet = self._read()
            if packet is Marker.FLUSH:
                return args
            if not isinstance(packet, bytes):
                raise RequestError(f"unexpected {_shown(packet)} in the arguments")
            if len(args) >= MAX_WANTS + MAX_HAVES:
                raise RequestError("too many arguments")
            args.append(packet)

    def _ls_refs(self, args: list[bytes]) -> None:
        symrefs_wanted = peel = unborn = False
        prefixes: list[bytes] = []
        for arg in args:
            if arg == LS_REFS_SYMREFS:
                symrefs_wanted = True
            elif arg == LS_REFS_PEEL:
                peel = True
            elif arg == LS_REFS_UNBORN:
                unborn = True
            elif arg.startswith(LS_REFS_PREFIX):
                if len(prefixes) < MAX_REF_PREFIXES:
                    prefixes.append(arg[len(LS_REFS_PREFIX) :])
            else:
                raise RequestError(f"unexpected line: {_shown(arg)}")
        refs = self.refs()
        symrefs = self.symrefs()
        out = []

        def selected(ref: bytes) -> bool:
            return not prefixes or any(ref.startswith(p) for p in prefixes)

        head_target = symrefs.get(HEAD)
        if HEAD not in refs and unborn and head_target is not None and selected(HEAD):
            out.append(line(b"unborn HEAD symref-target:" + head_target))
        for ref in ([HEAD] if HEAD in refs else []) + sorted(r for r in refs if r != HEAD):
            if not selected(ref):
                continue
            text = refs[ref] + b" " + ref
            if symrefs_wanted and ref in symrefs:
                text += b" symref-target:" + symrefs[ref]
            if peel:
                peeled = self.peeled(ref)
                if peeled is not None:
                    text += b" peeled:" + peeled
            out.append(line(text))
        out.append(FLUSH)
        self._write(b"".join(out))

    def _fetch_v2(self, args: list[bytes]) -> None:
        request = FetchRequest(sideband_payload=SIDEBAND_64K_PAYLOAD)
        for arg in args:
            if arg.startswith(HAVE):
                if len(request.haves) >= MAX_HAVES:
                    raise RequestError("too many haves")
                request.haves.append(parse_oid(arg[len(HAVE) :], "have"))
            elif arg == DONE:
                request.done = True
            elif arg in FETCH_FLAGS:
                setattr(request, arg.decode().replace("-", "_"), True)
            elif arg.startswith(FILTER):
                if request.object_filter is not None:
                    raise RequestError("more than one filter line")
                request.object_filter = parse_filter(arg[len(FILTER) :])
            else:
                self._request_line(request, arg, v2=True)
        request.check_deepen()
        if not request.wants:
            raise RequestError("fetch without any want")
        self._check_wants(request.wants, advertised_only=False)
        assert self.objects is not None
        graph = CommitGraph(self.objects)
        negotiation = Negotiation(self.objects, graph, request.wants)
        for oid in request.haves:
            negotiation.have(oid)
        out = []
        if not request.done:
            ready = negotiation.ready()
            out.append(line(SECTION_ACKNOWLEDGMENTS))
            out.extend(line(b"ACK " + oid) for oid in negotiation.common)
            if not negotiation.common:
                out.append(line(b"NAK"))
            if not ready:
                self._write(b"".join(out) + FLUSH)
                return
            out += [line(b"ready"), DELIM]
        shallow = self._resolve_shallow(graph, request)
        if request.shallow.deepens or request.shallow.client_shallow:
            out += [line(SECTION_SHALLOW_INFO), self._shallow_lines(shallow), DELIM]
        out.append(line(SECTION_PACKFILE))
        self._write(b"".join(out))
        self._send_pack(request, negotiation.common, shallow, graph)

    # -- shared -----------------------------------------------------------------------

    def _check_wants(self, wants: Iterable[ObjectID], advertised_only: bool) -> None:
        refs = self.refs()
        tips = set(refs.values())
        tips.update(p for p in (self.peeled(r) for r in refs) if p is not None)
        for want in wants:
            if want in tips:
                continue
            if advertised_only or want not in self._reachable_from_refs():
                raise RequestError(f"upload-pack: not our ref {want.decode()}")

    def _reachable_from_refs(self) -> set[ObjectID]:
        """Every object reachable from a ref (cached like a clone of everything)."""
        if self._reachable is None:
            assert self.objects is not None
            tips = sorted(set(self.refs().values()))
            result = self._cached_list(tips, ShallowRequest(), None, CommitGraph(self.objects))
            self._reachable = set(result.objects)
        return self._reachable

    def _resolve_shallow(self, graph: CommitGraph, request: FetchRequest) -> ShallowResult:
        return compute_shallow(graph, request.wants, request.shallow)

    @staticmethod
    def _shallow_lines(shallow: ShallowResult) -> bytes:
        out = [line(b"shallow " + oid) for oid in sorted(shallow.shallow)]
        out += [line(b"unshallow " + oid) for oid in sorted(shallow.unshallow)]
        return b"".join(out)

    def _cached_list(
        self,
        wants: list[ObjectID],
        shallow_request: ShallowRequest,
        object_filter: ObjectFilter | None,
        graph: CommitGraph,
    ) -> ObjectList:
        """The object list of a request without common commits, from the cache if there."""
        key = ObjectListCache.key(wants, shallow_request, object_filter)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        assert self.objects is not None
        shallow = compute_shallow(graph, wants, shallow_request)
        result = list_objects(self.objects, graph, wants, (), shallow, object_filter)
        self.cache.put(key, result)
        return result

    def _send_pack(
        self,
        request: FetchRequest,
        common: list[ObjectID],
        shallow: ShallowResult,
        graph: CommitGraph,
    ) -> None:
        assert self.objects is not None
        if not common and not request.shallow.client_shallow:
            object_list = self._cached_list(
                request.wants, request.shallow, request.object_filter, graph
            )
        else:
            object_list = list_objects(
                self.objects, graph, request.wants, common, shallow, request.object_filter
            )
        oids = object_list.objects
        if request.include_tag:
            sending = set(oids)
            oids = oids + tags_to_include(
                self.objects, self.refs(), sending, object_list.client_has
            )
        sink = SidebandSink(
            self._write,
            BAND_DATA if request.sideband_payload else None,
            request.sideband_payload or 0,
        )
        progress = request.sideband_payload is not None and not request.no_progress
        if progress:
            self._write(_band(BAND_PROGRESS, f"Counting objects: {len(oids)}, done.\n"))
        try:
            self.sent_objects = write_pack(
                sink.write,
                self.objects,
                oids,
                client_has=object_list.client_has if request.thin_pack else set(),
                ofs_delta=request.ofs_delta,
            )
        except PackReadError as exc:
            sink.flush()
            if request.sideband_payload:
                self._write(_band(BAND_ERROR, f"the repository cannot be read: {exc}\n"))
            raise GitProtocolError(str(exc)) from exc
        sink.flush()
        if request.sideband_payload is not None:
            self._write(FLUSH)


def _band(band: int, text: str) -> bytes:
    return pkt(bytes([band]) + text.encode("utf-8", "replace")[:900])


def _shown(value: object) -> str:
    if isinstance(value, Marker):
        return f"a {value.name.lower()} packet"
    if isinstance(value, bytes):
        text = value[:80].decode("ascii", "replace")
        return "'" + "".join(c if c.isprintable() else "?" for c in text) + "'"
    return repr(value)


# -- the pack ---------------------------------------------------------------------------


def _object_header(type_num: int, size: int) -> bytes:
    out = bytearray()
    byte = (type_num << 4) | (size & 0x0F)
    size >>= 4
    while size:
        out.append(byte | MSB)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


def _ofs_distance(distance: int) -> bytes:
    out = [distance & 0x7F]
    distance >>= 7
    while distance:
        distance -= 1
        out.append(MSB | (distance & 0x7F))
        distance >>= 7
    return bytes(reversed(out))


def write_pack(
    write: Callable[[bytes | memoryview], object],
    objects: PackedObjects,
    oids: Iterable[ObjectID],
    client_has: set[ObjectID] | frozenset[ObjectID] = frozenset(),
    ofs_delta: bool = True,
) -> int:
    """Write a pack holding `oids`, reusing stored compressed data (see the module
    docstring). `client_has` may serve as thin-pack delta bases. Returns the count."""
    oids = list(dict.fromkeys(oids))
    packed: list[tuple[int, int, ObjectID]] = []
    whole: list[ObjectID] = []
    for oid in oids:
        where = objects.locate(oid)
        if where is None:
            whole.append(oid)
        else:
            packed.append((where[0], where[1], oid))
    packed.sort()
    sending = set(oids)
    digest = hashlib.sha1()

    def emit(data: bytes | memoryview) -> None:
        digest.update(data)
        write(data)

    emit(PACK_SIGNATURE + struct.pack(">II", PACK_VERSION, len(oids)))
    position = 12
    written_at: dict[tuple[int, int], int] = {}
    span: list[int] = [-1, 0, 0]  # pack number, start, end of bytes copied as they are

    def flush_span() -> None:
        if span[0] >= 0 and span[2] > span[1]:
            emit(memoryview(objects.packs[span[0]].data)[span[1] : span[2]])
        span[0] = -1

    for pack_no, offset, oid in packed:
        pack = objects.packs[pack_no]
        end = pack.table.end_at[offset]
        view = memoryview(pack.data)[offset:end]
        if zlib.crc32(view) != pack.table.crc_at[offset]:
            whole.append(oid)  # damaged on disk: inflate (and so check) it the slow way
            continue
        type_num, size, start, base = pack.header(offset)
        chunk: bytes | None = None  # a rewritten object; None: copied as stored
        if type_num == OFS_DELTA:
            assert isinstance(base, int)
            base_at = written_at.get((pack_no, base))
            base_oid = pack.table.id_at.get(base)
            if base_at is not None and ofs_delta:
                if position - base_at != offset - base:
                    chunk = (
                        bytes(pack.data[offset : offset + _header_length(pack.data, offset)])
                        + _ofs_distance(position - base_at)
                        + pack.data[start:end]
                    )
            elif base_oid is not None and (base_oid in sending or base_oid in client_has):
                chunk = _object_header(REF_DELTA, size) + bytes.fromhex(base_oid.decode())
                chunk += pack.data[start:end]
            else:
                whole.append(oid)
                continue
        elif type_num == REF_DELTA:
            assert isinstance(base, bytes)
            if base not in sending and base not in client_has:
                whole.append(oid)
                continue
        elif type_num in DELTA_TYPES:  # pragma: no cover (both handled above)
            whole.append(oid)
            continue
        written_at[(pack_no, offset)] = position
        if chunk is None:
            if span[0] == pack_no and span[2] == offset:
                span[2] = end
            else:
                flush_span()
                span[:] = [pack_no, offset, end]
            position += end - offset
        else:
            flush_span()
            emit(chunk)
            position += len(chunk)
    flush_span()
    for oid in whole:
        type_num, raw = objects.raw(oid)
        chunk = _object_header(type_num, len(raw)) + zlib.compress(raw, 1)
        emit(chunk)
        position += len(chunk)
    write(digest.digest())
    return len(oids)


def _header_length(data: mmap.mmap, offset: int) -> int:
    """Length of the type-and-size header of the object at `offset`."""
    pos = offset
    while data[pos] & MSB:
        pos += 1
    return pos + 1 - offset
