"""What puts and deletes leave behind, and collecting it: claiming the records of dead writers,
removing unused chunk sets, undoing a put that will not commit, and ``scan_leftovers``.

Leftovers are always recorded in the index of the key's parent: ``t:`` (a put
that may still be running) or ``x:`` (a chunk set no head uses). Whatever
reads a name's records -- a ``stat`` or read of the key, its next delete, and
a put of it that writes chunks or finds a head there (an inline put of a key
the index lacks reads nothing first) -- removes what is provably unused: every ``x:`` set, and the
sets of ``t:`` records whose writers are gone (claimed first). So a dead
writer's chunks go as soon as anything looks at the key again, not only when
the key is written again (a blob is never put twice once it is whole).
Collecting is best effort: what it cannot remove stays recorded, and is logged.
"""

from __future__ import annotations

import errno
import logging

from ..errors import BackendError, NotFound, PermissionDenied
from .errors import errno_of, load_rados, translating
from .layout import (
    GARBAGE, INDEX_PREFIX, OBJECT, PENDING, PREFIX, PREFIX_XATTR, UNMARKED, WRITER, EntryState, Head, chunk_oid, describe,
    garbage_chunks, garbage_key, garbage_value, index_oid, parse_chunk_oid, split_key, split_prefix, writer_key,
)
from .options import PAGE
from .writers import Writer

log = logging.getLogger(__name__)


def left_for_later(what: str, key: str, exc: BackendError) -> None:
    """Log a best-effort step that failed; a user without write rights (a read-only source) is expected."""
    level = logging.DEBUG if isinstance(exc, PermissionDenied) else logging.WARNING
    log.log(level, "%s: %s failed, left recorded for a later stat, read, put or delete of the key: %s", key, what, exc)


class Leftovers:
    """Mixed into the backend: needs ``options``, ``_io``, ``_values``, ``_remove_omap`` and ``_prune``."""

    def _collect(self, key: str, state: EntryState, *, replaced: bool) -> bool:
        """Remove the chunk sets ``state`` shows unused: those of x: records and of t: records of dead
        writers, and with ``replaced`` the head ``state`` holds (just replaced or deleted). Best effort:
        True when it removed every set it found unused, and found one."""
        parent, name = split_key(key)
        oid = index_oid(parent)
        sets: dict[str, int | None] = {gen: garbage_chunks(raw) for gen, raw in state.garbage.items()}
        if replaced and state.head is not None and state.head.chunks:
            sets[state.head.gen] = state.head.chunks
        try:
            for gen, raw in state.writers.items():
                writer = Writer.decode(raw)
                if writer is None:
                    log.warning("%s: unreadable writer record %s (%s), left alone", key, writer_key(name, gen), describe(raw))
                elif writer.abandoned(gen, self.options.abandoned_after) and self._claim(key, oid, name, gen, raw):
                    sets.setdefault(gen, None)
            for gen, chunks in sets.items():
                self._remove_chunks(key, gen, chunks)
                self._remove_omap(oid, [garbage_key(name, gen)], key)
        except BackendError as exc:
            left_for_later("removing unused chunks", key, exc)
            return False
        return bool(sets)

    def _claim(self, key: str, oid: str, name: str, gen: str, raw: bytes, chunks: int | None = None) -> bool:
        """Turn a t: record into an x: record, atomically; False if it is not there as ``raw`` any more."""
        rados, io_ = load_rados(), self._io()
        with translating(key), rados.WriteOpCtx() as op:
            op.omap_cmp(writer_key(name, gen), raw.decode("ascii"))
            io_.remove_omap_keys(op, [writer_key(name, gen)])
            io_.set_omap(op, [garbage_key(name, gen)], [garbage_value(chunks)])
            try:
                io_.operate_write_op(op, oid)
            except rados.Error as exc:
                if errno_of(exc) in (errno.ECANCELED, errno.ENOENT):
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
                    with translating(key):
                        io_.stat(chunk_oid(gen, chunks))
                except NotFound:
                    break
                chunks += 1
        for number in reversed(range(chunks)):
            try:
                with translating(key):
                    io_.remove_object(chunk_oid(gen, number))
            except NotFound:
                pass

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
        except BackendError as exc:
            left_for_later(f"cleaning up after a put that did not commit (gen {gen})", key, exc)

    # -- checking ----------------------------------------------------------------------------

    def scan_leftovers(self) -> list[str]:
        """Everything in the namespace that is not part of a visible object, and index inconsistencies.

        Reports chunk objects no head references, t:/x: records, empty index
        objects, markers of prefixes with nothing below them and objects whose
        ancestors lack a marker. Lists every object of the namespace (a scan
        of the pool): for tests and checks by hand, never used by the backend.
        """
        rados, io_ = load_rados(), self._io()
        with translating("", what="listing the namespace"):
            oids = [obj.key for obj in io_.list_objects()]
        report: list[str] = []
        referenced: dict[str, int] = {}
        children: dict[str, set[str]] = {}
        markers: dict[str, set[str]] = {}
        for oid in (o for o in oids if o.startswith(INDEX_PREFIX)):
            with translating("", what=oid):
                try:
                    prefix = io_.get_xattr(oid, PREFIX_XATTR).decode()
                except rados.ObjectNotFound:
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
                elif kind in (PENDING, WRITER, GARBAGE, UNMARKED):
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
        rados, io_ = load_rados(), self._io()
        entries: list[tuple[str, bytes]] = []
        start = ""
        while True:
            with translating("", what=oid), rados.ReadOpCtx() as op:
                found, _ = io_.get_omap_vals(op, start, "", PAGE)
                io_.operate_read_op(op, oid)
                page = list(found)
            entries.extend(page)
            if len(page) < PAGE:
                return entries
            start = page[-1][0]
