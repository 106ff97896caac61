"""The planner: what one repository's pass must do, as ordered steps, decided from a survey alone.

:func:`plan_repository` is pure: it reads nothing and writes nothing. From the
two sides' states and the source's closures (a :class:`RepositorySurvey`,
read by survey.py) it returns a :class:`RepositoryPlan`: the steps in
dependency order, each naming the steps it needs, and the problems found while
planning (a tag pointing to a revision the source lacks, a manifest that does
not parse...). The executor (execute.py) runs the steps (steps.py);
``--dry-run`` prints them (:func:`steps.plan_lines`) and runs nothing.

Per manifest the destination lacks, in the order of DESIGN.md::

    blob steps (manifest blob, config, layers)   CopyBlob, or AwaitBlob when the storage replicates blobs
      -> LinkLayers (their _layers links)
      -> LinkRevision (after the children's LinkRevision: index children, subjects)
    per tag to publish: ReadBack (the closure on the destination) -> PublishTag (current link, then history)

A manifest the destination already holds gets no steps; the read-back before
its tag checks it, and repairs it (``ReadBack.repair``) when it is lacking.

With blobs replicated by the storage (``external``), the plan begins with an
:class:`UnpublishTag` for every destination tag the source no longer has at
the destination's digest, then an :class:`UnpublishRevision` for every
revision the source no longer has: the primary's garbage collection may have
deleted their blobs, and the replication those blobs' deletes. Each reads the
closure back on the destination and takes back only what is broken (it is not
``--delete``: whatever is whole stays).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .closure import Closure, ClosureError
from .discovery import RepositoryState
from .layout import Digest
from .report import Problem
from .steps import (
    AwaitBlob,
    CheckHistory,
    CopyBlob,
    LinkLayers,
    LinkRevision,
    PublishTag,
    ReadBack,
    RepositoryPlan,
    Step,
    UnpublishRevision,
    UnpublishTag,
)

BlobMode = Literal["copy", "external"]


@dataclass(frozen=True)
class PlanSettings:
    """What shapes a plan.

    ``blobs``: ``copy`` (the pass copies blob data) or ``external`` (the
    storage's own replication brings blob data; the pass waits for it).
    ``copy_after``: with ``external``, a blob still missing after this many
    seconds is copied by the pass. ``verify_existing``: also read back (and
    repair) the closures of tags and revisions the destination already has.
    ``recopy``: blobs to copy again even if present (known damaged).
    """

    blobs: BlobMode = "copy"
    copy_after: float | None = None
    verify_existing: bool = False
    recopy: frozenset = frozenset()


@dataclass
class RepositorySurvey:
    """Both sides of one repository as a pass found them, and the source's closures.

    ``closures``: for every root :func:`roots_to_resolve` named, its closure or
    why it has none. ``manifests``: the source's bytes of the manifests in those
    closures (so a copy need not read them again). ``dest_existed``: the
    destination held something of this repository (else its links are written
    without being read first). ``history_to_check``: destination tags whose
    history link a dead pass may have left unwritten (pass_records.py).
    """

    repository: str
    source: RepositoryState
    dest: RepositoryState
    closures: dict[Digest, Closure | ClosureError] = field(default_factory=dict)
    manifests: dict[Digest, bytes] = field(default_factory=dict)
    dest_existed: bool = True
    history_to_check: dict[str, Digest] = field(default_factory=dict)


# --- planning ------------------------------------------------------------------------------------------


def tags_to_publish(survey_source: RepositoryState, survey_dest: RepositoryState, settings: PlanSettings) -> dict[str, Digest]:
    """The source's tags the destination must be given (or, with ``verify_existing``, re-checked)."""
    wanted = {}
    for tag, digest in survey_source.tags.items():
        current = survey_dest.tags.get(tag) == digest
        if not current or (settings.verify_existing and digest in survey_source.revisions):
            wanted[tag] = digest
    return wanted


def roots_to_resolve(source: RepositoryState, dest: RepositoryState, settings: PlanSettings) -> list[Digest]:
    """The manifests whose closures a plan needs: revisions the destination lacks, tags to publish,
    and with ``verify_existing`` every revision both sides hold."""
    roots = set(source.revisions - dest.revisions)
    roots |= {d for d in tags_to_publish(source, dest, settings).values() if d in source.revisions}
    if settings.verify_existing:
        roots |= source.revisions & dest.revisions
    return sorted(roots)


def plan_repository(survey: RepositorySurvey, settings: PlanSettings = PlanSettings()) -> RepositoryPlan:
    """The steps that bring the destination's copy of one repository up to date (pure)."""
    return _Planner(survey, settings).plan()


@dataclass
class _Planner:
    survey: RepositorySurvey
    settings: PlanSettings
    result: RepositoryPlan = field(init=False)
    _revision_steps: dict[Digest, int | None] = field(default_factory=dict)
    _blob_steps: dict[Digest, int] = field(default_factory=dict)
    _closure_reported: set[Digest] = field(default_factory=set)
    _unpublishing: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.result = RepositoryPlan(self.survey.repository)

    @property
    def repository(self) -> str:
        return self.survey.repository

    def plan(self) -> RepositoryPlan:
        src, dst = self.survey.source, self.survey.dest
        if self.settings.blobs == "external":
            self._unpublish_broken()
        tags = self._tags()
        revisions = sorted(src.revisions - dst.revisions)
        self.result.up_to_date["revisions_up_to_date"] = len(src.revisions & dst.revisions)
        for digest in revisions:
            self._publish_revision(digest)
        if self.settings.verify_existing:
            for digest in sorted(src.revisions & dst.revisions):
                self._recheck_revision(digest)
        for tag, digest in sorted(tags.items()):
            self._publish_tag(tag, digest)
        for tag, digest in sorted(self.survey.history_to_check.items()):
            if tag not in self._unpublishing:  # a tag that may be taken back: its history would list it again
                self._add(CheckHistory(self.repository, tag, digest))
        return self.result

    def _unpublish_broken(self) -> None:
        """Steps that take back what the primary's garbage collection may have broken: destination
        tags the source no longer has at their digest, then revisions it no longer has."""
        src, dst = self.survey.source, self.survey.dest
        self._unpublishing = {tag for tag, digest in dst.tags.items() if src.tags.get(tag) != digest}
        tags = tuple(self._add(UnpublishTag(self.repository, tag, dst.tags[tag])) for tag in sorted(self._unpublishing))
        for digest in sorted(dst.revisions - src.revisions):
            self._add(UnpublishRevision(self.repository, digest, needs=tags))

    def _add(self, step: Step) -> int:
        self.result.steps.append(step)
        return len(self.result.steps) - 1

    def _tags(self) -> dict[str, Digest]:
        src, dst = self.survey.source, self.survey.dest
        wanted = tags_to_publish(src, dst, self.settings)
        up_to_date = sum(1 for tag, digest in src.tags.items() if dst.tags.get(tag) == digest and tag not in wanted)
        self.result.up_to_date["tags_up_to_date"] = up_to_date
        for tag, digest in sorted(wanted.items()):
            if digest not in src.revisions:
                del wanted[tag]
                self._problem("tag-not-published", f"the tag points to {digest}, which has no revision link at the source",
                              tag=tag, digest=digest)
        return wanted

    def _closure(self, root: Digest) -> Closure | None:
        closure = self.survey.closures.get(root)
        if closure is None:
            closure = ClosureError("missing-manifest", root, "no closure was resolved for it")
        if isinstance(closure, ClosureError):
            if closure.digest not in self._closure_reported:
                self._closure_reported.add(closure.digest)
                self._problem(closure.kind, closure.reason, digest=closure.digest)
            return None
        return closure

    def _closure_reason(self, root: Digest) -> str:
        closure = self.survey.closures.get(root)
        if isinstance(closure, ClosureError):
            return f"{closure.digest}: {closure.reason}"
        return f"{root}: no closure was resolved for it"

    def _publish_revision(self, digest: Digest) -> None:
        closure = self._closure(digest)
        if closure is None:
            self._problem("revision-not-published", self._closure_reason(digest), digest=digest)
            return
        self._write_closure(closure)

    def _write_closure(self, closure: Closure, *, fresh: bool = False) -> int | None:
        """Steps for every manifest of ``closure`` the destination lacks (all of them when ``fresh``);
        the index of the root's LinkRevision, or None when the destination already has the root."""
        for digest, manifest in closure.manifests.items():
            if digest in self._revision_steps and not fresh:
                continue
            if digest in self.survey.dest.revisions and not fresh:
                self._revision_steps[digest] = None
                continue
            blob_steps = [self._blob(digest, "manifest blob", content=self.survey.manifests.get(digest), fresh=fresh)]
            blob_steps += [self._blob(ref.digest, "blob", optional=ref.optional, fresh=fresh, size=ref.size)
                           for ref in manifest.blobs]
            layers = self._add(LinkLayers(self.repository, digest, tuple(ref.digest for ref in manifest.blobs),
                                          needs=tuple(blob_steps[1:])))
            children = [self._revision_steps.get(child.digest) for child in manifest.children]
            needs = (blob_steps[0], layers, *(c for c in children if c is not None))
            self._revision_steps[digest] = self._add(LinkRevision(self.repository, digest, not fresh, needs=needs))
        return self._revision_steps.get(closure.root)

    def _blob(self, digest: Digest, label: str, *, content: bytes | None = None, optional: bool = False,
              fresh: bool = False, size: int | None = None) -> int:
        if digest in self._blob_steps and not fresh:
            return self._blob_steps[digest]
        size = len(content) if content is not None else size
        if self.settings.blobs == "external" and not fresh:
            step: Step = AwaitBlob(digest, label, size=size, optional=optional, copy_after=self.settings.copy_after)
        else:
            step = CopyBlob(digest, label, content=content, optional=optional,
                            fresh=fresh or digest in self.settings.recopy, size=size)
        self._blob_steps[digest] = index = self._add(step)
        return index

    def _recheck_revision(self, digest: Digest) -> None:
        closure = self._closure(digest)
        if closure is None:
            return
        recopy = self.settings.recopy
        force = bool(recopy) and (bool(recopy & set(closure.manifests)) or any(r.digest in recopy for r in closure.blob_references()))
        self._add(ReadBack(self.repository, closure, repair=True, force=force))

    def _publish_tag(self, tag: str, digest: Digest) -> None:
        closure = self._closure(digest)
        if closure is None:
            self._problem("tag-not-published", self._closure_reason(digest), tag=tag, digest=digest)
            return
        revision = self._write_closure(closure)
        needs = () if revision is None else (revision,)
        read_back = self._add(ReadBack(self.repository, closure, repair=digest in self.survey.dest.revisions, tag=tag,
                                       needs=needs))
        recheck = self.survey.dest.tags.get(tag) == digest
        self._add(PublishTag(self.repository, tag, digest, recheck=recheck, needs=(read_back,)))

    def _problem(self, kind: str, reason: str, *, tag: str | None = None, digest: Digest | None = None) -> None:
        self.result.problems.append(Problem(kind, reason, repository=self.repository, tag=tag,
                                            digest=None if digest is None else str(digest)))


def repair_steps(repository: str, closure: Closure, manifests: dict[Digest, bytes], settings: PlanSettings) -> list[Step]:
    """The steps that write a closure again whole: every blob looked at afresh, every link rewritten.
    What a read-back that found the destination lacking runs before it reads back once more."""
    survey = RepositorySurvey(repository, RepositoryState(repository), RepositoryState(repository), manifests=manifests)
    planner = _Planner(survey, settings)
    planner._write_closure(closure, fresh=True)
    return planner.result.steps


__all__ = [
    "BlobMode", "PlanSettings", "RepositorySurvey", "plan_repository", "repair_steps", "roots_to_resolve", "tags_to_publish",
]
