"""Telling a replica's broken tags apart: damage, or a delete at the source that has not arrived yet.

When the storage's own replication carries blob data (``--blobs external``),
the primary's garbage collection deletes blobs at the primary and the
replication deletes them at the replica, while the tag or revision that named
them may still be on the replica (its delete has not been propagated yet).
There the closure is broken just as it would be by damage, but nothing was
lost: the source no longer has it either. :func:`classify_deleted_at_source`
reports such tags and revisions as ``deleted-at-source`` instead of
``broken-tag`` / ``broken-revision``: a destination tag (or revision) whose
closure is broken because a blob is missing there, when that blob is missing
at the source too and the source no longer has the tag at that digest (or
the revision). The next ``sync --blobs external`` pass takes them back.
"""

from __future__ import annotations

from dataclasses import replace

from backends import Backend, BackendError

from ..sync.deletes import closure_breakage, source_has
from ..sync.layout import BlobData, Digest, InvalidPath, key_of
from ..sync.report import Problem, Report
from .compare import Comparison

DELETED_AT_SOURCE_KIND = "deleted-at-source"
RECLASSIFIED = ("broken-tag", "broken-revision")


def classify_deleted_at_source(source: Backend, dest: Backend, report: Report, comparison: Comparison) -> int:
    """Turn ``report``'s broken tags and revisions (of ``dest``) that the source deleted and collected
    into ``deleted-at-source`` problems, in place; returns how many. ``comparison``: ``source`` against
    ``dest``. A tag or revision whose situation cannot be read stays as it was reported."""
    changed = 0
    problems = []
    for problem in list(report.problems):
        reason = _deleted_at_source(source, dest, problem, comparison) if problem.kind in RECLASSIFIED else None
        if reason is not None:
            changed += 1
            problem = replace(problem, kind=DELETED_AT_SOURCE_KIND, reason=reason)
        problems.append(problem)
    report.problems[:] = problems
    return changed


def _deleted_at_source(source: Backend, dest: Backend, problem: Problem, comparison: Comparison) -> str | None:
    """The new reason when ``problem`` is a deletion that has not arrived, else None."""
    if problem.repository is None or problem.digest is None:
        return None
    difference = comparison.repositories.get(problem.repository)
    try:
        digest = Digest.parse(problem.digest)
    except InvalidPath:
        return None
    if difference is None:
        return None
    if problem.kind == "broken-tag":
        stale = {entry["tag"] for entry in difference.stale_tags}
        if problem.tag not in difference.extra_tags and problem.tag not in stale:
            return None  # the source has the tag at this digest: damage, not a delete
    elif str(digest) not in difference.extra_revisions:
        return None
    try:
        breakage = closure_breakage(dest, problem.repository, digest)
        if breakage is None:
            return None
        gone = [blob for blob in breakage.missing_blobs if not source_has(source, key_of(BlobData(blob)))]
    except BackendError:
        return None
    if not gone:
        return None  # the source still has every missing blob: the replica lost them, or they are in flight
    what = "tag" if problem.kind == "broken-tag" else "revision"
    blobs = ", ".join(str(blob) for blob in gone[:3]) + (f" and {len(gone) - 3} more" if len(gone) > 3 else "")
    return (f"the primary deleted this {what} and collected its blobs ({blobs} gone at both ends); the delete has not "
            f"reached this replica yet: the next `sync --blobs external` pass (or --delete) takes it back")


__all__ = ["DELETED_AT_SOURCE_KIND", "classify_deleted_at_source"]
