"""The RADOS backend itself: heads in the parent's index, reads, atomic puts (inline, or chunks then
the head), deletes, listings and the prefix markers. See the package docstring."""

from __future__ import annotations

import errno
import io
import uuid
from typing import Any, BinaryIO, Iterator
from urllib.parse import unquote

from ..base import BaseBackend, BeforeCommit, Capabilities, Entry, ObjectInfo, check_key, check_prefix
from ..errors import BackendError, ConfigurationError, NotFound, TransientError
from ..options import parse_options
from .connection import Connection, format_url
from .errors import errno_of, load_rados, translating
from .layout import (
    INLINE, KEY_XATTR, OBJECT, PENDING, PREFIX, PREFIX_XATTR, EntryState, Head, chunk_oid, garbage_key, garbage_value,
    index_oid, is_content, split_key, split_prefix, writer_key,
)
from .leftovers import Leftovers, left_for_later
from .options import COMMIT_ATTEMPTS, PAGE, RadosOptions
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
        wanted = [OBJECT + name, PENDING + name] + ([INLINE + name] if inline else [])
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

    def _pages(self, oid: str, prefix: str, *, values: bool) -> Iterator[tuple[str, bytes | None]]:
        """The o: then p: entries of index ``oid``, page by page."""
        rados, io_ = load_rados(), self._io()
        start = OBJECT[0]  # sorts after every i: key, before every o: key
        while True:
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
                    return
            for omap_key, value in page:
                if omap_key[:2] not in (OBJECT, PREFIX):
                    return
                yield omap_key, value
            if len(page) < PAGE:
                return
            start = page[-1][0]

    def iter_children(self, prefix: str) -> Iterator[Entry]:
        check_prefix(prefix)
        for omap_key, _ in self._pages(index_oid(prefix), prefix, values=False):
            yield Entry(omap_key[2:], omap_key.startswith(PREFIX))

    def iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        stack = [prefix]
        while stack:
            current = stack.pop()
            for omap_key, value in self._pages(index_oid(current), current, values=True):
                name = omap_key[2:]
                if omap_key.startswith(PREFIX):
                    stack.append(f"{current}{name}/")
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
            replaced = self._commit(key, head, inline=first, writer=None)
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
                replaced = self._commit(key, head, inline=None, writer=writer)
            except BaseException:
                self._abandon(key, gen, written[0], writer)
                raise
            finally:
                ended(gen)
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

    def _commit(self, key: str, head: Head, *, inline: bytes | None, writer: bytes | None) -> EntryState:
        """Make ``head`` the object's head: compare-and-swap against the head read just before."""
        parent, name = split_key(key)
        rados, oid, io_ = load_rados(), index_oid(parent), self._io()
        for _ in range(COMMIT_ATTEMPTS):
            state = self._read_entry(key, oid)
            if writer is not None and state.writers.get(head.gen) != writer:
                raise TransientError(f"{key}: this put was taken for abandoned and cleaned up; put again", key=key)
            keys, values = [OBJECT + name, PENDING + name], [head.encode(), b""]
            if inline is not None:
                keys.append(INLINE + name)
                values.append(inline)
            if state.head is not None and state.head.chunks:
                keys.append(garbage_key(name, state.head.gen))
                values.append(garbage_value(state.head.chunks))
            removed = [] if inline is not None else [INLINE + name]
            if writer is not None:
                removed.append(writer_key(name, head.gen))
            with translating(key), rados.WriteOpCtx() as op:
                op.new(rados.LIBRADOS_CREATE_IDEMPOTENT)
                op.omap_cmp(OBJECT + name, (state.head_raw or b"").decode("ascii"))
                if writer is not None:
                    op.omap_cmp(writer_key(name, head.gen), writer.decode("ascii"))
                io_.set_omap(op, keys, values)
                if removed:
                    io_.remove_omap_keys(op, removed)
                op.set_xattr(PREFIX_XATTR, parent.encode())
                try:
                    io_.operate_write_op(op, oid)
                except rados.Error as exc:
                    if errno_of(exc) != errno.ECANCELED:
                        raise
                    continue  # another put or delete changed the head meanwhile: read it again
            return state
        raise TransientError(f"{key}: the head kept changing under concurrent writers", key=key)

    def _ensure_markers(self, prefix: str, key: str) -> None:
        """Add the missing markers of ``prefix`` and its ancestors, bottom-up, each after the level below."""
        rados = load_rados()
        while prefix:
            parent, name = split_prefix(prefix)
            oid = index_oid(parent)
            if PREFIX + name not in self._values(oid, [PREFIX + name], key):
                with translating(key), rados.WriteOpCtx() as op:
                    self._io().set_omap(op, [PREFIX + name], [b""])
                    op.set_xattr(PREFIX_XATTR, parent.encode())
                    self._io().operate_write_op(op, oid)
            prefix = parent

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

    def _first_key(self, ioctx: Any, oid: str, key: str) -> tuple[bool, str | None]:
        """(index exists, its first omap key)."""
        rados = load_rados()
        with translating(key):
            try:
                with rados.ReadOpCtx() as op:
                    found, _ = ioctx.get_omap_keys(op, "", 1)
                    ioctx.operate_read_op(op, oid)
                    first = [k for k, _ in found]
            except rados.ObjectNotFound:
                return False, None
        return True, (first[0] if first else None)

    def _prune(self, prefix: str, key: str) -> None:
        """Bottom-up from ``prefix``: drop the marker of a prefix nothing is listed under any more, then
        its index if that is empty. After dropping a marker, look again: a put that raced it gets it back."""
        while True:
            oid = index_oid(prefix)
            _, first = self._first_key(self._io(), oid, key)
            if is_content(first):
                return
            parent, name = split_prefix(prefix) if prefix else ("", "")
            if prefix:
                self._remove_omap(index_oid(parent), [PREFIX + name], key)
            with self._private_ioctx(key) as ioctx:
                exists, first = self._first_key(ioctx, oid, key)
                if is_content(first):
                    self._ensure_markers(prefix, key)
                    return
                if exists and first is None:
                    self._remove_if_unchanged(ioctx, oid, ioctx.get_last_version(), key)
            if not prefix:
                return
            prefix = parent

    def _remove_if_unchanged(self, ioctx: Any, oid: str, version: int, key: str) -> None:
        rados = load_rados()
        with translating(key), rados.WriteOpCtx() as op:
            op.assert_version(version)
            op.remove()
            try:
                ioctx.operate_write_op(op, oid)
            except rados.Error as exc:
                if errno_of(exc) not in (errno.ERANGE, errno.EOVERFLOW, errno.ENOENT):
                    raise  # ERANGE/EOVERFLOW: written since we looked, so in use again
