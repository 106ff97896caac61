"""Stand-ins for what the storage and the primary do around the supplement mode (``--blobs external``),
for unit tests on in-memory or filesystem backends.

- :func:`replicate_blobs`: bucket replication limited to ``blobs/``, at once: new blob objects arrive at
  the destination, deleted ones go (RGW multisite; AWS and MinIO with delete replication).
- :func:`collect_garbage`: distribution's garbage collection, mark and sweep: blob data that no revision
  link of any repository needs is deleted.
- :func:`delete_manifest`: what ``DELETE /v2/<name>/manifests/<digest>`` does: the revision link goes,
  and the tag pointing at it.

Real components (two RGW zones, docker-registry's own garbage-collect) are in tests/e2e/test_supplement.py.
"""

from __future__ import annotations

from backends import Backend
from syncagent.sync.discovery import iter_repositories, read_repository
from syncagent.sync.layout import BLOBS_PREFIX, BlobData, Digest, InvalidPath, RevisionLink, key_of, parse_key, tags_prefix
from syncagent.sync.manifest import parse_manifest


def replicate_blobs(source: Backend, dest: Backend, *, hold: frozenset[Digest] | set[Digest] = frozenset()) -> None:
    """Bring ``dest``'s blob objects in line with ``source``'s, but for the digests in ``hold`` (not delivered)."""
    held = {key_of(BlobData(digest)) for digest in hold}
    at_source = {info.key for info in source.iter_objects(BLOBS_PREFIX)}
    for key in sorted(at_source - held):
        if not dest.exists(key):
            dest.put_bytes(key, source.read_bytes(key))
    for info in list(dest.iter_objects(BLOBS_PREFIX)):
        if info.key not in at_source:
            dest.delete(info.key)


def collect_garbage(backend: Backend) -> set[Digest]:
    """Delete the blob data no revision link of any repository needs; returns the digests deleted."""
    keep: set[Digest] = set()
    for repository in iter_repositories(backend):
        for digest in read_repository(backend, repository).revisions:
            keep.add(digest)
            keep.update(ref.digest for ref in parse_manifest(backend.read_bytes(key_of(BlobData(digest)))).blobs)
    collected = set()
    for info in list(backend.iter_objects(BLOBS_PREFIX)):
        try:
            spec = parse_key(info.key)
        except InvalidPath:
            continue
        if isinstance(spec, BlobData) and spec.digest not in keep:
            backend.delete(info.key)
            collected.add(spec.digest)
    return collected


def delete_tag(backend: Backend, repository: str, tag: str) -> None:
    for info in list(backend.iter_objects(f"{tags_prefix(repository)}{tag}/")):
        backend.delete(info.key)


def delete_manifest(backend: Backend, repository: str, tag: str, digest: Digest) -> None:
    """The registry's manifest delete: the revision link of ``digest`` and ``tag`` (which points at it) go."""
    delete_tag(backend, repository, tag)
    backend.delete(key_of(RevisionLink(repository, digest)))


def tags_on(backend: Backend, repository: str) -> dict[str, str]:
    """tag -> digest of what ``backend`` holds for ``repository``."""
    return {tag: str(digest) for tag, digest in read_repository(backend, repository).tags.items()}
