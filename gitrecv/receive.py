"""`git-receive-pack` with dulwich: store the pushed pack, deploy, then move refs.

dulwich's `ReceivePackHandler` reads the update request, stores the pack and moves each
ref after its `_on_update` hook. Dockyard needs more than that hook gives, so `handle` and
the ref phase are ours, built from dulwich's parts (advertisement, capabilities, pack
ingestion, status report):

- the request may start with `shallow` lines (every push from a shallow clone does), which
  dulwich 1.2.21 would take for a malformed command; the push goes through when this repo
  has the history the clone leaves out, and is refused clearly when it does not;
- the pack is read through a byte counter that enforces the maximum push size, and a failed
  transfer leaves no temporary pack behind;
- the deploy branch runs the pipeline *before* its ref moves, with the pipeline's output
  sent as side-band progress (`remote:` lines) while it runs; a failure reports
  `ng REF deploy failed` and leaves the ref where it was;
- a ref update whose compare-and-swap fails is reported (dulwich ignores the result);
- `atomic` is all-or-nothing including the deploy.

Push options and push certificates are not advertised, so git refuses `-o`/`--signed`
itself with a clear message before sending anything.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO
from typing import Protocol as TypingProtocol

import structlog
from dulwich.errors import GitProtocolError
from dulwich.objects import ZERO_SHA, Commit, ObjectID, valid_hexsha
from dulwich.protocol import (
    CAPABILITIES_REF,
    CAPABILITY_ATOMIC,
    CAPABILITY_DELETE_REFS,
    CAPABILITY_OFS_DELTA,
    CAPABILITY_QUIET,
    CAPABILITY_REPORT_STATUS,
    CAPABILITY_SIDE_BAND_64K,
    SIDE_BAND_CHANNEL_PROGRESS,
    Protocol,
    capability_object_format,
    extract_capabilities,
    format_ref_line,
    symref_capabilities,
)
from dulwich.refs import Ref, check_ref_format
from dulwich.repo import Repo
from dulwich.server import Backend, ReceivePackHandler

from dockyard.bridge import ChannelClosed
from dockyard.errors import DockyardError
from dockyard.output import ERROR, STEP
from gitrecv.objectsize import ObjectTooLarge, object_size_limit
from gitrecv.packs import store_incoming_pack
from gitrecv.repos import remove_leftovers

log = structlog.get_logger("dockyard.gitrecv")

BRANCH_PREFIX = b"refs/heads/"
TAG_PREFIX = b"refs/tags/"
SHALLOW_PREFIX = b"shallow "
HEAD = Ref(b"HEAD")
DEFAULT_DEPLOY_BRANCHES = (b"main", b"master")

# Status texts git shows in `! [remote rejected] REF -> REF (TEXT)`.
STATUS_OK = b"ok"
STATUS_DEPLOY_FAILED = b"deploy failed"
STATUS_UNPACKER_ERROR = b"unpacker error"
STATUS_ATOMIC_FAILED = b"atomic push failed"
STATUS_FUNNY_REF = b"funny refname"
STATUS_STALE = b"stale info"
STATUS_MISSING_OBJECTS = b"missing necessary objects"
STATUS_NOT_A_COMMIT = b"branches must point at commits"
STATUS_DEPLOY_BRANCH_DELETE = b"the deploy branch cannot be deleted"
STATUS_UPDATE_FAILED = b"failed to update ref"
STATUS_SHALLOW = b"shallow update not allowed"
STATUS_DELETE_FAILED = b"failed to delete"


class PushTooLarge(Exception):
    """The pack on the wire grew past the maximum push size."""


class SingleRepoBackend(Backend):
    """dulwich's handlers open their repo by path; ours is already open and checked."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo

    def open_repository(self, path: str) -> Repo:  # type: ignore[override]
        return self.repo


class PushTarget(TypingProtocol):
    """What the push is for: which branch deploys, and how to deploy a revision."""

    def deploy_branch(self) -> str | None:
        """The configured deploy branch, app value over global; None while unset."""
        ...

    def deploy(self, branch: str, revision: str, progress: BinaryIO) -> None:
        """Run the pipeline on `revision`, its output to `progress`; raise DockyardError
        if it fails. Called with the app locked, before the branch's ref moves."""
        ...


class SizeLimitedReader:
    """Counts the bytes of the incoming pack and refuses to read past the limit."""

    def __init__(
        self, read: Callable[[int], bytes], recv: Callable[[int], bytes], limit: int
    ) -> None:
        self._read = read
        self._recv = recv
        self.limit = limit
        self.count = 0

    def _counted(self, data: bytes) -> bytes:
        self.count += len(data)
        if self.count > self.limit:
            raise PushTooLarge(
                f"the pack is larger than the maximum push size ({self.limit} bytes)"
            )
        return data

    def read(self, n: int) -> bytes:
        return self._counted(self._read(n))

    def recv(self, n: int) -> bytes:
        return self._counted(self._recv(n))


class ProgressChannel:
    """A file object whose lines go to the client as side-band progress (`remote: …`).

    Each complete line is sent as soon as it is written, so output produced slowly reaches
    the client as it is produced. Once the client is gone, writes are dropped instead of
    failing: a deploy that has started finishes, so the branch on the server keeps naming
    the code that runs.
    """

    def __init__(self, send: Callable[[bytes], object]) -> None:
        self._send = send
        self._partial = b""
        self._lock = threading.Lock()
        self.detached = False

    def write(self, data: bytes) -> int:
        with self._lock:
            text = self._partial + bytes(data)
            *lines, self._partial = text.split(b"\n")
            for line in lines:
                self._emit(line + b"\n")
        return len(data)

    def flush(self) -> None:
        with self._lock:
            if self._partial:
                self._emit(self._partial)
                self._partial = b""

    def line(self, text: str) -> None:
        self.write(text.encode("utf-8", "surrogateescape") + b"\n")

    def _emit(self, data: bytes) -> None:
        if self.detached:
            return
        try:
            self._send(data)
        except (ChannelClosed, GitProtocolError):
            self.detached = True

    def close(self) -> None:
        self.flush()

    def isatty(self) -> bool:
        return False


@dataclass(frozen=True)
class RefUpdate:
    old: ObjectID
    new: ObjectID
    ref: Ref

    @property
    def is_delete(self) -> bool:
        return self.new == ZERO_SHA

    @property
    def is_branch(self) -> bool:
        return self.ref.startswith(BRANCH_PREFIX)

    @property
    def short_name(self) -> str:
        for prefix in (BRANCH_PREFIX, TAG_PREFIX):
            if self.ref.startswith(prefix):
                return self.ref[len(prefix) :].decode("utf-8", "replace")
        return self.ref.decode("utf-8", "replace")


@dataclass
class UpdateRequest:
    updates: list[RefUpdate]
    shallow: list[ObjectID]


class DeployingReceivePackHandler(ReceivePackHandler):
    """receive-pack that deploys the deploy branch before moving it. One push per instance;
    the caller holds the app's lock for the whole of `handle`."""

    def __init__(
        self,
        repo: Repo,
        proto: Protocol,
        recv: Callable[[int], bytes],
        target: PushTarget,
        max_push_size: int,
        stderr: BinaryIO,
        max_object_size: int | None = None,
    ) -> None:
        super().__init__(SingleRepoBackend(repo), ["."], proto)
        self._recv = recv
        self.target = target
        self.max_push_size = max_push_size
        self.max_object_size = max_object_size
        # Until the client turns on side-band, progress goes to the SSH stderr (git shows it).
        self.progress = ProgressChannel(stderr.write)
        self.moved: list[RefUpdate] = []  # the refs this push moved, once it is done

    def capabilities(self) -> Iterable[bytes]:
        return [
            CAPABILITY_REPORT_STATUS,
            CAPABILITY_DELETE_REFS,
            CAPABILITY_QUIET,
            CAPABILITY_ATOMIC,
            CAPABILITY_OFS_DELTA,
            CAPABILITY_SIDE_BAND_64K,
            capability_object_format(self.repo.object_format.name),
        ]

    def handle(self) -> None:
        self._advertise_refs()
        request = self._read_update_request()
        if request is None:
            return  # nothing to update: `git push` found everything up to date
        if self.has_capability(CAPABILITY_SIDE_BAND_64K):
            self.progress = ProgressChannel(self._send_progress)
        status = self._process(request)
        self.progress.flush()
        if self.has_capability(CAPABILITY_REPORT_STATUS):
            self._report_status(status)

    def _send_progress(self, data: bytes) -> None:
        self.proto.write_sideband(SIDE_BAND_CHANNEL_PROGRESS, data)

    # -- protocol -----------------------------------------------------------------------

    def _advertise_refs(self) -> None:
        refs = sorted((r, s) for r, s in self.repo.get_refs().items() if r != HEAD)
        if not refs:
            refs = [(Ref(CAPABILITIES_REF), ZERO_SHA)]
        symrefs = sorted(self.repo.refs.get_symrefs().items())
        caps = list(self.capabilities()) + symref_capabilities(symrefs)
        self.proto.write_pkt_line(format_ref_line(refs[0][0], refs[0][1], caps))
        for ref, sha in refs[1:]:
            self.proto.write_pkt_line(format_ref_line(ref, sha))
        self.proto.write_pkt_line(None)

    def _read_update_request(self) -> UpdateRequest | None:
        line = self.proto.read_pkt_line()
        shallow: list[ObjectID] = []
        while line is not None and line.startswith(SHALLOW_PREFIX):
            sha = line[len(SHALLOW_PREFIX) :].strip()
            if not valid_hexsha(sha):
                raise GitProtocolError(f"Invalid shallow line from client: {line!r}")
            shallow.append(ObjectID(sha))
            line = self.proto.read_pkt_line()
        if line is None:
            return None
        try:
            line, caps = extract_capabilities(line)
        except ValueError:  # dulwich unpacks a split on NUL: a second NUL is not its case
            raise GitProtocolError(f"Invalid ref update line from client: {line!r}") from None
        self.set_client_capabilities(caps)
        updates = []
        while line:
            try:
                old, new, ref = line.rstrip(b"\n").split(b" ")
            except ValueError:
                raise GitProtocolError(f"Invalid ref update line from client: {line!r}") from None
            if not valid_hexsha(old) or not valid_hexsha(new):
                raise GitProtocolError(f"Invalid ref update line from client: {line!r}")
            updates.append(RefUpdate(ObjectID(old), ObjectID(new), Ref(ref)))
            line = self.proto.read_pkt_line()
        return UpdateRequest(updates, shallow)

    # -- the push -----------------------------------------------------------------------

    def _process(self, request: UpdateRequest) -> list[tuple[bytes, bytes]]:
        updates = request.updates
        if any(not u.is_delete for u in updates):
            error = self._store_pack()
            if error is not None:
                return [(b"unpack", error)] + [(u.ref, STATUS_UNPACKER_ERROR) for u in updates]
        if self._lacks_history(request.shallow):
            self.progress.line(
                f"{ERROR}This push comes from a shallow clone and the server does not have the "
                "history it leaves out. Run `git fetch --unshallow` and push again."
            )
            return [(b"unpack", STATUS_OK)] + [(u.ref, STATUS_SHALLOW) for u in updates]
        deploy_update = self._deploy_update(updates)
        if self.has_capability(CAPABILITY_ATOMIC):
            results = self._apply_atomically(updates, deploy_update)
        else:
            results = [self._apply_one(u, deploy_update) for u in updates]
        self._settle_head(updates, results, deploy_update)
        self._explain_what_was_not_deployed(updates, results, deploy_update)
        self.moved = [u for u, r in zip(updates, results, strict=True) if r == STATUS_OK]
        return [(b"unpack", STATUS_OK)] + [
            (u.ref, r) for u, r in zip(updates, results, strict=True)
        ]

    def _store_pack(self) -> bytes | None:
        """Read the pack into the object store; an unpack error message, or None."""
        reader = SizeLimitedReader(self.proto.read, self._recv, self.max_push_size)
        ceiling = self.max_object_size or self.max_push_size
        try:
            with object_size_limit(ceiling):
                store_incoming_pack(self.repo.object_store, reader.read, reader.recv)
            return None
        except PushTooLarge as exc:
            self.progress.line(
                f"{ERROR}Push refused: {exc}. An admin can raise it with "
                "`git:set --global max-push-size SIZE`."
            )
            return b"push larger than the maximum push size"
        except ObjectTooLarge as exc:
            self.progress.line(
                f"{ERROR}Push refused: {exc}. An admin can raise it with "
                "`git:set --global max-object-size SIZE`."
            )
            return b"object larger than the maximum object size"
        except (ChannelClosed, GitProtocolError):
            raise
        except Exception as exc:  # dulwich raises many types for a broken pack
            log.warning("pack not stored", error=str(exc))
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                self.progress.line(
                    f"{ERROR}Push refused: the server is out of disk space; nothing was "
                    "stored. Free space in Dockyard's data dir and push again."
                )
            return str(exc).replace("\n", " ").encode("utf-8", "replace") or b"bad pack"
        finally:
            remove_leftovers(self.repo)

    def _lacks_history(self, shallow: Sequence[ObjectID]) -> bool:
        """True if the push comes from a shallow clone whose cut-off history we lack.

        Such a push is refused, as C git does by default (receive.shallowUpdate=false): a
        repo that stores a shallow boundary could not be cloned back by dulwich's
        upload-pack. A shallow clone of the app itself is complete here and goes through.
        """
        store = self.repo.object_store
        for sha in shallow:
            commit = store[sha] if sha in store else None
            if isinstance(commit, Commit) and any(p not in store for p in commit.parents):
                return True
        return False

    def _deploy_update(self, updates: Sequence[RefUpdate]) -> RefUpdate | None:
        configured = self.target.deploy_branch()
        names = (configured.encode(),) if configured else DEFAULT_DEPLOY_BRANCHES
        for name in names:
            for update in updates:
                if update.ref == BRANCH_PREFIX + name and not update.is_delete:
                    return update
        return None

    def _check(self, update: RefUpdate) -> bytes | None:
        if not update.ref.startswith(b"refs/") or not check_ref_format(update.ref):
            return STATUS_FUNNY_REF
        if self._current(update.ref) != update.old:
            return STATUS_STALE
        if update.is_delete:
            configured = self.target.deploy_branch()
            if configured and update.ref == BRANCH_PREFIX + configured.encode():
                return STATUS_DEPLOY_BRANCH_DELETE
            return None
        if update.new not in self.repo.object_store:
            return STATUS_MISSING_OBJECTS
        if update.is_branch and not isinstance(self.repo[update.new], Commit):
            return STATUS_NOT_A_COMMIT
        return None

    def _apply_one(self, update: RefUpdate, deploy_update: RefUpdate | None) -> bytes:
        error = self._check(update)
        if error is None and update is deploy_update:
            error = self._deploy(update)
        return error or self._move_ref(update)

    def _apply_atomically(
        self, updates: Sequence[RefUpdate], deploy_update: RefUpdate | None
    ) -> list[bytes]:
        errors = [self._check(u) for u in updates]
        if not any(errors) and deploy_update is not None:
            errors[updates.index(deploy_update)] = self._deploy(deploy_update)
        if any(errors):
            return [e or STATUS_ATOMIC_FAILED for e in errors]
        return [self._move_ref(u) for u in updates]

    def _deploy(self, update: RefUpdate) -> bytes | None:
        branch = update.short_name
        try:
            self.target.deploy(branch, update.new.decode("ascii"), self.progress)  # type: ignore[arg-type]
        except DockyardError as exc:
            self.progress.flush()
            for line in exc.message.splitlines():
                self.progress.line(ERROR + line)
            return STATUS_DEPLOY_FAILED
        except (ChannelClosed, GitProtocolError):
            raise
        except Exception:
            log.exception("deploy pipeline crashed", branch=branch)
            self.progress.line(f"{ERROR}Deploy failed with an internal error; see the server log")
            return STATUS_DEPLOY_FAILED
        self.progress.flush()
        return None

    def _current(self, ref: Ref) -> ObjectID:
        """What `ref` resolves to now, ZERO_SHA when absent or dangling."""
        try:
            return self.repo.refs[ref]
        except KeyError:
            return ZERO_SHA

    def _move_ref(self, update: RefUpdate) -> bytes:
        refs = self.repo.refs
        try:
            if update.is_delete:
                moved = refs.remove_if_equals(update.ref, update.old)
                return STATUS_OK if moved else STATUS_DELETE_FAILED
            old = None if update.old == ZERO_SHA else update.old
            moved = (
                refs.add_if_new(update.ref, update.new)
                if old is None
                else refs.set_if_equals(update.ref, old, update.new)
            )
        except (OSError, ValueError) as exc:
            log.warning(
                "ref update failed", ref=update.ref.decode(errors="replace"), error=str(exc)
            )
            moved = False
        return STATUS_OK if moved else STATUS_UPDATE_FAILED

    def _settle_head(
        self,
        updates: Sequence[RefUpdate],
        results: Sequence[bytes],
        deploy_update: RefUpdate | None,
    ) -> None:
        """HEAD names the deploy branch, so a clone checks out the code that runs."""
        ok = [u for u, r in zip(updates, results, strict=True) if r == STATUS_OK]
        candidates = [u for u in ok if u.is_branch and not u.is_delete]
        if deploy_update in ok:
            chosen = deploy_update
        elif self._current(HEAD) == ZERO_SHA and candidates:
            chosen = candidates[0]  # HEAD dangles; any pushed branch beats none
        else:
            return
        assert chosen is not None
        if self.repo.refs.get_symrefs().get(HEAD) != chosen.ref:
            self.repo.refs.set_symbolic_ref(HEAD, chosen.ref)

    def _explain_what_was_not_deployed(
        self,
        updates: Sequence[RefUpdate],
        results: Sequence[bytes],
        deploy_update: RefUpdate | None,
    ) -> None:
        stored = [
            u
            for u, r in zip(updates, results, strict=True)
            if r == STATUS_OK and not u.is_delete and u is not deploy_update
        ]
        if not stored or deploy_update is not None:
            return
        branch = self.target.deploy_branch() or "main or master"
        self.progress.line(f"{STEP}WARNING: deploy did not complete, you must push to {branch}.")
        for update in stored:
            kind = (
                "Branch"
                if update.is_branch
                else "Tag"
                if update.ref.startswith(TAG_PREFIX)
                else "Ref"
            )
            self.progress.line(
                f"       {kind} {update.short_name} was stored; only {branch} deploys."
            )
