"""One sync pass, source to destination, in the order of DESIGN.md.

For every repository the options select: a survey (survey.py: both sides'
tags and revisions, the source's closures), a plan (plan.py: the ordered
steps, decided from the survey alone), and a run of that plan (execute.py,
the steps performed on the destination by writer.py). Blob copies are shared
by all repositories of the pass (one copy per digest). ``--dry-run`` prints
the plans and runs nothing. After the repositories: the delete pass, when
asked for. Around them: the replica marker and the pass's record
(pass_records.py). Anything that fails leaves its tag unpublished and is
reported; everything else carries on.
"""

from __future__ import annotations

import fnmatch
import itertools
import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable

from backends import Backend, BackendError, NotFound, innermost, staged_puts_of
from backends.retry import RetryPolicy, retrying

from .deletes import DeletePlan, plan_deletes, prune_blobs, survey_deletes
from .discovery import iter_repositories
from .durability import GroupCommit
from .execute import RepositoryRun
from .layout import BLOBS_PREFIX, DigestSet, repository_prefix
from .records import PassRecords, UnfinishedPass, load_records
from .policy import DEFERRED, DeleteAllowance, DeletePolicy
from .plan import BlobMode, PlanSettings, plan_repository
from .replication import CANARY_KEY, DEFAULT_TIMEOUT as DEFAULT_EXTERNAL_TIMEOUT, BlobWaiter, place_canary, replication_too_wide
from .steps import BLOB_STEPS, LinkRevision, PublishTag, RepositoryPlan, plan_lines
from .replica import MarkerError, mark_if_fresh, read_marker, write_marker
from .report import Problem, Report
from .shard import Shard
from .survey import survey_repository
from .transfer import BlobCopier, Cancelled
from .writer import DestinationDeleter, DestinationWriter, PassContext

log = logging.getLogger(__name__)

DEFAULT_JOBS = 8
INLINE_COPY_LIMIT = 1 << 20  # between local stores, blobs up to this size are copied on the executor's thread


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
    ``retry``: how transient failures are retried: the backends' operations
    (backends/retry.py: the engine wraps both backends), whole blob copies
    (transfer.py) and staged writes (durability.py), one policy.
    ``blobs``: ``copy``, or ``external`` when the storage's own replication
    brings blob data (replication.py): then blobs are awaited for at most
    ``external_timeout`` seconds, and copied after ``copy_after`` seconds if set.
    ``shard``: only the repositories of this shard (shard.py), within ``repositories``;
    refused with ``prune_blobs`` (only a pass that sees every repository may judge a blob unused).
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
    retry: RetryPolicy = RetryPolicy()
    blobs: BlobMode = "copy"
    copy_after: float | None = None
    external_timeout: float = DEFAULT_EXTERNAL_TIMEOUT
    shard: Shard | None = None

    def __post_init__(self) -> None:
        if self.shard is not None and self.prune_blobs:
            raise ValueError("--prune-blobs cannot go with --shard: only a pass over every repository may decide a blob is unused")

    def wants(self, repository: str) -> bool:
        if self.shard is not None and not self.shard.owns(repository):
            return False
        return not self.repositories or any(fnmatch.fnmatchcase(repository, p) for p in self.repositories)


class Engine:
    def __init__(self, source: Backend, dest: Backend, options: SyncOptions = SyncOptions(), report: Report | None = None) -> None:
        self.source = retrying(source, options.retry)
        self.dest = retrying(dest, options.retry)
        self.options = options
        self.report = report or Report()
        self.cancelled = threading.Event()
        self.settings = PlanSettings(blobs=options.blobs, copy_after=options.copy_after,
                                     verify_existing=options.verify_existing, recopy=options.recopy)
        self._confirmed_blobs = DigestSet()
        self._planned_blobs = DigestSet()  # --dry-run: blobs already in a printed plan
        self._dest_has_blobs = True
        self._dest_empty = False
        self._history_unchecked = threading.Event()  # a repository of this pass did not finish its history checks
        self.records: PassRecords | None = None
        self._waiter: BlobWaiter | None = None
        self._too_wide_reported = False
        self._runs: set[RepositoryRun] = set()
        self._runs_lock = threading.Lock()
        self._commits: GroupCommit | None = None

    def cancel(self) -> None:
        self.cancelled.set()
        waiter = self._waiter
        if waiter is not None:
            waiter.close()  # what waits for replication ends now

    def run(self) -> Report:
        """Sync every repository the options select. Ctrl-C cancels cleanly and is recorded."""
        jobs = max(1, self.options.jobs)
        blob_pool = ThreadPoolExecutor(jobs, thread_name_prefix="blob")
        repo_pool = ThreadPoolExecutor(self._repository_workers(jobs), thread_name_prefix="repo")
        pending: set[Future] = set()
        source_repositories: set[str] = set()
        source_listed = completed = False
        try:
            self.records = PassRecords.load(self.dest, self.options.repositories, dry_run=self.options.dry_run,
                                            shard=self.options.shard)
            self._dest_has_blobs = self._destination_has_blobs()
            context = self._context(blob_pool)
            schedule = _scheduler(repo_pool)
            try:
                listing = iter_repositories(self.source, self.report.add_problem)
                first = next(listing, None)  # the source has answered: only now may the destination be written
                self._mark_fresh_destination()
                self._check_replication_scope(place=True)
                for repository in itertools.chain(() if first is None else (first,), listing):
                    source_repositories.add(repository)
                    if not self.options.wants(repository):
                        continue
                    while len(pending) >= 2 * jobs:
                        _, pending = wait(pending, return_when=FIRST_COMPLETED)
                    pending.add(self._start_repository(repository, context, repo_pool, schedule))
                source_listed = True
            except MarkerError:
                raise  # the destination's failure, not the source's
            except NotFound as exc:
                self.report.add_problem(Problem("read-failed", f"the source does not exist: {exc}"))
            except BackendError as exc:
                self.report.add_problem(Problem("read-failed", f"cannot list the source's repositories: {exc}"))
            wait(pending)
            completed = source_listed
            self._check_replication_scope()
            if self.options.delete and not self.cancelled.is_set():
                try:
                    self._delete_pass(source_repositories, source_listed)
                except BackendError as exc:
                    self.report.add_problem(Problem("delete-failed", f"the delete pass stopped: {exc}", key=exc.key))
        except MarkerError as exc:
            self.report.add_problem(Problem(exc.kind, str(exc), key=exc.key))
        except KeyboardInterrupt:
            self.cancel()
            self.report.interrupted = True
            wait(pending)
        finally:
            if self.cancelled.is_set():
                self.report.interrupted = True
            self._close_waiter()
            self._close_commits()
            repo_pool.shutdown(wait=True, cancel_futures=True)
            blob_pool.shutdown(wait=True, cancel_futures=True)
            self._dest_empty = False  # true of the destination as this pass began, no longer
            self._finish_records(completed=completed)
        self.report.finished = time.monotonic()
        return self.report

    def _start_repository(self, repository: str, context: PassContext, pool: ThreadPoolExecutor,
                          schedule: Callable[[Callable[[], None]], None]) -> Future:
        """Survey, plan and start one repository on ``pool``; the future ends when its run has ended."""
        done: Future = Future()

        def begin() -> None:
            try:
                run = self._sync_one(repository, context, schedule)
            except BaseException as exc:  # noqa: BLE001 - reported; the pass goes on
                self._repository_failed(repository, exc)
                done.set_result(None)
                return
            run.add_done_callback(lambda _: done.set_result(None))

        pool.submit(begin)
        return done

    def _repository_failed(self, repository: str, exc: BaseException) -> None:
        self._history_unchecked.set()
        if isinstance(exc, Cancelled):
            return
        if isinstance(exc, BackendError):
            self.report.add_problem(Problem("read-failed", str(exc), repository=repository, key=exc.key))
        else:
            log.error("unexpected error in repository %s", repository, exc_info=exc)
            self.report.add_problem(Problem("internal-error", repr(exc), repository=repository))

    def _sync_one(self, repository: str, context: PassContext, schedule: Callable[[Callable[[], None]], None]) -> Future:
        """Survey one repository, plan it, and start its run (``--dry-run``: print the plan)."""
        check_history = self.records is not None and self.records.may_lack_history(repository)
        survey = survey_repository(self.source, self.dest, repository, self.settings, on_problem=self.report.add_problem,
                                   dest_empty=self._dest_empty, check_history=check_history)
        self.report.count("repositories")
        plan = plan_repository(survey, self.settings)
        for problem in plan.problems:
            self.report.add_problem(problem)
        for name, amount in plan.up_to_date.items():
            self.report.count(name, amount)
        if self.options.dry_run:
            self._print_plan(plan)
            finished: Future = Future()
            finished.set_result(None)
            return finished
        run = RepositoryRun(plan.steps, DestinationWriter(context, survey), schedule, self.cancelled)
        with self._runs_lock:
            self._runs.add(run)
        done = run.start()
        done.add_done_callback(lambda _: self._forget_run(run))
        return done

    def _forget_run(self, run: RepositoryRun) -> None:
        with self._runs_lock:
            self._runs.discard(run)

    def tags_pending(self) -> int:
        """Tags the runs in progress have yet to publish (held back, e.g. waiting for replicated blobs)."""
        with self._runs_lock:
            runs = list(self._runs)
        return sum(run.pending(PublishTag) for run in runs)

    def _print_plan(self, plan: RepositoryPlan) -> None:
        """A plan as ``--dry-run`` shows it: a line per write; a blob shared by repositories once."""
        for step in plan.steps:
            if isinstance(step, BLOB_STEPS):
                if step.digest in self._planned_blobs:
                    continue
                self._planned_blobs.add(step.digest)
                self.report.count("blobs_copied")
                self.report.count("bytes_copied", step.size or 0)
            for line in plan_lines(step):
                self.report.plan(line)
                if line.startswith("link "):
                    self.report.count("links_written")
            if isinstance(step, LinkRevision):
                self.report.count("revisions_published")
            elif isinstance(step, PublishTag):
                self.report.count("tags_up_to_date" if step.recheck else "tags_published")

    def _context(self, blob_pool: ThreadPoolExecutor) -> PassContext:
        waiter = None
        if self.options.blobs == "external" and not self.options.dry_run:
            waiter = BlobWaiter(self.source, self.dest, timeout=self.options.external_timeout,
                                confirmed=self._confirmed_blobs, workers=max(1, self.options.jobs),
                                observer=self._on_wait)
        self._waiter = waiter
        # The group commit writes to the store under the wrappers: it retries its stages itself, and
        # only a local filesystem has this ability, where request ceilings and counts mean nothing.
        staged = staged_puts_of(innermost(self.dest)) if not self.options.dry_run else None
        self._commits = GroupCommit(staged, self.options.retry) if staged is not None else None
        return PassContext(self.source, self.dest, self.report, self.cancelled, self._copier(blob_pool),
                           settings=self.settings, records=self.records, confirmed_blobs=self._confirmed_blobs,
                           waiter=waiter, history_unchecked=self._history_unchecked, commits=self._commits)

    def _check_replication_scope(self, *, place: bool = False) -> None:
        """With ``--blobs external``: the canary at the source (``place``), and a problem when the
        destination holds it (replication.py), reported once per pass."""
        if self.options.blobs != "external" or self.options.dry_run or self._too_wide_reported:
            return
        if place:
            why_not = place_canary(self.source)
            if why_not is not None:
                self.report.add_finding(Problem("canary-not-placed", why_not, key=CANARY_KEY))
        try:
            problem = replication_too_wide(self.dest)
        except BackendError as exc:
            log.warning("cannot look for the replication canary on %s: %s", self.dest.url, exc)
            return
        if problem is not None:
            self._too_wide_reported = True
            self.report.add_problem(problem)

    def _close_commits(self) -> None:
        """Every write staged is published and durable when this returns."""
        commits, self._commits = self._commits, None
        if commits is None:
            return
        try:
            commits.close()
        except BackendError as exc:
            self.report.add_problem(Problem("write-failed", f"the pass's last writes may not be durable: {exc}", key=exc.key))

    def _close_waiter(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.close()

    def _on_wait(self, event: str, data: dict) -> None:
        """What the waiter saw: counted, problems reported, and passed on to subscribers (the sidecar's metrics)."""
        if event == "arrived":
            self.report.count("blobs_replicated")
        elif event == "copy-after-wait":
            self.report.count("blobs_copied_after_wait")
        elif event == "gave-up" and data.get("problem") is not None:
            self.report.add_problem(data["problem"])
        self.report.emit(f"wait-{event}", **data)

    def _finish_records(self, *, completed: bool) -> None:
        """``completed``: the pass went through every repository of its scope (the source listed,
        nothing raised). See pass_records for what is kept and what goes."""
        records = self.records
        if records is None:
            return
        stopped = self.report.interrupted or self.cancelled.is_set() or not completed
        wrote_all = not stopped and not any(p.kind in _WRITE_FAILURES for p in self.report.problems)
        try:
            records.finish(wrote_all=wrote_all, checked_all=not stopped and not self._history_unchecked.is_set())
        finally:
            if records.failed is not None:
                self.report.add_problem(Problem(
                    "pass-record-failed",
                    f"cannot write this pass's record ({records.failed}); its tags were published without one, so had "
                    f"the pass died between a tag's current link and its history link, no later pass would know",
                    key=records.key,
                ))

    def _repository_workers(self, jobs: int) -> int:
        """Repositories surveyed and advanced at once: two between local stores, whose file system
        calls overlap while the interpreter runs the other (more only contend for the interpreter;
        measured: two took 0.94x the time of one on a 7,780-file tree); ``jobs`` when either side is
        a network store, where each read is a round trip."""
        return min(2, jobs) if self._local() else jobs

    def _local(self) -> bool:
        return getattr(self.source.capabilities, "local", False) and getattr(self.dest.capabilities, "local", False)

    def _mark_fresh_destination(self) -> None:
        """Mark a destination this run starts filling from empty as a syncagent replica; then its
        repositories are not read (they are known empty: on S3 that saves two listings each).

        The marker is a pass's first write, made once the source has answered (a run whose source
        cannot be read writes nothing). Raises MarkerError when the destination cannot be marked:
        the pass ends there, before anything is copied, with the problem reported. A marker that
        cannot be read is a finding, and the pass goes on.
        """
        if self.options.dry_run:
            return
        try:
            self._dest_empty = mark_if_fresh(self.dest, self.source.url)
        except MarkerError as exc:
            if exc.kind != "read-failed":
                raise
            # Not knowing whether the destination is marked costs nothing to a sync (its repositories
            # are read as usual; a later pass marks it); a delete pass refuses without the marker.
            log.warning("%s", exc)
            self.report.add_finding(Problem("marker-unreadable", str(exc), key=exc.key))

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
        """Plan the deletes of every repository in scope, refuse them together if the policy says so,
        else carry them out; then prune blob data when asked to."""
        policy = self.delete_policy
        refusal = policy.pass_refusal(source_repositories, source_listed)
        plans: list[DeletePlan] = []
        if refusal is None:
            try:
                for repository in iter_repositories(self.dest):
                    if self.options.wants(repository):
                        plan = self._plan_deletes(repository, repository in source_repositories)
                        if plan is not None:
                            plans.append(plan)
            except BackendError as exc:
                refusal = f"cannot list the destination's repositories: {exc}"
        if refusal is None:
            refusal = policy.share_refusal(sum(p.removing for p in plans), sum(p.holding for p in plans))
        if refusal is not None:
            self.report.add_problem(Problem("delete-refused", refusal))
            return
        if self.options.force and not self.options.dry_run and read_marker(self.dest) is None:
            write_marker(self.dest, self.source.url)
        for plan in plans:
            if self.cancelled.is_set():
                return
            self._carry_out(plan)
        if self.options.prune_blobs and not self.cancelled.is_set():
            try:
                prune_blobs(self.source, self.dest, self.report, dry_run=self.options.dry_run)
            except BackendError as exc:
                self.report.add_problem(Problem("delete-failed", f"cannot prune blob data: {exc}", key=exc.key))

    @property
    def delete_policy(self) -> DeletePolicy:
        return DeletePolicy(self.source, self.dest, self.options.max_delete_share, force=self.options.force,
                            scope=self.options.wants)

    def delete_in_repository(self, repository: str, allowance: DeleteAllowance | None = None) -> str | None:
        """The sidecar's per-repository delete pass (after its sync pass), in reverse dependency order.

        The policy's checks apply (policy.py): the replica marker, swapped sides,
        and a source that must answer for the repository (an error, never an
        empty answer, when it cannot); the share is drawn from ``allowance``.
        Every delete re-checks the source. Returns None, or ``DEFERRED`` when the
        allowance cannot judge yet (nothing deleted; ask again later).
        """
        refusal = self.delete_policy.pass_refusal(None, source_listed=True)
        if refusal is None:
            try:
                at_source = next(iter(self.source.iter_children(repository_prefix(repository))), None) is not None
            except BackendError as exc:
                refusal = f"the source cannot be read: {exc}"
        if refusal is None:
            plan = self._plan_deletes(repository, at_source)
            if plan is None:
                return None
            decision = allowance.request([plan]) if allowance is not None else None  # also measures it
            if decision is DEFERRED:
                return DEFERRED
            refusal = decision
        if refusal is not None:
            self.report.add_problem(Problem("delete-refused", refusal, repository=repository))
            return None
        self._carry_out(plan)
        return None

    def _carry_out(self, plan: DeletePlan) -> None:
        if self.options.dry_run:
            for step in plan.plan.steps:
                for line in plan_lines(step):
                    self.report.plan(line)
        else:
            deleter = DestinationDeleter(self.source, self.dest, self.report, self.cancelled)
            RepositoryRun(plan.plan.steps, deleter, _no_blob_steps, self.cancelled).start()
        if plan.kept:
            self.report.add_problem(Problem("delete-skipped", f"kept every revision and _layers link: {plan.kept}",
                                            repository=plan.repository))

    def _plan_deletes(self, repository: str, at_source: bool) -> DeletePlan | None:
        try:
            return plan_deletes(survey_deletes(self.source, self.dest, repository, at_source))
        except BackendError as exc:
            self.report.add_problem(Problem("delete-failed", f"cannot plan deletes: {exc}", repository=repository, key=exc.key))
            return None

    def sync_repository(self, repository: str, copier: BlobCopier | None = None, *,
                        unfinished: list[UnfinishedPass] | None = None) -> None:
        """Sync one repository (the sidecar's unit of work), with a pass record of its own; returns
        when its run has ended. Raises BackendError when a side cannot be read, Cancelled when cancelled.

        ``unfinished``: the destination's pass records as the caller last read them (the sidecar
        keeps them, so that a pass does not list them again); None reads them.
        """
        earlier = load_records(self.dest) if unfinished is None else unfinished
        self.records = PassRecords(self.dest, (repository,), earlier, dry_run=self.options.dry_run)
        completed = False
        try:
            with ThreadPoolExecutor(max(1, self.options.jobs), thread_name_prefix="blob") as blob_pool, \
                    ThreadPoolExecutor(1, thread_name_prefix="repo") as repo_pool:
                context = self._context(blob_pool)
                if copier is not None:
                    context.copier = copier
                try:
                    self._sync_one(repository, context, _scheduler(repo_pool)).result()
                finally:
                    self._close_waiter()
                    self._close_commits()
            if self.cancelled.is_set():
                raise Cancelled()
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
            recopy=self.options.recopy,
            confirmed=self._confirmed_blobs,
            dest_has_blobs=self._dest_has_blobs,
            commits=self._commits,
            inline_limit=INLINE_COPY_LIMIT if self._local() else 0,
            retry=self.options.retry,
        )


def _scheduler(pool: ThreadPoolExecutor) -> Callable[[Callable[[], None]], None]:
    """How a run continues after a blob step ends: on the repository pool, never on a blob thread
    (a repair waits for copies, which must not wait for a free blob thread themselves)."""

    def schedule(advance: Callable[[], None]) -> None:
        try:
            pool.submit(_logged, advance)
        except RuntimeError:  # the pool shut down: the pass is over (cancelled)
            pass

    return schedule


def _logged(advance: Callable[[], None]) -> None:
    try:
        advance()
    except Exception:  # noqa: BLE001 - the executor reports step failures; this is a bug, logged
        log.exception("unexpected error while running a plan")


def _no_blob_steps(advance: Callable[[], None]) -> None:
    raise AssertionError("a delete plan has no blob steps to wait for")
