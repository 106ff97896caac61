"""The Backend protocol: a small set of operations over opaque string keys.

Keys are relative, ``/``-separated paths of non-empty components (no ``.`` or
``..``, no leading or trailing ``/``). A *prefix* is ``""`` or a key followed by
``/``. Backends know nothing of registries.

Required operations (each docstring says what it raises):
``stat``, ``open_read``, ``put``, ``delete``, ``iter_children``,
``iter_objects``, ``close``; plus the ``capabilities`` record and ``url``.
Backends derive from :class:`BaseBackend`, which adds ``read_prefix`` (a
backend may do it faster) and conveniences (``read_bytes``, ``put_bytes``,
``exists``) from them. Optional abilities are declared in
:class:`Capabilities` and reached through a function that checks the flag
once (``leftovers_of``). Retries, a request ceiling and request counting are
wrappers (``retry.py``, ``ratelimit.py``, ``observed.py``).

Listings report what the store holds, names that are not valid keys included:
a store with free-form keys (S3) can hold ``a//b`` or ``a/../b``, written by
another client, and a listing yields them as they are (an ``Entry`` named
``""`` or ``".."``, an ``ObjectInfo`` whose key fails :func:`check_key`) so
that callers can report them instead of never knowing. Validate a listed name
before building a key from it; every operation given a malformed key raises
InvalidKey, so such an object is never read, written or deleted.

Optional abilities are declared in :class:`Capabilities` and reached through
a function that checks the declaration once (:func:`leftovers_of`,
:func:`server_copy_of`, :func:`staged_puts_of`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Callable, Iterator, Protocol, runtime_checkable

from .errors import InvalidKey, NotFound

BeforeCommit = Callable[[], None]


@dataclass(frozen=True)
class ObjectInfo:
    """What ``stat`` and ``iter_objects`` report about one object.

    ``md5``: on stores with ``listing_md5``, what ``iter_objects`` reports as
    the content's MD5 (hex), or None. A hint only: equal to the MD5 of the
    content one expects means the object holds it; anything else means
    nothing (S3 reports other values for multipart or SSE-KMS objects), so
    read the object.
    ``etag``: the store's opaque entity tag (S3's ETag, from ``stat`` and
    listings), or None where it has none. Bucket replication keeps it, so two
    buckets reporting the same ETag for a key hold the same object.
    """

    key: str
    size: int
    md5: str | None = None
    etag: str | None = None


@dataclass(frozen=True)
class Entry:
    """One immediate child of a prefix: an object, or a deeper prefix.

    ``name`` is as stored, which may be no valid key component (see the module docstring).
    """

    name: str
    is_prefix: bool


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, detected once by callers.

    ``empty_prefixes``: a prefix can exist without objects below it (filesystem
    directories); on such stores the backend removes prefixes a delete leaves
    empty, and creates new ones together with the object that needs them.
    ``default_concurrency``: a sensible number of parallel transfers.
    ``max_object_size``: largest object one put may write, or None.
    ``local``: operations are local system calls, not network round trips, so
    many small operations in parallel only contend for the interpreter.
    ``listing_md5``: ``iter_objects`` reports MD5 hints (``ObjectInfo.md5``),
    so one listing can stand in for reading many small objects whose content
    is known in advance.
    ``incomplete_uploads``: the backend implements :class:`Leftovers` (a put
    can leave an upload behind when its process is killed, e.g. an S3
    multipart upload); reach it through :func:`leftovers_of`.
    ``local_root``: the directory holding the store's objects, for a store on
    a local filesystem (file events can be watched there), else None.
    ``server_copy``: the backend implements :class:`ServerCopy` (the store copies
    an object from another backend on the same service, its bytes never passing
    through this process); reach it through :func:`server_copy_of`.
    ``staged_puts``: the backend implements :class:`StagedPuts` (a put in two
    halves, made durable by barriers that many puts share); reach it through
    :func:`staged_puts_of`.
    """

    empty_prefixes: bool = False
    default_concurrency: int = 8
    max_object_size: int | None = None
    local: bool = False
    listing_md5: bool = False
    incomplete_uploads: bool = False
    local_root: str | None = None
    server_copy: bool = False
    staged_puts: bool = False


@runtime_checkable
class Backend(Protocol):
    url: str
    capabilities: Capabilities

    def stat(self, key: str) -> ObjectInfo:
        """Size of an object. Raises NotFound, InvalidKey, PermissionDenied, TransientError."""

    def open_read(self, key: str) -> BinaryIO:
        """A readable stream of the object's bytes (close it, or use ``with``).

        Raises NotFound, InvalidKey, PermissionDenied, TransientError; a read
        from the stream may raise TransientError. The stream ends only after
        the object's last byte: one cut short in transit (a truncated answer,
        a reset connection) raises TransientError rather than ending early,
        so a caller that read to the end has the whole object as it was.
        """

    def put(
        self,
        key: str,
        data: BinaryIO,
        *,
        size: int | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> ObjectInfo:
        """Store ``data`` (read to EOF) at ``key``, atomically, replacing any old object.

        Readers see either the old object (or nothing) or the whole new one,
        never a part. ``before_commit`` is called once every byte has been
        read from ``data`` and stored, before the object becomes visible; if it
        raises, the put is abandoned, nothing is left behind and its exception
        propagates unchanged. ``size`` is a hint (e.g. to choose multipart).
        Raises InvalidKey, PermissionDenied, TransientError, BackendError.
        """

    def delete(self, key: str) -> None:
        """Remove an object; a missing key is not an error.

        On stores with ``empty_prefixes`` the prefixes the delete leaves empty
        are removed too. Raises InvalidKey, PermissionDenied, TransientError.
        """

    def read_prefix(self, key: str, size: int) -> bytes:
        """At most ``size`` bytes from the start of the object (all of it if shorter); raises as
        ``open_read`` does. :class:`BaseBackend` derives it from ``open_read``; a backend may do better."""

    def iter_children(self, prefix: str) -> Iterator[Entry]:
        """Immediate children of ``prefix`` (``""`` or ending in ``/``), in no set order.

        Every child, names that are no valid key component included. A prefix
        with nothing below it yields nothing. Raises NotFound when the
        store itself (root directory, bucket, pool) does not exist; InvalidKey,
        PermissionDenied, TransientError otherwise -- never an empty listing
        in place of an error.
        """

    def iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, streamed, in no set order.

        Malformed keys included. Raises as ``iter_children`` does.
        """

    def close(self) -> None:
        """Release connections and other resources."""


@dataclass(frozen=True)
class IncompleteUpload:
    """An upload a put started and never finished or abandoned (e.g. an S3 multipart upload).

    ``key``: the key it would have written; ``upload_id``: the store's handle
    for it; ``initiated``: when it started (timezone-aware, the store's clock);
    ``size``: bytes it holds so far.
    """

    key: str
    upload_id: str
    initiated: datetime
    size: int


@runtime_checkable
class Leftovers(Protocol):
    """Optional: uploads that puts left behind (declared by ``Capabilities.incomplete_uploads``)."""

    def iter_incomplete_uploads(self, prefix: str) -> Iterator[IncompleteUpload]:
        """Incomplete uploads of keys under ``prefix``, streamed, in no set order.

        Keys are as stored (possibly malformed). Raises NotFound (no store),
        PermissionDenied, TransientError.
        """

    def abort_incomplete_upload(self, upload: IncompleteUpload) -> None:
        """Discard an incomplete upload and the space it holds; one already gone is not an error.

        Raises PermissionDenied, TransientError.
        """


def leftovers_of(backend: "Backend") -> Leftovers | None:
    """The backend's :class:`Leftovers` ability, or None when it declares none."""
    if backend.capabilities.incomplete_uploads and isinstance(backend, Leftovers):
        return backend
    return None


@runtime_checkable
class ServerCopy(Protocol):
    """Optional: copies made by the store itself (declared by ``Capabilities.server_copy``)."""

    def can_copy_from(self, source: "Backend", size: int) -> bool:
        """Whether :meth:`copy_from` can copy an object of ``size`` bytes from ``source`` (the same
        service and credentials; wrappers such as retries are looked through) and is worth it."""

    def copy_from(self, source: "Backend", key: str, data: BinaryIO, *, size: int,
                  before_commit: BeforeCommit | None = None) -> ObjectInfo:
        """Store at ``key`` a copy, made by the store, of ``source``'s object at ``key``, atomically.

        ``data`` is that object's content as the caller reads it; it is read here to EOF. The copy
        becomes visible only if the store confirms that it holds exactly the bytes read from
        ``data`` and ``before_commit`` (called once they are all read) returns; otherwise nothing is
        left behind and, as with ``put``, ``before_commit``'s exception propagates unchanged.
        Raises CopyUnverifiable (stream the object instead), TransientError (the source changed
        meanwhile, or the usual), NotFound (the source object), InvalidKey, PermissionDenied, BackendError.
        """


def server_copy_of(backend: "Backend") -> ServerCopy | None:
    """The backend's :class:`ServerCopy` ability, or None when it declares none."""
    if backend.capabilities.server_copy and isinstance(backend, ServerCopy):
        return backend
    return None


@dataclass(frozen=True)
class StagedObject:
    """An object a :class:`StagedPuts` backend holds written but not yet under its key.

    ``key``: where :meth:`StagedPuts.publish` will put it; ``size``: its bytes;
    ``handle``: the backend's own reference to the written bytes (opaque to callers).
    """

    key: str
    size: int
    handle: object = None


@runtime_checkable
class StagedPuts(Protocol):
    """Optional: a put in two halves, made durable by barriers that many puts share
    (declared by ``Capabilities.staged_puts``).

    ``put`` makes each object durable on its own (the filesystem: two fsyncs).
    Here nothing is durable until a barrier: ``stage`` stores the bytes where
    no reader sees them, ``publish`` gives them their key (atomically, as
    ``put`` would), ``barrier`` makes everything staged and published before it
    durable. A caller that needs an object to be durable before anything that
    names it must order the calls itself: stage, barrier, publish, barrier, and
    only then write what names it (syncagent/sync/durability.py does).
    """

    def stage(self, key: str, data: BinaryIO, *, size: int | None = None,
              before_commit: BeforeCommit | None = None) -> StagedObject:
        """Store ``data`` (read to EOF) for ``key`` where no reader sees it; not durable yet.

        ``before_commit`` is called once every byte has been stored; if it raises,
        nothing is left behind and its exception propagates unchanged. Raises
        as ``put`` does.
        """

    def publish(self, staged: StagedObject) -> ObjectInfo:
        """Give a staged object its key, atomically, replacing any old object; durable after the next
        barrier. On error the staged object is discarded. Raises InvalidKey, PermissionDenied,
        TransientError, BackendError."""

    def discard(self, staged: StagedObject) -> None:
        """Forget a staged object that will not be published (nothing is left behind)."""

    def barrier(self) -> None:
        """Return once everything staged and published before the call is durable. Raises BackendError."""


def staged_puts_of(backend: "Backend") -> StagedPuts | None:
    """The backend's :class:`StagedPuts` ability, or None when it declares none."""
    if backend.capabilities.staged_puts and isinstance(backend, StagedPuts):
        return backend
    return None


def innermost(backend: "Backend") -> "Backend":
    """The backend under its wrappers (retries, request ceilings, observers: each holds ``inner``)."""
    while "inner" in getattr(backend, "__dict__", {}):
        backend = backend.inner  # type: ignore[attr-defined]
    return backend


def check_key(key: str) -> str:
    """Return ``key`` if it is well formed, else raise InvalidKey."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("empty key", key=key)
    if "\x00" in key or "\\" in key:
        raise InvalidKey(f"forbidden character in key {key!r}", key=key)
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise InvalidKey(f"malformed key {key!r}", key=key)
    return key


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is ``""`` or a well-formed key followed by ``/``."""
    if prefix == "":
        return prefix
    if not prefix.endswith("/"):
        raise InvalidKey(f"prefix must end with '/': {prefix!r}", key=prefix)
    check_key(prefix[:-1])
    return prefix


def read_up_to(stream: BinaryIO, size: int) -> bytes:
    """``size`` bytes of ``stream``, fewer only at its end: one ``read`` may return less than asked."""
    pieces: list[bytes] = []
    remaining = size
    while remaining > 0:
        piece = stream.read(remaining)
        if not piece:
            break
        pieces.append(piece)
        remaining -= len(piece)
    return b"".join(pieces)


class BaseBackend:
    """Conveniences every backend gets from the required operations."""

    url: str = ""
    capabilities: Capabilities = Capabilities()

    def read_bytes(self, key: str, limit: int | None = None) -> bytes:
        """The whole object; raises ValueError if it is longer than ``limit``."""
        with self.open_read(key) as stream:  # type: ignore[attr-defined]
            if limit is None:
                return stream.read()
            data = read_up_to(stream, limit + 1)
        if len(data) > limit:
            raise ValueError(f"{key}: object larger than {limit} bytes")
        return data

    def read_prefix(self, key: str, size: int) -> bytes:
        """At most ``size`` bytes from the start of the object (all of it if shorter)."""
        with self.open_read(key) as stream:  # type: ignore[attr-defined]
            return read_up_to(stream, size)

    def put_bytes(self, key: str, data: bytes, *, before_commit: BeforeCommit | None = None) -> ObjectInfo:
        return self.put(key, io.BytesIO(data), size=len(data), before_commit=before_commit)  # type: ignore[attr-defined]

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)  # type: ignore[attr-defined]
        except NotFound:
            return False
        return True

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"
