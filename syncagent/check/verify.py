"""Checking a registry tree on any backend: the invariant, damage, and leftovers.

Problems (the invariant is broken, or data is damaged; exit status 1):

- ``broken-tag`` / ``broken-revision``: the closure is not whole (a manifest or
  blob missing, a link missing or holding another digest, a manifest that is
  not valid or does not match its digest);
- ``invalid-link``: a link that is empty, does not parse, or holds a digest
  other than the one its path names (tags, revisions and ``_layers`` links);
- ``digest-mismatch`` (with ``deep``): blob data that does not hash to its digest;
- ``size-mismatch``: blob data whose size is not its descriptor's (a stat, no
  hashing: a truncated copy);
- ``symlink-refused``: a symbolic link in the tree (filesystem), reported once, never followed;
- ``invalid-name``: a name outside the grammar, or a key that is no valid key
  at all (``a//b``, ``a/../b``: S3 can hold them), never read nor copied.

Findings (nothing is broken; reported and counted):

- ``unlinked-blob``: blob data no repository links (reclaimable bytes);
- ``abandoned-upload``: objects under a repository's ``_uploads/``;
- ``temporary-file``: leftover ``*.tmp`` objects;
- ``unknown-object``: anything else outside the layout;
- ``incomplete-upload``: an upload a put never finished (on backends with the
  Leftovers ability: S3's multipart uploads), with its bytes and age;
  :func:`abort_incomplete_uploads` removes those old enough.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from typing import Callable, Iterator

from backends import Backend, BackendError, IncompleteUpload, InvalidKey, NotFound, PermissionDenied, check_key, leftovers_of

from ..sync.closure import Closure, ClosureError, missing_from, read_manifest, resolve_closure
from ..sync.discovery import OnProblem, UnreadableLink, iter_repositories, objects_under, read_link, read_repository
from ..sync.discovery import require_registry as require_registry_tree
from ..sync.layout import (
    BLOBS_PREFIX,
    REPOSITORIES_PREFIX,
    BlobData,
    Digest,
    DigestSet,
    DigestSizes,
    InvalidPath,
    LayerLink,
    LinkMemo,
    key_of,
    parse_key,
)
from ..sync.manifest import Manifest
from ..sync.report import Problem, Report

log = logging.getLogger(__name__)

Selector = Callable[[str], bool] | None
HASH_CHUNK = 1 << 20


def verify_backend(
    target: Backend,
    report: Report | None = None,
    *,
    repositories: Selector = None,
    deep: bool = False,
    hygiene: bool = True,
    jobs: int = 8,
    require_registry: bool = False,
) -> Report:
    """Check every repository (or those ``repositories`` selects) on ``target``.

    ``hygiene`` also scans every object for damaged layer links and leftovers
    (unlinked blobs are only judged when no repository is filtered out).
    ``deep`` re-hashes all blob data, ``jobs`` blobs at a time. Repositories
    are checked ``jobs`` at a time too (their reads are small and many: on a
    cold cache or a remote store each one waits for the storage); problems
    are reported in repository order whatever order the checks end in.
    ``require_registry``: raise NotARegistry (a ConfigurationError) when
    ``target`` holds no registry tree at all, rather than finding it whole.
    """
    if require_registry:
        require_registry_tree(target)
    report = report or Report()
    blobs = DigestSizes()
    linked = DigestSet()
    confirmed_links = LinkMemo()
    links = _LinksReported()
    on_problem = links.into(report)
    try:
        if hygiene or deep:
            blobs = _list_blobs(target, report, on_problem)
        selected = (r for r in iter_repositories(target, on_problem) if repositories is None or repositories(r))
        _verify_repositories(target, selected, report, blobs, confirmed_links, links, linked, jobs)
        if hygiene:
            _scan_repository_objects(target, report, repositories, confirmed_links, on_problem, linked)
            _judge_blobs(target, report, blobs, linked if repositories is None else None, deep=deep, jobs=jobs)
            _report_incomplete_uploads(target, report, repositories)
        elif deep:
            _judge_blobs(target, report, blobs, None, deep=True, jobs=jobs)
    except NotFound as exc:
        report.add_problem(Problem("read-failed", f"the target does not exist: {exc}"))
    except BackendError as exc:
        report.add_problem(Problem("read-failed", f"cannot list the target: {exc}"))
    return report


def _verify_repositories(
    target: Backend, selected: Iterator[str], report: Report, present: DigestSizes, confirmed_links: LinkMemo,
    links: "_LinksReported", linked: DigestSet, jobs: int,
) -> None:
    """``_verify_repository`` of every selected repository, ``jobs`` at a time, at most ``2 * jobs``
    ahead of the oldest one not finished. Each writes into a report of its own, merged into ``report``
    in repository order; the digests their revision links name go into ``linked``."""

    def check(repository: str) -> tuple[Report, set[Digest]]:
        own = Report()
        try:
            return own, _verify_repository(target, repository, own, present, confirmed_links, links.into(own))
        except BackendError as exc:
            own.add_problem(Problem("read-failed", str(exc), repository=repository, key=exc.key))
            return own, set()

    def merge(own: Report, digests: set[Digest]) -> None:
        for digest in digests:
            linked.add(digest)
        for name, amount in own.counters.items():
            if amount:
                report.count(name, amount)
        for finding in own.findings:
            report.add_finding(finding)
        for problem in own.problems:
            if problem.kind == "size-mismatch" and _size_mismatch_reported(report, problem.digest):
                continue  # one per blob, whichever repositories name it
            report.add_problem(problem)

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="verify") as pool:
        window: deque[Future] = deque()
        for repository in selected:
            window.append(pool.submit(check, repository))
            if len(window) >= 2 * max(1, jobs):
                merge(*window.popleft().result())
        while window:
            merge(*window.popleft().result())


class _LinksReported:
    """Each refused symbolic link reported once (listings and reads both meet it), whichever
    repository's check meets it first."""

    def __init__(self) -> None:
        self._keys: set[str | None] = set()
        self._lock = threading.Lock()

    def into(self, report: Report) -> OnProblem:
        """``report.add_problem``, with symbolic links already reported left out."""

        def add(problem: Problem) -> None:
            if problem.kind == "symlink-refused":
                with self._lock:
                    if problem.key in self._keys:
                        return
                    self._keys.add(problem.key)
                if problem.digest is None and problem.key is not None:
                    try:
                        spec = parse_key(problem.key)
                    except InvalidPath:
                        spec = None
                    if isinstance(spec, BlobData):
                        problem = replace(problem, digest=str(spec.digest))
            report.add_problem(problem)

        return add


def _size_mismatch_reported(report: Report, digest: str | None) -> bool:
    return any(p.kind == "size-mismatch" and p.digest == digest for p in report.problems)


def _size_mismatch(report: Report, digest: Digest, found: int, size: int) -> None:
    """One ``size-mismatch`` problem per blob (``--repair`` copies it again)."""
    if _size_mismatch_reported(report, str(digest)):
        return
    report.add_problem(Problem("size-mismatch", f"blob data holds {found} bytes, its descriptor says {size}",
                               digest=str(digest), key=key_of(BlobData(digest))))


def _verify_repository(
    target: Backend, repository: str, report: Report, present: DigestSizes, confirmed_links: LinkMemo,
    on_problem: OnProblem,
) -> set[Digest]:
    """Check tags and revisions; returns the digests the repository's revision links name."""
    state = read_repository(target, repository, on_problem)
    report.count("repositories")
    cache: dict[Digest, Manifest] = {}
    verdicts: dict[Digest, list[str]] = {}
    unread: dict[Digest, str] = {}  # roots whose closure could not be read: not damage, a read that failed

    def load(digest: Digest) -> Manifest:
        if digest not in cache:
            cache[digest] = read_manifest(target, digest)[1]
        return cache[digest]

    def verdict(root: Digest) -> list[str]:
        if root not in verdicts:
            try:
                closure: Closure = resolve_closure(root, load)
            except ClosureError as exc:
                verdicts[root] = [f"{exc.digest}: {exc.reason}"]
                if exc.kind == "read-failed":
                    unread[root] = verdicts[root][0]
            else:
                verdicts[root] = missing_from(target, repository, closure, known_sizes=present, confirmed_links=confirmed_links,
                                              on_size_mismatch=lambda digest, found, size: _size_mismatch(report, digest, found, size))
        return verdicts[root]

    for digest in sorted(state.revisions):
        missing = verdict(digest)
        if digest in unread:
            report.add_problem(Problem("read-failed", unread[digest], repository=repository, digest=str(digest)))
        elif missing:
            report.add_problem(Problem("broken-revision", "; ".join(missing[:5]), repository=repository, digest=str(digest)))
        else:
            report.count("revisions_whole")
    for tag, digest in sorted(state.tags.items()):
        missing = verdict(digest)
        if digest in unread:
            report.add_problem(Problem("read-failed", unread[digest], repository=repository, tag=tag, digest=str(digest)))
        elif missing:
            report.add_problem(Problem("broken-tag", "; ".join(missing[:5]), repository=repository, tag=tag, digest=str(digest)))
        else:
            report.count("tags_whole")
    return set(state.revisions)


def _scan_repository_objects(
    target: Backend, report: Report, repositories: Selector, confirmed_links: LinkMemo, on_problem: OnProblem, linked: DigestSet
) -> None:
    """One listing of every repository object: layer links checked (unless the closure checks
    already read them) and the digests of those that hold theirs added to ``linked``, leftovers reported."""
    reported = _names_reported(report)
    for info in objects_under(target, REPOSITORIES_PREFIX, on_problem):
        try:
            spec = parse_key(info.key)
        except InvalidPath:
            _classify_stray(info.key, info.size, report, repositories, reported)
            continue
        if isinstance(spec, LayerLink):
            if repositories is not None and not repositories(spec.repository):
                continue
            if confirmed_links.holds(info.key, spec.digest):
                linked.add(spec.digest)
                continue
            try:
                content = read_link(target, info.key)
            except NotFound:
                continue
            except UnreadableLink as exc:
                report.add_problem(Problem("invalid-link", str(exc), repository=spec.repository, digest=str(spec.digest), key=info.key))
                continue
            if content != spec.digest:
                report.add_problem(
                    Problem("invalid-link", f"layer link holds {content}", repository=spec.repository, digest=str(spec.digest), key=info.key)
                )
                continue
            linked.add(spec.digest)


def _names_reported(report: Report) -> tuple[str, ...]:
    """Keys of the invalid names already reported (by the repository walk): what lies below them is not
    reported again."""
    return tuple(p.key + "/" for p in report.problems if p.kind == "invalid-name" and p.key)


def _classify_stray(key: str, size: int, report: Report, repositories: Selector, reported: tuple[str, ...] = ()) -> None:
    name = key[len(REPOSITORIES_PREFIX):]
    repository = name.split("/_", 1)[0] if "/_" in name else None
    if repositories is not None and repository and not repositories(repository):
        return
    try:
        check_key(key)
    except InvalidKey:
        if not key.startswith(reported):
            report.add_problem(Problem("invalid-name", f"not a valid key ({size} bytes); never read nor copied", key=key))
        return
    if "/_uploads/" in key:
        report.count("abandoned_uploads")
        report.count("upload_bytes", size)
        report.add_finding(Problem("abandoned-upload", f"{size} bytes of an upload in progress or abandoned", repository=repository, key=key))
    elif ".tmp" in key.rsplit("/", 1)[-1]:
        report.count("temporary_files")
        report.add_finding(Problem("temporary-file", f"leftover temporary file of {size} bytes", repository=repository, key=key))
    else:
        report.add_finding(Problem("unknown-object", "not part of the registry layout", key=key))


def _list_blobs(target: Backend, report: Report, on_problem: OnProblem) -> DigestSizes:
    """Every blob's size, from one listing (strays under blobs/ are reported)."""
    blobs = DigestSizes()
    for info in objects_under(target, BLOBS_PREFIX, on_problem):
        try:
            spec = parse_key(info.key)
        except InvalidPath:
            _classify_stray(info.key, info.size, report, None)
            continue
        if isinstance(spec, BlobData):
            blobs[spec.digest] = info.size
    return blobs


def _judge_blobs(
    target: Backend, report: Report, blobs: DigestSizes, linked: DigestSet | None, *, deep: bool, jobs: int
) -> None:
    """Unlinked blobs (when ``linked`` is known) and, with ``deep``, blobs that do not match their digest."""
    pool = ThreadPoolExecutor(max(1, jobs), thread_name_prefix="hash") if deep else None
    futures = []
    try:
        for digest, size in blobs.items():
            key = key_of(BlobData(digest))
            report.count("blobs")
            if linked is not None and digest not in linked:
                report.count("unlinked_blobs")
                report.count("reclaimable_bytes", size)
                report.add_finding(Problem("unlinked-blob", f"{size} bytes no repository links", digest=str(digest), key=key))
            if pool is not None:
                futures.append(pool.submit(_rehash, target, digest, key, report))
        for future in futures:
            future.result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _report_incomplete_uploads(target: Backend, report: Report, repositories: Selector) -> None:
    """Incomplete uploads on backends that can list them, as ``incomplete-upload`` findings."""
    leftovers = leftovers_of(target)
    if leftovers is None:
        return
    now = datetime.now(timezone.utc)
    try:
        for upload in leftovers.iter_incomplete_uploads(""):
            repository = _repository_of(upload.key)
            if repositories is not None and repository and not repositories(repository):
                continue
            report.count("incomplete_uploads")
            report.count("incomplete_upload_bytes", upload.size)
            report.add_finding(Problem(
                "incomplete-upload",
                f"upload {upload.upload_id} holds {upload.size} bytes, started {_age(now, upload)} ago",
                repository=repository, key=upload.key,
            ))
    except PermissionDenied as exc:
        report.add_finding(Problem("incomplete-upload", f"cannot list incomplete uploads: {exc}"))
    except BackendError as exc:
        report.add_problem(Problem("read-failed", f"cannot list incomplete uploads: {exc}"))


def abort_incomplete_uploads(target: Backend, older_than: float, report: Report) -> None:
    """Abort the incomplete uploads on ``target`` that started at least ``older_than`` seconds ago.

    Younger ones may belong to a put in progress and are kept, as are a
    registry's own upload sessions (keys under ``_uploads/``, which its upload
    purging owns). Counters: ``uploads_aborted``, ``upload_bytes_freed``,
    ``uploads_kept``; a failure is a ``delete-failed`` problem.
    """
    leftovers = leftovers_of(target)
    if leftovers is None:
        return
    now = datetime.now(timezone.utc)
    try:
        for upload in list(leftovers.iter_incomplete_uploads("")):
            if "/_uploads/" in upload.key or (now - upload.initiated).total_seconds() < older_than:
                report.count("uploads_kept")
                continue
            leftovers.abort_incomplete_upload(upload)
            report.count("uploads_aborted")
            report.count("upload_bytes_freed", upload.size)
    except BackendError as exc:
        report.add_problem(Problem("delete-failed", f"cannot abort incomplete uploads: {exc}", key=exc.key))


def _repository_of(key: str) -> str | None:
    if not key.startswith(REPOSITORIES_PREFIX) or "/_" not in key:
        return None
    return key[len(REPOSITORIES_PREFIX):].split("/_", 1)[0]


def _age(now: datetime, upload: IncompleteUpload) -> str:
    seconds = max(0.0, (now - upload.initiated).total_seconds())
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.1f} {unit}"
    return f"{seconds:.0f} s"


def _rehash(target: Backend, digest: Digest, key: str, report: Report) -> None:
    hasher = digest.hasher()
    size = 0
    try:
        with target.open_read(key) as stream:
            while chunk := stream.read(HASH_CHUNK):
                hasher.update(chunk)
                size += len(chunk)
    except BackendError as exc:
        report.add_problem(Problem("read-failed", f"cannot read blob data: {exc}", digest=str(digest), key=key))
        return
    report.count("blobs_hashed")
    report.count("bytes_hashed", size)
    if hasher.hexdigest() != digest.hex:
        report.add_problem(
            Problem("digest-mismatch", f"blob data hashes to {digest.algorithm}:{hasher.hexdigest()}", digest=str(digest), key=key)
        )
