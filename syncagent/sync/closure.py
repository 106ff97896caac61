"""The closure of a manifest: everything a registry needs to serve it, and its check on a backend.

For a root manifest: the manifest blobs of the root and of every manifest it
references (index children, subjects) recursively, each needing a revision
link; and every blob those manifests reference (config, layers), each needing
blob data and a ``_layers`` link.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from backends import Backend, BackendError, NotFound, SymlinkRefused

from .discovery import UnreadableLink, read_link, read_small
from .layout import BlobData, Digest, DigestSizes, LayerLink, LinkMemo, RevisionLink, key_of
from .manifest import MAX_MANIFEST_BYTES, MalformedManifest, Manifest, parse_manifest

MAX_DEPTH = 8


class ClosureError(Exception):
    """The closure cannot be resolved: a manifest is missing, malformed or nested too deep."""

    def __init__(self, kind: str, digest: Digest, reason: str) -> None:
        super().__init__(f"{digest}: {reason}")
        self.kind = kind
        self.digest = digest
        self.reason = reason


@dataclass
class Closure:
    """``manifests`` is in dependency order: every manifest after those it references."""

    root: Digest
    manifests: dict[Digest, Manifest] = field(default_factory=dict)

    def blob_references(self):
        seen: set[Digest] = set()
        for manifest in self.manifests.values():
            for ref in manifest.blobs:
                if ref.digest not in seen:
                    seen.add(ref.digest)
                    yield ref


LoadManifest = Callable[[Digest], Manifest]


def read_manifest(backend: Backend, digest: Digest) -> tuple[bytes, Manifest]:
    """A stored manifest's bytes, checked against its digest, and its parsed references.

    Raises ClosureError (missing-blob, read-failed, symlink-refused, manifest-too-large,
    digest-mismatch, malformed-manifest). A read that fails or comes up short
    is retried (``read_small``), then read-failed; digest-mismatch is said
    only of a whole manifest, read to its end, whose bytes hash otherwise.
    One larger than MAX_MANIFEST_BYTES is manifest-too-large, and no more of
    it than the limit and one byte is read.
    """
    key = key_of(BlobData(digest))
    try:
        data = read_small(backend, key, MAX_MANIFEST_BYTES)
    except NotFound:
        raise ClosureError("missing-blob", digest, "manifest blob missing") from None
    except SymlinkRefused as exc:
        raise ClosureError("symlink-refused", digest, str(exc)) from exc
    except BackendError as exc:
        raise ClosureError("read-failed", digest, f"cannot read the manifest: {exc}") from exc
    if len(data) > MAX_MANIFEST_BYTES:
        raise ClosureError("manifest-too-large", digest, f"manifest blob of {_size_of(backend, key)} exceeds {MAX_MANIFEST_BYTES}")
    hasher = digest.hasher()
    hasher.update(data)
    if hasher.hexdigest() != digest.hex:
        raise ClosureError("digest-mismatch", digest, f"manifest blob content hashes to {digest.algorithm}:{hasher.hexdigest()}")
    try:
        return data, parse_manifest(data)
    except MalformedManifest as exc:
        raise ClosureError("malformed-manifest", digest, str(exc)) from None


def _size_of(backend: Backend, key: str) -> str:
    """"N bytes" for an object found larger than a limit (one stat), or "more bytes" if it cannot be had."""
    try:
        return f"{backend.stat(key).size} bytes"
    except BackendError:
        return "more bytes"


def resolve_closure(root: Digest, load_manifest: LoadManifest) -> Closure:
    """Walk the manifests under ``root``; ``load_manifest`` raises ClosureError for one it cannot load."""
    closure = Closure(root)
    visiting: set[Digest] = set()

    def visit(digest: Digest, depth: int) -> None:
        if digest in closure.manifests:
            return
        if digest in visiting:
            raise ClosureError("malformed-manifest", digest, "manifests reference each other in a cycle")
        if depth > MAX_DEPTH:
            raise ClosureError("malformed-manifest", digest, f"manifests nested deeper than {MAX_DEPTH}")
        visiting.add(digest)
        manifest = load_manifest(digest)
        for child in manifest.children:
            visit(child.digest, depth + 1)
        visiting.discard(digest)
        closure.manifests[digest] = manifest

    visit(root, 0)
    return closure


def missing_from(
    backend: Backend,
    repository: str,
    closure: Closure,
    *,
    absent_optional: set[Digest] = frozenset(),
    present_blobs: set[Digest] | None = None,
    known_sizes: DigestSizes | dict[Digest, int] | None = None,
    confirmed_links: LinkMemo | None = None,
    on_size_mismatch: Callable[[Digest, int, int], None] | None = None,
) -> list[str]:
    """What of ``closure`` is not present and linked on ``backend``; [] when it is whole.

    Stats every blob and reads every link. ``absent_optional`` are foreign
    layers known to be absent at the source (not required). ``present_blobs``
    holds blobs already confirmed present in this pass (shared by callers, and
    added to); ``confirmed_links`` holds the link keys this pass wrote or read with
    the digest they hold. What these confirm is not read again.
    ``known_sizes``: blob sizes a listing reported (not stat'ed again).
    A blob whose size differs from its descriptor's is not present (a stat,
    no hashing: a truncated copy is found): ``on_size_mismatch(digest, found,
    expected)`` hears of it.
    """
    missing: list[str] = []
    mismatched: dict[Digest, str] = {}

    def blob_present(digest: Digest, size: int | None = None) -> bool:
        if present_blobs is not None and digest in present_blobs:
            return True
        try:
            found = known_sizes[digest] if known_sizes and digest in known_sizes else backend.stat(key_of(BlobData(digest))).size
        except (NotFound, SymlinkRefused):  # a link is not the blob (a copy replaces it, or is refused)
            return False
        if size is not None and found != size:
            mismatched[digest] = f"blob {digest} holds {found} bytes, its descriptor says {size}"
            if on_size_mismatch is not None:
                on_size_mismatch(digest, found, size)
            return False
        if present_blobs is not None:
            present_blobs.add(digest)
        return True

    def link_holds(key: str, digest: Digest) -> bool:
        if confirmed_links is not None and confirmed_links.holds(key, digest):
            return True
        try:
            holds = read_link(backend, key, attempts=1) == digest
        except (NotFound, UnreadableLink, SymlinkRefused):
            return False
        if holds and confirmed_links is not None:
            confirmed_links.confirm(key, digest)
        return holds

    for digest in closure.manifests:
        if not blob_present(digest):
            missing.append(f"manifest blob {digest}")
        if not link_holds(key_of(RevisionLink(repository, digest)), digest):
            missing.append(f"revision link {digest}")
    for ref in closure.blob_references():
        if ref.optional and ref.digest in absent_optional:
            continue
        if not blob_present(ref.digest, ref.size):
            missing.append(mismatched.get(ref.digest, f"blob {ref.digest}"))
        elif not link_holds(key_of(LayerLink(repository, ref.digest)), ref.digest):
            missing.append(f"layer link {ref.digest}")
    return missing

