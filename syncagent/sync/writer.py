"""What each step of a plan does on the destination: the executor's :class:`Performer` for real runs.

A :class:`DestinationWriter` serves one repository's run. Blob steps go to the
pass's shared :class:`BlobCopier` (or :class:`BlobWaiter`); links are written
only when the destination does not already hold them; a tag is published
(``current/link``, then its history link) once the read-back found its closure
whole, after the pass's record is on the destination (pass_records.py).

With blobs replicated by the storage, the writer also takes back what the
primary's garbage collection broke (``UnpublishTag``, ``UnpublishRevision``,
plan.py): the closure is read back on the destination, the source is asked
again, and only a broken tag or revision the source no longer has goes, in
the order of a delete (deletes.py).

On a destination that makes writes durable in batches (``PassContext.commits``,
durability.py), a step that writes links answers with a future that resolves
once they are durable, and a tag's history link is written once its current
link is durable.

The read-back takes one documented shortcut: what this pass itself confirmed
-- a blob it copied (its digest checked before the put committed) or found
present with the right size, a link it wrote or read -- is not asked for
again. Everything that was on the destination before the pass is read.
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Sequence

from backends import Backend, BackendError, NotFound, SymlinkRefused

from .closure import missing_from
from .discovery import UnreadableLink, read_link
from .durability import GroupCommit, all_of, pass_on
from .execute import Outcome, StepFailed, run_inline
from .layout import Digest, DigestSet, LayerLink, LinkMemo, RevisionLink, TagCurrentLink, TagIndexLink, format_link, key_of
from .records import PassRecords
from .replication import BlobWaiter
from .plan import PlanSettings, RepositorySurvey, repair_steps
from .deletes import closure_breakage, source_has, tag_keys
from .steps import (
    AwaitBlob,
    CheckHistory,
    CopyBlob,
    DeleteLayerLink,
    DeleteRevision,
    DeleteTag,
    LinkLayers,
    LinkRevision,
    PublishTag,
    ReadBack,
    Step,
    UnpublishRevision,
    UnpublishTag,
)
from .report import Problem, Report
from .transfer import BlobCopier, BlobOutcome, Cancelled

@dataclass
class PassContext:
    """What every repository of one pass shares."""

    source: Backend
    dest: Backend
    report: Report
    cancelled: threading.Event
    copier: BlobCopier
    settings: PlanSettings = PlanSettings()
    records: PassRecords | None = None
    confirmed_blobs: DigestSet = field(default_factory=DigestSet)
    waiter: BlobWaiter | None = None
    history_unchecked: threading.Event = field(default_factory=threading.Event)
    commits: GroupCommit | None = None


class DestinationWriter:
    """Performs one repository's steps on the destination (see execute.Performer)."""

    def __init__(self, context: PassContext, survey: RepositorySurvey) -> None:
        self.context = context
        self.survey = survey
        self.repository = survey.repository
        self.confirmed_links = LinkMemo()
        self._pending_links: dict[str, tuple[Digest, Future]] = {}  # written, not yet durable
        self.absent_optional: set[Digest] = set()

    @property
    def report(self) -> Report:
        return self.context.report

    # --- blobs -------------------------------------------------------------------------------------

    def start_blob(self, step: Step) -> Future:
        if isinstance(step, CopyBlob):
            copy = self.context.copier.ensure(step.digest, step.content, fresh=step.fresh)
        elif isinstance(step, AwaitBlob):
            if self.context.waiter is None:
                raise StepFailed(f"{step.label} {step.digest}: no waiter for blobs replicated by the storage")
            content = self.survey.manifests.get(step.digest) if step.label == "manifest blob" else None
            copier = self.context.copier
            copy = self.context.waiter.await_blob(step, content=content,
                                                  copy=lambda digest: copier.ensure(digest, content))
        else:
            raise TypeError(f"not a blob step: {step!r}")
        result: Future = Future()
        copy.add_done_callback(lambda done: self._blob_done(step, done, result))
        return result

    def _blob_done(self, step: CopyBlob | AwaitBlob, done: Future, result: Future) -> None:
        try:
            outcome: BlobOutcome = done.result()
        except BaseException as exc:  # noqa: BLE001 - handed to the executor as the step's failure
            result.set_exception(exc)
            return
        if outcome.ok:
            result.set_result(Outcome.DONE)
        elif outcome.absent and step.optional:
            self.absent_optional.add(step.digest)
            result.set_result(Outcome.SKIPPED)
        else:
            if outcome.absent and step.label == "blob":
                self.report.add_problem(Problem("missing-blob", "referenced blob missing at the source",
                                                repository=self.repository, digest=str(step.digest)))
            why = outcome.problem.reason if outcome.problem else "not available"
            result.set_exception(StepFailed(f"{step.label} {step.digest}: {why}"))

    # --- the other steps ---------------------------------------------------------------------------

    def perform(self, step: Step, needs: Sequence[Outcome]) -> "Outcome | Future[Outcome]":
        if self.context.cancelled.is_set():
            raise Cancelled()
        if isinstance(step, LinkLayers):
            return self._link_layers(step, needs)
        if isinstance(step, LinkRevision):
            return self._write_links(step.digest, [(key_of(RevisionLink(self.repository, step.digest)), step.digest)],
                                     then=self._revision_published)
        if isinstance(step, ReadBack):
            return self._read_back_step(step)
        if isinstance(step, PublishTag):
            return self._publish_tag(step)
        if isinstance(step, CheckHistory):
            return self._check_history(step)
        if isinstance(step, UnpublishTag):
            return self._unpublish_tag(step)
        if isinstance(step, UnpublishRevision):
            return self._unpublish_revision(step)
        raise TypeError(f"not a step the writer performs: {step!r}")

    def _revision_published(self) -> Outcome:
        self.report.count("revisions_published")
        return Outcome.DONE

    def _link_layers(self, step: LinkLayers, needs: Sequence[Outcome]) -> "Outcome | Future[Outcome]":
        links = []
        for digest, outcome in zip(step.blobs, needs):
            if outcome is Outcome.SKIPPED:
                self.absent_optional.add(digest)
            else:
                links.append((key_of(LayerLink(self.repository, digest)), digest))
        return self._write_links(step.manifest, links)

    def _write_links(self, manifest: Digest, links: list[tuple[str, Digest]],
                     then: "Callable[[], Outcome]" = lambda: Outcome.DONE) -> "Outcome | Future[Outcome]":
        def failed(exc: BackendError) -> StepFailed:
            self.report.add_problem(Problem("write-failed", str(exc), repository=self.repository, digest=str(manifest), key=exc.key))
            return StepFailed(f"writing links failed: {exc}")

        pending = []
        try:
            for key, digest in links:
                pending += self.write_link(key, digest)
        except BackendError as exc:
            raise failed(exc) from exc
        return _after(pending, then, failed)

    def _read_back_step(self, step: ReadBack) -> Outcome:
        missing = [] if step.force else self.read_back(step)
        if not step.force and (not missing or not step.repair):
            if missing:
                raise StepFailed("read-back found the destination lacking: " + "; ".join(missing[:5]), kind="verify-failed")
            return Outcome.DONE
        run = run_inline(repair_steps(self.repository, step.closure, self.survey.manifests, self.context.settings),
                         self, self.context.cancelled)
        if self.context.cancelled.is_set():
            raise Cancelled()
        if run.failures:
            reason = next(iter(run.failures.values())).reason
            raise StepFailed(f"read-back found the destination lacking: {reason}" if step.tag else reason, kind="verify-failed")
        missing = self.read_back(step)
        if missing:
            raise StepFailed("read-back found the destination lacking: " + "; ".join(missing[:5]), kind="verify-failed")
        if step.tag is None:
            self.report.count("revisions_repaired")
        return Outcome.DONE

    def read_back(self, step: ReadBack) -> list[str]:
        try:
            return missing_from(
                self.context.dest,
                self.repository,
                step.closure,
                absent_optional=self.absent_optional,
                present_blobs=self.context.confirmed_blobs,
                confirmed_links=self.confirmed_links,
            )
        except BackendError as exc:
            return [f"reading the destination failed: {exc}"]

    def _publish_tag(self, step: PublishTag) -> "Outcome | Future[Outcome]":
        """``current/link``, then (once it is durable) the history link."""

        def failed(exc: BackendError) -> StepFailed:
            return StepFailed(f"writing the tag failed: {exc}", kind="write-failed")

        def history() -> "Outcome | Future[Outcome]":
            key = key_of(TagIndexLink(self.repository, step.tag, step.digest))
            return _after(self.write_link(key, step.digest, tag_write=True), published, failed)

        def published() -> Outcome:
            if step.recheck:
                self.report.count("tags_up_to_date")
            else:
                self.report.count("tags_published")
                self.report.emit("tag-published", repository=self.repository, tag=step.tag, digest=str(step.digest))
            return Outcome.DONE

        try:
            current = self.write_link(key_of(TagCurrentLink(self.repository, step.tag)), step.digest, tag_write=True)
        except BackendError as exc:
            raise failed(exc) from exc
        return _after(current, history, failed)

    def _check_history(self, step: CheckHistory) -> "Outcome | Future[Outcome]":
        """The stat is the point even when the link is there: on RADOS it adds the listing markers a
        dead writer may have left pending."""
        key = key_of(TagIndexLink(self.repository, step.tag, step.digest))
        if self.confirmed_links.holds(key, step.digest):
            return Outcome.DONE  # this pass wrote or read it
        try:
            self.context.dest.stat(key)
            return Outcome.DONE
        except NotFound:
            pass
        except BackendError as exc:
            raise StepFailed(f"checking the tag's history link failed: {exc}", kind="read-failed") from exc

        def failed(exc: BackendError) -> StepFailed:
            return StepFailed(f"writing the tag's history link failed: {exc}", kind="write-failed")

        def repaired() -> Outcome:
            self.report.count("history_repaired")
            return Outcome.DONE

        try:
            pending = self.write_link(key, step.digest, tag_write=True, known_missing=True)
        except BackendError as exc:
            raise failed(exc) from exc
        return _after(pending, repaired, failed)

    # --- taking back what the primary's garbage collection broke (blobs replicated by the storage) ----

    def _unpublish_tag(self, step: UnpublishTag) -> Outcome:
        dest, where = self.context.dest, {"repository": self.repository, "tag": step.tag, "digest": str(step.digest)}
        current = key_of(TagCurrentLink(self.repository, step.tag))
        try:
            if self._link_at(dest, current) != step.digest:
                return Outcome.SKIPPED  # gone or moved meanwhile: nothing of this digest to take back
            breakage = closure_breakage(dest, self.repository, step.digest)
            if breakage is None:
                return Outcome.SKIPPED  # whole: a tag the source deleted goes with --delete, not here
            if self._link_at(self.context.source, current) == step.digest:
                self.report.add_problem(Problem(
                    "broken-tag", f"{breakage.describe()}; the source has this tag at this digest again, so it is "
                    "not taken back: `syncagent verify SRC --against DST --repair` writes its closure again", **where))
                return Outcome.SKIPPED
            for key in tag_keys(dest, self.repository, step.tag):  # history links first, current/link last
                dest.delete(key)
                self.report.count("links_deleted")
        except BackendError as exc:
            self.report.add_problem(Problem("delete-failed", f"cannot take back the tag: {exc}", key=exc.key, **where))
            raise StepFailed(f"taking back the tag failed: {exc}") from exc
        self.report.count("tags_unpublished")
        self.report.add_finding(Problem("deleted-at-source", f"unpublished: {breakage.describe()} -- {DELETED_AT_SOURCE}",
                                        **where))
        self.report.emit("tag-unpublished", repository=self.repository, tag=step.tag, digest=str(step.digest))
        return Outcome.DONE

    def _unpublish_revision(self, step: UnpublishRevision) -> Outcome:
        dest, where = self.context.dest, {"repository": self.repository, "digest": str(step.digest)}
        key = key_of(RevisionLink(self.repository, step.digest))
        try:
            if self._link_at(dest, key) != step.digest:
                return Outcome.SKIPPED
            breakage = closure_breakage(dest, self.repository, step.digest)
            if breakage is None or source_has(self.context.source, key):
                return Outcome.SKIPPED  # whole, or the source has it (again): the sync writes what it lacks
            dest.delete(key)
            self.report.count("links_deleted")
        except BackendError as exc:
            self.report.add_problem(Problem("delete-failed", f"cannot take back the revision: {exc}", key=exc.key, **where))
            raise StepFailed(f"taking back the revision failed: {exc}") from exc
        self.report.count("revisions_unpublished")
        self.report.add_finding(Problem("deleted-at-source", f"unpublished: {breakage.describe()} -- {DELETED_AT_SOURCE}",
                                        **where))
        self.report.emit("revision-unpublished", repository=self.repository, digest=str(step.digest))
        return Outcome.DONE

    @staticmethod
    def _link_at(backend: Backend, key: str) -> Digest | None:
        """The digest a link holds, or None when there is none (or none that parses). Raises BackendError."""
        try:
            return read_link(backend, key)
        except (NotFound, UnreadableLink, SymlinkRefused):
            return None

    def write_link(self, key: str, digest: Digest, *, tag_write: bool = False, known_missing: bool = False) -> "list[Future]":
        """Write a link unless it already holds ``digest``; what remains to wait for: the write's future
        while it is not durable (a destination with ``commits``), else nothing.

        In a repository the destination did not have, links are written without
        reading them first (rewriting an identical link is harmless).
        ``tag_write``: a tag's link, put only after this pass's record.
        """
        if self.context.cancelled.is_set():
            raise Cancelled()
        if self.confirmed_links.holds(key, digest):
            self.report.count("links_present")
            return []
        pending = self._pending_links.get(key)
        if pending is not None and pending[0] == digest:
            return [pending[1]]  # written by another step of this run: wait for the same write
        if self.survey.dest_existed and not known_missing:
            try:
                if read_link(self.context.dest, key, attempts=1) == digest:
                    self.confirmed_links.confirm(key, digest)
                    self.report.count("links_present")
                    return []
            except (NotFound, UnreadableLink, SymlinkRefused):
                pass  # a symbolic link at the key is replaced by the put; one on the way refuses it
        if tag_write and self.context.records is not None:
            self.context.records.before_tag_write()
        content = format_link(digest)
        commits = self.context.commits
        if commits is None:
            self.context.dest.put(key, io.BytesIO(content), size=len(content))  # retried by the engine's wrapper
            self._link_written(key, digest)
            return []
        durable = commits.put(key, io.BytesIO(content), size=len(content))
        self._pending_links[key] = (digest, durable)
        durable.add_done_callback(lambda done: self._link_durable(key, digest, done))
        return [durable]

    def _link_written(self, key: str, digest: Digest) -> None:
        self.confirmed_links.confirm(key, digest)
        self.report.count("links_written")

    def _link_durable(self, key: str, digest: Digest, done: Future) -> None:
        if done.exception() is None:
            self._link_written(key, digest)
        if self._pending_links.get(key, (None, None))[1] is done:
            del self._pending_links[key]

    # --- failures ----------------------------------------------------------------------------------

    def failed(self, step: Step, failure: StepFailed, *, propagated: bool) -> None:
        where = {"repository": self.repository}
        if failure.kind == "internal-error" and not propagated:
            self.report.add_problem(Problem("internal-error", f"{failure.reason} in {type(step).__name__}", **where))
        if isinstance(step, LinkRevision) and step.publishes:
            self.report.add_problem(Problem("revision-not-published", failure.reason, digest=str(step.digest), **where))
        elif isinstance(step, ReadBack) and step.tag is None:
            self.report.add_problem(Problem("revision-not-published", failure.reason, digest=str(step.root), **where))
        elif isinstance(step, (PublishTag, CheckHistory)):
            kind = failure.kind if failure.kind not in (None, "internal-error") else "tag-not-published"
            self.report.add_problem(Problem(kind, failure.reason, tag=step.tag, digest=str(step.digest), **where))
            if isinstance(step, CheckHistory):
                self.context.history_unchecked.set()


DELETED_AT_SOURCE = ("the primary deleted it and its garbage collection deleted blobs it needs; the storage's "
                     "replication carried those deletes here before the delete of the tag or revision itself")


def _after(pending: "list[Future]", then: "Callable[[], Outcome | Future[Outcome]]",
           failed: Callable[[BackendError], StepFailed]) -> "Outcome | Future[Outcome]":
    """``then()`` once every write in ``pending`` is durable (right away when none is pending); a write
    that failed fails the step with ``failed(its error)``."""
    if not pending:
        try:
            return then()
        except BackendError as exc:
            raise failed(exc) from exc
    result: Future = Future()

    def settle(done: Future) -> None:
        try:
            done.result()
            outcome = then()
        except BackendError as exc:
            result.set_exception(failed(exc))
            return
        except BaseException as exc:  # noqa: BLE001 - StepFailed, Cancelled: the step's own failure
            result.set_exception(exc)
            return
        if isinstance(outcome, Future):
            outcome.add_done_callback(lambda last: pass_on(last, result))
        else:
            result.set_result(outcome)

    all_of(pending).add_done_callback(settle)
    return result


class DestinationDeleter:
    """Performs one repository's delete steps (see execute.Performer), checking the source again before
    every delete: a key the source has (again) is never deleted, and a tag the source lists again is
    left whole."""

    def __init__(self, source: Backend, dest: Backend, report: Report, cancelled: threading.Event) -> None:
        self.source = source
        self.dest = dest
        self.report = report
        self.cancelled = cancelled

    def start_blob(self, step: Step) -> Future:
        raise TypeError(f"not a delete step: {step!r}")

    def perform(self, step: Step, needs: Sequence[Outcome]) -> Outcome:
        if self.cancelled.is_set():
            raise Cancelled()
        try:
            if isinstance(step, DeleteTag):
                if any(source_has(self.source, key) for key in step.keys if key.endswith("/current/link")):
                    return Outcome.SKIPPED
                for key in step.keys:
                    self._delete(key, "links_deleted")
                self.report.count("tags_deleted")
                self.report.emit("tag-deleted", repository=step.repository, tag=step.tag)
            elif isinstance(step, DeleteRevision):
                if not self._delete(key_of(RevisionLink(step.repository, step.digest)), "revisions_deleted"):
                    return Outcome.SKIPPED
                self.report.emit("revision-deleted", repository=step.repository, digest=str(step.digest))
            elif isinstance(step, DeleteLayerLink):
                if not self._delete(key_of(LayerLink(step.repository, step.digest)), "links_deleted"):
                    return Outcome.SKIPPED
            else:
                raise TypeError(f"not a delete step: {step!r}")
        except BackendError as exc:
            self.report.add_problem(Problem("delete-failed", str(exc), repository=step.repository, key=exc.key))
            raise StepFailed(f"deleting failed: {exc}") from exc
        return Outcome.DONE

    def _delete(self, key: str, counter: str) -> bool:
        if source_has(self.source, key):
            return False
        self.dest.delete(key)
        self.report.count(counter)
        return True

    def failed(self, step: Step, failure: StepFailed, *, propagated: bool) -> None:
        if failure.kind == "internal-error" and not propagated:
            self.report.add_problem(Problem("internal-error", f"{failure.reason} in {type(step).__name__}",
                                            repository=getattr(step, "repository", None)))


__all__ = ["DELETED_AT_SOURCE", "DestinationDeleter", "DestinationWriter", "PassContext"]
