"""Checking the invariant on any backend: every tag and revision has its whole closure.

For each repository, each tag's ``current/link`` and each revision link is
resolved to its closure (reading the target's own manifests, whose content is
hashed against their digests) and every blob is stat'ed and every link read.
"""

from __future__ import annotations

import logging

from backends import Backend, BackendError, NotFound

from .closure import Closure, ClosureError, missing_from, resolve_closure
from .discovery import iter_repositories, read_repository, read_small
from .layout import BlobData, Digest, key_of
from .manifest import MAX_MANIFEST_BYTES, MalformedManifest, Manifest, parse_manifest
from .report import Problem, Report

log = logging.getLogger(__name__)


def verify_backend(target: Backend, report: Report | None = None, *, repositories=None) -> Report:
    """Check every repository (or those ``repositories`` selects) on ``target``."""
    report = report or Report()
    present: set[Digest] = set()
    try:
        for repository in iter_repositories(target, report.add_problem):
            if repositories is not None and not repositories(repository):
                continue
            try:
                _verify_repository(target, repository, report, present)
            except BackendError as exc:
                report.add_problem(Problem("read-failed", str(exc), repository=repository, key=exc.key))
    except BackendError as exc:
        report.add_problem(Problem("read-failed", f"cannot list repositories: {exc}"))
    return report


def _verify_repository(target: Backend, repository: str, report: Report, present: set[Digest]) -> None:
    state = read_repository(target, repository, report.add_problem)
    report.count("repositories")
    cache: dict[Digest, Manifest] = {}
    verdicts: dict[Digest, list[str]] = {}

    def load(digest: Digest) -> Manifest:
        if digest in cache:
            return cache[digest]
        try:
            data = read_small(target, key_of(BlobData(digest)), MAX_MANIFEST_BYTES)
        except NotFound:
            raise ClosureError("missing-blob", digest, "manifest blob missing") from None
        hasher = digest.hasher()
        hasher.update(data)
        if hasher.hexdigest() != digest.hex:
            raise ClosureError("digest-mismatch", digest, "manifest blob does not match its digest")
        try:
            cache[digest] = parse_manifest(data)
        except MalformedManifest as exc:
            raise ClosureError("malformed-manifest", digest, str(exc)) from None
        return cache[digest]

    def verdict(root: Digest) -> list[str]:
        if root not in verdicts:
            try:
                closure: Closure = resolve_closure(root, load)
            except ClosureError as exc:
                verdicts[root] = [f"{exc.digest}: {exc.reason}"]
            else:
                verdicts[root] = missing_from(target, repository, closure, present_blobs=present)
        return verdicts[root]

    for digest in sorted(state.revisions):
        missing = verdict(digest)
        if missing:
            report.add_problem(Problem("broken-revision", "; ".join(missing[:5]), repository=repository, digest=str(digest)))
        else:
            report.count("revisions_up_to_date")
    for tag, digest in sorted(state.tags.items()):
        missing = verdict(digest)
        if missing:
            report.add_problem(Problem("broken-tag", "; ".join(missing[:5]), repository=repository, tag=tag, digest=str(digest)))
        else:
            report.count("tags_up_to_date")
