"""RADOS backend: ``rados://POOL/NAMESPACE?conf=...&id=...&keyring=...``.

Objects live in one namespace of a replicated pool (omap is required), in a
layout of our own; docs/rados.md tells the whole story. Every RADOS object
name and omap key is made by ``backends/rados/layout.py``, nowhere else.

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
  the next ``stat``, read, delete or chunked put of the key claims (turns into ``x:``)
  and cleans once the writer is provably gone (``backends/rados/writers.py``):
  same host, boot and pid namespace, process gone; else after
  ``abandoned_after`` seconds. ``x:`` records are cleaned by the same
  operations.
- Prefix markers are added after the head, bottom-up, each after the level
  below exists; deletes remove them bottom-up, re-checking after each removal.
  A listing never shows a prefix before an object below it is committed. The
  commit also records ``m:<name>`` (markers pending), removed once the markers
  are there: a writer that dies in between leaves an object that listings
  above it miss, and the record, so the next ``stat``, read, put or delete of
  the key adds the markers (a re-run of a sync stats or reads what it skips;
  after a pass that did not finish, that includes every tag's history link).
- Markers are written without reading them first, and a put stops climbing
  at a prefix this backend saw marked, asserting that the index below it
  exists and holds no ``u:`` (unmarked). A prune writes ``u:`` into an index
  before it removes the index's marker, and then deletes the index or puts
  the marker back; a put into a prefix seen marked commits with that
  assertion and no ``m:``, in one write. See ``RadosBackend._ensure_markers``.
- Object names are hashes of fixed length: keys may be longer than
  ``osd_max_object_name_len`` allows.
- Values read from the pool are decoded with a bound on their nesting, and
  named in errors by their length and a short hash, never by their bytes.

Files, in the order every backend package keeps: ``options.py`` (options, the
cluster's limits, sizes), ``layout.py`` (object names, omap keys, what heads
and records hold), ``errors.py`` (loading the binding; rados exceptions ->
typed errors), ``connection.py`` (the cluster connection, the shared ioctx,
the limits read at connect time, the URL), ``backend.py`` (the backend:
reads, puts, deletes, listings, markers), ``streams.py`` (the put's source,
the chunked read), ``leftovers.py`` (claiming dead writers' records,
collecting unused chunk sets, ``scan_leftovers``), ``writers.py`` (who is
writing: the ``t:`` record, dead or alive).
"""

from .backend import RadosBackend
from .options import RadosLimits, RadosOptions

__all__ = ["RadosBackend", "RadosLimits", "RadosOptions"]
