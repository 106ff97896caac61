"""The RADOS backend itself: heads in the parent's index, reads, atomic puts (inline, or chunks then
the head), deletes, listings and the prefix markers. See the package docstring."""

from __future__ import annotations

import errno
import io
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, Iterator
from urllib.parse import unquote

from ..base import BaseBackend, BeforeCommit, Capabilities, Entry, ObjectInfo, check_key, check_prefix
from ..errors import BackendError, ConfigurationError, NotFound, TransientError
from ..options import parse_options
from .connection import Connection, format_url
from .errors import errno_of, load_rados, translating
from .layout import (
    INLINE, KEY_XATTR, OBJECT, PENDING, PREFIX, PREFIX_XATTR, UNMARKED, EntryState, Head, chunk_oid, garbage_key,
    garbage_value, index_oid, is_content, split_key, split_prefix, writer_key,
)
from .leftovers import Leftovers, left_for_later
from .options import COMMIT_ATTEMPTS, LISTING_READS, MARKS_REMEMBERED, PAGE, RadosOptions
from .streams import ChunkReader, Source
from .writers import Writer, ended, started


class RadosBackend(Leftovers, Connection, BaseBackend):
    def __init__(self, pool: str, namespace: str = "", options: RadosOptions = RadosOptions()) -> None:
        if not pool:
            raise ConfigurationError("rados:// needs a pool: rados://POOL/NAMESPACE")
        if "/" in namespace:
            raise ConfigurationError(f"RADOS namespace {namespace!r} must not contain '/'")
        if options.inline_max < 0 or options.chunk_size < 0:
            raise ConfigurationError("chunk_size and inline_max must not be negative")
        load_rados()
        self.pool = pool
        self.namespace = namespace
        self.options = options
        self.url = format_url(pool, namespace, options)
        self.capabilities = Capabilities(empty_prefixes=False, default_concurrency=8, max_object_size=None)
        self._marks: set[str] = set()  # prefixes this backend saw marked, with every ancestor: see _ensure_markers
        self._init_connection()

    @classmethod
    def from_url(cls, parts, query) -> "RadosBackend":
        options = parse_options(RadosOptions, query, scheme="rados")
        namespace = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        if namespace.endswith("/") and "/" not in namespace[:-1]:
            namespace = namespace[:-1]
        return cls(unquote(parts.netloc), namespace, options)

    # -- reading -----------------------------------------------------------------------------

    def _values(self, oid: str, keys: list[str], key: str) -> dict[str, bytes]:
        """Values of ``keys`` in index ``oid`` ({} when the index does not exist)."""
        rados, io_ = load_rados(), self._io()
        with translating(key):
            try:
                with rados.ReadOpCtx() as op:
                    found, _ = io_.get_omap_vals_by_keys(op, keys)
                    io_.operate_read_op(op, oid)
                    return {k: v or b"" for k, v in found}
            except rados.ObjectNotFound:
                return {}

    def _read_entry(self, key: str, oid: str, *, inline: bool = False) -> EntryState:
        """The head of ``key``, its m: record, the t:/x: records of its name (and with ``inline`` its
        inline bytes), in one read."""
        name = split_key(key)[1]
        rados, io_ = load_rados(), self._io()
        state = EntryState()
        wanted = [OBJECT + name, PENDING + name, UNMARKED] + ([INLINE + name] if inline else [])
        with translating(key):
            try:
                with rados.ReadOpCtx() as op:
                    values, _ = io_.get_omap_vals_by_keys(op, wanted)
                    writers, _ = io_.get_omap_vals(op, writer_key(name, ""), writer_key(name, ""), PAGE)
                    garbage, _ = io_.get_omap_vals(op, garbage_key(name, ""), garbage_key(name, ""), PAGE)
                    io_.operate_read_op(op, oid)
                    values = {k: v or b"" for k, v in values}
                    writers, garbage = list(writers), list(garbage)
            except rados.ObjectNotFound:
                return state
        state.head_raw = values.get(OBJECT + name)
        if state.head_raw is not None:
            state.head = Head.decode(state.head_raw, key)
        state.inline = values.get(INLINE + name)
        state.pending = PENDING + name in values
        state.unmarked = UNMARKED in values
        state.writers = {k.rpartition("/")[2]: v or b"" for k, v in writers}
        state.garbage = {k.rpartition("/")[2]: v or b"" for k, v in garbage}
        return state

    def _visible(self, key: str, *, inline: bool) -> EntryState:
        """The committed object at ``key`` (NotFound if none). What a dead writer left for the key is
        finished on the way: pending markers added, unused chunk sets removed (best effort)."""
        parent, _ = split_key(check_key(key))
        state = self._read_entry(key, index_oid(parent), inline=inline)
        collected = bool(state.writers or state.garbage) and self._collect(key, state, replaced=False)
        if state.head is None:
            if collected:
                self._prune_after_collecting(parent, key)
            raise NotFound(f"no such object: {key}", key=key)
        if state.pending:
            self._finish_markers(key)
        return state

    def _prune_after_collecting(self, parent: str, key: str) -> None:
        """``_prune``, best effort: the index of a key that has no object may hold nothing else now."""
        try:
            self._prune(parent, key)
        except BackendError as exc:
            left_for_later("removing an index left empty", key, exc)

    def _finish_markers(self, key: str) -> None:
        """Add the markers a put of ``key`` committed without (it died, or is adding them now), then drop
        its m: record. Best effort: a read-only user cannot; the next put, delete, stat or read tries again."""
        parent, name = split_key(key)
        try:
            self._ensure_markers(parent, key)
            if OBJECT + name not in self._values(index_oid(parent), [OBJECT + name], key):
                self._prune(parent, key)  # deleted meanwhile: take back the markers just added
                return
            self._remove_omap(index_oid(parent), [PENDING + name], key)
        except BackendError as exc:
            left_for_later("adding the listing markers", key, exc)

    def stat(self, key: str) -> ObjectInfo:
        head = self._visible(key, inline=False).head
        assert head is not None
        return ObjectInfo(key, head.size)

    def open_read(self, key: str) -> BinaryIO:
        state = self._visible(key, inline=True)
        head = state.head
        assert head is not None
        if not head.chunks:
            data = state.inline or b""
            if len(data) != head.size:
                raise BackendError(f"{key}: inline data of {len(data)} bytes, head says {head.size}", key=key)
            return io.BytesIO(data)
        return io.BufferedReader(ChunkReader(self._io(), key, head, self.limits().write_size), buffer_size=64 * 1024)

    def _page(self, oid: str, prefix: str, start: str, *, values: bool) -> tuple[list[tuple[str, bytes | None]], str | None]:
        """The o: then p: entries of index ``oid`` after ``start``, one request's worth; and where the next
        request starts (None: there is no more)."""
        rados, io_ = load_rados(), self._io()
        with translating(prefix, missing=NotFound):
            try:
                with rados.ReadOpCtx() as op:
                    if values:
                        found, _ = io_.get_omap_vals(op, start, "", PAGE)
                    else:
                        found, _ = io_.get_omap_keys(op, start, PAGE)
                    io_.operate_read_op(op, oid)
                    page = list(found)
            except rados.ObjectNotFound:
                return [], None
        entries = []
        for omap_key, value in page:
            if omap_key[:2] not in (OBJECT, PREFIX):
                return entries, None
            entries.append((omap_key, value))
        return entries, (page[-1][0] if len(page) == PAGE else None)

    def _pages(self, oid: str, prefix: str, *, values: bool) -> Iterator[tuple[str, bytes | None]]:
        """The o: then p: entries of index ``oid``, page by page."""
        start: str | None = OBJECT[0]  # sorts after every i: and m: key, before every o: key
        while start is not None:
            entries, start = self._page(oid, prefix, start, values=values)
            yield from entries

    def iter_children(self, prefix: str) -> Iterator[Entry]:
        check_prefix(prefix)
        for omap_key, _ in self._pages(index_oid(prefix), prefix, values=False):
            yield Entry(omap_key[2:], omap_key.startswith(PREFIX))

    def iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object below ``prefix``: the indexes below it read ``LISTING_READS`` at a time (one
        request each is a round trip; a registry has an index per directory)."""
        check_prefix(prefix)
        waiting: list[tuple[str, str]] = [(prefix, OBJECT[0])]  # a stack: depth-first, so it stays small
        reading: deque[tuple[str, Future]] = deque()
        with ThreadPoolExecutor(max_workers=LISTING_READS, thread_name_prefix="rados-list") as pool:
            while waiting or reading:
                while waiting and len(reading) < LISTING_READS:
                    current, start = waiting.pop()
                    reading.append((current, pool.submit(self._page, index_oid(current), current, start, values=True)))
                current, future = reading.popleft()
                entries, following = future.result()
                if following is not None:
                    waiting.append((current, following))
                for omap_key, value in entries:
                    name = omap_key[2:]
                    if omap_key.startswith(PREFIX):
                        waiting.append((f"{current}{name}/", OBJECT[0]))
                    else:
                        yield ObjectInfo(current + name, Head.decode(value or b"", current + name).size)

    # -- writing -----------------------------------------------------------------------------

    def put(self, key: str, data: BinaryIO, *, size: int | None = None, before_commit: BeforeCommit | None = None) -> ObjectInfo:
        parent, name = split_key(check_key(key))
        limits = self.limits()
        gen = uuid.uuid4().hex
        source = Source(data)
        first = source.read(limits.inline_max + 1)
        if len(first) <= limits.inline_max:
            head = Head(len(first), gen)
            if before_commit is not None:
                before_commit()
            replaced, marked = self._commit(key, head, inline=first, writer=None)
        else:
            written = [0]
            writer = Writer.this_process().encode()
            started(gen)
            try:
                self._begin(key, gen, writer)
                total = self._write_chunks(key, gen, first, source, written)
                if before_commit is not None:
                    before_commit()
                head = Head(total, gen, limits.chunk_size, written[0])
                replaced, marked = self._commit(key, head, inline=None, writer=writer)
            except BaseException:
                self._abandon(key, gen, written[0], writer)
                raise
            finally:
                ended(gen)
        if not marked:
            self._ensure_markers(parent, key)
            self._remove_omap(index_oid(parent), [PENDING + name], key)
        self._collect(key, replaced, replaced=True)
        return ObjectInfo(key, head.size)

    def _begin(self, key: str, gen: str, writer: bytes) -> None:
        """Record ``t:<name>/<gen>`` so that the chunks about to be written can be found if we die."""
        parent, name = split_key(key)
        with translating(key), load_rados().WriteOpCtx() as op:
            self._io().set_omap(op, [writer_key(name, gen)], [writer])
            op.set_xattr(PREFIX_XATTR, parent.encode())
            self._io().operate_write_op(op, index_oid(parent))

    def _write_chunks(self, key: str, gen: str, first: bytes, source: Source, written: list[int]) -> int:
        """Store the stream as chunk objects; ``written[0]`` counts the chunks created so far."""
        rados, limits, io_ = load_rados(), self.limits(), self._io()
        pending, total, number, offset = first, 0, 0, 0
        while True:
            want = min(limits.write_size, limits.chunk_size - offset)
            if len(pending) >= want:
                piece, pending = pending[:want], pending[want:]
            else:
                piece, pending = pending + source.read(want - len(pending)), b""
            if not piece:
                return total
            oid = chunk_oid(gen, number)
            with translating(key, what=oid):
                if offset == 0:
                    written[0] = number + 1
                    with rados.WriteOpCtx() as op:
                        op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
                        op.write_full(piece)
                        op.set_xattr(KEY_XATTR, key.encode())
                        io_.operate_write_op(op, oid)
                else:
                    io_.write(oid, piece, offset)
            total += len(piece)
            offset += len(piece)
            if offset == limits.chunk_size:
                number, offset = number + 1, 0
            if len(piece) < want:
                return total

    def _commit(self, key: str, head: Head, *, inline: bytes | None, writer: bytes | None) -> tuple[EntryState, bool]:
        """Make ``head`` the object's head: a compare-and-swap against the head expected.

        The first attempt of an inline put expects no head and reads nothing
        first (a sync puts what the destination lacks); a head found there
        makes it read and try again, and collect what the head replaced and
        what dead puts of the key left. When this backend saw the parent
        marked (and the put wrote no ``t:`` record, which would create the
        index), the commit asserts the index exists without ``u:`` instead of
        creating it, and records no ``m:``: the markers are in place (see
        :meth:`_ensure_markers`). Returns the entry replaced and whether the
        markers are known to be in place.
        """
        parent, name = split_key(key)
        rados, oid, io_ = load_rados(), index_oid(parent), self._io()
        state = EntryState()
        trusted = writer is None and self._marked(parent)
        for attempt in range(COMMIT_ATTEMPTS):
            if attempt or writer is not None:  # a put of chunks reads first: it collects what dead puts left
                state = self._read_entry(key, oid)
                trusted = trusted and not state.unmarked
            if writer is not None and state.writers.get(head.gen) != writer:
                raise TransientError(f"{key}: this put was taken for abandoned and cleaned up; put again", key=key)
            keys, values = [OBJECT + name], [head.encode()]
            if not trusted:
                keys.append(PENDING + name)
                values.append(b"")
            if inline is not None:
                keys.append(INLINE + name)
                values.append(inline)
            if state.head is not None and state.head.chunks:
                keys.append(garbage_key(name, state.head.gen))
                values.append(garbage_value(state.head.chunks))
            removed = [] if inline is not None else [INLINE + name]
            if writer is not None:
                removed.append(writer_key(name, head.gen))
            if trusted:
                removed.append(PENDING + name)  # left by a put of the key that died before its markers
            else:
                removed.append(UNMARKED)  # this put adds the markers next
            with translating(key), rados.WriteOpCtx() as op:
                if trusted:
                    op.omap_cmp(UNMARKED, "")  # the index exists and no prune unmarked it
                else:
                    op.new(rados.LIBRADOS_CREATE_IDEMPOTENT)
                op.omap_cmp(OBJECT + name, (state.head_raw or b"").decode("ascii"))
                if writer is not None:
                    op.omap_cmp(writer_key(name, head.gen), writer.decode("ascii"))
                io_.set_omap(op, keys, values)
                io_.remove_omap_keys(op, removed)
                op.set_xattr(PREFIX_XATTR, parent.encode())
                try:
                    io_.operate_write_op(op, oid)
                except rados.Error as exc:
                    if trusted and errno_of(exc) == errno.ENOENT:
                        trusted = False  # the index is gone: pruned since this backend saw it marked
                        self._marks.discard(parent)
                        continue
                    if errno_of(exc) != errno.ECANCELED:
                        raise
                    continue  # a head there, or u:, or another put or delete changed it: read it again
            state.writers.pop(head.gen, None)  # this put's own record, which the commit just removed
            return state, trusted
        raise TransientError(f"{key}: the head kept changing under concurrent writers", key=key)

    def _marked(self, prefix: str) -> bool:
        """This backend saw ``prefix`` and every ancestor marked (the root needs no marker)."""
        return not prefix or prefix in self._marks

    def _ensure_markers(self, prefix: str, key: str) -> None:
        """Add the markers of ``prefix`` and its ancestors, bottom-up, each after the level below.

        Each marker is written into its parent's index without reading it
        first (setting a marker that is there changes nothing), in the same
        write that removes the parent's ``u:``. The walk stops at the first
        level whose parent this backend saw marked, with a write that asserts
        the parent's index exists and holds no ``u:``. That assertion is
        enough: a prune writes ``u:`` into an index before it removes the
        index's marker, and afterwards either deletes the index or puts the
        marker back (:meth:`_prune`); only a put's walk takes ``u:`` away
        otherwise, and that walk adds the markers above next. So an index that
        exists without ``u:`` is marked, or a walk through it is on its way
        up -- the same as a walk that reads every level and finds another
        put's marker.
        """
        walked = []
        while prefix:
            parent, name = split_prefix(prefix)
            walked.append(prefix)
            if self._marked(parent) and self._write_marker(parent, name, key, asserting=True):
                break
            self._write_marker(parent, name, key, asserting=False)
            prefix = parent
        if len(self._marks) + len(walked) > MARKS_REMEMBERED:
            self._marks.clear()
        self._marks.update(walked)

    def _write_marker(self, parent: str, name: str, key: str, *, asserting: bool) -> bool:
        """Set ``p:name`` in the index of ``parent``; with ``asserting``, only if that index exists
        without ``u:`` (False otherwise, and ``parent`` is no longer taken for marked)."""
        rados, io_ = load_rados(), self._io()
        with translating(key), rados.WriteOpCtx() as op:
            if asserting:
                op.omap_cmp(UNMARKED, "")
            io_.set_omap(op, [PREFIX + name], [b""])
            if not asserting:
                io_.remove_omap_keys(op, [UNMARKED])
            op.set_xattr(PREFIX_XATTR, parent.encode())
            try:
                io_.operate_write_op(op, index_oid(parent))
            except rados.Error as exc:
                if asserting and errno_of(exc) in (errno.ENOENT, errno.ECANCELED):
                    self._marks.discard(parent)
                    return False
                raise
        return True

    # -- deleting ----------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        parent, name = split_key(check_key(key))
        rados, oid, io_ = load_rados(), index_oid(parent), self._io()
        for _ in range(COMMIT_ATTEMPTS):
            state = self._read_entry(key, oid)
            if state.head is None:
                if state.garbage or state.writers:  # what dead writers left
                    self._collect(key, state, replaced=False)
                    self._prune(parent, key)
                return
            with translating(key), rados.WriteOpCtx() as op:
                op.omap_cmp(OBJECT + name, (state.head_raw or b"").decode("ascii"))
                io_.remove_omap_keys(op, [OBJECT + name, INLINE + name, PENDING + name])
                if state.head.chunks:
                    io_.set_omap(op, [garbage_key(name, state.head.gen)], [garbage_value(state.head.chunks)])
                try:
                    io_.operate_write_op(op, oid)
                except rados.Error as exc:
                    if errno_of(exc) == errno.ECANCELED:
                        continue
                    if errno_of(exc) == errno.ENOENT:
                        return
                    raise
            break
        else:
            raise TransientError(f"{key}: the head kept changing under concurrent writers", key=key)
        self._collect(key, state, replaced=True)
        self._prune(parent, key)

    def _remove_omap(self, oid: str, keys: list[str], key: str) -> None:
        try:
            with translating(key), load_rados().WriteOpCtx() as op:
                self._io().remove_omap_keys(op, keys)
                self._io().operate_write_op(op, oid)
        except NotFound:
            pass

    def _first_keys(self, ioctx: Any, oid: str, key: str) -> tuple[bool, list[str]]:
        """(index exists, its first two omap keys)."""
        rados = load_rados()
        with translating(key):
            try:
                with rados.ReadOpCtx() as op:
                    found, _ = ioctx.get_omap_keys(op, "", 2)
                    ioctx.operate_read_op(op, oid)
                    return True, [k for k, _ in found]
            except rados.ObjectNotFound:
                return False, []

    def _unmark(self, oid: str, key: str) -> bool:
        """Write ``u:`` into index ``oid`` if it exists (False if it does not)."""
        rados, io_ = load_rados(), self._io()
        with translating(key), rados.WriteOpCtx() as op:
            op.omap_cmp(OBJECT, "")  # no key is named "o:" alone: asserts only that the index exists
            io_.set_omap(op, [UNMARKED], [b"1"])
            try:
                io_.operate_write_op(op, oid)
            except rados.Error as exc:
                if errno_of(exc) == errno.ENOENT:
                    return False
                raise
        return True

    def _prune(self, prefix: str, key: str) -> None:
        """Bottom-up from ``prefix``: drop the marker of a prefix nothing is listed under any more, then
        its index if that is empty.

        Before a marker goes, ``u:`` goes into the index below it, so that no
        put trusting the marker it saw earlier commits there unseen (see
        :meth:`_ensure_markers`); a put that committed before that is seen
        here, and the marker stays. After the marker is gone, this looks
        again until one of three things holds: content below (a put raced
        it: the markers go back, then ``u:``), the index deleted (unchanged
        since it was found empty), or only ``t:``/``x:`` records left (the
        index stays, with ``u:``, until they go).
        """
        while True:
            oid = index_oid(prefix)
            _, first = self._first_keys(self._io(), oid, key)
            if first and is_content(first[0]):
                return
            parent, name = split_prefix(prefix) if prefix else ("", "")
            if prefix:
                if self._unmark(oid, key):
                    _, first = self._first_keys(self._io(), oid, key)
                    if first and is_content(first[0]):
                        self._remove_omap(oid, [UNMARKED], key)
                        return
                self._marks.discard(prefix)
                self._remove_omap(index_oid(parent), [PREFIX + name], key)
            with self._private_ioctx(key) as ioctx:
                while True:
                    exists, first = self._first_keys(ioctx, oid, key)
                    if first and is_content(first[0]):
                        self._ensure_markers(prefix, key)
                        self._remove_omap(oid, [UNMARKED], key)
                        return
                    if not exists or first not in ([], [UNMARKED]):
                        break  # gone, or t:/x: records keep it (with u:) until they go
                    if self._remove_if_unchanged(ioctx, oid, ioctx.get_last_version(), key):
                        break
            if not prefix:
                return
            prefix = parent

    def _remove_if_unchanged(self, ioctx: Any, oid: str, version: int, key: str) -> bool:
        """Remove index ``oid`` if it is still at ``version``; False when it was written since."""
        rados = load_rados()
        with translating(key), rados.WriteOpCtx() as op:
            op.assert_version(version)
            op.remove()
            try:
                ioctx.operate_write_op(op, oid)
            except rados.Error as exc:
                if errno_of(exc) in (errno.ERANGE, errno.EOVERFLOW):
                    return False
                if errno_of(exc) != errno.ENOENT:
                    raise
        return True
