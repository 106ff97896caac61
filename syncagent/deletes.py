"""Deletes: making the destination forget what the source no longer has, in reverse dependency order.

Per repository, in this order:

1. tags the source no longer has: the tag's ``index`` links, then its
   ``current/link`` last, so the tag stays whole and pullable until it
   disappears at once (a registry lists a tag while anything exists under it);
2. revision links the source no longer has and that no remaining tag or
   manifest on the destination references (index children and subjects are
   followed);
3. ``_layers`` links that the source does not have and no remaining manifest
   of the repository references;

and, only with ``prune_blobs``, blob data that no repository on the
destination links any more and that the source does not have. Before each
delete the source is checked again: nothing that exists at the source is ever
deleted. A manifest that cannot be read on the destination makes its
repository keep every ``_layers`` link (never guess).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backends import Backend, BackendError, NotFound

from .discovery import RepositoryState, iter_repositories, read_repository, read_small
from .layout import (
    BLOBS_PREFIX,
    BlobData,
    Digest,
    InvalidPath,
    LayerLink,
    RevisionLink,
    TagCurrentLink,
    is_digest_algorithm,
    key_of,
    layers_prefix,
    parse_key,
    tags_prefix,
    validate_tag,
)
from .manifest import MAX_MANIFEST_BYTES, MalformedManifest, Manifest, parse_manifest
from .report import Problem, Report


@dataclass
class RepositoryDeletes:
    """What one repository's delete pass will remove, in order."""

    repository: str
    tags: list[str] = field(default_factory=list)
    revisions: list[Digest] = field(default_factory=list)
    layers: list[Digest] = field(default_factory=list)
    keeps_all_layers: str | None = None
    dest_tags: int = 0
    dest_revisions: int = 0

    @property
    def empty(self) -> bool:
        return not (self.tags or self.revisions or self.layers)


def list_layer_links(backend: Backend, repository: str) -> set[Digest]:
    digests: set[Digest] = set()
    for algorithm in backend.iter_children(layers_prefix(repository)):
        if not algorithm.is_prefix or not is_digest_algorithm(algorithm.name):
            continue
        for entry in backend.iter_children(layers_prefix(repository, algorithm.name)):
            try:
                digests.add(Digest.of(algorithm.name, entry.name))
            except InvalidPath:
                continue
    return digests


def list_tag_names(backend: Backend, repository: str) -> set[str]:
    names = set()
    for entry in backend.iter_children(tags_prefix(repository)):
        try:
            names.add(validate_tag(entry.name))
        except InvalidPath:
            continue
    return names


def plan_repository(source: Backend, dest: Backend, repository: str, source_has_repository: bool) -> RepositoryDeletes:
    """Decide what to delete in one repository; reads both sides, writes nothing."""
    src = read_repository(source, repository) if source_has_repository else RepositoryState(repository)
    dst = read_repository(dest, repository, expected_tags=src.tags)
    src_layers = list_layer_links(source, repository) if source_has_repository else set()
    plan = RepositoryDeletes(repository, dest_revisions=len(dst.revisions))
    dest_tag_names = list_tag_names(dest, repository)
    plan.dest_tags = len(dest_tag_names)
    plan.tags = sorted(dest_tag_names - set(src.tags) - _tag_dirs(source, repository, source_has_repository))
    remaining_tags = {t: d for t, d in dst.tags.items() if t not in plan.tags}
    manifests: dict[Digest, Manifest | None] = {}

    def manifest_of(digest: Digest) -> Manifest | None:
        if digest not in manifests:
            try:
                manifests[digest] = parse_manifest(read_small(dest, key_of(BlobData(digest)), MAX_MANIFEST_BYTES))
            except (NotFound, MalformedManifest, BackendError):
                manifests[digest] = None
        return manifests[digest]

    candidates = dst.revisions - src.revisions
    keep: set[Digest] = set()
    stack = list(remaining_tags.values()) + list(dst.revisions - candidates)
    while stack:
        digest = stack.pop()
        if digest in keep:
            continue
        keep.add(digest)
        manifest = manifest_of(digest)
        if manifest is not None:
            stack.extend(ref.digest for ref in manifest.children)
    plan.revisions = sorted(candidates - keep)
    remaining = dst.revisions - set(plan.revisions)
    referenced: set[Digest] = set()
    for digest in remaining:
        manifest = manifest_of(digest)
        if manifest is None:
            plan.keeps_all_layers = f"manifest {digest} cannot be read on the destination"
            break
        referenced.update(ref.digest for ref in manifest.blobs)
    if plan.keeps_all_layers is None:
        plan.layers = sorted(list_layer_links(dest, repository) - referenced - src_layers)
    return plan


def _tag_dirs(source: Backend, repository: str, present: bool) -> set[str]:
    """Tags the source lists (even half-written ones): never deleted at the destination."""
    return list_tag_names(source, repository) if present else set()


def tag_keys(dest: Backend, repository: str, tag: str) -> list[str]:
    """Every key under a tag, index links first and ``current/link`` last."""
    prefix = f"{tags_prefix(repository)}{tag}/"
    keys = [info.key for info in dest.iter_objects(prefix)]
    current = key_of(TagCurrentLink(repository, tag))
    return sorted(k for k in keys if k != current) + ([current] if current in keys else [])


class DeleteRunner:
    """Carries out delete plans, re-checking the source before every delete."""

    def __init__(self, source: Backend, dest: Backend, report: Report, *, dry_run: bool) -> None:
        self.source = source
        self.dest = dest
        self.report = report
        self.dry_run = dry_run

    def _delete(self, key: str, counter: str) -> bool:
        if _exists(self.source, key):
            return False
        if self.dry_run:
            self.report.plan(f"delete {key}")
        else:
            self.dest.delete(key)
        self.report.count(counter)
        return True

    def run(self, plan: RepositoryDeletes) -> None:
        try:
            for tag in plan.tags:
                keys = tag_keys(self.dest, plan.repository, tag)
                if any(_exists(self.source, k) for k in keys if k.endswith("/current/link")):
                    continue
                for key in keys:
                    self._delete(key, "links_deleted")
                self.report.count("tags_deleted")
                self.report.emit("tag-deleted", repository=plan.repository, tag=tag)
            for digest in plan.revisions:
                if self._delete(key_of(RevisionLink(plan.repository, digest)), "revisions_deleted"):
                    self.report.emit("revision-deleted", repository=plan.repository, digest=str(digest))
            for digest in plan.layers:
                self._delete(key_of(LayerLink(plan.repository, digest)), "links_deleted")
        except BackendError as exc:
            self.report.add_problem(Problem("delete-failed", str(exc), repository=plan.repository, key=exc.key))

    def prune_blobs(self) -> None:
        """Delete blob data no destination repository links and the source lacks.

        Nothing is pruned when what the repositories link cannot be known
        whole: a listing or read fails, or a symbolic link hides part of them
        (a registry would follow it; this agent does not).
        """
        linked: set[Digest] = set()
        hidden: list[Problem] = []
        try:
            for repository in iter_repositories(self.dest, hidden.append):
                state = read_repository(self.dest, repository, hidden.append)
                linked |= state.revisions
                linked |= list_layer_links(self.dest, repository)
        except BackendError as exc:
            self.report.add_problem(Problem("delete-skipped", f"no blob pruned: {exc}", key=exc.key))
            return
        links = [p.key for p in hidden if p.kind == "symlink-refused"]
        if links:
            self.report.add_problem(Problem(
                "delete-skipped", f"no blob pruned: {len(links)} symbolic link(s) hide what the destination links", key=links[0],
            ))
            return
        try:
            for info in self.dest.iter_objects(BLOBS_PREFIX):
                try:
                    spec = parse_key(info.key)
                except InvalidPath:
                    continue
                if isinstance(spec, BlobData) and spec.digest not in linked:
                    if self._delete(info.key, "blobs_deleted"):
                        self.report.count("bytes_deleted", info.size)
        except BackendError as exc:
            self.report.add_problem(Problem("delete-failed", f"pruning blobs stopped: {exc}", key=exc.key))


def _exists(backend: Backend, key: str) -> bool:
    try:
        backend.stat(key)
    except NotFound:
        return False
    return True

