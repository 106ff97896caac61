"""Deletes: making the destination forget what the source no longer has, in reverse dependency order.

Per repository, a survey (:func:`survey_deletes`, reads only) and a pure plan
(:func:`plan_deletes`) whose steps (steps.py) go in this order:

1. tags the source no longer has: the tag's ``index`` links, then its
   ``current/link`` last, so the tag stays whole and pullable until it
   disappears at once (a registry lists a tag while anything exists under it);
2. revision links the source no longer has and that no remaining tag or
   manifest on the destination references (index children and subjects are
   followed); they need every tag delete of the plan;
3. ``_layers`` links that the source does not have and no remaining manifest
   of the repository references; they need every revision delete.

The executor runs the steps; before each delete the source is checked again
(writer.py): nothing that exists at the source is ever deleted. Never guess: a
remaining manifest that cannot be read on the destination keeps every
revision and every ``_layers`` link of its repository (tags the source lacks
still go: a tag references, nothing references a tag); a manifest that cannot
be read for a moment (a transient error) makes the whole survey fail, so that
the repository is left alone this time. Blob data goes only with
``prune_blobs`` (:func:`prune_blobs`), once no repository on the destination
links it and the source lacks it.

:func:`closure_breakage` tells what of a closure a backend's own manifests
describe is missing there: what the sync's unpublish steps (blobs replicated
by the storage) and verify's ``deleted-at-source`` decide from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backends import Backend, BackendError, NotFound, SymlinkRefused

from .closure import ClosureError, missing_from, read_manifest, resolve_closure
from .discovery import RepositoryState, iter_repositories, read_repository, read_small
from .layout import (
    BLOBS_PREFIX,
    BlobData,
    Digest,
    InvalidPath,
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
from .steps import DeleteLayerLink, DeleteRevision, DeleteTag, RepositoryPlan


@dataclass
class DeleteSurvey:
    """What a delete plan for one repository decides from.

    ``manifests``: the destination's manifest of every revision it holds, or
    None where it cannot be read (missing or malformed); ``tag_keys``: every key
    under each destination tag the source lacks.
    """

    repository: str
    source: RepositoryState
    dest: RepositoryState
    source_layers: set[Digest]
    source_tag_dirs: set[str]
    dest_tag_dirs: set[str]
    dest_layers: set[Digest]
    manifests: dict[Digest, Manifest | None] = field(default_factory=dict)
    tag_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class DeletePlan:
    """The steps of one repository's deletes, what the plan keeps and why, and the size of what the
    destination holds (for the delete policy's share)."""

    plan: RepositoryPlan
    dest_tags: int = 0
    dest_revisions: int = 0
    kept: str | None = None

    @property
    def repository(self) -> str:
        return self.plan.repository

    @property
    def removing(self) -> int:
        """Tags and revisions the plan would remove."""
        return sum(1 for step in self.plan.steps if isinstance(step, (DeleteTag, DeleteRevision)))

    @property
    def holding(self) -> int:
        return self.dest_tags + self.dest_revisions


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


def survey_deletes(source: Backend, dest: Backend, repository: str, source_has_repository: bool) -> DeleteSurvey:
    """Read what a delete plan needs from both sides. Raises BackendError (a transient one included)
    when anything cannot be read; a manifest missing or malformed on the destination is recorded as None."""
    src = read_repository(source, repository) if source_has_repository else RepositoryState(repository)
    dst = read_repository(dest, repository, expected_tags=src.tags)
    survey = DeleteSurvey(
        repository, src, dst,
        source_layers=list_layer_links(source, repository) if source_has_repository else set(),
        source_tag_dirs=list_tag_names(source, repository) if source_has_repository else set(),
        dest_tag_dirs=list_tag_names(dest, repository),
        dest_layers=list_layer_links(dest, repository),
    )
    for digest in dst.revisions:
        survey.manifests[digest] = _dest_manifest(dest, digest)
    for tag in sorted(survey.dest_tag_dirs - set(src.tags) - survey.source_tag_dirs):
        survey.tag_keys[tag] = tag_keys(dest, repository, tag)
    return survey


def _dest_manifest(dest: Backend, digest: Digest) -> Manifest | None:
    try:
        return parse_manifest(read_small(dest, key_of(BlobData(digest)), MAX_MANIFEST_BYTES))
    except (NotFound, MalformedManifest):
        return None


def plan_deletes(survey: DeleteSurvey) -> DeletePlan:
    """The delete steps of one repository (pure)."""
    repository = survey.repository
    src, dst = survey.source, survey.dest
    result = DeletePlan(RepositoryPlan(repository), dest_tags=len(survey.dest_tag_dirs), dest_revisions=len(dst.revisions))
    steps = result.plan.steps
    gone_tags = sorted(survey.tag_keys)
    for tag in gone_tags:
        steps.append(DeleteTag(repository, tag, survey.tag_keys[tag]))
    tag_steps = tuple(range(len(steps)))
    remaining_tags = {t: d for t, d in dst.tags.items() if t not in gone_tags}
    candidates = dst.revisions - src.revisions
    keep: set[Digest] = set()
    stack = list(remaining_tags.values()) + list(dst.revisions - candidates)
    while stack:
        digest = stack.pop()
        if digest in keep:
            continue
        keep.add(digest)
        manifest = survey.manifests.get(digest)
        if manifest is None and digest in dst.revisions:
            result.kept = f"manifest {digest} cannot be read on the destination"
            return result  # its children and blobs are unknown: never guess
        if manifest is not None:
            stack.extend(ref.digest for ref in manifest.children)
    for digest in sorted(candidates - keep):
        steps.append(DeleteRevision(repository, digest, needs=tag_steps))
    revision_steps = tuple(range(len(tag_steps), len(steps)))
    removed = {step.digest for step in steps if isinstance(step, DeleteRevision)}
    referenced: set[Digest] = set()
    for digest in dst.revisions - removed:
        referenced.update(ref.digest for ref in survey.manifests[digest].blobs)  # type: ignore[union-attr]
    for digest in sorted(survey.dest_layers - referenced - survey.source_layers):
        steps.append(DeleteLayerLink(repository, digest, needs=tag_steps + revision_steps))
    return result


def tag_keys(dest: Backend, repository: str, tag: str) -> tuple[str, ...]:
    """Every key under a tag, index links first and ``current/link`` last."""
    prefix = f"{tags_prefix(repository)}{tag}/"
    keys = [info.key for info in dest.iter_objects(prefix)]
    current = key_of(TagCurrentLink(repository, tag))
    return tuple(sorted(k for k in keys if k != current) + ([current] if current in keys else []))


def prune_blobs(source: Backend, dest: Backend, report: Report, *, dry_run: bool) -> None:
    """Delete blob data no destination repository links and the source lacks (``--prune-blobs``).

    Nothing is pruned when what the repositories link cannot be known whole: a
    listing or read fails, or a symbolic link hides part of them (a registry
    would follow it; this agent does not).
    """
    linked: set[Digest] = set()
    hidden: list[Problem] = []
    try:
        for repository in iter_repositories(dest, hidden.append):
            state = read_repository(dest, repository, hidden.append)
            linked |= state.revisions
            linked |= list_layer_links(dest, repository)
    except BackendError as exc:
        report.add_problem(Problem("delete-skipped", f"no blob pruned: {exc}", key=exc.key))
        return
    links = [p.key for p in hidden if p.kind == "symlink-refused"]
    if links:
        report.add_problem(Problem(
            "delete-skipped", f"no blob pruned: {len(links)} symbolic link(s) hide what the destination links", key=links[0],
        ))
        return
    try:
        for info in dest.iter_objects(BLOBS_PREFIX):
            try:
                spec = parse_key(info.key)
            except InvalidPath:
                continue
            if not isinstance(spec, BlobData) or spec.digest in linked or source_has(source, info.key):
                continue
            if dry_run:
                report.plan(f"delete {info.key}")
            else:
                dest.delete(info.key)
            report.count("blobs_deleted")
            report.count("bytes_deleted", info.size)
    except BackendError as exc:
        report.add_problem(Problem("delete-failed", f"pruning blobs stopped: {exc}", key=exc.key))


@dataclass(frozen=True)
class Breakage:
    """Why a closure is not whole on a backend: ``lacking`` says what is missing (for reports; at most
    a few entries), ``missing_blobs`` are the manifests and blobs whose data is absent."""

    lacking: tuple[str, ...]
    missing_blobs: tuple[Digest, ...]

    def describe(self) -> str:
        return "; ".join(self.lacking[:5])


def closure_breakage(backend: Backend, repository: str, root: Digest) -> Breakage | None:
    """What of ``root``'s closure -- as the manifests stored on ``backend`` describe it -- is missing
    there (a manifest or blob, a revision or ``_layers`` link); None when it is whole.

    A foreign layer absent from storage is no gap. Raises BackendError when something cannot be
    read (a transient error says nothing about what is there).
    """
    try:
        closure = resolve_closure(root, lambda digest: read_manifest(backend, digest)[1])
    except ClosureError as exc:
        if isinstance(exc.__cause__, BackendError) and not isinstance(exc.__cause__, SymlinkRefused):
            raise exc.__cause__
        return Breakage((f"{exc.digest}: {exc.reason}",), (exc.digest,) if exc.kind == "missing-blob" else ())
    present: set[Digest] = set(closure.manifests)  # each was just read whole
    missing: list[Digest] = []
    absent_optional: set[Digest] = set()
    for ref in closure.blob_references():
        if _has(backend, key_of(BlobData(ref.digest))):
            present.add(ref.digest)
        elif ref.optional:
            absent_optional.add(ref.digest)
        else:
            missing.append(ref.digest)
    lacking = missing_from(backend, repository, closure, absent_optional=absent_optional, present_blobs=present)
    return Breakage(tuple(lacking), tuple(missing)) if lacking else None


def _has(backend: Backend, key: str) -> bool:
    try:
        backend.stat(key)
    except (NotFound, SymlinkRefused):
        return False
    return True


def source_has(source: Backend, key: str) -> bool:
    try:
        source.stat(key)
    except NotFound:
        return False
    return True


__all__ = [
    "Breakage", "DeletePlan", "DeleteSurvey", "closure_breakage", "list_layer_links", "list_tag_names", "plan_deletes", "prune_blobs", "source_has",
    "survey_deletes", "tag_keys",
]

