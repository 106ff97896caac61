"""RADOS backend: ``rados://POOL/NAMESPACE?conf=...&id=...&keyring=...``.

Objects live in one namespace of a replicated pool (omap is required), in a
layout of our own; docs/rados.md tells the whole story. Every RADOS object
name and omap key is made by the functions under "Layout" below, nowhere else.

    index.<sha1(prefix)>        one per directory prefix ("" is the root); its omap:
        i:<name>                the bytes of a small object, stored inline
        m:<name>                the markers above <prefix><name> may be incomplete (set with the head)
        o:<name>                the object's head: {size, gen, chunk_size, chunks}
        p:<name>                <prefix><name>/ has objects below it
        t:<name>/<gen>          a put of <prefix><name> in progress: who, since when
        x:<name>/<gen>          a chunk set no head uses any more, being removed
    chunk.<gen>.<n>             n-th chunk of one stored version (gen) of an object

- The head *is* the index entry: one atomic omap write on the parent's index
  object makes an object visible to ``stat``, ``open_read`` and the listing of
  its prefix at the same instant. It is written last, after every chunk, and
  after ``before_commit``. It is a compare-and-swap (``omap_cmp`` on the head
  read just before), so concurrent puts of a key serialise: each replaces the
  head it read, records the replaced chunk set under ``x:`` in the same atomic
  write, then removes those chunks and the record.
- A put records ``t:`` before writing chunks; the commit removes it atomically
  and asserts it is still there. A writer that died leaves the record, which
  the next put or delete of the key claims (turns into ``x:``) and cleans once
  the writer is provably gone: same host and boot, process gone; else after
  ``abandoned_after`` seconds.
- Prefix markers are added after the head, bottom-up, each after the level
  below exists; deletes remove them bottom-up, re-checking after each removal.
  A listing never shows a prefix before an object below it is committed. The
  commit also records ``m:<name>`` (markers pending), removed once the markers
  are there: a writer that dies in between leaves an object that listings
  above it miss, and the record, so the next ``stat``, read, put or delete of
  the key adds the markers (a re-run of a sync stats or reads what it skips;
  after a pass that did not finish, that includes every tag's history link).
- Object names are hashes of fixed length: keys may be longer than
  ``osd_max_object_name_len`` allows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import os
import socket
import threading
import time
import uuid
from typing import Any, BinaryIO, Iterator
from urllib.parse import quote, unquote, urlencode

from .base import BaseBackend, BeforeCommit, Capabilities, Entry, ObjectInfo, check_key, check_prefix
from .errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    NotFound,
    PermissionDenied,
    TransientError,
)
from .options import option, parse_options
from .processes import boot_id, process_start

INSTALL_HINT = (
    "apt-get install python3-rados (Debian's binding, built for Python 3.11), "
    "then scripts/venv-link-rados VENV to make it importable in a virtual environment"
)

_IO_SIZE = 4 << 20  # largest single read or write request (RGW's rgw_max_chunk_size)
_PAGE = 1000  # omap entries per listing request
_COMMIT_ATTEMPTS = 100
_MIB = 1 << 20


@dataclasses.dataclass(frozen=True)
class RadosOptions:
    conf: str = option("", "ceph.conf to read; empty: Ceph's search ($CEPH_CONF, /etc/ceph/$cluster.conf, ~/.ceph/$cluster.conf, ./$cluster.conf)")
    id: str = option("admin", "cephx user, without 'client.'")
    keyring: str = option("", "keyring file; empty: as ceph.conf says, else Ceph's defaults (/etc/ceph/$cluster.client.$id.keyring, ...)")
    cluster: str = option("ceph", "cluster name, the $cluster in Ceph's default paths")
    mon_host: str = option("", "monitor addresses, overriding ceph.conf's mon_host (then no ceph.conf is needed)")
    connect_timeout: int = option(0, "seconds to wait for the monitors; 0: Ceph's client_mount_timeout (300)")
    op_timeout: int = option(0, "seconds before an OSD or monitor request fails as retryable; 0: wait, as Ceph does")
    chunk_size: int = option(0, "bytes per chunk object; 0 or more than the cluster allows: the cluster's osd_max_object_size")
    inline_max: int = option(16384, "objects up to this many bytes are kept in the index (omap), without chunk objects")
    abandoned_after: int = option(86400, "seconds after which another host's unfinished put counts as abandoned and is cleaned")


@dataclasses.dataclass(frozen=True)
class RadosLimits:
    """The cluster's limits as read at connect time, and the sizes this backend uses under them."""

    max_object_size: int
    max_write_size: int
    chunk_size: int
    write_size: int
    inline_max: int


# --- Layout: the one place that names RADOS objects and omap keys ---------------------

INDEX_PREFIX = "index."
CHUNK_PREFIX = "chunk."
INLINE, PENDING, OBJECT, PREFIX, WRITER, GARBAGE = "i:", "m:", "o:", "p:", "t:", "x:"
PREFIX_XATTR = "syncagent.prefix"  # on index objects: the prefix they index
KEY_XATTR = "syncagent.key"  # on chunk objects: the key they belong to


def index_oid(prefix: str) -> str:
    """The index object of ``prefix`` ("" or ending in "/")."""
    return INDEX_PREFIX + hashlib.sha1(prefix.encode("utf-8")).hexdigest()


def chunk_oid(gen: str, number: int) -> str:
    return f"{CHUNK_PREFIX}{gen}.{number}"


def parse_chunk_oid(oid: str) -> tuple[str, int] | None:
    gen, _, number = oid.removeprefix(CHUNK_PREFIX).partition(".")
    if not oid.startswith(CHUNK_PREFIX) or not number.isdigit():
        return None
    return gen, int(number)


def writer_key(name: str, gen: str) -> str:
    return f"{WRITER}{name}/{gen}"


def garbage_key(name: str, gen: str) -> str:
    return f"{GARBAGE}{name}/{gen}"


def split_key(key: str) -> tuple[str, str]:
    """``a/b/c`` -> (``a/b/``, ``c``): the prefix whose index holds the head, and the name."""
    parent, _, name = key.rpartition("/")
    return (parent + "/" if parent else ""), name


def split_prefix(prefix: str) -> tuple[str, str]:
    """``a/b/`` -> (``a/``, ``b``): the index holding the marker of ``prefix``, and its name."""
    return split_key(prefix[:-1])


def _is_content(omap_key: str | None) -> bool:
    """Keys that make an index non-empty for listings (they sort before t: and x:; m: goes with an o:)."""
    return omap_key is not None and omap_key[:2] in (INLINE, PENDING, OBJECT, PREFIX)


@dataclasses.dataclass(frozen=True)
class Head:
    """What ``o:<name>`` holds: a stored version of an object. ``chunks == 0``: inline in ``i:<name>``."""

    size: int
    gen: str
    chunk_size: int = 0
    chunks: int = 0

    def encode(self) -> bytes:
        fields = {"v": 1, "size": self.size, "gen": self.gen, "chunk_size": self.chunk_size, "chunks": self.chunks}
        return json.dumps(fields, separators=(",", ":"), sort_keys=True).encode("ascii")

    @classmethod
    def decode(cls, raw: bytes, key: str) -> "Head":
        try:
            fields = json.loads(raw)
            head = cls(int(fields["size"]), str(fields["gen"]), int(fields["chunk_size"]), int(fields["chunks"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"{key}: unreadable head {raw[:200]!r}", key=key) from exc
        if head.chunks and head.chunk_size * head.chunks < head.size:
            raise BackendError(f"{key}: head {raw[:200]!r} does not cover its size", key=key)
        return head


def _garbage_value(chunks: int | None) -> bytes:
    return json.dumps({"chunks": chunks}).encode("ascii")


def _garbage_chunks(raw: bytes) -> int | None:
    try:
        chunks = json.loads(raw)["chunks"]
        return None if chunks is None else int(chunks)
    except (ValueError, KeyError, TypeError):
        return None


# --- Who is writing: telling a slow writer from a dead one ------------------------------

_ACTIVE_GENS: set[str] = set()  # puts in progress in this process
_ACTIVE_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Writer:
    """What ``t:<name>/<gen>`` holds."""

    host: str
    boot: str
    pid: int
    start: str
    since: float

    @classmethod
    def this_process(cls) -> "Writer":
        pid = os.getpid()
        return cls(socket.gethostname(), boot_id(), pid, process_start(pid) or "", time.time())

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"), sort_keys=True).encode("ascii")

    @classmethod
    def decode(cls, raw: bytes) -> "Writer | None":
        try:
            fields = json.loads(raw)
            return cls(str(fields["host"]), str(fields["boot"]), int(fields["pid"]), str(fields["start"]), float(fields["since"]))
        except (ValueError, KeyError, TypeError):
            return None

    def abandoned(self, gen: str, abandoned_after: float) -> bool:
        """True when the put this record announces can no longer commit."""
        me = Writer.this_process()
        if self.host == me.host and self.boot and self.boot == me.boot:
            if self.pid == me.pid and self.start == me.start:
                with _ACTIVE_LOCK:
                    return gen not in _ACTIVE_GENS
            return process_start(self.pid) != self.start
        return time.time() - self.since > abandoned_after


# --- Errors: the one place that translates rados exceptions -----------------------------

_rados: Any = None

_TRANSIENT_ERRNOS = {
    errno.ETIMEDOUT, errno.ESHUTDOWN, errno.ENOTCONN, errno.EAGAIN, errno.EINTR, errno.ECONNRESET,
    errno.ECONNREFUSED, errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EBUSY,
}
_HINTS = {
    errno.EFBIG: "object larger than the cluster's osd_max_object_size (lower ?chunk_size=)",
    errno.EMSGSIZE: "request larger than the cluster's osd_max_write_size",
    errno.EOPNOTSUPP: "the pool does not support omap: use a replicated pool, not an erasure-coded one",
    errno.ENOSPC: "the cluster or pool is full",
    errno.EDQUOT: "the pool's quota is exhausted",
}


def _load_rados() -> Any:
    global _rados
    if _rados is None:
        try:
            import rados
        except ImportError as exc:
            raise BackendUnavailable(f"the RADOS backend needs the Python module 'rados' ({exc}): {INSTALL_HINT}") from exc
        _rados = rados
    return _rados


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    return abs(code) if isinstance(code, int) else None


def _translate(exc: BaseException, key: str, *, missing: type[BackendError] = NotFound, what: str = "") -> BackendError:
    """The typed error for a rados exception. ``missing``: what ENOENT means here."""
    rados = _rados
    code = _errno_of(exc)
    message = ": ".join(part for part in (key, what, str(exc)) if part)
    if isinstance(exc, rados.ObjectNotFound) or code == errno.ENOENT:
        return missing(message, key=key)
    if isinstance(exc, (rados.PermissionError, rados.PermissionDeniedError)) or code in (errno.EACCES, errno.EPERM):
        return PermissionDenied(message, key=key)
    transient = (rados.TimedOut, rados.ConnectionShutdown, rados.NotConnected, rados.InterruptedOrTimeoutError)
    if isinstance(exc, transient) or code in _TRANSIENT_ERRNOS:
        return TransientError(message, key=key)
    if code in _HINTS:
        return BackendError(f"{message} ({_HINTS[code]})", key=key)
    return BackendError(message, key=key)


@contextlib.contextmanager
def _translating(key: str, *, missing: type[BackendError] = NotFound, what: str = "") -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if _rados is not None and isinstance(exc, _rados.Error):
            raise _translate(exc, key, missing=missing, what=what) from exc
        raise


# --- The backend ------------------------------------------------------------------------


@dataclasses.dataclass
class _EntryState:
    """One name's records in an index object, read together."""

    head_raw: bytes | None = None
    head: Head | None = None
    writers: dict[str, bytes] = dataclasses.field(default_factory=dict)
    garbage: dict[str, bytes] = dataclasses.field(default_factory=dict)


class RadosBackend(BaseBackend):
    def __init__(self, pool: str, namespace: str = "", options: RadosOptions = RadosOptions()) -> None:
        if not pool:
            raise ConfigurationError("rados:// needs a pool: rados://POOL/NAMESPACE")
        if "/" in namespace:
            raise ConfigurationError(f"RADOS namespace {namespace!r} must not contain '/'")
        if options.inline_max < 0 or options.chunk_size < 0:
            raise ConfigurationError("chunk_size and inline_max must not be negative")
        _load_rados()
        self.pool = pool
        self.namespace = namespace
        self.options = options
        defaults = RadosOptions()
        changed = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if getattr(options, f.name) != getattr(defaults, f.name)}
        self.url = f"rados://{quote(pool, safe='')}/{quote(namespace, safe='')}" + (f"?{urlencode(changed)}" if changed else "")
        self.capabilities = Capabilities(empty_prefixes=False, default_concurrency=8, max_object_size=None)
        self._lock = threading.Lock()
        self._cluster: Any = None
        self._ioctx: Any = None
        self._limits: RadosLimits | None = None

    @classmethod
    def from_url(cls, parts, query) -> "RadosBackend":
        options = parse_options(RadosOptions, query, scheme="rados")
        namespace = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        if namespace.endswith("/") and "/" not in namespace[:-1]:
            namespace = namespace[:-1]
        return cls(unquote(parts.netloc), namespace, options)

    # -- connection ------------------------------------------------------------------------

    def _io(self) -> Any:
        """The shared ioctx (librados ioctxs are thread-safe); connects on first use."""
        if self._ioctx is None:
            with self._lock:
                if self._ioctx is None:
                    self._connect()
        return self._ioctx

    def _connect(self) -> None:
        rados = _load_rados()
        opts = self.options
        conf: dict[str, str] = {}
        if opts.keyring:
            conf["keyring"] = opts.keyring
        if opts.mon_host:
            conf["mon_host"] = opts.mon_host
        if opts.op_timeout:
            conf["rados_osd_op_timeout"] = conf["rados_mon_op_timeout"] = str(opts.op_timeout)
        where = opts.conf or "Ceph's default places ($CEPH_CONF, /etc/ceph/ceph.conf, ~/.ceph/ceph.conf, ./ceph.conf)"
        try:
            cluster = rados.Rados(rados_id=opts.id, clustername=opts.cluster, conffile=rados.Rados.NO_CONF_FILE)
        except rados.Error as exc:
            raise ConfigurationError(f"{self.url}: {exc}") from exc
        try:
            try:
                cluster.conf_read_file(opts.conf or None)
            except rados.Error as exc:
                if not (opts.mon_host and not opts.conf):
                    raise ConfigurationError(f"{self.url}: cannot read a ceph.conf from {where}: {exc}") from exc
            for name, value in conf.items():  # the URL wins over ceph.conf
                cluster.conf_set(name, value)
            try:
                cluster.connect(timeout=opts.connect_timeout)
            except rados.Error as exc:
                if _errno_of(exc) in (errno.ENOENT, errno.EINVAL):
                    raise ConfigurationError(
                        f"{self.url}: cannot connect as client.{opts.id} ({exc}); check mon_host in {where} and the keyring "
                        f"({opts.keyring or cluster.conf_get('keyring')})"
                    ) from exc
                raise _translate(exc, "", what=f"connecting to the cluster as client.{opts.id}") from exc
            with _translating("", what=f"opening pool {self.pool!r}"):
                try:
                    ioctx = cluster.open_ioctx(self.pool)
                except rados.ObjectNotFound as exc:
                    raise NotFound(f"pool {self.pool!r} does not exist", key="") from exc
                ioctx.set_namespace(self.namespace)
            self._limits = self._read_limits(cluster)
        except BaseException:
            cluster.shutdown()
            raise
        self._cluster, self._ioctx = cluster, ioctx

    def _read_limits(self, cluster: Any) -> RadosLimits:
        """The OSDs' limits from the monitors' config database, and from ceph.conf; the lower wins."""

        def lowest(name: str) -> int:
            values = []
            try:
                ret, out, _ = cluster.mon_command(json.dumps({"prefix": "config get", "who": "osd", "key": name}), b"")
                if ret == 0:
                    values.append(_parse_size(out.decode()))
            except _rados.Error:
                pass  # no 'mon allow r': fall back to ceph.conf and Ceph's defaults
            values.append(_parse_size(cluster.conf_get(name) or ""))
            found = [v for v in values if v]
            if not found:
                raise BackendError(f"cannot read {name} from the cluster")
            return min(found)

        max_object = lowest("osd_max_object_size")
        max_write = lowest("osd_max_write_size") * _MIB
        chunk = min(self.options.chunk_size or max_object, max_object)
        # Half the write limit leaves room for the xattrs and omap sent in the same request.
        write = max(min(chunk, _IO_SIZE, max_write // 2), 1)
        return RadosLimits(max_object, max_write, chunk, write, min(self.options.inline_max, write))

    def limits(self) -> RadosLimits:
        """The cluster's limits and the chunk and request sizes in use (connects if needed)."""
        self._io()
        assert self._limits is not None
        return self._limits

    def close(self) -> None:
        with self._lock:
            ioctx, cluster = self._ioctx, self._cluster
            self._ioctx = self._cluster = None
        if ioctx is not None:
            ioctx.close()
        if cluster is not None:
            cluster.shutdown()

    @contextlib.contextmanager
    def _private_ioctx(self) -> Iterator[Any]:
        """An ioctx of one's own, for ``get_last_version`` (per ioctx, so racy on the shared one)."""
        self._io()
        ioctx = self._cluster.open_ioctx(self.pool)
        try:
            ioctx.set_namespace(self.namespace)
            yield ioctx
        finally:
            ioctx.close()

    # -- reading -----------------------------------------------------------------------------

    def _values(self, oid: str, keys: list[str], key: str) -> dict[str, bytes]:
        """Values of ``keys`` in index ``oid`` ({} when the index does not exist)."""
        io_ = self._io()
        with _translating(key):
            try:
                with _rados.ReadOpCtx() as op:
                    found, _ = io_.get_omap_vals_by_keys(op, keys)
                    io_.operate_read_op(op, oid)
                    return {k: v or b"" for k, v in found}
            except _rados.ObjectNotFound:
                return {}

    def _head(self, key: str) -> tuple[Head, dict[str, bytes]]:
        parent, name = split_key(check_key(key))
        values = self._values(index_oid(parent), [OBJECT + name, INLINE + name, PENDING + name], key)
        raw = values.get(OBJECT + name)
        if raw is None:
            raise NotFound(f"no such object: {key}", key=key)
        if PENDING + name in values:
            self._finish_markers(key)
        return Head.decode(raw, key), values

    def _finish_markers(self, key: str) -> None:
        """Add the markers a put of ``key`` committed without (it died, or is adding them now), then drop
        its m: record. Best effort: a read-only user cannot; the next put, delete or read tries again."""
        parent, name = split_key(key)
        try:
            self._ensure_markers(parent, key)
            if OBJECT + name not in self._values(index_oid(parent), [OBJECT + name], key):
                self._prune(parent, key)  # deleted meanwhile: take back the markers just added
                return
            self._remove_omap(index_oid(parent), [PENDING + name], key)
        except BackendError:
            pass

    def stat(self, key: str) -> ObjectInfo:
        head, _ = self._head(key)
        return ObjectInfo(key, head.size)

    def open_read(self, key: str) -> BinaryIO:
        head, values = self._head(key)
        if not head.chunks:
            data = values.get(INLINE + split_key(key)[1], b"")
            if len(data) != head.size:
                raise BackendError(f"{key}: inline data of {len(data)} bytes, head says {head.size}", key=key)
            return io.BytesIO(data)
        return io.BufferedReader(_ChunkReader(self._io(), key, head, self.limits().write_size), buffer_size=64 * 1024)

    def _pages(self, oid: str, prefix: str, *, values: bool) -> Iterator[tuple[str, bytes | None]]:
        """The o: then p: entries of index ``oid``, page by page."""
        io_ = self._io()
        start = OBJECT[0]  # sorts after every i: key, before every o: key
        while True:
            with _translating(prefix, missing=NotFound):
                try:
                    with _rados.ReadOpCtx() as op:
                        if values:
                            found, _ = io_.get_omap_vals(op, start, "", _PAGE)
                        else:
                            found, _ = io_.get_omap_keys(op, start, _PAGE)
                        io_.operate_read_op(op, oid)
                        page = list(found)
                except _rados.ObjectNotFound:
                    return
            for omap_key, value in page:
                if omap_key[:2] not in (OBJECT, PREFIX):
                    return
                yield omap_key, value
            if len(page) < _PAGE:
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
        source = _Source(data)
        first = source.read(limits.inline_max + 1)
        if len(first) <= limits.inline_max:
            head = Head(len(first), gen)
            if before_commit is not None:
                before_commit()
            replaced = self._commit(key, head, inline=first, writer=None)
        else:
            written = [0]
            writer = Writer.this_process().encode()
            with _ACTIVE_LOCK:
                _ACTIVE_GENS.add(gen)
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
                with _ACTIVE_LOCK:
                    _ACTIVE_GENS.discard(gen)
        self._ensure_markers(parent, key)
        self._remove_omap(index_oid(parent), [PENDING + name], key)
        self._collect(key, replaced)
        return ObjectInfo(key, head.size)

    def _begin(self, key: str, gen: str, writer: bytes) -> None:
        """Record ``t:<name>/<gen>`` so that the chunks about to be written can be found if we die."""
        parent, name = split_key(key)
        with _translating(key), _rados.WriteOpCtx() as op:
            self._io().set_omap(op, [writer_key(name, gen)], [writer])
            op.set_xattr(PREFIX_XATTR, parent.encode())
            self._io().operate_write_op(op, index_oid(parent))

    def _write_chunks(self, key: str, gen: str, first: bytes, source: "_Source", written: list[int]) -> int:
        """Store the stream as chunk objects; ``written[0]`` counts the chunks created so far."""
        limits, io_ = self.limits(), self._io()
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
            with _translating(key, what=oid):
                if offset == 0:
                    written[0] = number + 1
                    with _rados.WriteOpCtx() as op:
                        op.new(_rados.LIBRADOS_CREATE_EXCLUSIVE)
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

    def _read_entry(self, key: str, oid: str) -> _EntryState:
        """The head of ``key`` and the t:/x: records of its name, in one read."""
        name = split_key(key)[1]
        io_ = self._io()
        state = _EntryState()
        with _translating(key):
            try:
                with _rados.ReadOpCtx() as op:
                    heads, _ = io_.get_omap_vals_by_keys(op, [OBJECT + name])
                    writers, _ = io_.get_omap_vals(op, writer_key(name, ""), writer_key(name, ""), _PAGE)
                    garbage, _ = io_.get_omap_vals(op, garbage_key(name, ""), garbage_key(name, ""), _PAGE)
                    io_.operate_read_op(op, oid)
                    heads = {k: v or b"" for k, v in heads}
                    writers, garbage = list(writers), list(garbage)
            except _rados.ObjectNotFound:
                return state
        state.head_raw = heads.get(OBJECT + name)
        if state.head_raw is not None:
            state.head = Head.decode(state.head_raw, key)
        state.writers = {k.rpartition("/")[2]: v or b"" for k, v in writers}
        state.garbage = {k.rpartition("/")[2]: v or b"" for k, v in garbage}
        return state

    def _commit(self, key: str, head: Head, *, inline: bytes | None, writer: bytes | None) -> _EntryState:
        """Make ``head`` the object's head: compare-and-swap against the head read just before."""
        parent, name = split_key(key)
        oid, io_ = index_oid(parent), self._io()
        for _ in range(_COMMIT_ATTEMPTS):
            state = self._read_entry(key, oid)
            if writer is not None and state.writers.get(head.gen) != writer:
                raise TransientError(f"{key}: this put was taken for abandoned and cleaned up; put again", key=key)
            keys, values = [OBJECT + name, PENDING + name], [head.encode(), b""]
            if inline is not None:
                keys.append(INLINE + name)
                values.append(inline)
            if state.head is not None and state.head.chunks:
                keys.append(garbage_key(name, state.head.gen))
                values.append(_garbage_value(state.head.chunks))
            removed = [] if inline is not None else [INLINE + name]
            if writer is not None:
                removed.append(writer_key(name, head.gen))
            with _translating(key), _rados.WriteOpCtx() as op:
                op.new(_rados.LIBRADOS_CREATE_IDEMPOTENT)
                op.omap_cmp(OBJECT + name, (state.head_raw or b"").decode("ascii"))
                if writer is not None:
                    op.omap_cmp(writer_key(name, head.gen), writer.decode("ascii"))
                io_.set_omap(op, keys, values)
                if removed:
                    io_.remove_omap_keys(op, removed)
                op.set_xattr(PREFIX_XATTR, parent.encode())
                try:
                    io_.operate_write_op(op, oid)
                except _rados.Error as exc:
                    if _errno_of(exc) != errno.ECANCELED:
                        raise
                    continue  # another put or delete changed the head meanwhile: read it again
            return state
        raise TransientError(f"{key}: the head kept changing under concurrent writers", key=key)

    def _abandon(self, key: str, gen: str, chunks: int, writer: bytes) -> None:
        """Undo a put that will not commit: its chunks, its t: record, an index it created. Best effort.

        The t: record is claimed first: once it is gone the commit, which asserts
        it, cannot apply any more, even if it was sent and its answer lost.
        """
        parent, name = split_key(key)
        oid = index_oid(parent)
        try:
            if not self._claim(key, oid, name, gen, writer, chunks):
                current = self._values(oid, [OBJECT + name], key).get(OBJECT + name)
                if current is not None and Head.decode(current, key).gen == gen:
                    return  # the commit did apply: the object is whole and visible
            self._remove_chunks(key, gen, chunks)
            self._remove_omap(oid, [garbage_key(name, gen)], key)
            self._prune(parent, key)
        except Exception:
            pass  # what is left stays recorded (t: or x:) for a later put or delete of the key

    def _ensure_markers(self, prefix: str, key: str) -> None:
        """Add the missing markers of ``prefix`` and its ancestors, bottom-up, each after the level below."""
        while prefix:
            parent, name = split_prefix(prefix)
            oid = index_oid(parent)
            if PREFIX + name not in self._values(oid, [PREFIX + name], key):
                with _translating(key), _rados.WriteOpCtx() as op:
                    self._io().set_omap(op, [PREFIX + name], [b""])
                    op.set_xattr(PREFIX_XATTR, parent.encode())
                    self._io().operate_write_op(op, oid)
            prefix = parent

    # -- deleting and cleaning -------------------------------------------------------------

    def delete(self, key: str) -> None:
        parent, name = split_key(check_key(key))
        oid, io_ = index_oid(parent), self._io()
        for _ in range(_COMMIT_ATTEMPTS):
            state = self._read_entry(key, oid)
            if state.head is None:
                if state.garbage or state.writers:  # what dead writers left
                    self._collect(key, state)
                    self._prune(parent, key)
                return
            with _translating(key), _rados.WriteOpCtx() as op:
                op.omap_cmp(OBJECT + name, (state.head_raw or b"").decode("ascii"))
                io_.remove_omap_keys(op, [OBJECT + name, INLINE + name, PENDING + name])
                if state.head.chunks:
                    io_.set_omap(op, [garbage_key(name, state.head.gen)], [_garbage_value(state.head.chunks)])
                try:
                    io_.operate_write_op(op, oid)
                except _rados.Error as exc:
                    if _errno_of(exc) == errno.ECANCELED:
                        continue
                    if _errno_of(exc) == errno.ENOENT:
                        return
                    raise
            break
        else:
            raise TransientError(f"{key}: the head kept changing under concurrent writers", key=key)
        self._collect(key, state)
        self._prune(parent, key)

    def _collect(self, key: str, state: _EntryState) -> None:
        """Remove the chunk sets ``state`` shows unused: the head just replaced or deleted, x: records,
        t: records of dead writers. Best effort: what is left stays recorded for the next put or delete."""
        parent, name = split_key(key)
        oid = index_oid(parent)
        sets: dict[str, int | None] = {gen: _garbage_chunks(raw) for gen, raw in state.garbage.items()}
        if state.head is not None and state.head.chunks:
            sets[state.head.gen] = state.head.chunks
        try:
            for gen, raw in state.writers.items():
                writer = Writer.decode(raw)
                if writer is not None and writer.abandoned(gen, self.options.abandoned_after):
                    if self._claim(key, oid, name, gen, raw):
                        sets.setdefault(gen, None)
            for gen, chunks in sets.items():
                self._remove_chunks(key, gen, chunks)
                self._remove_omap(oid, [garbage_key(name, gen)], key)
        except BackendError:
            pass

    def _claim(self, key: str, oid: str, name: str, gen: str, raw: bytes, chunks: int | None = None) -> bool:
        """Turn a t: record into an x: record, atomically; False if it is not there as ``raw`` any more."""
        io_ = self._io()
        with _translating(key), _rados.WriteOpCtx() as op:
            op.omap_cmp(writer_key(name, gen), raw.decode("ascii"))
            io_.remove_omap_keys(op, [writer_key(name, gen)])
            io_.set_omap(op, [garbage_key(name, gen)], [_garbage_value(chunks)])
            try:
                io_.operate_write_op(op, oid)
            except _rados.Error as exc:
                if _errno_of(exc) in (errno.ECANCELED, errno.ENOENT):
                    return False
                raise
        return True

    def _remove_chunks(self, key: str, gen: str, chunks: int | None) -> None:
        """Remove a chunk set, highest number first, so that an interrupted removal leaves 0..k."""
        io_ = self._io()
        if chunks is None:
            chunks = 0
            while True:
                try:
                    with _translating(key):
                        io_.stat(chunk_oid(gen, chunks))
                except NotFound:
                    break
                chunks += 1
        for number in reversed(range(chunks)):
            try:
                with _translating(key):
                    io_.remove_object(chunk_oid(gen, number))
            except NotFound:
                pass

    def _remove_omap(self, oid: str, keys: list[str], key: str) -> None:
        try:
            with _translating(key), _rados.WriteOpCtx() as op:
                self._io().remove_omap_keys(op, keys)
                self._io().operate_write_op(op, oid)
        except NotFound:
            pass

    def _first_key(self, ioctx: Any, oid: str, key: str) -> tuple[bool, str | None]:
        """(index exists, its first omap key)."""
        with _translating(key):
            try:
                with _rados.ReadOpCtx() as op:
                    found, _ = ioctx.get_omap_keys(op, "", 1)
                    ioctx.operate_read_op(op, oid)
                    first = [k for k, _ in found]
            except _rados.ObjectNotFound:
                return False, None
        return True, (first[0] if first else None)

    def _prune(self, prefix: str, key: str) -> None:
        """Bottom-up from ``prefix``: drop the marker of a prefix nothing is listed under any more, then
        its index if that is empty. After dropping a marker, look again: a put that raced it gets it back."""
        while True:
            oid = index_oid(prefix)
            _, first = self._first_key(self._io(), oid, key)
            if _is_content(first):
                return
            parent, name = split_prefix(prefix) if prefix else ("", "")
            if prefix:
                self._remove_omap(index_oid(parent), [PREFIX + name], key)
            with self._private_ioctx() as ioctx:
                exists, first = self._first_key(ioctx, oid, key)
                if _is_content(first):
                    self._ensure_markers(prefix, key)
                    return
                if exists and first is None:
                    self._remove_if_unchanged(ioctx, oid, ioctx.get_last_version(), key)
            if not prefix:
                return
            prefix = parent

    def _remove_if_unchanged(self, ioctx: Any, oid: str, version: int, key: str) -> None:
        with _translating(key), _rados.WriteOpCtx() as op:
            op.assert_version(version)
            op.remove()
            try:
                ioctx.operate_write_op(op, oid)
            except _rados.Error as exc:
                if _errno_of(exc) not in (errno.ERANGE, errno.EOVERFLOW, errno.ENOENT):
                    raise  # ERANGE/EOVERFLOW: written since we looked, so in use again

    # -- checking ----------------------------------------------------------------------------

    def scan_leftovers(self) -> list[str]:
        """Everything in the namespace that is not part of a visible object, and index inconsistencies.

        Reports chunk objects no head references, t:/x: records, empty index
        objects, markers of prefixes with nothing below them and objects whose
        ancestors lack a marker. Lists every object of the namespace (a scan
        of the pool): for tests and checks by hand, never used by the backend.
        """
        io_ = self._io()
        with _translating("", what="listing the namespace"):
            oids = [obj.key for obj in io_.list_objects()]
        report: list[str] = []
        referenced: dict[str, int] = {}
        children: dict[str, set[str]] = {}
        markers: dict[str, set[str]] = {}
        for oid in (o for o in oids if o.startswith(INDEX_PREFIX)):
            with _translating("", what=oid):
                try:
                    prefix = io_.get_xattr(oid, PREFIX_XATTR).decode()
                except _rados.ObjectNotFound:
                    continue
            entries = self._all_entries(oid)
            if not entries:
                report.append(f"empty index {oid} of {prefix!r}")
            children[prefix] = set()
            markers[prefix] = set()
            for omap_key, value in entries:
                kind, name = omap_key[:2], omap_key[2:]
                if kind == OBJECT:
                    head = Head.decode(value or b"", prefix + name)
                    referenced[head.gen] = head.chunks
                    children[prefix].add(name)
                elif kind == PREFIX:
                    markers[prefix].add(name)
                elif kind in (PENDING, WRITER, GARBAGE):
                    report.append(f"record {omap_key} in the index of {prefix!r}")
        for oid in oids:
            parsed = parse_chunk_oid(oid)
            if oid.startswith(INDEX_PREFIX):
                continue
            if parsed is None:
                report.append(f"unknown object {oid}")
            elif parsed[1] >= referenced.get(parsed[0], 0):
                report.append(f"orphan chunk {oid}")
        listed = {p for p in children if children[p] or markers[p]}
        for prefix, names in markers.items():
            for name in names:
                if f"{prefix}{name}/" not in listed:
                    report.append(f"marker of empty prefix {prefix}{name}/")
        for prefix in listed:
            if prefix:
                parent, name = split_prefix(prefix)
                if name not in markers.get(parent, set()):
                    report.append(f"prefix {prefix} missing from the listing of {parent!r}")
        return sorted(report)

    def _all_entries(self, oid: str) -> list[tuple[str, bytes]]:
        io_, entries, start = self._io(), [], ""
        while True:
            with _translating("", what=oid), _rados.ReadOpCtx() as op:
                found, _ = io_.get_omap_vals(op, start, "", _PAGE)
                io_.operate_read_op(op, oid)
                page = list(found)
            entries.extend(page)
            if len(page) < _PAGE:
                return entries
            start = page[-1][0]


class _Source:
    """The caller's stream, read in full pieces; its errors propagate untranslated."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._eof = False

    def read(self, size: int) -> bytes:
        parts, wanted = [], size
        while wanted > 0 and not self._eof:
            part = self._stream.read(wanted)
            if not part:
                self._eof = True
                break
            parts.append(part)
            wanted -= len(part)
        return b"".join(parts)


class _ChunkReader(io.RawIOBase):
    """Reads a chunked object in requests of at most ``request`` bytes."""

    def __init__(self, ioctx: Any, key: str, head: Head, request: int) -> None:
        self._ioctx = ioctx
        self._key = key
        self._head = head
        self._request = request
        self._pos = 0

    def readable(self) -> bool:
        return True

    def _next(self, limit: int) -> bytes:
        """Up to ``limit`` bytes from the current position, within one chunk; b"" at the end."""
        head = self._head
        if self._pos >= head.size:
            return b""
        number, offset = divmod(self._pos, head.chunk_size)
        wanted = min(limit, head.chunk_size - offset, head.size - self._pos, self._request)
        with _translating(self._key, missing=TransientError, what="replaced or deleted while being read; read again"):
            data = self._ioctx.read(chunk_oid(head.gen, number), wanted, offset)
        if len(data) != wanted:
            raise BackendError(f"{self._key}: chunk {number} holds fewer bytes than its head says", key=self._key)
        self._pos += wanted
        return data

    def readinto(self, buffer) -> int:
        data = self._next(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        parts = []
        while data := self._next(self._request):
            parts.append(data)
        return b"".join(parts)


def _parse_size(text: str) -> int:
    """A Ceph size as ``config get`` or ``conf_get`` prints it: 134217728, 90, 128M, 4Ki."""
    text = text.strip().strip('"')
    if not text:
        return 0
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    number = text.rstrip("BbIi").rstrip("KkMmGgTt")
    unit = text[len(number):].rstrip("BbIi").lower()
    try:
        return int(number) * units[unit]
    except (ValueError, KeyError):
        return 0
