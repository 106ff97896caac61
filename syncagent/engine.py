"""One sync pass, source to destination, in the order of DESIGN.md.

Per repository: read both sides, resolve the closure of every revision and tag
the destination lacks (from the source's manifests), then for each manifest in
dependency order: its blobs (copied by the shared :class:`BlobCopier`), its
``_layers`` links, its revision link. A tag is published only after its whole
closure has been read back from the destination: ``current/link`` first, then
the tag's ``index`` link. Anything that fails leaves its tag unpublished and is
reported; everything else carries on.
"""

from __future__ import annotations

import fnmatch
import io
import itertools
import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from backends import Backend, BackendError, NotFound, TransientError

from .closure import Closure, ClosureError, missing_from, read_manifest, resolve_closure
from .deletes import DeleteRunner, plan_repository
from .discovery import RepositoryState, UnreadableLink, iter_repositories, read_link, read_repository
from .layout import BLOBS_PREFIX, Digest, DigestSet, LayerLink, RevisionLink, TagCurrentLink, TagIndexLink, format_link, key_of, repository_prefix
from .manifest import Manifest
from .pass_records import PassRecords, UnfinishedPass, load_records
from .replica import MarkerError, mark_if_fresh, read_marker, write_marker
from .report import Problem, Report
from .transfer import BlobCopier, BlobOutcome, Cancelled

log = logging.getLogger(__name__)

DEFAULT_JOBS = 8
LINK_WRITE_ATTEMPTS = 4


DEFAULT_MAX_DELETE_SHARE = 0.5

# Problems after which a pass keeps its record: a tag write of its own may be incomplete.
_WRITE_FAILURES = frozenset({"write-failed", "internal-error"})


@dataclass(frozen=True)
class SyncOptions:
    """How a pass runs.

    ``delete``: also remove what the source no longer has (deletes.py).
    ``prune_blobs``: with ``delete``, also remove blob data nothing links.
    ``max_delete_share``: refuse a delete pass that would remove more than this
    share of the destination's tags and revisions, unless ``force``.
    ``force``: skip the delete safety checks, adopting an unmarked destination.
    ``verify_existing``: also read back the closures of tags and revisions the
    destination already has, and rewrite what is missing (repair).
    ``recopy``: blob digests to copy again even if present (known corrupt).
    """

    jobs: int = DEFAULT_JOBS
    repositories: tuple[str, ...] = ()
    dry_run: bool = False
    delete: bool = False
    prune_blobs: bool = False
    max_delete_share: float = DEFAULT_MAX_DELETE_SHARE
    force: bool = False
    verify_existing: bool = False
    recopy: frozenset = frozenset()

    def wants(self, repository: str) -> bool:
        return not self.repositories or any(fnmatch.fnmatchcase(repository, p) for p in self.repositories)


class Engine:
    def __init__(self, source: Backend, dest: Backend, options: SyncOptions = SyncOptions(), report: Report | None = None) -> None:
        self.source = source
        self.dest = dest
        self.options = options
        self.report = report or Report()
        self.cancelled = threading.Event()
        self._confirmed_blobs = DigestSet()
        self._dest_has_blobs = True
        self._dest_empty = False
        self._history_unchecked = False  # a repository of this pass did not finish its history checks
        self.records: PassRecords | None = None

    def cancel(self) -> None:
        self.cancelled.set()

    def run(self) -> Report:
        """Sync every repository the options select. Ctrl-C cancels cleanly and is recorded."""
        jobs = max(1, self.options.jobs)
        blob_pool = ThreadPoolExecutor(jobs, thread_name_prefix="blob")
        repo_pool = ThreadPoolExecutor(self._repository_workers(jobs), thread_name_prefix="repo")
        pending: set[Future] = set()
        source_repositories: set[str] = set()
        source_listed = completed = False
        try:
            self.records = PassRecords.load(self.dest, self.options.repositories, dry_run=self.options.dry_run)
            self._dest_has_blobs = self._destination_has_blobs()
            copier = self._copier(blob_pool)
            try:
                listing = iter_repositories(self.source, self.report.add_problem)
                first = next(listing, None)  # the source has answered: only now may the destination be written
                self._mark_fresh_destination()
                for repository in itertools.chain(() if first is None else (first,), listing):
                    source_repositories.add(repository)
                    if not self.options.wants(repository):
                        continue
                    while len(pending) >= 2 * jobs:
                        _, pending = wait(pending, return_when=FIRST_COMPLETED)
                    pending.add(repo_pool.submit(self._sync_repository_guarded, repository, copier))
                source_listed = True
            except MarkerError:
                raise  # the destination's failure, not the source's
            except NotFound as exc:
                self.report.add_problem(Problem("read-failed", f"the source does not exist: {exc}"))
            except BackendError as exc:
                self.report.add_problem(Problem("read-failed", f"cannot list the source's repositories: {exc}"))
            wait(pending)
            completed = source_listed
            if self.options.delete and not self.cancelled.is_set():
                self._delete_pass(source_repositories, source_listed)
        except MarkerError as exc:
            self.report.add_problem(Problem(exc.kind, str(exc), key=exc.key))
        except KeyboardInterrupt:
            self.cancel()
            self.report.interrupted = True
        finally:
            if self.cancelled.is_set():
                self.report.interrupted = True
            repo_pool.shutdown(wait=True, cancel_futures=True)
            blob_pool.shutdown(wait=True, cancel_futures=True)
            self._dest_empty = False  # true of the destination as this pass began, no longer
            self._finish_records(completed=completed)
        self.report.finished = time.monotonic()
        return self.report

    def _finish_records(self, *, completed: bool) -> None:
        """``completed``: the pass went through every repository of its scope (the source listed,
        nothing raised). See pass_records for what is kept and what goes."""
        records = self.records
        if records is None:
            return
        stopped = self.report.interrupted or self.cancelled.is_set() or not completed
        wrote_all = not stopped and not any(p.kind in _WRITE_FAILURES for p in self.report.problems)
        try:
            records.finish(wrote_all=wrote_all, checked_all=not stopped and not self._history_unchecked)
        finally:
            if records.failed is not None:
                self.report.add_problem(Problem(
                    "pass-record-failed",
                    f"cannot write this pass's record ({records.failed}); its tags were published without one, so had "
                    f"the pass died between a tag's current link and its history link, no later pass would know",
                    key=records.key,
                ))

    def _repository_workers(self, jobs: int) -> int:
        """Repositories in flight at once: one between local stores, where reading links in
        parallel only contends for the interpreter (blob copies still run ``jobs`` at a time);
        ``jobs`` when either side is a network store, where each read is a round trip."""
        local = getattr(self.source.capabilities, "local", False) and getattr(self.dest.capabilities, "local", False)
        return 1 if local else jobs

    def _mark_fresh_destination(self) -> None:
        """Mark a destination this run starts filling from empty as a syncagent replica; then its
        repositories are not read (they are known empty: on S3 that saves two listings each).

        The marker is a pass's first write, made once the source has answered (a run whose source
        cannot be read writes nothing). Raises MarkerError when the destination cannot be checked
        or marked: the pass ends there, before anything is copied, with the problem reported.
        """
        if not self.options.dry_run:
            self._dest_empty = mark_if_fresh(self.dest, self.source.url)

    def _destination_has_blobs(self) -> bool:
        """False when the destination holds no blob data at all (one listing): nothing to stat then."""
        if self.options.recopy:
            return True
        try:
            return next(iter(self.dest.iter_children(BLOBS_PREFIX)), None) is not None
        except NotFound:
            return False
        except BackendError:
            return True

    def _delete_pass(self, source_repositories: set[str], source_listed: bool) -> None:
        refusal = self._delete_refusal(source_repositories, source_listed)
        plans: list = []
        if refusal is None:
            try:
                for repository in iter_repositories(self.dest):
                    if self.options.wants(repository):
                        plans.append(self._plan_deletes(repository, repository in source_repositories))
            except BackendError as exc:
                refusal = f"cannot list the destination's repositories: {exc}"
            plans = [p for p in plans if p is not None]
            removing = sum(len(p.tags) + len(p.revisions) for p in plans)
            total = sum(p.dest_tags + p.dest_revisions for p in plans)
            if refusal is None and not self.options.force and total and removing / total > self.options.max_delete_share:
                refusal = (
                    f"the pass would delete {removing} of the destination's {total} tags and revisions "
                    f"({removing / total:.0%}), more than the limit of {self.options.max_delete_share:.0%}; "
                    "check SRC and DST, then raise --max-delete or pass --force"
                )
        if refusal is not None:
            self.report.add_problem(Problem("delete-refused", refusal))
            return
        if self.options.force and not self.options.dry_run and read_marker(self.dest) is None:
            write_marker(self.dest, self.source.url)
        runner = DeleteRunner(self.source, self.dest, self.report, dry_run=self.options.dry_run)
        for plan in plans:
            if self.cancelled.is_set():
                return
            self._carry_out(runner, plan)
        if self.options.prune_blobs and not self.cancelled.is_set():
            runner.prune_blobs()

    def delete_in_repository(self, repository: str) -> None:
        """The sidecar's per-repository delete pass (after its sync pass), in reverse dependency order.

        The checks that apply to one repository apply: the destination must
        carry the replica marker (unless ``force``), and the source must answer
        for the repository (an error, never an empty answer, when it cannot);
        every delete re-checks the source. The share limit belongs to full
        passes, which see the whole destination.
        """
        if not self.options.force and read_marker(self.dest) is None:
            self.report.add_problem(
                Problem("delete-refused", f"{self.dest.url} carries no syncagent replica marker", repository=repository)
            )
            return
        try:
            at_source = next(iter(self.source.iter_children(repository_prefix(repository))), None) is not None
        except BackendError as exc:
            self.report.add_problem(Problem("delete-refused", f"the source cannot be read: {exc}", repository=repository))
            return
        plan = self._plan_deletes(repository, at_source)
        if plan is not None and not plan.empty:
            self._carry_out(DeleteRunner(self.source, self.dest, self.report, dry_run=self.options.dry_run), plan)

    def _carry_out(self, runner: DeleteRunner, plan) -> None:
        runner.run(plan)
        if plan.keeps_all_layers:
            self.report.add_problem(Problem("delete-skipped", f"kept every _layers link: {plan.keeps_all_layers}", repository=plan.repository))

    def _plan_deletes(self, repository: str, at_source: bool):
        try:
            return plan_repository(self.source, self.dest, repository, at_source)
        except BackendError as exc:
            self.report.add_problem(Problem("delete-failed", f"cannot plan deletes: {exc}", repository=repository, key=exc.key))
            return None

    def _delete_refusal(self, source_repositories: set[str], source_listed: bool) -> str | None:
        """Why deleting now would be unsafe, or None."""
        if not source_listed:
            return "the source could not be listed completely; a source that cannot be read never counts as empty"
        if self.options.force:
            return None
        source_marker = read_marker(self.source)
        if source_marker is not None and source_marker.get("source") == self.dest.url:
            return f"source and destination look swapped: {self.source.url} is a replica of {self.dest.url}"
        if read_marker(self.dest) is None:
            return (
                f"{self.dest.url} carries no syncagent replica marker (.syncagent/replica.json): it was not filled by "
                "syncagent and may be a primary; check SRC and DST, and pass --force to adopt it"
            )
        if not source_repositories and next(iter_repositories(self.dest), None) is not None:
            return f"the source {self.source.url} holds no repositories while the destination does; refusing to empty it"
        return None

    def sync_repository(self, repository: str, copier: BlobCopier | None = None, *,
                        unfinished: list[UnfinishedPass] | None = None) -> None:
        """Sync one repository (the sidecar's unit of work), with a pass record of its own.

        ``unfinished``: the destination's pass records as the caller last read them (the sidecar
        keeps them, so that a pass does not list them again); None reads them.
        """
        earlier = load_records(self.dest) if unfinished is None else unfinished
        self.records = PassRecords(self.dest, (repository,), earlier, dry_run=self.options.dry_run)
        completed = False
        try:
            if copier is not None:
                _RepositorySync(self, repository, copier).run()
            else:
                with ThreadPoolExecutor(max(1, self.options.jobs), thread_name_prefix="blob") as pool:
                    _RepositorySync(self, repository, self._copier(pool)).run()
            completed = True
        finally:
            self._finish_records(completed=completed)

    def _copier(self, pool: ThreadPoolExecutor) -> BlobCopier:
        return BlobCopier(
            self.source,
            self.dest,
            pool,
            self.report,
            self.cancelled,
            dry_run=self.options.dry_run,
            recopy=self.options.recopy,
            confirmed=self._confirmed_blobs,
            dest_has_blobs=self._dest_has_blobs,
        )

    def _sync_repository_guarded(self, repository: str, copier: BlobCopier) -> None:
        try:
            _RepositorySync(self, repository, copier).run()
            return
        except Cancelled:
            pass
        except BackendError as exc:
            self.report.add_problem(Problem("read-failed", str(exc), repository=repository, key=exc.key))
        except Exception as exc:
            log.exception("unexpected error in repository %s", repository)
            self.report.add_problem(Problem("internal-error", repr(exc), repository=repository))
        self._history_unchecked = True


@dataclass
class _RepositorySync:
    """The work of one pass on one repository."""

    engine: Engine
    repository: str
    copier: BlobCopier
    src: RepositoryState = field(init=False)
    dst: RepositoryState = field(init=False)
    closures: dict[Digest, Closure | ClosureError] = field(default_factory=dict)
    raw_manifests: dict[Digest, bytes] = field(default_factory=dict)
    done: dict[Digest, str | None] = field(default_factory=dict)
    absent_optional: set[Digest] = field(default_factory=set)
    reported: set[Digest] = field(default_factory=set)
    rechecked_tags: set[str] = field(default_factory=set)
    history_to_check: dict[str, Digest] = field(default_factory=dict)
    confirmed_links: dict[str, Digest] = field(default_factory=dict)

    @property
    def report(self) -> Report:
        return self.engine.report

    def run(self) -> None:
        engine = self.engine
        self.src = read_repository(engine.source, self.repository, self.report.add_problem)
        if engine._dest_empty:
            self.dst = RepositoryState(self.repository)
        else:
            try:
                self.dst = read_repository(engine.dest, self.repository, expected_tags=self.src.tags)
            except NotFound:
                self.dst = RepositoryState(self.repository)  # a destination that does not exist yet is empty
        self.report.count("repositories")
        tags = self._tags_to_publish()
        revisions = sorted(self.src.revisions - self.dst.revisions)
        self.report.count("revisions_up_to_date", len(self.src.revisions & self.dst.revisions))
        for digest in sorted(set(revisions) | set(tags.values())):
            self.closures[digest] = self._resolve(digest)
        for digest in revisions:
            self._start_copies(digest)
        self.raw_manifests.clear()
        for digest in revisions:
            reason = self._ensure_revision(digest)
            if reason is not None:
                self.report.add_problem(Problem("revision-not-published", reason, repository=self.repository, digest=str(digest)))
        if engine.options.verify_existing:
            self._repair_existing_revisions()
        for tag, digest in sorted(tags.items()):
            self._publish_tag(tag, digest)
        for tag, digest in sorted(self.history_to_check.items()):
            self._check_history(tag, digest)
        self.history_to_check.clear()

    def _repair_existing_revisions(self) -> None:
        """Read back every revision both sides have; rewrite the closures found lacking."""
        for digest in sorted(self.src.revisions & self.dst.revisions):
            closure = self.closures.get(digest) or self._resolve(digest)
            self.closures[digest] = closure
            if isinstance(closure, ClosureError):
                self._closure_problem(closure)
                continue
            if not self._needs_rewrite(closure):
                continue
            self.done = {d: r for d, r in self.done.items() if d not in closure.manifests}
            reason = self._ensure_revision(digest, rewrite=True)
            if reason is not None:
                self.report.add_problem(Problem("revision-not-published", reason, repository=self.repository, digest=str(digest)))
            else:
                self.report.count("revisions_repaired")

    def _needs_rewrite(self, closure: Closure) -> bool:
        recopy = self.engine.options.recopy
        if recopy and (recopy & set(closure.manifests) or any(r.digest in recopy for r in closure.blob_references())):
            return True
        return bool(self._read_back(closure))

    def _tags_to_publish(self) -> dict[str, Digest]:
        wanted: dict[str, Digest] = {}
        records = self.engine.records
        if records is not None and records.may_lack_history(self.repository):
            # A dead pass may have moved any of these tags and died before its history link.
            self.history_to_check = dict(self.dst.tags)
        for tag, digest in self.src.tags.items():
            if self.dst.tags.get(tag) == digest and self.engine.options.verify_existing and digest in self.src.revisions:
                self.rechecked_tags.add(tag)
                wanted[tag] = digest
            elif self.dst.tags.get(tag) == digest:
                self.report.count("tags_up_to_date")
            elif digest not in self.src.revisions:
                self._tag_problem(tag, digest, f"the tag points to {digest}, which has no revision link at the source")
            else:
                wanted[tag] = digest
        return wanted

    def _resolve(self, root: Digest) -> Closure | ClosureError:
        try:
            return resolve_closure(root, self._load_manifest)
        except ClosureError as exc:
            return exc

    def _load_manifest(self, digest: Digest) -> Manifest:
        if digest not in self.src.revisions:
            raise ClosureError("missing-manifest", digest, "referenced manifest has no revision link at the source")
        data, manifest = read_manifest(self.engine.source, digest)
        self.raw_manifests[digest] = data
        return manifest

    def _start_copies(self, root: Digest) -> None:
        closure = self.closures[root]
        if isinstance(closure, ClosureError):
            return
        for digest in closure.manifests:
            self.copier.ensure(digest, self.raw_manifests.get(digest))
        for ref in closure.blob_references():
            self.copier.ensure(ref.digest)

    def _ensure_revision(self, root: Digest, *, rewrite: bool = False) -> str | None:
        """Make ``root``'s closure present and linked on the destination; None, or why not."""
        closure = self.closures[root]
        if isinstance(closure, ClosureError):
            self._closure_problem(closure)
            return f"{closure.digest}: {closure.reason}"
        for digest, manifest in closure.manifests.items():
            if digest in self.done:
                if self.done[digest] is not None:
                    return self.done[digest]
                continue
            if digest in self.dst.revisions and not rewrite:
                self.done[digest] = None
                continue
            self.done[digest] = self._write_revision(digest, manifest, fresh=rewrite)
            if self.done[digest] is not None:
                return self.done[digest]
        return None

    def _write_revision(self, digest: Digest, manifest: Manifest, *, fresh: bool = False) -> str | None:
        """Blobs, then ``_layers`` links, then the revision link (children were written before)."""
        outcome: BlobOutcome = self.copier.ensure(digest, self.raw_manifests.get(digest), fresh=fresh).result()
        if not outcome.ok:
            return f"manifest blob {digest}: {_why(outcome)}"
        linked: list[Digest] = []
        for ref in manifest.blobs:
            outcome = self.copier.ensure(ref.digest, fresh=fresh).result()
            if outcome.ok:
                linked.append(ref.digest)
            elif outcome.absent and ref.optional:
                self.absent_optional.add(ref.digest)
            else:
                if outcome.absent:
                    self.report.add_problem(Problem("missing-blob", "referenced blob missing at the source", repository=self.repository, digest=str(ref.digest)))
                return f"blob {ref.digest}: {_why(outcome)}"
        try:
            for blob in linked:
                self._write_link(key_of(LayerLink(self.repository, blob)), blob)
            self._write_link(key_of(RevisionLink(self.repository, digest)), digest)
        except BackendError as exc:
            self.report.add_problem(Problem("write-failed", str(exc), repository=self.repository, digest=str(digest), key=exc.key))
            return f"writing links failed: {exc}"
        self.report.count("revisions_published")
        return None

    def _publish_tag(self, tag: str, digest: Digest) -> None:
        closure = self.closures[digest]
        reason = self._ensure_revision(digest)
        if reason is not None:
            self._tag_problem(tag, digest, reason)
            return
        assert isinstance(closure, Closure)
        if not self.engine.options.dry_run:
            missing = self._read_back(closure)
            if missing and digest in self.dst.revisions:
                self.done = {d: r for d, r in self.done.items() if d not in closure.manifests}
                reason = self._ensure_revision(digest, rewrite=True)
                missing = [reason] if reason else self._read_back(closure)
            if missing:
                self._tag_problem(tag, digest, "read-back found the destination lacking: " + "; ".join(missing[:5]), kind="verify-failed")
                return
        try:
            self._write_link(key_of(TagCurrentLink(self.repository, tag)), digest, tag_write=True)
            self._write_link(key_of(TagIndexLink(self.repository, tag, digest)), digest, tag_write=True)
        except BackendError as exc:
            self._tag_problem(tag, digest, f"writing the tag failed: {exc}", kind="write-failed")
            return
        if tag in self.rechecked_tags:
            self.report.count("tags_up_to_date")
            return
        self.report.count("tags_published")
        self.report.emit("tag-published", repository=self.repository, tag=tag, digest=str(digest))

    def _check_history(self, tag: str, digest: Digest) -> None:
        """After a dead pass: the history link of the digest the destination's tag points to,
        written if missing.

        The stat is the point even when the link is there: on RADOS it adds the
        listing markers a dead writer may have left pending.
        """
        key = key_of(TagIndexLink(self.repository, tag, digest))
        if self.engine.cancelled.is_set():
            raise Cancelled()
        if self.confirmed_links.get(key) == digest:
            return  # this pass wrote or read it
        try:
            self.engine.dest.stat(key)
            return
        except NotFound:
            pass
        except BackendError as exc:
            self.engine._history_unchecked = True
            self._tag_problem(tag, digest, f"checking the tag's history link failed: {exc}", kind="read-failed")
            return
        try:
            self._write_link(key, digest, tag_write=True, known_missing=True)
        except BackendError as exc:
            self.engine._history_unchecked = True
            self._tag_problem(tag, digest, f"writing the tag's history link failed: {exc}", kind="write-failed")
            return
        self.report.count("history_repaired")

    def _read_back(self, closure: Closure) -> list[str]:
        try:
            return missing_from(
                self.engine.dest,
                self.repository,
                closure,
                absent_optional=self.absent_optional,
                present_blobs=self.engine._confirmed_blobs,
                confirmed_links=self.confirmed_links,
            )
        except BackendError as exc:
            return [f"reading the destination failed: {exc}"]

    def _write_link(self, key: str, digest: Digest, *, tag_write: bool = False, known_missing: bool = False) -> None:
        """Write a link unless it already holds ``digest``; retries transient failures.

        In a repository the destination did not have, links are written without
        reading them first (rewriting an identical link is harmless).
        ``tag_write``: a tag's link, put only after this pass's record.
        """
        if self.engine.cancelled.is_set():
            raise Cancelled()
        if self.confirmed_links.get(key) == digest:
            self.report.count("links_present")
            return
        if (self.dst.tags or self.dst.revisions) and not known_missing:
            try:
                if read_link(self.engine.dest, key, attempts=1) == digest:
                    self.confirmed_links[key] = digest
                    self.report.count("links_present")
                    return
            except (NotFound, UnreadableLink):
                pass
        if self.engine.options.dry_run:
            self.report.plan(f"link {key} -> {digest}")
            self.report.count("links_written")
            return
        if tag_write and self.engine.records is not None:
            self.engine.records.before_tag_write()
        for attempt in range(LINK_WRITE_ATTEMPTS):
            try:
                content = format_link(digest)
                self.engine.dest.put(key, io.BytesIO(content), size=len(content))
                self.confirmed_links[key] = digest
                break
            except TransientError:
                if attempt + 1 == LINK_WRITE_ATTEMPTS:
                    raise
                time.sleep(0.2 * 2**attempt)
        self.report.count("links_written")

    def _closure_problem(self, error: ClosureError) -> None:
        if error.digest in self.reported:
            return
        self.reported.add(error.digest)
        self.report.add_problem(Problem(error.kind, error.reason, repository=self.repository, digest=str(error.digest)))

    def _tag_problem(self, tag: str, digest: Digest, reason: str, *, kind: str = "tag-not-published") -> None:
        self.report.add_problem(Problem(kind, reason, repository=self.repository, tag=tag, digest=str(digest)))


def _why(outcome: BlobOutcome) -> str:
    return outcome.problem.reason if outcome.problem else "not available"

